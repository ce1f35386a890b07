"""``pushreport stats``: what the stored registrations look like, in the terminal or JSON.

Streams over ``iter(storage)`` of the first backend (the one ``pushreport list``
reads), one registration at a time, into :class:`pushreport_core.RegistrationStats`
(the heuristics are documented there).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable, Iterable, TextIO

from pushreport_core import PLATFORMS, Registration, RegistrationStats

from ._config import Config
from ._service import open_reader

__all__ = ["collect_stats", "render_stats", "run_stats"]

#: Rows shown per table in the terminal (``--json`` has them all).
TOP = 10
BAR_WIDTH = 30
_EIGHTHS = " ▏▎▍▌▋▊▉"


def collect_stats(registrations: Iterable[Registration], *, now: datetime) -> RegistrationStats:
    """One pass over *registrations* (an iterator is never turned into a list)."""
    stats = RegistrationStats(now=now)
    for registration in registrations:
        stats.add(registration)
    return stats


def _bar(n: int, largest: int, unicode: bool) -> str:
    if largest <= 0 or n <= 0:
        return ""
    eighths = max(1, round(n / largest * BAR_WIDTH * 8))
    if not unicode:
        return "#" * max(1, eighths // 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def _table(
    title: str, counts: dict[str, int], total: int, unicode: bool, *, top: int | None = None
) -> list[str]:
    lines = [title]
    items = list(counts.items())
    shown = items if top is None else items[:top]
    if not shown or total == 0:
        return lines + ["  (none)"]
    width = max(len(k) for k, _ in shown)
    largest = max(n for _, n in shown)
    digits = len(f"{largest:,}")
    for key, n in shown:
        bar = _bar(n, largest, unicode).ljust(BAR_WIDTH)
        lines.append(f"  {key.ljust(width)}  {bar}  {n:>{digits},}  {n / total:6.1%}")
    hidden = items[len(shown) :]
    if hidden:
        rest = sum(n for _, n in hidden)
        lines.append(f"  … {len(hidden)} more ({rest:,} registrations)")
    return lines


def render_stats(stats: RegistrationStats, *, unicode: bool = True) -> str:
    """The terminal report: totals and a bar per bucket."""
    data = stats.to_json()
    total = stats.registrations
    lines = [f"registrations: {total:,}"]
    if total == 0:
        return lines[0] + "\n"
    sections = [
        ("age of the last report", data["last_report_age"], None),
        (
            "platform (from the token's shape)",
            {p: data["platforms"][p] for p in PLATFORMS if data["platforms"][p]},
            None,
        ),
        ("app id of the calls pair (appid_calls)", data["app_ids"]["calls"], TOP),
        ("app id of the messages pair (appid_msgs)", data["app_ids"]["msgs"], TOP),
        ("app version (from the user agent)", data["app_versions"], TOP),
    ]
    for title, counts, top in sections:
        lines.append("")
        lines.extend(_table(title, counts, total, unicode, top=top))
    return "\n".join(lines) + "\n"


def _can_draw(out: TextIO) -> bool:
    try:
        "█▏".encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def run_stats(
    config: Config,
    *,
    as_json: bool,
    out: TextIO,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> int:
    receiver = open_reader(config)  # creates nothing: a missing store is an error
    try:
        stats = collect_stats(receiver.storage, now=clock())
    finally:
        receiver.close()
    if as_json:
        json.dump(stats.to_json(), out, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(render_stats(stats, unicode=_can_draw(out)))
    return 0
