"""Merging a report into what is stored: the iOS delay rule."""

from __future__ import annotations

from datetime import datetime

import attrs

from ._values import Registration, Report

__all__ = ["merge", "without_token"]


def merge(stored: Registration | None, report: Report, *, now: datetime) -> Registration:
    """Return the registration that results from *report* arriving at *now*.

    "On iOS, there is sometimes a delay getting the pushTokenOther which results in the
    web service being called with a null value for pushTokenOther." So a token, app id,
    username or extra value that the report does not know never erases a stored one; a
    known value replaces it. Registrations are keyed by ``selector``.
    """
    if stored is None:
        return Registration(
            selector=report.selector,
            username=report.username,
            token_calls=report.token_calls,
            appid_calls=report.appid_calls,
            token_msgs=report.token_msgs,
            appid_msgs=report.appid_msgs,
            extra=report.extra,
            user_agent=report.user_agent,
            first_seen=now,
            last_seen=now,
            reports=1,
        )
    if stored.selector != report.selector:
        raise ValueError(
            f"cannot merge a report for selector {report.selector!r} into {stored.selector!r}"
        )
    extra = stored.extra
    if report.extra:
        extra = {**stored.extra, **report.extra}
    return attrs.evolve(
        stored,
        username=_known(report.username, stored.username),
        token_calls=_known(report.token_calls, stored.token_calls),
        appid_calls=_known(report.appid_calls, stored.appid_calls),
        token_msgs=_known(report.token_msgs, stored.token_msgs),
        appid_msgs=_known(report.appid_msgs, stored.appid_msgs),
        extra=extra,
        user_agent=_known(report.user_agent, stored.user_agent),
        first_seen=min(stored.first_seen, now),
        last_seen=max(stored.last_seen, now),
        reports=stored.reports + 1,
    )


def _known(new: str | None, old: str | None) -> str | None:
    return old if new is None else new


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
