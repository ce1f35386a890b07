"""Merging a report into what is stored: a loop over the merge policy table."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Any, Callable, Mapping

import attrs

from ._policy import POLICY_KEY, Policy
from ._values import Registration, Report

__all__ = ["merge", "without_token", "MERGE_POLICY"]

#: How a report changes each field of a registration, in field order: declared with the
#: fields of :class:`~pushreport_core.Registration`, read from there. :func:`merge` is a
#: loop over it; the SQL backends build their upserts from it.
MERGE_POLICY: Mapping[str, Policy] = MappingProxyType(
    {f.name: f.metadata[POLICY_KEY] for f in attrs.fields(Registration)}
)


def _key(old: Any, new: Any, now: datetime) -> Any:
    if new != old:
        raise ValueError(f"cannot merge a report for selector {new!r} into {old!r}")
    return old


#: A field's value in a new registration: (the report's value, now) -> value.
_NEW: Mapping[Policy, Callable[[Any, datetime], Any]] = {
    Policy.KEY: lambda reported, now: reported,
    Policy.KEEP_KNOWN: lambda reported, now: reported,
    Policy.MERGE_EXTRA: lambda reported, now: reported,
    Policy.EARLIEST: lambda reported, now: now,
    Policy.LATEST: lambda reported, now: now,
    Policy.COUNT: lambda reported, now: 1,
}
#: A stored field's value after a report: (stored value, the report's value, now) -> value.
_NEXT: Mapping[Policy, Callable[[Any, Any, datetime], Any]] = {
    Policy.KEY: _key,
    Policy.KEEP_KNOWN: lambda old, new, now: old if new is None else new,
    Policy.MERGE_EXTRA: lambda old, new, now: {**old, **new} if new else old,
    Policy.EARLIEST: lambda old, new, now: min(old, now),
    Policy.LATEST: lambda old, new, now: max(old, now),
    Policy.COUNT: lambda old, new, now: old + 1,
}
_NEW_STEPS = tuple((name, _NEW[policy]) for name, policy in MERGE_POLICY.items())
_NEXT_STEPS = tuple((name, _NEXT[policy]) for name, policy in MERGE_POLICY.items())


def merge(stored: Registration | None, report: Report, *, now: datetime) -> Registration:
    """Return the registration that results from *report* arriving at *now*.

    Each field follows its :data:`MERGE_POLICY`: "On iOS, there is sometimes a delay
    getting the pushTokenOther which results in the web service being called with a
    null value for pushTokenOther." So a token, app id, username or extra value that the
    report does not know never erases a stored one; a known value replaces it.
    Registrations are keyed by ``selector``.
    """
    if stored is None:
        return Registration(
            **{name: new(getattr(report, name, None), now) for name, new in _NEW_STEPS}
        )
    return attrs.evolve(
        stored,
        **{
            name: step(getattr(stored, name), getattr(report, name, None), now)
            for name, step in _NEXT_STEPS
        },
    )


def without_token(registration: Registration, token: str) -> Registration:
    """*registration* with *token* cleared from ``token_calls`` and ``token_msgs``
    (whichever holds it); the app ids, times and counts stay. The same registration
    when it does not hold *token*: forgetting is idempotent.

    What ``Storage.forget_token`` does to each registration it changes.
    """
    calls = None if registration.token_calls == token else registration.token_calls
    msgs = None if registration.token_msgs == token else registration.token_msgs
    if (calls, msgs) == (registration.token_calls, registration.token_msgs):
        return registration
    return attrs.evolve(registration, token_calls=calls, token_msgs=msgs)
