"""The rules of a registration's life after it is stored: when it is old enough to be
pruned, and which registrations lose a token another username has reported.

"The app reports on every start" and nothing tells the receiver when it is uninstalled,
so a registration whose last report is old enough is taken for gone. And one phone (one
push token) may change hands: ``token_owner = "newest"`` moves the token to the account
that reported it last; a registration (one selector) does not: once stored under a
username, only that user changes or removes it (:func:`may_write`). Pure: every time is
an argument.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Iterable

import attrs

from ._errors import ConfigurationError
from ._merge import without_token
from ._values import Registration, Report

__all__ = [
    "parse_duration",
    "format_duration",
    "prune_cutoff",
    "prune_due",
    "TOKEN_OWNERS",
    "claimed_tokens",
    "owners_to_forget",
    "TokenMove",
    "plan_token_move",
    "may_write",
    "DURATION_UNITS",
]

#: Seconds per unit of a duration such as ``90d``.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# At most six digits: 999999w is some 19,000 years, well within timedelta.
_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")

#: ``[reporter] token_owner``: "shared" keeps a token on every account that reported it
#: (one app may hold several accounts, each with its own selector, sharing one token);
#: "newest" moves it to the account that reported it last.
TOKEN_OWNERS = ("shared", "newest")

_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def parse_duration(text: str, *, key: str | None = None) -> timedelta:
    """``"90d"`` → ``timedelta(days=90)``: a whole number and one unit, ``s``, ``m``,
    ``h``, ``d`` or ``w``, more than zero.

    :raises ConfigurationError: anything else, naming *key* when given.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"{text!r} is not a duration: write a whole number and "
            f"a unit, s, m, h, d or w (e.g. 90d)",
            key=key,
        )
    seconds = int(match[1]) * DURATION_UNITS[match[2]]
    if seconds == 0:
        raise ConfigurationError(f"{text!r} is not a duration: it must be more than zero", key=key)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, in the largest unit that divides it."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % DURATION_UNITS[unit] == 0:
            return f"{seconds // DURATION_UNITS[unit]}{unit}"
    return f"{seconds}s"


def prune_cutoff(now: datetime, older_than: timedelta) -> datetime:
    """The ``before`` of ``Storage.prune``: registrations last seen before it are older
    than *older_than* at *now*. The first instant of year 1 when that is further back."""
    if now - _EPOCH <= older_than:
        return _EPOCH
    return now - older_than


def prune_due(last_run: datetime | None, now: datetime, interval: timedelta) -> bool:
    """Whether a scheduled prune is due: never run, or run *interval* or longer before
    *now*. A last run in the future (the clock was set back) counts as due, so that a
    wrong clock cannot stop pruning for good."""
    return last_run is None or now - last_run >= interval or last_run > now


def claimed_tokens(before: Registration | None, report: Report, stored: Registration) -> list[str]:
    """The tokens *report* brought to its selector that the selector did not hold
    before and still holds after the merge: the ones whose other owners, under
    ``token_owner = "newest"``, are looked for. A token the selector already held was
    claimed when it arrived, so a report that only repeats it (every app start) costs
    no lookup."""
    held = set() if before is None else {before.token_calls, before.token_msgs}
    now_held = {stored.token_calls, stored.token_msgs}
    tokens = []
    for token in (report.token_calls, report.token_msgs):
        if token is not None and token not in held and token in now_held and token not in tokens:
            tokens.append(token)
    return tokens


def owners_to_forget(
    stored: Registration, token: str, holders: Iterable[Registration]
) -> list[str]:
    """Under ``token_owner = "newest"``: the selectors that must forget *token*, which
    *stored* was just stored with, given every registration holding it (*holders*).

    Only a registration *under another username* loses it ("a shared phone that changed
    user"): one user's several accounts in one app keep sharing it, and when either
    username is unknown nothing is decided. The newest owner, by ``last_seen``, keeps
    it: normally *stored* itself; should another holder have reported later (two
    reports racing), *stored* is the one that forgets, so both races end alike.
    Sorted, without duplicates.
    """
    selectors: set[str] = set()
    if stored.username is None:
        return []
    for holder in holders:
        if (
            holder.selector == stored.selector
            or holder.username is None
            or holder.username == stored.username
            or token not in (holder.token_calls, holder.token_msgs)
        ):
            continue
        selectors.add(holder.selector if holder.last_seen <= stored.last_seen else stored.selector)
    return sorted(selectors)


@attrs.frozen(kw_only=True)
class TokenMove:
    """Under ``token_owner = "newest"``: what one token a report brought does to the
    registrations holding it (:func:`plan_token_move`). The receiver carries it out."""

    token: str
    #: The selectors that forget the token, in every backend; sorted.
    forget: tuple[str, ...]
    #: The reported registration afterwards: without the token when it is among
    #: :attr:`forget` (a holder under another username reported later).
    stored: Registration


def plan_token_move(
    stored: Registration, token: str, holders: Iterable[Registration]
) -> TokenMove:
    """The move of *token*, which *stored* was just stored with, given the stored
    registrations (*holders*: those that hold it, or any superset: the others are
    passed over), by :func:`owners_to_forget`."""
    forget = tuple(owners_to_forget(stored, token, holders))
    if stored.selector in forget:
        stored = without_token(stored, token)
    return TokenMove(token=token, forget=forget, stored=stored)


def may_write(stored: Registration | None, username: str | None) -> bool:
    """Whether a request that authentication identified as the user *username* may
    report or remove the selector whose registration is *stored*.

    "This parameter uniquely identifies the account": a selector is one account in one
    app install, so its registration belongs to the username stored with it, and
    another user, however well authenticated, neither takes it over nor deletes it. A
    selector nobody has stored, or stored without a username, is free. Usernames are
    compared exactly, as the app sends ``%account[username]%``. Only for identified
    users: a credential shared by every account (a shared secret, HTTP Digest) does
    not tell who is asking, and the rule does not apply.
    """
    return stored is None or stored.username is None or stored.username == username
