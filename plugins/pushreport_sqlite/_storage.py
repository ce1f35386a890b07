"""The SQLite storage backend: one file, WAL mode, the merge rule done by one statement.

With ``spool = true`` (the default) its factory wraps it in the report spool
(:class:`pushreport.spool.SpooledStorage`), for which it records the spool's progress
in the table ``pushreport_spool``, in each batch's transaction (:meth:`SQLiteStorage.
apply_spooled`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import operator
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, TypeVar, overload

import attrs

from pushreport import spool
from pushreport.limitstate import SQLiteLimitState
from pushreport.storage import (
    NO_DATABASE_HINT,
    BackendOptions,
    Capability,
    SpooledBatch,
    Storage,
    StorageContext,
    StorageStarting,
)
from pushreport_core import (
    MERGE_POLICY,
    REGISTRATION_FIELDS,
    REPORTED_FIELDS,
    Policy,
    Registration,
    Report,
    StorageUnavailable,
    format_time,
)

T = TypeVar("T")

log = logging.getLogger("pushreport.sqlite")

__all__ = [
    "SQLiteStorage",
    "SCHEMA_VERSION",
    "DEFAULT_PATH",
    "SYNCHRONOUS",
    "DEFAULT_BUSY_TIMEOUT",
    "MAX_BUSY_TIMEOUT",
    "flock_within",
]

#: ``PRAGMA user_version`` of the schema below.
SCHEMA_VERSION = 1
#: ``[storage.sqlite] path`` when unset, relative to the configuration's folder.
DEFAULT_PATH = "pushreport.sqlite3"
#: ``[storage.sqlite] synchronous``: "normal" survives a process crash (WAL), "full"
#: also a power loss (fsync before the answer).
SYNCHRONOUS = ("normal", "full")
DEFAULT_BUSY_TIMEOUT = 2.0
#: A request thread waiting longer than this for a lock is worth less than a 503: the
#: app retries any non-2xx answer.
MAX_BUSY_TIMEOUT = 60.0
#: Rows fetched per query while iterating, so that ``iter(storage)`` never loads the
#: whole table and holds no statement open between pages.
PAGE_SIZE = 256

OPTIONS_DOC = {
    "path": "the database file, relative to the configuration file's folder (default "
    "pushreport.sqlite3); created with its folder's permissions",
    "synchronous": '"normal" (default: a report answered 200 survives a crash of the '
    'process; WAL mode) or "full" (an fsync before every answer: it also '
    "survives a power loss)",
    "busy_timeout": "seconds any wait for a lock may last (SQLite's write lock, the writers' "
    "turn on <path>.writers): after it a write is answered 503 and /readyz fails, "
    "a read command fails (default 2; 0 to 60)",
    "checkpoint_interval": "seconds between WAL checkpoints taken by a background thread, "
    "off the request path (default 1; 0: SQLite checkpoints inside "
    "a write)",
    # The report spool's (pushreport.spool), as for any backend that offers it.
    **spool.options_doc(folder="<path>.spool/", fsync="when synchronous is full"),
}
_OPTIONS = tuple(OPTIONS_DOC)
#: Polling the writers' turn while it is held: the first wait, and the longest.
_LOCK_POLL = (0.0001, 0.005)
#: ``[storage.sqlite] checkpoint_interval``: seconds between WAL checkpoints taken by a
#: background thread, off the request path. 0 leaves them to SQLite, which runs one
#: inside whichever write crosses 1000 pages of WAL (measured: as costly as the upsert).
DEFAULT_CHECKPOINT_INTERVAL = 1.0
#: Pages of WAL after which a write checkpoints anyway, should the background thread
#: fall behind: a bound on the WAL file, not the normal path.
_FALLBACK_AUTOCHECKPOINT = 20000
#: Bytes the WAL file is cut back to when it starts over after a checkpoint: without a
#: limit, a WAL that grew during a burst (87 MiB in bench/growth.py) keeps that size on
#: disk for good. SQLite reuses the file from its start, so the limit costs nothing.
WAL_SIZE_LIMIT = 16 << 20

_COLUMNS = ", ".join(REGISTRATION_FIELDS)  # the order _decode reads a row in

# Times are stored as ISO 8601 in UTC with exactly six fractional digits, so that text
# order is time order and MIN()/MAX() below compare instants correctly.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS registrations (
    selector    TEXT NOT NULL PRIMARY KEY,
    username    TEXT,
    token_calls TEXT,
    appid_calls TEXT,
    token_msgs  TEXT,
    appid_msgs  TEXT,
    extra       TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
    user_agent  TEXT,
    first_seen  TEXT NOT NULL,  -- ISO 8601 UTC, e.g. 2024-05-01T12:00:00.000000Z
    last_seen   TEXT NOT NULL,
    reports     INTEGER NOT NULL
)""",
    # (username, selector): find() by username returns rows in selector order
    # straight from the index, without a sort.
    "CREATE INDEX IF NOT EXISTS registrations_username ON registrations (username, selector)",
)

# The merge rule of pushreport_core.merge, done by the database in one atomic statement,
# built from the core's table (MERGE_POLICY) through SQLite's way of writing each policy:
# "a null value for pushTokenOther" (the iOS delay) never erases a stored value.
# registrations.<column> is the stored value, excluded.<column> the report's.
#: A new row's value of a column, by its policy.
NEW_SQL: Mapping[Policy, str] = {
    Policy.KEY: ":{c}",
    Policy.KEEP_KNOWN: ":{c}",
    Policy.MERGE_EXTRA: ":{c}",
    Policy.EARLIEST: ":now",
    Policy.LATEST: ":now",
    Policy.COUNT: "1",
}
#: A stored row's new value of a column, by its policy (the key is the conflict target).
MERGE_SQL: Mapping[Policy, str] = {
    Policy.KEEP_KNOWN: "COALESCE(excluded.{c}, registrations.{c})",
    Policy.MERGE_EXTRA: "json_patch(registrations.{c}, excluded.{c})",
    # Text order is time order: times are stored with a fixed width (format_time).
    Policy.EARLIEST: "MIN(registrations.{c}, excluded.{c})",
    Policy.LATEST: "MAX(registrations.{c}, excluded.{c})",
    Policy.COUNT: "registrations.{c} + 1",
}
_KEY = next(c for c, policy in MERGE_POLICY.items() if policy is Policy.KEY)
_SET_SEPARATOR = ",\n    "


def _upsert(keep: str | None = None, *, batch: bool = False) -> str:
    """The upsert of one report; with *keep*, one that sets every column but *keep*
    and changes nothing (no row) when the report would change *keep*. With *batch*,
    the upsert of every report of a JSON array (bound as its one parameter) of spool
    lines' values (:data:`SPOOLED_VALUES`), one after the other in the array's order,
    in one statement."""
    sets = _SET_SEPARATOR.join(
        f"{c} = {MERGE_SQL[policy].format(c=c)}"
        for c, policy in MERGE_POLICY.items()
        if policy is not Policy.KEY and c != keep
    )
    where = (
        ""
        if keep is None
        else f"\nWHERE excluded.{keep} IS NULL OR excluded.{keep} = registrations.{keep}"
    )
    values = ", ".join(NEW_SQL[policy].format(c=c) for c, policy in MERGE_POLICY.items())
    if batch:
        # Each :name is the array element's value at that name's place. The WHERE
        # (which also tells SQLite's parser that ON CONFLICT belongs to the INSERT)
        # takes only elements that are reports: a caller compares the rows changed
        # with the elements given.
        values = _PARAMETER.sub(
            lambda m: f"json_extract(spooled.value, '$[{SPOOLED_VALUES.index(m[1])}]')", values
        )
        source = f"SELECT {values} FROM json_each(?) AS spooled WHERE {_SPOOLED_CHECK}"
    else:
        source = f"VALUES ({values})"
    return f"""INSERT INTO registrations ({_COLUMNS})
{source}
ON CONFLICT ({_KEY}) DO UPDATE SET
    {sets}{where}
RETURNING {_COLUMNS}"""


#: A report's values as :data:`UPSERT_BATCH` reads them from each array element: the
#: spool line's (:data:`pushreport.spool.FIELDS`: the stored fields, extra as JSON text,
#: then when it came).
SPOOLED_VALUES: tuple[str, ...] = spool.FIELDS
_PARAMETER = re.compile(r":(\w+)")


def _spooled_check() -> str:
    """The condition an array element of :data:`UPSERT_BATCH` meets to be a report's
    values: an array of text or null (text where the column is NOT NULL), extra a JSON
    object of text in text."""
    # (spooled.value: a bare "value" in the subquery below would be its json_each's.)
    extra = f"json_extract(spooled.value, '$[{SPOOLED_VALUES.index('extra')}]')"
    required = {_KEY, "extra", "now"}
    checks = [
        "json_type(spooled.value) = 'array'",
        f"json_array_length(spooled.value) = {len(SPOOLED_VALUES)}",
    ]
    for i, name in enumerate(SPOOLED_VALUES):
        kinds = "('text')" if name in required else "('text', 'null')"
        checks.append(f"json_type(spooled.value, '$[{i}]') IN {kinds}")
    checks += [
        f"json_valid({extra})",
        f"json_type({extra}) = 'object'",
        f"NOT EXISTS (SELECT 1 FROM json_each({extra}) WHERE type <> 'text')",
    ]
    return "\n  AND ".join(checks)


_SPOOLED_CHECK = _spooled_check()
UPSERT = _upsert()
# Nearly every report repeats the username its selector already has. An UPDATE whose SET
# list names username rewrites its entry in the (username, selector) index even when the
# value does not change: two pages per commit instead of one. So the upsert is tried first
# without the username, where it keeps the stored one; when it would change it (or the row
# has none), that statement changes nothing and UPSERT, the whole rule, runs instead. Each
# is one atomic statement: the rule holds whichever writes.
UPSERT_SAME_USERNAME = _upsert(keep="username")
# The same writes, not read back: for a receiver that needs no Registration (no
# pushreport_report_stored hook, no token_owner check). Measured: RETURNING and the
# decode of its row are a fifth of the upsert.
UPSERT_QUIET = UPSERT[: UPSERT.rindex("RETURNING")].rstrip()
UPSERT_SAME_USERNAME_QUIET = UPSERT_SAME_USERNAME[
    : UPSERT_SAME_USERNAME.rindex("RETURNING")
].rstrip()
# A batch of spooled reports in one statement (the whole rule: the two statements above
# would apply a selector's reports out of order when its username changes in between).
# Measured under `pushreport serve`: about a tenth less server CPU per answer than a
# statement per report, most of it the report writers' (the applier thread lets go of
# the GIL once per batch instead of once per report).
UPSERT_BATCH = _upsert(batch=True)
UPSERT_BATCH = UPSERT_BATCH[: UPSERT_BATCH.rindex("RETURNING")].rstrip()
# put_many: a registration stored exactly as given, replacing its selector's row.
PUT = f"""INSERT INTO registrations ({_COLUMNS})
VALUES ({", ".join(f":{c}" for c in REGISTRATION_FIELDS)})
ON CONFLICT ({_KEY}) DO UPDATE SET
    {_SET_SEPARATOR.join(f"{c} = excluded.{c}" for c in REGISTRATION_FIELDS if c != _KEY)}"""
GET = f"SELECT {_COLUMNS} FROM registrations WHERE selector = ?"
FIND_BY_USERNAME = f"SELECT {_COLUMNS} FROM registrations WHERE username = ? ORDER BY selector"
PAGE_FIRST = f"SELECT {_COLUMNS} FROM registrations ORDER BY selector LIMIT ?"
PAGE_AFTER = f"SELECT {_COLUMNS} FROM registrations WHERE selector > ? ORDER BY selector LIMIT ?"
REMOVE = "DELETE FROM registrations WHERE selector = ?"
# forget_token and prune find their rows with a read (a scan: neither last_seen nor the
# tokens are indexed, since every report changes last_seen and each index would cost
# the upsert a third or more), then change them with ONE statement that looks each up
# by key and checks again, so the write lock is held for the keys only, never for a
# scan of the table, and a row reported again in between is left alone.
HOLDERS = "SELECT selector FROM registrations WHERE token_calls = ? OR token_msgs = ?"
FIND_TOKEN = (
    f"SELECT {_COLUMNS} FROM registrations WHERE token_calls = ? OR token_msgs = ? "
    "ORDER BY selector"
)
FORGET = """UPDATE registrations SET
    token_calls = CASE WHEN token_calls = :token THEN NULL ELSE token_calls END,
    token_msgs  = CASE WHEN token_msgs = :token THEN NULL ELSE token_msgs END
WHERE selector IN (SELECT value FROM json_each(:selectors))
  AND (token_calls = :token OR token_msgs = :token)
RETURNING selector"""
# Text order is time order: times have a fixed width (six fractional digits, "Z").
STALE = "SELECT selector FROM registrations WHERE last_seen < ?"
STALE_ROWS = f"SELECT {_COLUMNS} FROM registrations WHERE last_seen < ? ORDER BY selector"
PRUNE = f"""DELETE FROM registrations
WHERE selector IN (SELECT value FROM json_each(:selectors)) AND last_seen < :before
RETURNING {_COLUMNS}"""
# A write that changes nothing: it waits for the write lock like an upsert and fails on
# a read-only file (a bare BEGIN IMMEDIATE does not, in WAL mode).
PING = "DELETE FROM registrations WHERE 0"
# Measured: 40 to 65 ms for a million rows (it reads the smaller username index).
COUNT = "SELECT COUNT(*) FROM registrations"
# How far each spool file has been applied, written in the transaction that applies it:
# every spooled report is applied exactly once, whichever process applies it.
SPOOL_SCHEMA = """CREATE TABLE IF NOT EXISTS pushreport_spool (
    name   TEXT NOT NULL PRIMARY KEY,  -- a file in <path>.spool/
    offset INTEGER NOT NULL            -- bytes of it applied
)"""
SPOOL_APPLIED = "SELECT name, offset FROM pushreport_spool"
SPOOL_ADVANCE = """INSERT INTO pushreport_spool (name, offset) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET offset = excluded.offset"""
SPOOL_FORGET = "DELETE FROM pushreport_spool WHERE name IN (SELECT value FROM json_each(?))"
_PRAGMA_SYNCHRONOUS = {
    "normal": "PRAGMA synchronous = NORMAL",
    "full": "PRAGMA synchronous = FULL",
}

# Short messages by SQLite primary result code: no SQL, no values, no path.
_MESSAGES = {
    sqlite3.SQLITE_READONLY: "sqlite database is read-only",
    sqlite3.SQLITE_IOERR: "sqlite disk I/O error",
    sqlite3.SQLITE_CORRUPT: "sqlite database file is corrupt",
    sqlite3.SQLITE_FULL: "sqlite database or disk is full",
    sqlite3.SQLITE_CANTOPEN: "sqlite database file cannot be opened",
    sqlite3.SQLITE_NOTADB: "sqlite database file is not a database",
    sqlite3.SQLITE_PERM: "sqlite database access is denied",
}
_LOCKED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
# Why a database could not be opened, for the person at the terminal (open()).
_OPEN_REASONS = {
    sqlite3.SQLITE_READONLY: "it is read-only",
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_CORRUPT: "the file is corrupt",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_NOTADB: "not a SQLite database file",
    sqlite3.SQLITE_PERM: "permission denied",
}


class _NoData(StorageUnavailable):
    """An existing SQLite file without pushreport's schema, opened without creating."""


def _connect(path: Path, *, create: bool, timeout: float) -> sqlite3.Connection:
    """A connection in autocommit (``isolation_level=None``: each write below is one
    statement, which SQLite runs as its own transaction and commits when it completes).
    Without *create*, ``mode=rw``: SQLite opens an existing file and never creates one."""
    if create:
        return sqlite3.connect(path, timeout=timeout, isolation_level=None)
    uri = f"{Path(path).absolute().as_uri()}?mode=rw"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def _path_problem(path: Path, *, create: bool) -> str | None:
    """Why no database can be opened at *path*, in words that follow "sqlite database
    PATH"; ``None`` when nothing is wrong with the path itself. Root reads any file, so
    a folder at the path, or a regular file where a folder should be, is what makes a
    database unreadable for it."""
    if path.is_dir():
        return ": it is a folder, not a file"
    if path.exists():
        if not os.access(path, os.R_OK):
            return ": permission denied"
        if create and not os.access(path, os.W_OK):
            return ": it cannot be written (a read-only file, or no permission)"
        if create and not os.access(path.parent, os.W_OK | os.X_OK):
            return (
                f": its folder {path.parent} cannot be written (SQLite keeps the "
                "database's -wal and -shm files beside it)"
            )
        return None
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f": {parent} is not a folder"
            if parent != path.parent:
                return f": its folder {path.parent} does not exist"
            break
    if not create:
        return f" does not exist ({NO_DATABASE_HINT})"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f": permission denied to create it in {path.parent}"
    return None


def _db_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {value!r}")
    return format_time(value)


def _dump_extra(extra: Mapping[str, str]) -> str:
    if not extra:
        return "{}"  # nearly every report: what json.dumps gives, without the call
    return json.dumps(dict(extra), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


#: A report's stored values, in the order of a spool line (its FIELDS, less the time).
_report_values = operator.attrgetter(*REPORTED_FIELDS)
_EXTRA_AT = REPORTED_FIELDS.index("extra")


def _params(report: Report, now: datetime) -> dict[str, Any]:
    return {**report.stored_fields(), "extra": _dump_extra(report.extra), "now": _db_time(now)}


def _put_params(registration: Registration) -> dict[str, Any]:
    # to_json's times are format_time's: the stored form.
    return {**registration.to_json(), "extra": _dump_extra(registration.extra)}


def _decode(row: tuple[Any, ...]) -> Registration:
    # The columns are REGISTRATION_FIELDS in order, times and extra as text: the
    # stored form is to_json's, but for extra.
    values = dict(zip(REGISTRATION_FIELDS, row))
    extra = values["extra"]
    try:
        values["extra"] = {} if extra == "{}" else json.loads(extra)
        return Registration.from_json(values)
    except (TypeError, ValueError) as exc:
        raise StorageUnavailable("sqlite database holds a row that cannot be read") from exc


def _apply_reports(conn: sqlite3.Connection, items: Sequence[tuple[Report, datetime]]) -> int:
    """Merge spooled reports (in the order received) into the table, inside the
    caller's transaction, as ``upsert(..., read_back=False)`` would one by one; how many
    were applied: in one statement (:data:`UPSERT_BATCH`), or, when that fails, one
    report at a time, dropping those that cannot be applied."""
    if not items:
        return 0
    try:
        rows = json.dumps([_spooled_values(r, now) for r, now in items], ensure_ascii=False)
    except (ValueError, TypeError):
        pass  # a value that cannot be bound: found and dropped one by one below
    else:
        if _apply_batch(conn, rows, len(items)):
            return len(items)
    return _apply_one_by_one(conn, items)


def _apply_lines(conn: sqlite3.Connection, lines: Sequence[bytes]) -> bool:
    """Merge the spool's *lines* (:attr:`pushreport.storage.SpooledBatch.lines`, whose
    arrays are :data:`SPOOLED_VALUES`) into the table as they are, in one statement,
    inside the caller's transaction: whether all of them were (else none was, and the
    caller applies the batch's decoded items)."""
    try:
        text = (b"[" + b",".join(lines) + b"]").decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not conn.execute("SELECT json_valid(?)", (text,)).fetchone()[0]:
        return False
    return _apply_batch(conn, text, len(lines))


def _apply_batch(conn: sqlite3.Connection, text: str, count: int) -> bool:
    """:data:`UPSERT_BATCH` of the JSON array *text* of *count* reports' values, under a
    savepoint: whether every one of them was applied (else none was)."""
    conn.execute("SAVEPOINT batch")
    try:
        applied = conn.execute(UPSERT_BATCH, (text,)).rowcount == count
    except (sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError, ValueError):
        applied = False
    if not applied:
        conn.execute("ROLLBACK TO batch")
    conn.execute("RELEASE batch")
    return applied


def _spooled_values(report: Report, now: datetime) -> list[Any]:
    """*report*'s :data:`SPOOLED_VALUES`.

    :raises TypeError: one is neither text nor null (a statement per report would fail
        to bind it, and drop that report alone).
    """
    values = list(_report_values(report))
    values[_EXTRA_AT] = _dump_extra(values[_EXTRA_AT])
    values.append(_db_time(now))
    for value in values:
        if value is not None and type(value) is not str:
            raise TypeError(f"a spooled value of type {type(value).__name__}")
    return values


def _apply_one_by_one(conn: sqlite3.Connection, items: Sequence[tuple[Report, datetime]]) -> int:
    """:func:`_apply_reports`, a statement per report (the batch failed)."""
    n = 0
    for report, now in items:
        try:
            row = _params(report, now)
            if not conn.execute(UPSERT_SAME_USERNAME_QUIET, row).rowcount:
                conn.execute(UPSERT_QUIET, row)
        except (sqlite3.ProgrammingError, sqlite3.IntegrityError, ValueError, TypeError):
            # Checked before it was spooled, so this is a bug; one report lost is
            # better than a spool that never moves again.
            log.exception("a spooled report cannot be applied and is dropped")
            continue
        n += 1
    return n


def _check_synchronous(instance: Any, attribute: Any, value: str) -> None:
    if value not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {value!r}")


def _check_busy_timeout(instance: Any, attribute: Any, value: float) -> None:
    if not 0 <= value <= MAX_BUSY_TIMEOUT:
        raise ValueError(f"busy_timeout must be 0 to {MAX_BUSY_TIMEOUT:g} seconds, not {value!r}")


def flock_within(fd: int, operation: int, timeout: float) -> bool:
    """``flock(fd, operation)``, waiting at most *timeout* seconds: whether it was taken.

    Linux has no timed ``flock``, so a held lock is polled (from 0.1 ms, doubling up to
    5 ms): a holder that never lets go (a stuck process, a careless ``flock`` in a
    shell) costs a waiter *timeout*, never the rest of its life.

    :raises OSError: the lock cannot be taken at all (not a wait).
    """
    delay, longest = _LOCK_POLL
    deadline = None
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        now = time.monotonic()
        if deadline is None:
            deadline = now + timeout
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, longest)


class _TurnFd:
    """A thread's descriptor of ``<path>.writers``, closed when the thread's locals go
    (a readyz probe runs on a thread of its own each time)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __del__(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass


@attrs.define(eq=False)
class SQLiteStorage:
    """A :class:`~pushreport.storage.Storage` in one SQLite file.

    Safe across threads (one connection per thread, opened on first use) and across
    processes (gunicorn workers: SQLite's file locks, WAL mode). Every write is one
    statement committed before the method returns; a lock held longer than
    *busy_timeout* seconds, or any database failure, raises
    :class:`~pushreport_core.StorageUnavailable`.
    """

    #: ``[storage.sqlite]`` options and their meaning (the generated reference).
    OPTIONS_DOC = OPTIONS_DOC

    name = "sqlite"
    #: What this backend declares (:class:`pushreport.storage.Capability`). The report
    #: spool is a wrapper around it (:class:`pushreport.spool.SpooledStorage`), which
    #: declares ``spools`` itself.
    capabilities = frozenset(
        {
            Capability.OPEN,
            Capability.QUIET_UPSERT,
            Capability.UPSERT_MANY,
            Capability.PUT_MANY,
            Capability.COUNT,
            Capability.FIND_TOKEN,
            Capability.FORGET_TOKEN,
            Capability.UPSERT_IF,
            Capability.REMOVE_IF,
            Capability.LIMIT_STATE,
            Capability.SPOOL_TARGET,
            Capability.PATH,
        }
    )

    path: Path = attrs.field(converter=Path)
    synchronous: str = attrs.field(default="normal", validator=_check_synchronous)
    busy_timeout: float = attrs.field(
        default=DEFAULT_BUSY_TIMEOUT, converter=float, validator=_check_busy_timeout
    )
    _local: threading.local = attrs.field(init=False, factory=threading.local, repr=False)
    _schema_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _schema_ready: bool = attrs.field(init=False, default=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    # Connections inherited through fork(): SQLite forbids using (or closing) them in
    # the child, so the child only keeps them from being collected.
    _inherited: list[sqlite3.Connection] = attrs.field(init=False, factory=list, repr=False)
    checkpoint_interval: float = attrs.field(
        default=DEFAULT_CHECKPOINT_INTERVAL, converter=float, kw_only=True
    )
    _checkpointer_pid: int = attrs.field(init=False, default=0, repr=False)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event, repr=False)
    _checkpointer: threading.Thread | None = attrs.field(init=False, default=None, repr=False)
    #: Create the file and its schema when they are missing (``StorageContext.create``);
    #: ``False``: a missing file, or one without pushreport's schema, is an error.
    create: bool = attrs.field(default=True, kw_only=True)
    #: The table ``pushreport_spool`` is known to exist (apply_spooled creates it).
    _spool_table: bool = attrs.field(init=False, default=False, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: StorageContext) -> Storage:
        """The backend for the ``[storage.sqlite]`` table of the configuration.

        Options: ``path`` (default ``pushreport.sqlite3``, relative to
        ``context.base_dir``), ``synchronous`` (``"normal"`` or ``"full"``),
        ``busy_timeout`` (seconds, default 2), ``checkpoint_interval``, and the report
        spool's (:data:`pushreport.spool.OPTIONS_DOC`): with ``spool = true``, the
        default, the storage returned is a :class:`~pushreport.spool.SpooledStorage`
        around the :class:`SQLiteStorage`, its spool in ``<path>.spool/``, every
        append synced when ``synchronous = "full"``. Opens nothing yet.

        :raises ConfigurationError: an unknown option or a value of the wrong type,
            naming ``storage.sqlite.<option>``.
        """
        opts = BackendOptions("sqlite", options, _OPTIONS)
        path = opts.string("path", DEFAULT_PATH, what="a file path (a non-empty string)")
        synchronous = opts.string("synchronous", "normal", choices=SYNCHRONOUS)
        busy_timeout = opts.number(
            "busy_timeout", DEFAULT_BUSY_TIMEOUT, low=0, high=MAX_BUSY_TIMEOUT
        )
        interval = opts.number(
            "checkpoint_interval", DEFAULT_CHECKPOINT_INTERVAL, low=0, high=3600
        )
        storage = cls(
            path=Path(context.base_dir, path),
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            checkpoint_interval=interval,
            create=context.create,
        )
        return spool.SpooledStorage.from_options(
            storage,
            opts,
            folder=Path(f"{storage.path}.spool"),
            fsync=synchronous == "full",
        )

    def open(self) -> None:
        """Open the database now, and with *create* check that it can be written (it is
        then created, with its schema, when missing); a failure names the path and the
        reason (see :meth:`~pushreport.storage.Storage`)."""
        where = f"sqlite database {self.path}"
        problem = _path_problem(self.path, create=self.create)
        if problem is not None:
            prefix = "cannot open " if problem.startswith(":") else ""
            raise StorageUnavailable(f"{prefix}{where}{problem}")
        try:
            self._connection()
            if self.create:
                self._run(PING)
        except _NoData:
            raise StorageUnavailable(f"no pushreport data in {where}") from None
        except StorageUnavailable as exc:
            kind = StorageStarting if "locked" in str(exc) else StorageUnavailable
            raise kind(f"cannot open {where}: {exc}", retry_after=exc.retry_after) from None
        except sqlite3.DatabaseError as exc:
            self._drop_connection()
            code = getattr(exc, "sqlite_errorcode", None)
            primary = None if code is None else code & 0xFF
            if primary in _LOCKED:
                raise StorageStarting(f"cannot open {where}: it is locked") from None
            reason = (
                _OPEN_REASONS.get(primary, "sqlite failed") if primary is not None else str(exc)
            )
            raise StorageUnavailable(f"cannot open {where}: {reason}") from None

    # -- connections -------------------------------------------------------------

    def _unavailable(self, exc: sqlite3.Error) -> StorageUnavailable:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in _LOCKED:
            return self._locked()
        # Anything else may stick to the connection: one that opened (or met) a
        # read-only file stays read-only after the file is writable again. The next
        # call opens a new one, which sees the file as it is then.
        self._drop_connection()
        message = (
            _MESSAGES.get(primary, "sqlite database failed")
            if primary is not None
            else "sqlite database failed"
        )
        return StorageUnavailable(message)

    def _locked(self) -> StorageUnavailable:
        """A lock (SQLite's, or the writers' turn) was not had within busy_timeout."""
        return StorageUnavailable(
            "sqlite database is locked", retry_after=max(1, math.ceil(self.busy_timeout))
        )

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailable("sqlite storage is closed")
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == os.getpid():
                return conn
            self._inherited.append(conn)
            local.conn = None
        conn = self._open()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _drop_connection(self) -> None:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            local.conn = None
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self.path, create=self.create, timeout=self.busy_timeout)
        try:
            conn.execute(_PRAGMA_SYNCHRONOUS[self.synchronous])
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            if self.checkpoint_interval > 0:
                conn.execute(f"PRAGMA wal_autocheckpoint = {_FALLBACK_AUTOCHECKPOINT}")
            if not self._schema_ready:
                with self._schema_lock:
                    if not self._schema_ready:
                        self._create_schema(conn)
                        self._schema_ready = True
            if self.checkpoint_interval > 0:  # once the file is known to be a database
                self._start_checkpointer()
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_checkpointer(self) -> None:
        """One daemon thread per process checkpoints the WAL every *checkpoint_interval*
        seconds, so that requests only append to it. PASSIVE: it never waits for, nor
        blocks, a writer; what it cannot copy now it copies next time."""
        pid = os.getpid()
        if self._checkpointer_pid == pid:
            return
        with self._schema_lock:
            if self._checkpointer_pid == pid:
                return
            self._checkpointer_pid = pid
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._checkpoint_loop,
                args=(self._stop,),
                name="pushreport-sqlite-checkpoint",
                daemon=True,
            )
            thread.start()
            self._checkpointer = thread

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not stop.wait(self.checkpoint_interval):
                try:
                    if conn is None:
                        conn = _connect(self.path, create=False, timeout=0)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or broken now: the next round tries again
        finally:
            if conn is not None:
                conn.close()

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"sqlite database schema version {version} is newer "
                f"than this pushreport's ({SCHEMA_VERSION})"
            )
        if version == 0 and not self.create:
            raise _NoData("sqlite database holds no pushreport data")
        self._switch_to_wal(conn)
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, persistent: recorded in the file.

        SQLite answers SQLITE_BUSY at once, without its busy handler, while another
        connection holds a lock (workers starting together on a new file), so retry
        here until *busy_timeout*.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code not in _LOCKED or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _run(self, sql: str, params: Any = (), *, rowcount: bool = False) -> Any:
        """Run one statement to completion on this thread's connection.

        Returns its rows, or with *rowcount* the number of rows it changed.
        """
        try:
            cursor = self._connection().execute(sql, params)
            # Stepping to the end completes (and, in autocommit, commits) the statement.
            rows = cursor.fetchall()
            return cursor.rowcount if rowcount else rows
        except sqlite3.ProgrammingError:
            raise  # our bug, not the database's
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc

    # -- Storage -------------------------------------------------------------------

    @overload
    def upsert(
        self, report: Report, *, now: datetime, read_back: Literal[True] = True
    ) -> Registration: ...

    @overload
    def upsert(self, report: Report, *, now: datetime, read_back: bool) -> Registration | None: ...

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        """Merge *report* into its selector's row in one statement; committed on return.

        With ``read_back=False`` (``quiet_upsert``), the row is not read back and
        ``None`` is returned: the same statement and commit without ``RETURNING``,
        after waiting for the writers' turn (see :meth:`_write_turn`). The account
        password (``report.password``) is not a column: it is never written.
        """
        if not read_back:
            self._upsert_quiet(report, now)
            return None
        params = _params(report, now)
        rows = self._run(UPSERT_SAME_USERNAME, params) or self._run(UPSERT, params)
        return _decode(rows[0])

    def _upsert_quiet(self, report: Report, now: datetime) -> None:
        params = _params(report, now)
        with self._write_turn():
            if not self._run(UPSERT_SAME_USERNAME_QUIET, params, rowcount=True):
                self._run(UPSERT_QUIET, params)

    # -- the report spool's capability (pushreport.storage.SpoolTarget) ----------------

    def spool_marks(self) -> dict[str, int]:
        """How far each spool file is applied, read without taking the write lock
        (the database is opened, and created when allowed, first)."""
        if not self._spool_table:
            try:
                return dict(self._connection().execute(SPOOL_APPLIED).fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return {}  # created by the first batch
                raise self._unavailable(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise self._unavailable(exc) from exc
        return dict(self._run(SPOOL_APPLIED))

    def apply_spooled(self, take: Callable[[Mapping[str, int]], SpooledBatch]) -> int:
        """Apply one batch of the report spool and record its marks in the table
        ``pushreport_spool``, in one ``BEGIN IMMEDIATE`` transaction taken in the
        writers' turn (each wait bounded by *busy_timeout*); see
        :meth:`pushreport.storage.SpoolTarget.apply_spooled`."""

        def work(conn: sqlite3.Connection) -> int:
            if not self._spool_table:
                conn.execute(SPOOL_SCHEMA)
            batch = take(dict(conn.execute(SPOOL_APPLIED).fetchall()))
            # The lines as the spool read them, without decoding them, when they are
            # all reports (measured: decoding and encoding them again cost the applier
            # thread ~15 µs per report, holding the GIL the event loop wants).
            lines = batch.lines
            if lines and _apply_lines(conn, lines):
                n = len(lines)
            else:
                n = _apply_reports(conn, batch.items)
            conn.executemany(SPOOL_ADVANCE, batch.marks.items())
            if batch.forget:
                conn.execute(SPOOL_FORGET, (json.dumps(list(batch.forget)),))
            return n

        with self._write_turn():
            count = self._transaction(work)
        self._spool_table = True
        return count

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """Queue for this writer's turn on ``<path>.writers``, an ``flock`` that the
        report writers of every process and thread take before their statement.

        A scheduling hint, not the lock that keeps the data right (SQLite's is): a
        writer that finds the database locked sleeps and polls inside SQLite (1 ms,
        then longer), so two gunicorn workers writing at once lose much of their time
        asleep. Measured in-process, two processes: 10,400 -> 14,200 reports/s with a
        blocking ``flock``.

        The turn is held for one statement, whose own wait for SQLite's lock is
        bounded by ``busy_timeout``; a holder that dies releases it with its
        descriptors. The wait for the turn is bounded by ``busy_timeout`` too (a
        holder that never lets go, another process's or a shell's ``flock``): after
        it, :class:`StorageUnavailable` ("locked"), and the writes answer 503. Linux
        has no timed ``flock``, so the turn is polled (:func:`flock_within`: 0.1 ms,
        doubling up to 5 ms); measured against the blocking wait, two processes with
        ``spool = false`` upserting 4,000 reports each: 31,000-32,600 reports/s polled,
        22,500-30,700 blocking (three runs each, a shared machine). When the lock file
        cannot be opened (a read-only folder) the write goes on without a turn and
        SQLite's locking decides, as before.
        """
        fd = self._turn_fd()
        got = False
        if fd is not None:
            try:
                got = flock_within(fd, fcntl.LOCK_EX, self.busy_timeout)
            except OSError:
                pass  # cannot be locked at all: go on without a turn
            else:
                if not got:
                    raise self._locked()
        try:
            yield
        finally:
            if got:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
                except OSError:
                    pass

    def _turn_fd(self) -> int | None:
        """This thread's descriptor of ``<path>.writers`` (one per thread, so that
        threads queue too); ``None`` when it cannot be opened."""
        local = self._local
        if getattr(local, "turn_pid", None) == os.getpid():
            fd: int | None = local.turn.fd
            return fd
        try:
            fd = os.open(f"{self.path}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            fd = None
        # (After a fork the parent's descriptor, inherited, is closed as the child's
        # object goes: a lock lasts while any duplicate of it is open, see flock(2).)
        local.turn, local.turn_pid = _TurnFd(fd), os.getpid()
        return fd

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every ``(report, now)`` in one transaction: one commit, one fsync.

        All or nothing: on failure nothing of the batch is stored and
        ``StorageUnavailable`` is raised. Reports of one selector are merged in order.
        """

        def work(conn: sqlite3.Connection) -> list[Any]:
            rows = []
            for report, now in items:
                params = _params(report, now)
                rows.append(
                    conn.execute(UPSERT_SAME_USERNAME, params).fetchone()
                    or conn.execute(UPSERT, params).fetchone()
                )
            return rows

        return [_decode(row) for row in self._transaction(work)]

    def put_many(self, registrations: Sequence[Registration]) -> None:
        """Store *registrations* exactly as given (``first_seen``, ``last_seen`` and
        ``reports`` included), replacing any row of the same selector, in one
        transaction: one commit, one fsync. All or nothing."""
        params = [_put_params(r) for r in registrations]
        if params:
            self._transaction(lambda conn: conn.executemany(PUT, params))

    def upsert_if(
        self,
        report: Report,
        *,
        now: datetime,
        allowed: Callable[[Registration | None], bool],
    ) -> Registration | None:
        """:meth:`upsert`, unless ``allowed(the stored registration or None)`` is false:
        then nothing is written and ``None`` returned. The read, the decision and the
        write are one ``BEGIN IMMEDIATE`` transaction, so no other writer of any process
        comes between. Committed on return (a spool in front applies itself first, so
        the decision sees every report answered before)."""
        params = _params(report, now)

        def work(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(GET, (report.selector,)).fetchone()
            if not allowed(None if row is None else _decode(row)):
                return None
            return _decode(conn.execute(UPSERT, params).fetchone())

        return self._transaction(work)

    def remove_if(
        self, selector: str, allowed: Callable[[Registration | None], bool]
    ) -> Registration | None:
        """Delete the registration of *selector* if ``allowed(it, or None)`` is true, in
        one transaction as :meth:`upsert_if`; the registration deleted, or ``None``."""

        def work(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(GET, (selector,)).fetchone()
            stored = None if row is None else _decode(row)
            if not allowed(stored) or stored is None:
                return None
            conn.execute(REMOVE, (selector,))
            return stored

        return self._transaction(work)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* in one ``BEGIN IMMEDIATE`` transaction; roll back on any failure."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.ProgrammingError:
            raise  # our bug, not the database's
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc
        return result

    def get(self, selector: str) -> Registration | None:
        rows = self._run(GET, (selector,))
        return _decode(rows[0]) if rows else None

    def find(self, *, username: str | None = None) -> list[Registration]:
        if username is None:
            return list(self)
        return [_decode(row) for row in self._run(FIND_BY_USERNAME, (username,))]

    def __iter__(self) -> Iterator[Registration]:
        # Keyset pages: no statement stays open between yields, so a caller may
        # remove() while iterating and each removal commits at once.
        rows = self._run(PAGE_FIRST, (PAGE_SIZE,))
        while True:
            for row in rows:
                yield _decode(row)
            if len(rows) < PAGE_SIZE:
                return
            rows = self._run(PAGE_AFTER, (rows[-1][0], PAGE_SIZE))

    def remove(self, selector: str) -> bool:
        changed: int = self._run(REMOVE, (selector,), rowcount=True)
        return changed > 0

    def count(self) -> int:
        """How many registrations are stored (the ``pushreport_registrations`` gauge)."""
        ((n,),) = self._run(COUNT)
        return int(n)

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* where it is held (in *selector*'s row only, when given), except
        in *keep*'s row: one UPDATE, committed on return. The selectors changed, sorted."""
        if selector is None:
            selectors = [row[0] for row in self._run(HOLDERS, (token, token))]
        else:
            selectors = [selector]
        selectors = [s for s in selectors if s != keep]
        if not selectors:
            return []
        rows = self._run(FORGET, {"token": token, "selectors": json.dumps(selectors)})
        return sorted(row[0] for row in rows)

    def find_token(self, token: str) -> list[Registration]:
        """Registrations holding *token* (as ``token_calls`` or ``token_msgs``), by
        selector. A scan: tokens are not indexed."""
        return [_decode(row) for row in self._run(FIND_TOKEN, (token, token))]

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete the rows last seen before *before*: one DELETE, committed on return.
        The registrations deleted (with *dry_run*: that would be), by selector."""
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")
        cutoff = _db_time(before)
        if dry_run:
            return [_decode(row) for row in self._run(STALE_ROWS, (cutoff,))]
        selectors = [row[0] for row in self._run(STALE, (cutoff,))]
        if not selectors:
            return []
        rows = self._run(PRUNE, {"selectors": json.dumps(selectors), "before": cutoff})
        return sorted((_decode(row) for row in rows), key=lambda r: r.selector)

    def limit_state(self) -> SQLiteLimitState:
        """The limits' shared state, in the SQLite file ``<path>.limits`` beside the
        database: every process of this host counts together
        (:mod:`pushreport.limitstate`)."""
        return SQLiteLimitState(Path(f"{self.path}.limits"))

    def ping(self) -> None:
        """Take and release the writers' turn and the write lock, as a write would:
        fails on a locked, read-only or broken file, each wait bounded by
        *busy_timeout*."""
        with self._write_turn():
            self._run(PING)

    def close(self) -> None:
        """Close this thread's connection; other threads' close as they are collected."""
        self._closed = True
        self._stop.set()
        checkpointer = self._checkpointer
        if (
            checkpointer is not None
            and self._checkpointer_pid == os.getpid()
            and checkpointer is not threading.current_thread()
        ):
            # Gone before close() returns: `pushreport serve` opens the database in the
            # master to check it, then forks, and a fork while this thread is inside
            # SQLite would hand the workers its mutexes locked.
            checkpointer.join(timeout=5)
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()
