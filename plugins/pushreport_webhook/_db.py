"""The outbox file: one SQLite file (WAL mode) holding the registrations, the events
waiting to be delivered and the dead letters, so that a registration change and its
event are committed by one transaction.

One connection per thread, opened on first use (and again in a child after
``fork()``: SQLite forbids using the parent's). Every write is one ``BEGIN IMMEDIATE``
transaction, which takes the write lock before it reads, so a read-decide-write inside
it is atomic against every other process; a lock held longer than *busy_timeout*
seconds, or any failure of the file, raises :class:`~pushreport_core.StorageUnavailable`
with a short message (no SQL, no value, no path).

The ``registrations`` table is the one the SQLite backend's files have (the same
columns and index, ``PRAGMA user_version = 1``), so that an outbox written by an earlier
pushreport opens as it was.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import attrs

from pushreport.storage import NO_DATABASE_HINT, StorageStarting
from pushreport_core import REGISTRATION_FIELDS, Registration, StorageUnavailable, format_time

from ._outbox import OUTBOX_SCHEMA

T = TypeVar("T")

__all__ = [
    "OutboxDatabase",
    "SYNCHRONOUS",
    "DEFAULT_BUSY_TIMEOUT",
    "MAX_BUSY_TIMEOUT",
    "COLUMNS",
    "decode",
    "encode",
    "db_time",
]

#: ``[storage.webhook] synchronous``: "normal" survives a crash of the process (WAL),
#: "full" also a power loss (an fsync before every answer).
SYNCHRONOUS = ("normal", "full")
DEFAULT_BUSY_TIMEOUT = 2.0
#: A request waiting longer than this for a lock is worth less than a 503.
MAX_BUSY_TIMEOUT = 60.0
#: ``PRAGMA user_version`` of a file with the registrations and the outbox.
SCHEMA_VERSION = 1
_WAL_SIZE_LIMIT = 16 << 20

#: The registrations' columns, in :data:`REGISTRATION_FIELDS` order (:func:`decode`).
COLUMNS = ", ".join(REGISTRATION_FIELDS)
_SELECTOR = REGISTRATION_FIELDS[0]
# Untyped columns but the key: every row is written from a Registration (encode), so
# none is ever null where the SQLite backend's schema says NOT NULL.
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS registrations ({_SELECTOR} TEXT NOT NULL PRIMARY KEY, "
    + ", ".join(REGISTRATION_FIELDS[1:])
    + ")",
    "CREATE INDEX IF NOT EXISTS registrations_username ON registrations (username, selector)",
    *OUTBOX_SCHEMA,
)
# A write that changes nothing: it waits for the write lock like a write and fails on a
# read-only file (a bare BEGIN IMMEDIATE does not, in WAL mode).
PING = "DELETE FROM registrations WHERE 0"

_LOCKED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
# Short messages by SQLite primary result code.
_MESSAGES = {
    sqlite3.SQLITE_READONLY: "sqlite database is read-only",
    sqlite3.SQLITE_IOERR: "sqlite disk I/O error",
    sqlite3.SQLITE_CORRUPT: "sqlite database file is corrupt",
    sqlite3.SQLITE_FULL: "sqlite database or disk is full",
    sqlite3.SQLITE_CANTOPEN: "sqlite database file cannot be opened",
    sqlite3.SQLITE_NOTADB: "sqlite database file is not a database",
    sqlite3.SQLITE_PERM: "sqlite database access is denied",
}
# Why a file could not be opened, for the person at the terminal (open()).
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
    """An existing file without the outbox, opened without creating."""


def db_time(value: datetime) -> str:
    """*value* as stored: ISO 8601 in UTC, fixed width, so that text order is time
    order (``last_seen < ?`` compares instants)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"must be an aware datetime, got {value!r}")
    return format_time(value)


def encode(registration: Registration) -> dict[str, Any]:
    """A row's parameters: :meth:`Registration.to_json`, ``extra`` as JSON text."""
    row = registration.to_json()
    row["extra"] = json.dumps(
        row["extra"], ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )
    return row


def decode(row: tuple[Any, ...]) -> Registration:
    """The registration of a row read as :data:`COLUMNS`."""
    values = dict(zip(REGISTRATION_FIELDS, row))
    try:
        values["extra"] = json.loads(values["extra"] or "{}")
        return Registration.from_json(values)
    except (TypeError, ValueError) as exc:
        raise StorageUnavailable("sqlite database holds a row that cannot be read") from exc


def _path_problem(path: Path, *, create: bool) -> str | None:
    """Why no database can be opened at *path*, in words that follow "sqlite database
    PATH"; ``None`` when nothing is wrong with the path itself."""
    if path.is_dir():
        return ": it is a folder, not a file"
    if path.exists():
        if not os.access(path, os.R_OK):
            return ": permission denied"
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
    return None


@attrs.define(eq=False)
class OutboxDatabase:
    """The outbox's SQLite file (see the module)."""

    path: Path = attrs.field(converter=Path)
    synchronous: str = "normal"
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    #: Create the file and its tables when missing; ``False``: a missing file, or one
    #: without the outbox, is an error.
    create: bool = True
    _local: threading.local = attrs.field(init=False, factory=threading.local, repr=False)
    _schema_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _schema_ready: bool = attrs.field(init=False, default=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    # Connections inherited through fork(): the child only keeps them from being
    # collected (closing one would touch the parent's locks).
    _inherited: list[sqlite3.Connection] = attrs.field(init=False, factory=list, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {self.synchronous!r}")
        if not 0 <= self.busy_timeout <= MAX_BUSY_TIMEOUT:
            raise ValueError(
                f"busy_timeout must be 0 to {MAX_BUSY_TIMEOUT:g} seconds, "
                f"not {self.busy_timeout!r}"
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        """Open the file now; with *create*, create what is missing and check that it
        can be written. A failure names the path and the reason."""
        where = f"sqlite database {self.path}"
        problem = _path_problem(self.path, create=self.create)
        if problem is not None:
            prefix = "cannot open " if problem.startswith(":") else ""
            raise StorageUnavailable(f"{prefix}{where}{problem}")
        try:
            self.connection()
            if self.create:
                self.read(lambda conn: conn.execute(PING).fetchall())
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
            reason = _OPEN_REASONS.get(primary, "sqlite failed") if primary else str(exc)
            raise StorageUnavailable(f"cannot open {where}: {reason}") from None

    # -- connections ---------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one in a child after ``fork()``)."""
        if self._closed:
            raise StorageUnavailable("sqlite storage is closed")
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == os.getpid():
                return conn
            self._inherited.append(conn)
            local.conn = None
        conn = self._connect()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.create:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        else:  # mode=rw: SQLite opens an existing file and never creates one
            uri = f"{self.path.absolute().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            if not self._schema_ready:
                with self._schema_lock:
                    if not self._schema_ready:
                        self._create_schema(conn)
                        self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"sqlite database schema version {version} is newer "
                f"than this pushreport's ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION and self._has_outbox(conn):
            return
        if not self.create:
            raise _NoData("sqlite database holds no webhook outbox")
        self._switch_to_wal(conn)
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
        try:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _has_outbox(conn: sqlite3.Connection) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'"
            ).fetchone()
            is not None
        )

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, recorded in the file. SQLite answers
        SQLITE_BUSY at once, without its busy handler, while another connection holds
        a lock (workers starting together on a new file): retried until
        *busy_timeout*."""
        deadline = time.monotonic() + self.busy_timeout
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code not in _LOCKED or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _drop_connection(self) -> None:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            local.conn = None
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _unavailable(self, exc: sqlite3.Error) -> StorageUnavailable:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in _LOCKED:
            return StorageUnavailable(
                "sqlite database is locked", retry_after=max(1, math.ceil(self.busy_timeout))
            )
        # Anything else may stick to the connection (one that met a read-only file
        # stays read-only): the next call opens a new one.
        self._drop_connection()
        message = _MESSAGES.get(primary, "sqlite database failed") if primary else None
        return StorageUnavailable(message or "sqlite database failed")

    # -- work ----------------------------------------------------------------------------

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* on this thread's connection, outside a transaction."""
        try:
            return work(self.connection())
        except sqlite3.ProgrammingError:
            raise  # our bug, not the database's
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* in one ``BEGIN IMMEDIATE`` transaction; roll back on any failure."""
        try:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc
        return result

    def rows(self, sql: str, params: Any = ()) -> list[Any]:
        """The rows of one statement, outside a transaction."""
        return self.read(lambda conn: conn.execute(sql, params).fetchall())

    def pages(self, page_size: int) -> Iterator[tuple[Any, ...]]:
        """Every registration row in selector order, *page_size* at a time: no
        statement stays open between pages."""
        first = f"SELECT {COLUMNS} FROM registrations ORDER BY selector LIMIT ?"
        after = f"SELECT {COLUMNS} FROM registrations WHERE selector > ? ORDER BY selector LIMIT ?"
        rows = self.rows(first, (page_size,))
        while True:
            yield from rows
            if len(rows) < page_size:
                return
            rows = self.rows(after, (rows[-1][0], page_size))

    def release_thread_connection(self) -> None:
        """Close this thread's connection (a thread that ends: the deliverer's)."""
        self._drop_connection()

    def close(self) -> None:
        """Close this thread's connection; other threads' close as they are collected."""
        self._closed = True
        self._drop_connection()
        self._local = threading.local()
