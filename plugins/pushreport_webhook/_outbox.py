"""The outbox: events waiting to be delivered, and the dead letters, as SQLite tables.

Every function here takes a connection and runs inside the caller's transaction, so that
an event is written by the very transaction that commits its registration change: a
committed report always has its event, and an event never exists without its commit.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Iterable, Mapping

import attrs

from pushreport_core import Registration, format_time

__all__ = [
    "Event",
    "DeadEvent",
    "OUTBOX_SCHEMA",
    "UPDATED",
    "REMOVED",
    "enqueue",
    "due_heads",
    "next_due",
    "delivered",
    "failed",
    "replay_dead",
    "pending_events",
    "dead_events",
    "counts",
    "event_body",
]

#: The two kinds of event; ``event`` of the JSON body and of the ``X-Pushreport-Event``
#: header.
UPDATED = "registration.updated"
REMOVED = "registration.removed"

# ids: AUTOINCREMENT, so that an id is never reused, even after the row with the highest
# id was delivered and deleted: ids grow with commit order, and a receiver may dedupe by
# them. The dead letters keep their event's id; a replay puts it back under that id.
OUTBOX_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event           TEXT NOT NULL,     -- registration.updated or registration.removed
    selector        TEXT NOT NULL,
    registration    TEXT NOT NULL,     -- JSON: Registration.to_json(), never a password
    occurred_at     TEXT NOT NULL,     -- ISO 8601 UTC
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,  -- Unix seconds; 0: at once
    last_error      TEXT
)""",
    # The head of a selector (its lowest id) straight from the index.
    "CREATE INDEX IF NOT EXISTS outbox_selector ON outbox (selector, id)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER NOT NULL PRIMARY KEY,  -- the event's id in the outbox
    event        TEXT NOT NULL,
    selector     TEXT NOT NULL,
    registration TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    failed_at    REAL NOT NULL     -- Unix seconds
)""",
)

_ENQUEUE = "INSERT INTO outbox (event, selector, registration, occurred_at) VALUES (?, ?, ?, ?)"
# The head of every selector: its oldest event. A later event of a selector waits until
# every earlier one was delivered or dead-lettered, so each selector's events arrive in
# commit order.
_HEADS = """SELECT o.id, o.event, o.selector, o.registration, o.occurred_at, o.attempts
FROM outbox AS o
WHERE o.id = (SELECT MIN(h.id) FROM outbox AS h WHERE h.selector = o.selector)
  AND o.next_attempt_at <= ?
ORDER BY o.id LIMIT ?"""
_NEXT_DUE = """SELECT MIN(o.next_attempt_at) FROM outbox AS o
WHERE o.id = (SELECT MIN(h.id) FROM outbox AS h WHERE h.selector = o.selector)"""
_DELETE = "DELETE FROM outbox WHERE id = ?"
_RETRY = "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"
_TO_DEAD = """INSERT OR REPLACE INTO dead_letters
    (id, event, selector, registration, occurred_at, attempts, last_error, failed_at)
SELECT id, event, selector, registration, occurred_at, ?, ?, ? FROM outbox WHERE id = ?"""
_ATTEMPTS = "SELECT attempts FROM outbox WHERE id = ?"
_REPLAY = """INSERT INTO outbox
    (id, event, selector, registration, occurred_at, attempts, next_attempt_at, last_error)
SELECT id, event, selector, registration, occurred_at, 0, 0, last_error FROM dead_letters"""
_PENDING = """SELECT id, event, selector, registration, occurred_at, attempts,
    next_attempt_at, last_error FROM outbox ORDER BY id"""
_DEAD = """SELECT id, event, selector, registration, occurred_at, attempts, last_error,
    failed_at FROM dead_letters ORDER BY id"""


@attrs.frozen(kw_only=True)
class Event:
    """One event of the outbox."""

    id: int
    event: str
    selector: str
    #: ``Registration.to_json()`` of the registration as committed (as removed, for
    #: ``registration.removed``).
    registration: Mapping[str, Any]
    occurred_at: str
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body the webhook receives."""
        return {
            "event": self.event,
            "id": self.id,
            "selector": self.selector,
            "registration": dict(self.registration),
            "occurred_at": self.occurred_at,
        }


@attrs.frozen(kw_only=True)
class DeadEvent:
    """An event that failed *attempts* times and was moved to ``dead_letters``."""

    id: int
    event: str
    selector: str
    registration: Mapping[str, Any]
    occurred_at: str
    attempts: int
    last_error: str
    failed_at: float


def event_body(event: Event) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, keys in a fixed order."""
    return json.dumps(
        event.to_json(), ensure_ascii=False, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")


def _dump(registration: Registration) -> str:
    return json.dumps(
        registration.to_json(), ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )


def enqueue(
    conn: sqlite3.Connection, kind: str, changes: Iterable[tuple[Registration, datetime]]
) -> None:
    """Add one *kind* event per ``(registration, occurred_at)``, in order."""
    conn.executemany(
        _ENQUEUE, [(kind, r.selector, _dump(r), format_time(at)) for r, at in changes]
    )


def due_heads(conn: sqlite3.Connection, *, now: float, limit: int) -> list[Event]:
    """The oldest event of each selector, if its next attempt is due, oldest first."""
    return [
        Event(id=i, event=e, selector=s, registration=json.loads(r), occurred_at=o, attempts=a)
        for i, e, s, r, o, a in conn.execute(_HEADS, (now, limit)).fetchall()
    ]


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the next head is due (Unix seconds), or ``None`` when the outbox is empty."""
    value = conn.execute(_NEXT_DUE).fetchone()[0]
    return None if value is None else float(value)


def delivered(conn: sqlite3.Connection, event_id: int) -> None:
    conn.execute(_DELETE, (event_id,))


def failed(
    conn: sqlite3.Connection,
    event_id: int,
    error: str,
    *,
    now: float,
    max_attempts: int,
    delay: float,
) -> bool:
    """Count a failed attempt: retry after *delay* seconds, or, at *max_attempts*, move
    the event to ``dead_letters``. ``True`` when it was dead-lettered."""
    row = conn.execute(_ATTEMPTS, (event_id,)).fetchone()
    if row is None:  # delivered or dead-lettered meanwhile by another deliverer
        return False
    attempts = row[0] + 1
    if attempts >= max_attempts:
        conn.execute(_TO_DEAD, (attempts, error, now, event_id))
        conn.execute(_DELETE, (event_id,))
        return True
    conn.execute(_RETRY, (attempts, now + delay, error, event_id))
    return False


def replay_dead(conn: sqlite3.Connection, event_id: int | None = None) -> int:
    """Move dead events (all, or the one with *event_id*) back to the outbox under
    their own ids, due at once with no attempts counted. The number moved."""
    where, params = ("", ()) if event_id is None else (" WHERE id = ?", (event_id,))
    moved = conn.execute(_REPLAY + where, params).rowcount
    conn.execute("DELETE FROM dead_letters" + where, params)
    return int(moved)


def pending_events(conn: sqlite3.Connection) -> list[Event]:
    return [
        Event(
            id=i,
            event=e,
            selector=s,
            registration=json.loads(r),
            occurred_at=o,
            attempts=a,
            next_attempt_at=n,
            last_error=err,
        )
        for i, e, s, r, o, a, n, err in conn.execute(_PENDING).fetchall()
    ]


def dead_events(conn: sqlite3.Connection) -> list[DeadEvent]:
    return [
        DeadEvent(
            id=i,
            event=e,
            selector=s,
            registration=json.loads(r),
            occurred_at=o,
            attempts=a,
            last_error=err,
            failed_at=f,
        )
        for i, e, s, r, o, a, err, f in conn.execute(_DEAD).fetchall()
    ]


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(pending, dead)``."""
    pending = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    return int(pending), int(dead)
