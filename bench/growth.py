"""Does the SQLite backend slow down as registrations pile up?

For each size (10,000 and 1,000,000 stored registrations; ``--quick``: 1,000 and
20,000) it creates a database with the real :class:`pushreport_sqlite.SQLiteStorage`
(its own schema and pragmas, ``synchronous = "normal"``), fills it to that size quickly
(``executemany`` in one transaction, rows in random selector order as the app's random
selectors arrive), and then times through the storage's public methods:

- ``update``: ``upsert()`` of a report for a stored selector (what every app start
  does), in µs per call;
- ``insert``: ``upsert()`` of a new selector, in µs per call;
- ``spooled``: what ``pushreport serve`` does with a report for a stored selector:
  ``upsert(..., read_back=False)`` appends it to the report spool in front of the backend
  (:class:`pushreport.spool.SpooledStorage`), and ``apply_spool()`` at the end of
  each batch applies the batch in one transaction, in µs per report for both;
- ``find``: ``find(username=...)`` of a stored user (two registrations each), median
  and p99 in ms.

Both databases are filled first; then batches run on one and the other in turn and the
ratio is the median of the per-batch ratios, so that a neighbour's burst of CPU weighs
on both sides of a ratio alike. Each upsert is its own committed transaction, WAL
checkpoints included, exactly as the server runs them. Prints the ratio of the large
size to the small one: the target is within 1.3x, and ``find`` < 1 ms at 1,000,000.

::

    python bench/growth.py            # 10,000 vs 1,000,000 (about a minute)
    python bench/growth.py --quick    # 1,000 vs 20,000: a smoke run
    python bench/growth.py --json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

from pushreport.spool import SpooledStorage  # noqa: E402
from pushreport.storage import StorageContext  # noqa: E402
from pushreport_core import Report, format_time  # noqa: E402
from pushreport_sqlite import SQLiteStorage  # noqa: E402

__all__ = ["measure", "main"]

TARGET_RATIO = 1.3
TARGET_FIND_MS = 1.0
USER_AGENT = "CloudSoftphone/1.5.6"
APPID_CALLS = "com.cloudsoftphone.app.pushkit"
APPID_MSGS = "com.cloudsoftphone.app"
T0 = datetime(2025, 3, 15, 0, 0, 0, tzinfo=timezone.utc)

INSERT = (
    "INSERT INTO registrations (selector, username, token_calls, appid_calls, "
    "token_msgs, appid_msgs, extra, user_agent, first_seen, last_seen, reports) "
    "VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, 1)"
)


def values(i: int) -> tuple[str, str, str, str]:
    """Selector, username, token_calls, token_msgs of registration *i*: as the app's."""
    d = hashlib.shake_256(b"pushreport-growth:%d" % i).digest(100)
    return (
        f"{d[:20].hex().upper()}:{i & 0xFFFFFFFF:08X}",
        f"user{i // 2:07d}",
        base64.b64encode(d[20:52]).decode(),
        base64.b64encode(d[52:100]).decode(),
    )


def report(i: int) -> Report:
    selector, username, token_calls, token_msgs = values(i)
    return Report(
        selector=selector,
        username=username,
        token_calls=token_calls,
        appid_calls=APPID_CALLS,
        token_msgs=token_msgs,
        appid_msgs=APPID_MSGS,
        user_agent=USER_AGENT,
        shape="default-query",
    )


def _rows(indices: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    seen = format_time(T0)
    for i in indices:
        selector, username, token_calls, token_msgs = values(i)
        yield (
            selector,
            username,
            token_calls,
            APPID_CALLS,
            token_msgs,
            APPID_MSGS,
            USER_AGENT,
            seen,
            seen,
        )


def fill(storage: SpooledStorage, n: int) -> float:
    """Registrations 0 … n-1, in random selector order, in one transaction; seconds."""
    import sqlite3

    started = time.perf_counter()
    order = list(range(n))
    random.Random(n).shuffle(order)
    conn = sqlite3.connect(storage.path, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB, for this bulk load only
        conn.execute("BEGIN")
        conn.executemany(INSERT, _rows(order))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def _instants(now: datetime, n: int) -> list[datetime]:
    step = timedelta(microseconds=1)
    return [now + step * j for j in range(n)]


def _time_upserts(storage: SpooledStorage, reports: list[Report], now: datetime) -> float:
    """µs per upsert of *reports*, each at its own instant from *now* on."""
    nows = _instants(now, len(reports))
    t = time.perf_counter()
    for r, n in zip(reports, nows):
        storage.upsert(r, now=n)
    return (time.perf_counter() - t) / len(reports) * 1e6


def _time_spooled(storage: SpooledStorage, reports: list[Report], now: datetime) -> float:
    """µs per report of *reports* through the spool: each appended, then all applied."""
    nows = _instants(now, len(reports))
    t = time.perf_counter()
    for r, n in zip(reports, nows):
        storage.upsert(r, now=n, read_back=False)
    applied = storage.apply_spool()
    us = (time.perf_counter() - t) / len(reports) * 1e6
    if applied != len(reports):
        raise RuntimeError(f"applied {applied} of {len(reports)} spooled reports")
    return us


class Database:
    """One database filled to *n* registrations, and the reports to time on it."""

    def __init__(self, n: int, *, ops: int, workdir: Path, say: Any) -> None:
        self.n = n
        self.path = workdir / f"growth-{n}.sqlite3"
        # As [storage.sqlite] builds it, with a long spool_interval: the timed batches
        # apply the spool themselves.
        storage = SQLiteStorage.from_options(
            {"path": str(self.path), "synchronous": "normal", "spool_interval": 10},
            StorageContext(),
        )
        assert isinstance(storage, SpooledStorage)
        self.storage = storage
        self.storage.ping()  # creates the schema: the storage's own tables and index
        say(f"filling {n:,} registrations ...")
        self.fill_s = fill(self.storage, n)
        rng = random.Random(1000 + n)
        self.warmup = [report(rng.randrange(n)) for _ in range(2_000)]
        self.updates = [report(rng.randrange(n)) for _ in range(ops)]
        self.spooleds = [report(rng.randrange(n)) for _ in range(ops)]
        self.inserts = [report(n + 10_000_000 + j) for j in range(ops)]
        self.users = [f"user{rng.randrange(n // 2):07d}" for _ in range(ops)]
        self.update_us: list[float] = []
        self.insert_us: list[float] = []
        self.spooled_us: list[float] = []
        self.find_ms: list[float] = []

    def warm(self) -> None:
        # Untimed: prepares the statements, fills the connection's page cache and runs
        # the WAL up to its steady size (checkpoints every 1,000 pages).
        _time_upserts(self.storage, self.warmup, T0 + timedelta(days=1))

    def finds(self, usernames: list[str]) -> None:
        found = 0
        for username in usernames:
            t = time.perf_counter()
            found += len(self.storage.find(username=username))
            self.find_ms.append((time.perf_counter() - t) * 1e3)
        if found < len(usernames):
            raise RuntimeError(
                f"find(username=...) returned {found} registrations for "
                f"{len(usernames)} stored users"
            )

    def size_mib(self) -> float:
        files = [self.path, *self.path.parent.glob(f"{self.path.name}-*")]
        return sum(p.stat().st_size for p in files if p.exists()) / 2**20

    def close(self) -> None:
        self.storage.close()

    def figures(self) -> dict[str, Any]:
        find_ms = sorted(self.find_ms)
        return {
            "stored": self.n,
            "fill_s": round(self.fill_s, 2),
            "db_mib": round(self.size_mib(), 1),
            "update_us": round(statistics.median(self.update_us), 1),
            "insert_us": round(statistics.median(self.insert_us), 1),
            "spooled_us": round(statistics.median(self.spooled_us), 1),
            "find_p50_ms": round(find_ms[len(find_ms) // 2], 4),
            "find_p99_ms": round(find_ms[min(len(find_ms) - 1, int(len(find_ms) * 0.99))], 4),
            "batches": {
                "update_us": [round(x, 1) for x in self.update_us],
                "insert_us": [round(x, 1) for x in self.insert_us],
                "spooled_us": [round(x, 1) for x in self.spooled_us],
            },
        }


def measure(
    small_n: int, large_n: int, *, ops: int, batch: int, workdir: Path, say: Any = print
) -> dict[str, Any]:
    """Fill two databases, then time the same operations on both, batch by batch in
    turn, so that other work on the machine weighs on both sides of each ratio alike."""
    small = Database(small_n, ops=ops, workdir=workdir, say=say)
    large = Database(large_n, ops=ops, workdir=workdir, say=say)
    ratios: dict[str, list[float]] = {"update": [], "insert": [], "spooled": []}
    try:
        small.warm()
        large.warm()
        say(f"timing {ops:,} updates, inserts and finds on each ...")
        for k in range(0, ops, batch):
            day = T0 + timedelta(days=2 + k)
            for kind in ("update", "insert", "spooled"):
                pair = []
                timer = _time_spooled if kind == "spooled" else _time_upserts
                for db in (small, large):
                    reports = getattr(db, f"{kind}s")[k : k + batch]
                    us = timer(db.storage, reports, day)
                    getattr(db, f"{kind}_us").append(us)
                    pair.append(us)
                ratios[kind].append(pair[1] / pair[0])
            for db in (small, large):
                db.finds(db.users[k : k + batch])
        figures = [small.figures(), large.figures()]
    finally:
        small.close()
        large.close()
    return {
        "results": figures,
        "ratio": {kind: round(statistics.median(r), 3) for kind, r in ratios.items()},
        "batch_ratios": {kind: [round(x, 3) for x in r] for kind, r in ratios.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument(
        "--ops",
        type=int,
        default=10_000,
        help="timed operations of each kind per size (default 10,000)",
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="operations per timed batch (default 500)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,000 vs 20,000 registrations, 1,000 operations"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.ops, args.batch = 1_000, 20_000, 1_000, 250
    if not 2 <= args.small < args.large <= 10_000_000 or args.ops < 1 or args.batch < 1:
        parser.error("need 2 <= --small < --large <= 10,000,000 and positive --ops and --batch")

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="pushreport-growth-") as tmp:
        measured = measure(
            args.small, args.large, ops=args.ops, batch=args.batch, workdir=Path(tmp), say=say
        )
    small, large = measured["results"]
    ratios = measured["ratio"]
    worst = max(ratios.values())
    verdicts = [
        f"upsert growth {worst:.2f}x (update {ratios['update']:.2f}x, insert "
        f"{ratios['insert']:.2f}x, spooled {ratios['spooled']:.2f}x) vs target <= "
        f"{TARGET_RATIO:.1f}x: " + ("met" if worst <= TARGET_RATIO else "MISSED"),
        f"find(username) at {args.large:,}: p50 {large['find_p50_ms']:.3f} ms, p99 "
        f"{large['find_p99_ms']:.3f} ms vs target < {TARGET_FIND_MS:g} ms: "
        + ("met" if large["find_p99_ms"] < TARGET_FIND_MS else "MISSED"),
    ]
    out = {"machine": loadgen.machine(), "synchronous": "normal", **measured, "verdicts": verdicts}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = (
        "stored",
        "update µs",
        "insert µs",
        "spooled µs",
        "find p50 ms",
        "find p99 ms",
        "db MiB",
        "fill s",
    )
    rows = [header] + [
        (
            f"{r['stored']:,}",
            f"{r['update_us']:.1f}",
            f"{r['insert_us']:.1f}",
            f"{r['spooled_us']:.1f}",
            f"{r['find_p50_ms']:.3f}",
            f"{r['find_p99_ms']:.3f}",
            f"{r['db_mib']:.1f}",
            f"{r['fill_s']:.1f}",
        )
        for r in (small, large)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print(
        f"\nratio ({args.large:,} / {args.small:,}): update {ratios['update']:.2f}, "
        f"insert {ratios['insert']:.2f}, spooled {ratios['spooled']:.2f}"
    )
    m = out["machine"]
    print(f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, SQLite {m['sqlite']}")
    for line in verdicts:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
