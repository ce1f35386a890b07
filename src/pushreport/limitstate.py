"""The shared state of the limits: what every worker of ``pushreport serve``, every
restart, and every host that shares a database sees alike.

Rate limits, the lock-out and Digest nonce counts only hold for a whole server when
its processes count together. :class:`LimitState` is the small protocol they count
through: atomic operations on keys, each one statement in the store. Two
implementations ship: :class:`SQLiteLimitState` on a SQLite file (every worker of one
host, and its restarts) and the PostgreSQL backend's, on a table beside its
registrations (every host that shares the database). Which one a server uses is
decided once, at start-up (``pushreport._limits.open_limit_state``): a storage
backend may provide one (``limit_state()``, :mod:`pushreport.storage`).

Times are seconds since the epoch (``time.time()``), passed in by the caller: hosts
sharing a store need clocks in step (NTP), as they already do for Digest nonces.

Every operation that cannot reach its store raises
:class:`~pushreport_core.StorageUnavailable`: the request is answered ``503`` with
``Retry-After``, never let through unlimited.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import attrs

from pushreport_core import StorageUnavailable

from ._logs import ThrottledLog

__all__ = [
    "StatementLimitState",
    "LimitState",
    "LimitStatements",
    "SQLiteLimitState",
    "DEFAULT_BUSY_TIMEOUT",
    "state_errors",
    "bucket_wait",
    "lock_left",
]

log = logging.getLogger("pushreport.limits")
#: A state that fails every request logs a traceback once a minute, with a count.
_failures = ThrottledLog(log)

#: Seconds an operation of :class:`SQLiteLimitState` waits for another process's
#: write, then ``503``: each write is a few microseconds, so a longer wait means a
#: stuck store, not a busy one.
DEFAULT_BUSY_TIMEOUT = 1.0


@runtime_checkable
class LimitState(Protocol):
    """What the limits need of a shared store. Every method is atomic against the same
    calls from other threads, processes and (for a shared database) hosts, and raises
    ``StorageUnavailable`` when the store cannot answer now.

    Keys of the three kinds (buckets, failures, claims) never collide, whatever their
    text."""

    @property
    def where(self) -> str:
        """Where the state lives, for messages: a file's path or a table's name, never
        a credential."""
        ...

    def take(self, key: str, *, count: int, period: float, now: float) -> float:
        """Take one token from *key*'s bucket: ``count`` tokens, refilled at
        ``count / period`` per second (a burst of *count*). ``0.0`` when taken, else
        the seconds until the next token (more than 0)."""
        ...

    def fail(self, key: str, *, limit: int, window: float, now: float) -> float:
        """Count one failure of *key*. Failures count in a window that starts at the
        first one and lasts *window* seconds; the *limit*-th in one window locks the key
        out for *window* seconds from *now*. Returns the seconds *key* is now locked out
        (``0.0``: not locked)."""
        ...

    def locked(self, key: str, *, limit: int, now: float) -> float:
        """The seconds *key* stays locked out (``0.0``: not locked). A read."""
        ...

    def clear(self, key: str) -> None:
        """Forget the failures of *key* (after a success). Cheap when it has none: it
        is called for every admitted report."""
        ...

    def claim(self, key: str, *, expires: float, now: float) -> bool:
        """Claim *key* until *expires*: ``True`` the first time, ``False`` for every
        later claim until then (a Digest ``(nonce, nc)`` pair: accepted once)."""
        ...

    def purge(self, *, now: float, keep: int) -> int:
        """Delete what has expired, then the buckets and failure counts nearest their
        expiry beyond *keep* of them (claims are only ever deleted expired: an early
        one would allow a replay). Returns how many were deleted. The limiter calls it
        every few seconds per process, so that the store stays bounded."""
        ...

    def count(self) -> int:
        """How many entries the store holds (buckets, failures and claims)."""
        ...

    def close(self) -> None:
        """Release connections. The object is not used afterwards."""
        ...


@contextmanager
def state_errors() -> Iterator[None]:
    """Around calls of a :class:`LimitState`: any failure inside that is not already
    ``StorageUnavailable`` (a bug, a driver's surprise) is logged with its traceback
    and becomes ``StorageUnavailable("limit state failed")``: a ``503``, never a ``500``
    and never a request let through."""
    try:
        yield
    except StorageUnavailable:
        raise
    except Exception as e:
        _failures.error("the limit state failed", exc_info=True)
        raise StorageUnavailable("limit state failed") from e


# --- the statements, once for both SQL stores -----------------------------------------------

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PARAM = re.compile(r":([a-z_]+)")


class LimitStatements:
    """The statements of :class:`LimitState` on one table, for SQLite or PostgreSQL
    (*dialect*): each operation is one atomic statement (``INSERT … ON CONFLICT …
    RETURNING``), so the rules of the token bucket, the lock-out and the claim are
    written once, here, for both stores.

    The table holds one row per kind and key (``name``): ``b`` a token bucket
    (``value`` tokens at time ``stamp``), ``f`` a failure count (``value`` failures),
    ``c`` a claim. A row past ``expires`` is worth nothing (a full bucket, no failure,
    no claim) and may be deleted.

    For PostgreSQL every write commits with ``synchronous_commit = off`` (set for its
    own transaction inside the statement): a server crash may forget the last fraction
    of a second of counts, and no commit waits for a disk flush (measured on loopback:
    360 -> 200 µs per statement).
    """

    def __init__(self, table: str, dialect: str = "sqlite") -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"not a table name: {table!r}")
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"dialect must be sqlite or postgresql, not {dialect!r}")
        self.table, self.dialect = table, dialect
        pg = dialect == "postgresql"
        real = "double precision" if pg else "REAL"
        self.schema = self._sql(
            f"""CREATE TABLE IF NOT EXISTS {{t}} (
    kind    text NOT NULL,
    name    text NOT NULL,
    value   {real} NOT NULL,
    stamp   {real} NOT NULL,
    expires {real} NOT NULL,
    PRIMARY KEY (kind, name)
){"" if pg else " WITHOUT ROWID"}"""
        )
        # The bucket as it is now: refilled since stamp, never above cap. Only when it
        # holds a whole token is the row changed, and only then does RETURNING give a
        # row: no row means refused. The row expires when the bucket is full again.
        tokens = "{least}(:cap, t.value + {greatest}(0, :now - t.stamp) * :rate)"
        self.take = self._sql(
            f"""INSERT INTO {{t}} AS t (kind, name, value, stamp, expires)
SELECT 'b', :name, :cap - 1, :now, :now + 1 / :rate {{source}}
ON CONFLICT (kind, name) DO UPDATE SET
    value = {tokens} - 1,
    stamp = {{greatest}}(t.stamp, :now),
    expires = :now + (:cap - ({tokens} - 1)) / :rate
WHERE {tokens} >= 1
RETURNING 1"""
        )
        self.bucket = self._sql("SELECT value, stamp FROM {t} WHERE kind = 'b' AND name = :name")
        # A window starts at the first failure; the limit-th restarts it from now, and
        # that is how long the key stays locked out.
        self.fail = self._sql(
            """INSERT INTO {t} AS t (kind, name, value, stamp, expires)
SELECT 'f', :name, 1, :now, :now + :window {source}
ON CONFLICT (kind, name) DO UPDATE SET
    value = CASE WHEN t.expires <= :now THEN 1 ELSE t.value + 1 END,
    stamp = :now,
    expires = CASE WHEN t.expires <= :now OR t.value + 1 >= :limit
                   THEN :now + :window ELSE t.expires END
RETURNING value, expires"""
        )
        self.failures = self._sql(
            "SELECT value, expires FROM {t} WHERE kind = 'f' AND name = :name"
        )
        self.clear = self._sql("DELETE FROM {t} WHERE kind = 'f' AND name = :name")
        # Inserted, or taken over once the earlier claim expired: a row back. A live
        # claim is left alone: no row.
        self.claim = self._sql(
            """INSERT INTO {t} AS t (kind, name, value, stamp, expires)
SELECT 'c', :name, 0, :now, :expires {source}
ON CONFLICT (kind, name) DO UPDATE SET stamp = :now, expires = :expires
WHERE t.expires <= :now
RETURNING 1"""
        )
        self.purge_expired = self._sql("DELETE FROM {t} WHERE expires <= :now")
        self.count_kept = self._sql("SELECT count(*) FROM {t} WHERE kind <> 'c'")
        self.purge_oldest = self._sql(
            """DELETE FROM {t} WHERE (kind, name) IN (
    SELECT kind, name FROM {t} WHERE kind <> 'c' ORDER BY expires LIMIT :over)"""
        )
        self.count = self._sql("SELECT count(*) FROM {t}")

    def _sql(self, text: str) -> str:
        pg = self.dialect == "postgresql"
        text = text.replace("{t}", f'"{self.table}"')
        # SQLite's two-argument min() and max() are PostgreSQL's LEAST and GREATEST.
        text = text.replace("{least}", "LEAST" if pg else "min")
        text = text.replace("{greatest}", "GREATEST" if pg else "max")
        # An INSERT … SELECT needs a WHERE in SQLite before ON CONFLICT (a parsing
        # ambiguity); in PostgreSQL the SELECT turns the flush off for its commit.
        text = text.replace(
            "{source}",
            "FROM (SELECT set_config('synchronous_commit', 'off', true) AS sc) AS s "
            "WHERE s.sc = 'off'"
            if pg
            else "WHERE true",
        )
        return _PARAM.sub(r"%(\1)s", text) if pg else text


def bucket_wait(row: Any, *, count: int, period: float, now: float) -> float:
    """The seconds until *row* (``value, stamp`` of a refused bucket, or ``None``)
    holds a whole token; more than 0."""
    rate = count / period
    if row is None:
        return 1 / rate  # purged in between: about one token's time
    tokens = min(float(count), float(row[0]) + max(0.0, now - float(row[1])) * rate)
    return max((1 - tokens) / rate, 1e-3)


def lock_left(row: Any, *, limit: int, now: float) -> float:
    """The seconds a failure row (``value, expires``, or ``None``) keeps its key
    locked out."""
    if row is None or row[0] < limit or row[1] <= now:
        return 0.0
    return float(row[1] - now)


# --- SQLite -------------------------------------------------------------------------------------

_LOCKED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_MESSAGES = {
    sqlite3.SQLITE_READONLY: "is read-only",
    sqlite3.SQLITE_IOERR: "has a disk I/O error",
    sqlite3.SQLITE_CORRUPT: "is corrupt",
    sqlite3.SQLITE_FULL: "is full (or its disk)",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
    sqlite3.SQLITE_NOTADB: "is not a database",
    sqlite3.SQLITE_PERM: "cannot be accessed",
}
#: ``PRAGMA application_id`` of a limit-state file ("pRLS"): what tells it from any other
#: SQLite file (a registrations database has its own ``user_version``, and no such id).
SQLITE_APPLICATION_ID = 0x70524C53
_WAL_SIZE_LIMIT = 4 << 20


class StatementLimitState:
    """The :class:`LimitState` operations that are one statement each, written once for
    every SQL store: a store gives its statements (``_sql``, a :class:`LimitStatements`)
    and runs one (``_rows``: the rows it returns, errors as ``StorageUnavailable``);
    ``purge``, which takes a transaction, and ``close`` are the store's own."""

    _sql: LimitStatements

    def _rows(self, statement: str, params: Any = None) -> list[Any]:
        raise NotImplementedError

    def take(self, key: str, *, count: int, period: float, now: float) -> float:
        params = {"name": key, "cap": float(count), "rate": count / period, "now": now}
        if self._rows(self._sql.take, params):
            return 0.0
        rows = self._rows(self._sql.bucket, {"name": key})
        return bucket_wait(rows[0] if rows else None, count=count, period=period, now=now)

    def fail(self, key: str, *, limit: int, window: float, now: float) -> float:
        params = {"name": key, "limit": limit, "window": float(window), "now": now}
        (row,) = self._rows(self._sql.fail, params)
        return lock_left(row, limit=limit, now=now)

    def locked(self, key: str, *, limit: int, now: float) -> float:
        rows = self._rows(self._sql.failures, {"name": key})
        return lock_left(rows[0] if rows else None, limit=limit, now=now)

    def clear(self, key: str) -> None:
        # PostgreSQL: a DELETE that finds nothing writes nothing, so no read first.
        self._rows(self._sql.clear, {"name": key})

    def claim(self, key: str, *, expires: float, now: float) -> bool:
        params = {"name": key, "expires": float(expires), "now": now}
        return bool(self._rows(self._sql.claim, params))

    def count(self) -> int:
        ((n,),) = self._rows(self._sql.count)
        return int(n)


@attrs.define(eq=False)
class SQLiteLimitState(StatementLimitState):
    """:class:`LimitState` in a SQLite file: every process of one host that opens the
    same file shares it (``serve``'s workers, and the next start after a restart).

    WAL mode with ``synchronous = NORMAL``: a commit waits for no disk flush, and a
    power loss may forget the last counts but never corrupts the file. One connection
    per thread, opened on first use (and again in a child after ``fork()``). Each
    operation is one statement (the purge one ``BEGIN IMMEDIATE`` transaction); a lock
    held longer than *busy_timeout* seconds, or any failure of the file, raises
    :class:`~pushreport_core.StorageUnavailable`.
    """

    path: Path = attrs.field(converter=Path)
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    _sql: LimitStatements = attrs.field(
        init=False, factory=lambda: LimitStatements("pushreport_limits"), repr=False
    )
    _local: threading.local = attrs.field(init=False, factory=threading.local, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    # Connections inherited through fork(): SQLite forbids using or closing them in the
    # child, which only keeps them from being collected.
    _inherited: list[sqlite3.Connection] = attrs.field(init=False, factory=list, repr=False)

    # -- connections ---------------------------------------------------------------------

    @property
    def where(self) -> str:
        return str(self.path)

    def _unavailable(self, exc: sqlite3.Error) -> StorageUnavailable:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in _LOCKED:
            return StorageUnavailable(
                "limit state is locked", retry_after=max(1, math.ceil(self.busy_timeout))
            )
        self._drop_connection()  # the next call opens the file as it is then
        reason = _MESSAGES.get(primary, "failed") if primary is not None else "failed"
        return StorageUnavailable(f"limit state file {reason}")

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailable("limit state is closed")
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == os.getpid():
                return conn
            self._inherited.append(conn)
            local.conn = None
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _ours(self, conn: sqlite3.Connection) -> bool:
        """The file is a limit state (``True``), or new and empty (``False``); anything
        else (a registrations database named by mistake) is refused untouched."""
        # One statement, so one snapshot: read apart, another process's creation could
        # commit in between, and its schema would look like someone else's data.
        application_id, objects = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id()),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if application_id == SQLITE_APPLICATION_ID:
            return True
        if objects:
            raise StorageUnavailable("limit state file holds other data")
        return False

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        if self._ours(conn):
            return
        # journal_mode = WAL answers SQLITE_BUSY at once, without the busy handler, while
        # another process holds a lock (workers starting together): retry until the
        # busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _LOCKED:
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
        try:
            if not self._ours(conn):
                conn.execute(self._sql.schema)
                conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _drop_connection(self) -> None:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            local.conn = None
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _rows(self, statement: str, params: Any = ()) -> list[Any]:
        try:
            return self._connection().execute(statement, params).fetchall()
        except sqlite3.ProgrammingError:
            raise  # our bug, not the file's
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    # -- LimitState ------------------------------------------------------------------------

    def clear(self, key: str) -> None:
        # A read first: nearly every admitted report has no failures, and a read takes
        # no write lock.
        if self._rows(self._sql.failures, {"name": key}):
            self._rows(self._sql.clear, {"name": key})

    def purge(self, *, now: float, keep: int) -> int:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(self._sql.purge_expired, {"now": now}).rowcount
                over = conn.execute(self._sql.count_kept).fetchone()[0] - keep
                if over > 0:
                    deleted += conn.execute(self._sql.purge_oldest, {"over": over}).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return int(deleted)

    def close(self) -> None:
        self._closed = True
        self._drop_connection()
        self._local = threading.local()
