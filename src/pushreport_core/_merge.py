"""Merging a report into what is stored: a loop over the merge policy table."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping

import attrs

from ._policy import POLICY_KEY, Policy
from ._values import Registration, Report

__all__ = ["merge", "without_token", "MERGE_POLICY", "outlived_by_removal"]

#: How a report changes each field of a registration, in field order: declared with the
#: fields of :class:`~pushreport_core.Registration`, read from there. :func:`merge` is a
#: loop over it; the SQL backends build their upserts from it.
MERGE_POLICY: Mapping[str, Policy] = MappingProxyType(
    {f.name: f.metadata[POLICY_KEY] for f in attrs.fields(Registration)}
)


def _fields(*policies: Policy) -> tuple[str, ...]:
    return tuple(name for name, policy in MERGE_POLICY.items() if policy in policies)


# The table by policy, each rule below a loop over the fields that have it.
_KEY = _fields(Policy.KEY)
_KEEP_KNOWN = _fields(Policy.KEEP_KNOWN)
_MERGE_EXTRA = _fields(Policy.MERGE_EXTRA)
_EARLIEST = _fields(Policy.EARLIEST)
_LATEST = _fields(Policy.LATEST)
_COUNT = _fields(Policy.COUNT)
#: A new registration takes these from the report as they are.
_REPORTED = _fields(*(policy for policy in Policy if policy.reported))


def merge(stored: Registration | None, report: Report, *, now: datetime) -> Registration:
    """Return the registration that results from *report* arriving at *now*.

    Each field follows its :data:`MERGE_POLICY`: "On iOS, there is sometimes a delay
    getting the pushTokenOther which results in the web service being called with a
    null value for pushTokenOther." So a token, app id, username or extra value that the
    report does not know never erases a stored one; a known value replaces it.
    Registrations are keyed by ``selector``.
    """
    if stored is None:
        values: dict[str, Any] = {name: getattr(report, name) for name in _REPORTED}
        for name in _EARLIEST + _LATEST:
            values[name] = now
        for name in _COUNT:
            values[name] = 1
        return Registration(**values)
    for name in _KEY:
        if getattr(report, name) != getattr(stored, name):
            raise ValueError(
                f"cannot merge a report for {name} {getattr(report, name)!r} "
                f"into {getattr(stored, name)!r}"
            )
    changes: dict[str, Any] = {}
    for name in _KEEP_KNOWN:
        new = getattr(report, name)
        if new is not None:
            changes[name] = new
    for name in _MERGE_EXTRA:
        new = getattr(report, name)
        if new:
            changes[name] = {**getattr(stored, name), **new}
    for name in _EARLIEST:
        if now < getattr(stored, name):
            changes[name] = now
    for name in _LATEST:
        if now > getattr(stored, name):
            changes[name] = now
    for name in _COUNT:
        changes[name] = getattr(stored, name) + 1
    return attrs.evolve(stored, **changes)


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


def outlived_by_removal(received: datetime, removed: datetime | None) -> bool:
    """A report received at *received* must not be applied once its selector was
    removed at *removed* (``None``: never removed): it would undo the removal.

    This decides for a report applied later than it was received (a host's report
    spool, applied after another host removed the selector). A tie goes to the removal:
    a removal and a report of the same instant cannot be ordered, and a report the
    app sent again after the removal is received later. Received after the removal,
    the report registers the selector again.
    """
    return removed is not None and received <= removed
