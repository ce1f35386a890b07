"""The PostgreSQL storage backend: a connection pool per process, the merge rule done by
one ``INSERT … ON CONFLICT DO UPDATE`` statement inside the database.

It can take the report spool (:class:`pushreport.spool.SpooledStorage`, ``[storage.
postgresql] spool = true``): each host appends reports to files of its own and applies
them in batches, recording how far in ``<table>_spool`` under its own name, so that
hosts sharing the database never read each other's marks. A report spooled on one host
may be applied after another host removed its selector: every removal leaves a
tombstone in ``<table>_removed`` (selector, when), and a spooled report received no
later than the tombstone is skipped (:func:`pushreport_core.outlived_by_removal`).

A deadlock or a serialization failure (SQLSTATE 40P01, 40001) is transient: the whole
transaction is run again, a few times after a short jittered back-off
(:func:`pushreport_core.backoff`), before ``StorageUnavailable``. Batches lock their rows
in selector order, so that two batches cannot deadlock each other in the first place."""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar

import attrs
import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from pushreport import spool
from pushreport.storage import (
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
    Policy,
    Registration,
    Report,
    StorageUnavailable,
    backoff,
)

from ._options import OPTIONS_DOC

if TYPE_CHECKING:
    from ._limitstate import PostgreSQLLimitState

__all__ = [
    "PostgreSQLStorage",
    "SCHEMA_VERSION",
    "DEFAULT_TABLE",
    "DEFAULT_POOL_MIN",
    "DEFAULT_POOL_MAX",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "DSN_ENV",
]

#: The version recorded in ``<table>_schema`` for the schema below. 2: the report
#: spool's marks (``<table>_spool``) and the removals' tombstones (``<table>_removed``).
SCHEMA_VERSION = 2
DEFAULT_TABLE = "pushreport_registrations"
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 4
DEFAULT_TIMEOUT = 2.0
#: A request thread waiting longer than this is worth less than a 503: the app retries
#: any non-2xx answer.
MAX_TIMEOUT = 60.0
MAX_POOL = 1000
#: Where the DSN is read from when ``[storage.postgresql] dsn`` is absent, so that a
#: password need not be written in the configuration file.
DSN_ENV = "PUSHREPORT_DATABASE_URL"
#: Rows fetched per query while iterating: no connection is held between pages.
PAGE_SIZE = 256
#: Advisory locks that selectors share out (by hash) for their turns: a spool batch
#: takes at most this many, whatever its size; two selectors may share one.
SELECTOR_TURNS = 256
#: How many times a transaction that deadlocked or failed to serialize is run in all,
#: and the back-off between two runs: full jitter below 20 ms, 40 ms, ... at most
#: 200 ms (the database took ``deadlock_timeout``, 1 s by default, to detect it).
TRANSIENT_ATTEMPTS = 4
TRANSIENT_BACKOFF = 0.02
TRANSIENT_BACKOFF_MAX = 0.2

_T = TypeVar("_T")

log = logging.getLogger("pushreport.postgresql")

_OPTIONS = tuple(OPTIONS_DOC)
# Unquoted-style names only, short enough that "<table>_username" and "<table>_schema"
# stay within PostgreSQL's 63-byte identifiers.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")

# The columns are the JSON keys of a registration, in the same order.
_COLUMNS = REGISTRATION_FIELDS
_KEY = next(c for c, policy in MERGE_POLICY.items() if policy is Policy.KEY)

# The merge rule of pushreport_core.merge, done by the database in one atomic statement,
# built from the core's table (MERGE_POLICY) through PostgreSQL's way of writing each
# policy: {c} is the column, {p} the report's value of it, {now} the report's time; t.{c}
# is the stored value, EXCLUDED.{c} the report's.
#: A new row's value of a column, by its policy.
NEW_SQL: Mapping[Policy, str] = {
    Policy.KEY: "{p}",
    Policy.KEEP_KNOWN: "{p}",
    Policy.MERGE_EXTRA: "{p}",
    Policy.EARLIEST: "{now}",
    Policy.LATEST: "{now}",
    Policy.COUNT: "1",
}
#: A stored row's new value of a column, by its policy (the key is the conflict target).
MERGE_SQL: Mapping[Policy, str] = {
    Policy.KEEP_KNOWN: "COALESCE(EXCLUDED.{c}, t.{c})",
    Policy.MERGE_EXTRA: "t.{c} || EXCLUDED.{c}",
    Policy.EARLIEST: "LEAST(t.{c}, EXCLUDED.{c})",
    Policy.LATEST: "GREATEST(t.{c}, EXCLUDED.{c})",
    Policy.COUNT: "t.{c} + 1",
}
_SET_SEPARATOR = sql.SQL(",\n    ")
#: The columns' types: an ``INSERT … SELECT`` gives its parameters no target type.
_COLUMN_TYPES: Mapping[str, str] = {
    "selector": "text",
    "username": "text",
    "token_calls": "text",
    "appid_calls": "text",
    "token_msgs": "text",
    "appid_msgs": "text",
    "extra": "jsonb",
    "user_agent": "text",
    "first_seen": "timestamptz",
    "last_seen": "timestamptz",
    "reports": "integer",
}


#: A spool line's values (:attr:`pushreport.storage.SpooledBatch.lines`), as the spool
#: writes them (:data:`pushreport.spool.FIELDS`): the stored fields in order, extra as
#: JSON text, then the time received.
SPOOLED_VALUES: tuple[str, ...] = spool.FIELDS


def _spooled_check() -> str:
    """The condition a JSON element ``s.v`` meets to be a report's values: an array of
    strings or nulls (strings where the column is NOT NULL), extra a JSON object of
    strings in a string. (Extra that is no JSON at all fails its cast: the caller runs
    this under a savepoint. The time is the spool's to check: it gives lines only when
    each one's time reads as it writes them.)"""
    required = {_KEY, "extra", "now"}
    checks = ["jsonb_typeof(s.v) = 'array'", f"jsonb_array_length(s.v) = {len(SPOOLED_VALUES)}"]
    for i, name in enumerate(SPOOLED_VALUES):
        kinds = "('string')" if name in required else "('string', 'null')"
        checks.append(f"jsonb_typeof(s.v->{i}) IN {kinds}")
    extra = f"(s.v->>{SPOOLED_VALUES.index('extra')})::jsonb"
    checks += [
        f"jsonb_typeof({extra}) = 'object'",
        f"NOT EXISTS (SELECT 1 FROM jsonb_each({extra}) AS e"
        " WHERE jsonb_typeof(e.value) <> 'string')",
    ]
    return " AND ".join(checks)


_SPOOLED_CHECK = _spooled_check()
#: A spool line's selector, read off its start (one without quotes or escapes: any
#: other line sends the batch to its decoded reports).
_LINE_SELECTOR = re.compile(rb'\["([^"\\]*)",')


def _policy_sql(template: str, column: str) -> sql.Composed:
    return sql.SQL(template).format(
        c=sql.Identifier(column), p=sql.Placeholder(column), now=sql.Placeholder("now")
    )


def _check_table(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _TABLE_NAME.fullmatch(value):
        raise ValueError(
            f"table must be letters, digits and _ (at most 48, not starting "
            f"with a digit), not {value!r}"
        )


def _check_timeout(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= MAX_TIMEOUT:
        raise ValueError(
            f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds, not {value!r}"
        )


def _check_pool(instance: PostgreSQLStorage, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= instance.pool_max <= MAX_POOL or not 0 <= instance.pool_min <= instance.pool_max:
        raise ValueError(
            f"need 0 <= pool_min <= pool_max, 1 <= pool_max <= {MAX_POOL}; got "
            f"pool_min={instance.pool_min!r}, pool_max={instance.pool_max!r}"
        )


class _Statements:
    """The statements of one table, composed once with quoted identifiers."""

    def __init__(self, table: str) -> None:
        t = sql.Identifier(table)
        cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        spool_table = sql.Identifier(f"{table}_spool")
        removed = sql.Identifier(f"{table}_removed")
        self.version_table = sql.Identifier(f"{table}_schema")
        self.lock_key = f"pushreport:{table}"
        # "C" collation: byte order, which for these ASCII selectors is Python's str
        # order, the order find() and iteration promise.
        self.schema = (
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
    selector    text COLLATE "C" NOT NULL PRIMARY KEY,
    username    text COLLATE "C",
    token_calls text,
    appid_calls text,
    token_msgs  text,
    appid_msgs  text,
    extra       jsonb NOT NULL DEFAULT '{{}}',
    user_agent  text,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    reports     integer NOT NULL
)""").format(t),
            # (username, selector): find() by username in selector order from the index.
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (username, selector)").format(
                sql.Identifier(f"{table}_username"), t
            ),
            # Version 2. How far each report spool file is applied, by host (its spool).
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
    host    text COLLATE "C" NOT NULL,
    name    text COLLATE "C" NOT NULL,
    applied bigint NOT NULL,
    PRIMARY KEY (host, name)
)""").format(spool_table),
            # When each selector was last removed: a report spooled before must not
            # bring it back when it is applied after.
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
    selector   text COLLATE "C" NOT NULL PRIMARY KEY,
    removed_at timestamptz NOT NULL
)""").format(removed),
        )
        # The merge rule (see MERGE_SQL): "a null value for pushTokenOther" (the iOS
        # delay) never erases a stored value, whichever host the report reached.
        merge_sets = _SET_SEPARATOR.join(
            sql.SQL("{} = {}").format(sql.Identifier(c), _policy_sql(MERGE_SQL[policy], c))
            for c, policy in MERGE_POLICY.items()
            if policy is not Policy.KEY
        )
        self.upsert = sql.SQL("""INSERT INTO {t} AS t ({cols})
VALUES ({values})
ON CONFLICT ({key}) DO UPDATE SET
    {sets}
RETURNING {cols}""").format(
            t=t,
            cols=cols,
            key=sql.Identifier(_KEY),
            values=sql.SQL(", ").join(
                _policy_sql(NEW_SQL[policy], c) for c, policy in MERGE_POLICY.items()
            ),
            sets=merge_sets,
        )
        # put_many: a registration stored exactly as given, replacing its selector's row.
        self.put = sql.SQL("""INSERT INTO {t} AS t ({cols})
VALUES ({values})
ON CONFLICT ({key}) DO UPDATE SET
    {sets}""").format(
            t=t,
            cols=cols,
            key=sql.Identifier(_KEY),
            values=sql.SQL(", ").join(map(sql.Placeholder, _COLUMNS)),
            sets=_SET_SEPARATOR.join(
                _policy_sql("{c} = EXCLUDED.{c}", c) for c in _COLUMNS if c != _KEY
            ),
        )
        self.get = sql.SQL("SELECT {} FROM {} WHERE selector = %s").format(cols, t)
        self.find = sql.SQL("SELECT {} FROM {} WHERE username = %s ORDER BY selector").format(
            cols, t
        )
        self.page_first = sql.SQL("SELECT {} FROM {} ORDER BY selector LIMIT %s").format(cols, t)
        self.page_after = sql.SQL(
            "SELECT {} FROM {} WHERE selector > %s ORDER BY selector LIMIT %s"
        ).format(cols, t)
        self.remove = sql.SQL("DELETE FROM {} WHERE selector = %s").format(t)
        # A removal's tombstone, at the database's clock (the hosts' clocks, which
        # time the reports, must agree with it: docs/deployment.md).
        self.tombstone = sql.SQL("""INSERT INTO {r} AS r (selector, removed_at)
VALUES (%s, statement_timestamp())
ON CONFLICT (selector) DO UPDATE
SET removed_at = GREATEST(r.removed_at, EXCLUDED.removed_at)""").format(r=removed)
        # A spooled report: the upsert, unless a removal outlived it. The condition is
        # pushreport_core.outlived_by_removal(now, removed_at) (received <= removed) in
        # SQL; a test holds the two together.
        self.spooled_upsert = sql.SQL("""INSERT INTO {t} AS t ({cols})
SELECT {values}
WHERE NOT EXISTS (
    SELECT 1 FROM {r} WHERE selector = {key} AND {now} <= removed_at
)
ON CONFLICT ({key_column}) DO UPDATE SET
    {sets}""").format(
            t=t,
            cols=cols,
            r=removed,
            key=sql.Placeholder(_KEY),
            now=sql.SQL("{}::timestamptz").format(sql.Placeholder("now")),
            key_column=sql.Identifier(_KEY),
            values=sql.SQL(", ").join(
                sql.SQL("{}::{}").format(
                    _policy_sql(NEW_SQL[policy], c), sql.SQL(_COLUMN_TYPES[c])
                )
                for c, policy in MERGE_POLICY.items()
            ),
            sets=merge_sets,
        )
        # The same for a whole batch of the spool's lines (SpooledBatch.lines: each a
        # JSON array of SPOOLED_VALUES), in selector order (the order _by_selector
        # gives). ON CONFLICT may meet a row once per statement, so a batch runs one
        # statement per "generation" (a selector's first report in the batch, its
        # second, ...): see _generations.
        element = {name: f"(s.v->>{i})" for i, name in enumerate(SPOOLED_VALUES)}
        self.spooled_upsert_lines = sql.SQL("""INSERT INTO {t} AS t ({cols})
SELECT {values}
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS s(v, n)
WHERE NOT EXISTS (
    SELECT 1 FROM {r} WHERE selector = {key} AND {now} <= removed_at
)
ORDER BY {key} COLLATE "C", s.n
ON CONFLICT ({key_column}) DO UPDATE SET
    {sets}""").format(
            t=t,
            cols=cols,
            r=removed,
            key=sql.SQL(element[_KEY]),
            now=sql.SQL(element["now"] + "::timestamptz"),
            key_column=sql.Identifier(_KEY),
            values=sql.SQL(", ").join(
                sql.SQL(
                    NEW_SQL[policy].format(p=element.get(c, ""), now=element["now"], c=c)
                    + f"::{_COLUMN_TYPES[c]}"
                )
                for c, policy in MERGE_POLICY.items()
            ),
            sets=merge_sets,
        )
        # How many of a batch's lines are not a report's values (its casts would fail,
        # or store what a report cannot hold): applied from the decoded reports then.
        self.spooled_lines_invalid = sql.SQL(
            "SELECT count(*) FROM jsonb_array_elements(%s::jsonb) AS s(v) WHERE NOT ("
            + _SPOOLED_CHECK
            + ")"
        )
        self.spool_marks = sql.SQL("SELECT name, applied FROM {} WHERE host = %s").format(
            spool_table
        )
        self.spool_advance = sql.SQL("""INSERT INTO {} (host, name, applied) VALUES (%s, %s, %s)
ON CONFLICT (host, name) DO UPDATE SET applied = EXCLUDED.applied""").format(spool_table)
        self.spool_forget = sql.SQL("DELETE FROM {} WHERE host = %s AND name = ANY(%s)").format(
            spool_table
        )
        self.forget_tombstones = sql.SQL("DELETE FROM {} WHERE removed_at < %s").format(removed)
        # A named turn (this spool's appliers), until the transaction ends.
        self.selector_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext(%s || ':' || %s))")
        # A selector's turn (upsert_if, remove_if, remove, a spool's batch), until the
        # transaction ends: one of SELECTOR_TURNS advisory locks, so that a batch of any
        # size holds a bounded number (each lock takes a slot of the server's shared lock
        # table, max_locks_per_transaction x max_connections: a spool's backlog of 100,000
        # selectors would exhaust it, and the spool would never drain).
        self.selector_turn = sql.SQL(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s) & {})"
        ).format(sql.Literal(SELECTOR_TURNS - 1))
        # A batch's turns, taken in one order by every batch (the subquery's, which
        # DISTINCT keeps from being flattened): no two batches wait for each other.
        self.selector_turns = sql.SQL("""SELECT pg_advisory_xact_lock(k, b) FROM (
    SELECT DISTINCT hashtext(%s) AS k, hashtext(s) & {} AS b
    FROM unnest(%s::text[]) AS s ORDER BY b
) AS turns""").format(sql.Literal(SELECTOR_TURNS - 1))
        # forget_token and prune: one statement each, atomic; row locks only, so a scan
        # (neither the tokens nor last_seen are indexed: an index on last_seen, which
        # every report changes, would end HOT updates) does not hold up other reports.
        forget = sql.SQL("""UPDATE {} SET
    token_calls = CASE WHEN token_calls = %(token)s THEN NULL ELSE token_calls END,
    token_msgs  = CASE WHEN token_msgs = %(token)s THEN NULL ELSE token_msgs END
WHERE (token_calls = %(token)s OR token_msgs = %(token)s)
  AND selector IS DISTINCT FROM %(keep)s::text""").format(t)
        self.forget_all = sql.SQL("{} RETURNING selector").format(forget)
        self.forget_one = sql.SQL("{} AND selector = %(selector)s RETURNING selector").format(
            forget
        )
        self.find_token = sql.SQL(
            "SELECT {} FROM {} WHERE token_calls = %s OR token_msgs = %s ORDER BY selector"
        ).format(cols, t)
        self.stale = sql.SQL("SELECT {} FROM {} WHERE last_seen < %s ORDER BY selector").format(
            cols, t
        )
        self.prune = sql.SQL("DELETE FROM {} WHERE last_seen < %s RETURNING {}").format(t, cols)
        # A write that changes nothing: it waits for the table's write lock like an
        # upsert, and fails on a read-only server (a standby) as an upsert would.
        self.ping = sql.SQL("DELETE FROM {} WHERE false").format(t)
        self.count = sql.SQL("SELECT count(*) FROM {}").format(t)


def _params(report: Report, now: datetime) -> dict[str, Any]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return {**report.stored_fields(), "extra": Jsonb(dict(report.extra)), "now": now}


def _put_params(registration: Registration) -> dict[str, Any]:
    return {**attrs.asdict(registration, recurse=False), "extra": Jsonb(dict(registration.extra))}


def _decode(row: tuple[Any, ...]) -> Registration:
    # The columns are REGISTRATION_FIELDS in order; times come as aware datetimes.
    values = dict(zip(REGISTRATION_FIELDS, row))
    try:
        for key in ("first_seen", "last_seen"):
            values[key] = values[key].astimezone(timezone.utc)
        return Registration(**values)
    except (TypeError, ValueError, AttributeError) as exc:
        raise StorageUnavailable("postgresql table holds a row that cannot be read") from exc


#: Why a connection was refused, by SQLSTATE: words, not the server's text (which may
#: quote the user).
_CONNECT_REASONS = {
    "28P01": "password authentication failed",
    "28000": "the server refused the user or the host (pg_hba.conf)",
    "3D000": "the database does not exist",
    "53300": "too many connections",
}


class _NoTable(StorageUnavailable):
    """The table is missing, and the storage does not create it."""


class _Transient(StorageUnavailable):
    """A deadlock or a serialization failure: the transaction may be run again."""


#: The transient failures, by SQLSTATE: what the database says of them.
_TRANSIENT = {"40P01": "deadlocked", "40001": "could not be serialized"}


def _by_selector(params: Sequence[Mapping[str, Any]]) -> list[int]:
    """The order in which a batch locks its rows: by selector, and in the given order
    among the reports of one selector (a stable sort), so that any two batches lock the
    selectors they share in the same order and cannot wait for each other."""
    return sorted(range(len(params)), key=lambda i: params[i][_KEY])


# Pools are per process; this lock guards opening one. A lock another thread held at a
# fork() would stay held in the child, so the child gets a fresh one.
_open_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _open_lock
    _open_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@attrs.define(eq=False)
class PostgreSQLStorage:
    """A :class:`~pushreport.storage.Storage` in one PostgreSQL table.

    Safe across threads (a ``psycopg_pool.ConnectionPool``, opened on first use), across
    processes (a new pool after ``fork()``) and across hosts: every write is one
    statement, committed before the method returns. A connection, lock or statement
    that takes longer than *timeout* seconds, or any database failure, raises
    :class:`~pushreport_core.StorageUnavailable`. The DSN (which may hold a password)
    is not in the repr and in no message.
    """

    #: ``[storage.postgresql]`` options and their meaning (the generated reference).
    OPTIONS_DOC = OPTIONS_DOC

    name = "postgresql"
    #: What it can do beyond the required protocol (:mod:`pushreport.storage`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.OPEN,
            Capability.UPSERT_MANY,
            Capability.PUT_MANY,
            Capability.COUNT,
            Capability.FIND_TOKEN,
            Capability.FORGET_TOKEN,
            Capability.UPSERT_IF,
            Capability.REMOVE_IF,
            Capability.LIMIT_STATE,
            Capability.SPOOL_TARGET,
            Capability.TOMBSTONES,
        }
    )

    dsn: str = attrs.field(repr=False)
    table: str = attrs.field(default=DEFAULT_TABLE, validator=_check_table)
    pool_min: int = attrs.field(default=DEFAULT_POOL_MIN, validator=_check_pool)
    pool_max: int = attrs.field(default=DEFAULT_POOL_MAX, validator=_check_pool)
    timeout: float = attrs.field(
        default=DEFAULT_TIMEOUT, converter=float, validator=_check_timeout
    )
    #: Create the table when it is missing (``StorageContext.create``); ``False``: a
    #: missing table is an error ("no pushreport data in …").
    create: bool = attrs.field(default=True, kw_only=True)
    #: Whose report spool this handle applies: its marks in ``<table>_spool`` are kept
    #: under this name, apart from other hosts'. ``from_options`` makes it the host's
    #: name and the spool folder, unique to each spool.
    spool_host: str = attrs.field(factory=socket.gethostname, kw_only=True)
    _sql: _Statements = attrs.field(init=False, repr=False)
    _pool: ConnectionPool | None = attrs.field(init=False, default=None, repr=False)
    _pid: int = attrs.field(init=False, default=0, repr=False)
    _schema_ready: bool = attrs.field(init=False, default=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    # The back-off's jitter (never the clock's or a global random state).
    _rng: random.Random = attrs.field(init=False, factory=random.Random, repr=False)
    # Pools inherited through fork(): their sockets belong to the parent, so the child
    # neither uses nor closes them, and keeps them from being collected.
    _inherited: list[ConnectionPool] = attrs.field(init=False, factory=list, repr=False)

    def __attrs_post_init__(self) -> None:
        self._sql = _Statements(self.table)

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        context: StorageContext,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> Storage:
        """The backend for the ``[storage.postgresql]`` table of the configuration.

        Options: ``dsn`` (a libpq connection string or URL; when absent, the
        ``PUSHREPORT_DATABASE_URL`` environment variable), ``pool_min`` (default 1),
        ``pool_max`` (default 4), ``timeout`` (seconds, default 2), ``table``
        (default ``pushreport_registrations``), and the report spool's
        (:data:`pushreport.spool.OPTIONS_DOC`, ``spool`` off by default; ``spool_dir``
        and ``spool_fsync``): with ``spool = true`` the storage returned is a
        :class:`~pushreport.spool.SpooledStorage` around the
        :class:`PostgreSQLStorage`. Connects to nothing yet.

        :raises ConfigurationError: an unknown option, a missing DSN or a value of the
            wrong type, naming ``storage.postgresql.<option>``.
        """
        opts = BackendOptions("postgresql", options, _OPTIONS)
        if "dsn" in options:
            dsn = options["dsn"]
            if not isinstance(dsn, str) or not dsn.strip():
                # Not the value: it may hold a password.
                raise opts.error("dsn", "must be a connection string (a non-empty string)")
        else:
            dsn = environ.get(DSN_ENV, "")
            if not dsn.strip():
                raise opts.error("dsn", f"missing: set it, or the environment variable {DSN_ENV}")
        pool_min = opts.integer("pool_min", DEFAULT_POOL_MIN, low=0, high=MAX_POOL)
        pool_max = opts.integer("pool_max", DEFAULT_POOL_MAX, low=1, high=MAX_POOL)
        if pool_min > pool_max:
            raise opts.error(
                "pool_min", f"must be at most pool_max ({pool_max}), not {pool_min!r}"
            )
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            raise opts.error(
                "timeout",
                f"must be a number of seconds more than 0 and at "
                f"most {MAX_TIMEOUT:g}, not {timeout!r}",
            )
        table = options.get("table", DEFAULT_TABLE)
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise opts.error(
                "table",
                f"must be a table name of letters, digits and _ (at "
                f"most 48, not starting with a digit), not {table!r}",
            )
        folder = Path(
            context.base_dir, opts.string("spool_dir", f"{table}.spool", what="a folder path")
        ).absolute()
        fsync = opts.boolean("spool_fsync", True)
        storage = cls(
            dsn=dsn,
            table=table,
            pool_min=pool_min,
            pool_max=pool_max,
            timeout=timeout,
            create=context.create,
            spool_host=f"{socket.gethostname()}:{folder}",
        )
        return spool.SpooledStorage.from_options(
            storage, opts, folder=folder, fsync=fsync, default=False
        )

    @property
    def location(self) -> str:
        """The table, database and server, for messages: never the user or password."""
        try:
            info = conninfo_to_dict(self.dsn)
        except psycopg.Error:
            info = {}
        host = str(info.get("host") or info.get("hostaddr") or "localhost")
        port = info.get("port")
        database = info.get("dbname") or "(the default)"
        server = f"{host}:{port}" if port else host
        return f"table {self.table} of postgresql database {database} on {server}"

    def open(self) -> None:
        """Connect now (and with *create*, create the table and check that it can be
        written); a failure names the table, database and server, never the DSN's
        user or password. A server that refuses connections or is still starting is
        :class:`~pushreport.storage.StorageStarting`."""
        try:
            # One connection of our own first: the pool would only say "timed out"
            # where the server said why.
            with psycopg.connect(
                self.dsn, connect_timeout=max(2, math.ceil(self.timeout)), autocommit=True
            ):
                pass
        except psycopg.Error as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            reason = _CONNECT_REASONS.get(sqlstate or "", f"SQLSTATE {sqlstate}")
            if sqlstate is None or sqlstate == "57P03":
                # Refused, not resolved, timed out or "starting up": it may come.
                raise StorageStarting(
                    f"cannot connect to {self.location}: "
                    + ("server is starting" if sqlstate else "server is unreachable")
                ) from None
            raise StorageUnavailable(f"cannot connect to {self.location}: {reason}") from None
        try:
            with self._connection() as conn:
                if self.create:
                    conn.execute(self._sql.ping)
        except _NoTable:
            raise StorageUnavailable(f"no pushreport data in {self.location}") from None
        except StorageUnavailable as exc:
            raise StorageUnavailable(f"cannot open {self.location}: {exc}") from None

    # -- connections -------------------------------------------------------------

    @property
    def _retry_after(self) -> int:
        return max(1, math.ceil(self.timeout))

    def _unavailable(self, exc: psycopg.Error) -> StorageUnavailable:
        # Short messages from the error's class and SQLSTATE only: psycopg's own text
        # may quote the server, the user or values.
        if isinstance(exc, PoolTimeout):
            return StorageUnavailable(
                "postgresql connection pool timed out", retry_after=self._retry_after
            )
        if isinstance(exc, errors.LockNotAvailable):
            return StorageUnavailable("postgresql table is locked", retry_after=self._retry_after)
        if isinstance(exc, errors.QueryCanceled):
            return StorageUnavailable(
                "postgresql statement timed out", retry_after=self._retry_after
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return StorageUnavailable("postgresql server is read-only")
        if exc.sqlstate in _TRANSIENT:
            return _Transient(
                f"postgresql transaction {_TRANSIENT[exc.sqlstate]} (SQLSTATE {exc.sqlstate})",
                retry_after=self._retry_after,
            )
        if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57")):
            return StorageUnavailable("postgresql server is unreachable")
        return StorageUnavailable(f"postgresql failed (SQLSTATE {exc.sqlstate})")

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        ms = str(max(1, round(self.timeout * 1000)))
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('lock_timeout', %s, false), "
            "set_config('TimeZone', 'UTC', false)",
            (ms, ms),
        )

    def _get_pool(self) -> ConnectionPool:
        if self._closed:
            raise StorageUnavailable("postgresql storage is closed")
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pid == pid:
            return pool
        with _open_lock:
            if self._pool is not None and self._pid == pid:
                return self._pool
            if self._pool is not None:
                self._inherited.append(self._pool)
            pool = ConnectionPool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.timeout,
                open=False,
                configure=self._configure,
                name=f"pushreport-postgresql-{self.table}",
                kwargs={"autocommit": True, "connect_timeout": max(2, math.ceil(self.timeout))},
            )
            pool.open(wait=False)
            self._pool, self._pid = pool, pid
            return pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit) on which the schema exists; every database
        failure inside becomes ``StorageUnavailable``."""
        try:
            with self._get_pool().connection(timeout=self.timeout) as conn:
                if not self._schema_ready:
                    self._create_schema(conn)
                    self._schema_ready = True
                yield conn
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate is None:
                raise  # our bug (a wrong parameter), not the database's
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create or upgrade the table; workers and hosts starting together take turns
        (an advisory lock held until the transaction ends)."""
        s = self._sql
        if not self.create:
            # Only look: no CREATE, no lock (a reader may hold SELECT rights only).
            found = conn.execute(
                "SELECT to_regclass(%s), to_regclass(%s)",
                (sql.Identifier(self.table).as_string(conn), s.version_table.as_string(conn)),
            ).fetchone()
            if found is None or None in found:
                raise _NoTable("postgresql database holds no pushreport table")
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}").format(s.version_table)
            ).fetchone()
            version = row[0] if row else None
            if version is None:
                raise _NoTable("postgresql database holds no pushreport table")
            if version > SCHEMA_VERSION:
                raise StorageUnavailable(
                    f"postgresql table schema version {version} is "
                    f"newer than this pushreport's ({SCHEMA_VERSION})"
                )
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (s.lock_key,))
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (version integer NOT NULL)").format(
                    s.version_table
                )
            )
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}").format(s.version_table)
            ).fetchone()
            version = row[0] if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise StorageUnavailable(
                    f"postgresql table schema version {version} is "
                    f"newer than this pushreport's ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return
            # Version None: a new table; 1: the tables of version 2 are added (every
            # statement is IF NOT EXISTS, so the same list does both).
            for statement in s.schema:
                conn.execute(statement)
            conn.execute(sql.SQL("DELETE FROM {}").format(s.version_table))
            conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(s.version_table),
                (SCHEMA_VERSION,),
            )

    def _run(
        self, work: Callable[[psycopg.Connection[Any]], _T], *, transaction: bool = True
    ) -> _T:
        """``work(conn)`` on a pooled connection, in one transaction (or, with
        *transaction* false, as the one autocommitted statement it runs). A deadlock or a
        serialization failure rolls it all back and runs it again, up to
        :data:`TRANSIENT_ATTEMPTS` times in all, after a jittered back-off; then
        ``StorageUnavailable``. *work* may so run more than once: it must not act
        outside the transaction."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._connection() as conn:
                    if not transaction:
                        return work(conn)
                    with conn.transaction():
                        return work(conn)
            except _Transient as exc:
                if attempt >= TRANSIENT_ATTEMPTS:
                    raise StorageUnavailable(
                        f"{exc}, {attempt} times", retry_after=exc.retry_after
                    ) from exc
                log.info(
                    "%s: running it again (attempt %d of %d)",
                    exc,
                    attempt + 1,
                    TRANSIENT_ATTEMPTS,
                )
            time.sleep(
                backoff(
                    attempt,
                    base=TRANSIENT_BACKOFF,
                    cap=TRANSIENT_BACKOFF_MAX,
                    rng=self._rng,
                    jitter=1.0,
                )
            )

    def _rows(self, statement: sql.Composed, params: Any) -> list[tuple[Any, ...]]:
        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = conn.execute(statement, params).fetchall()
            return rows

        return self._run(work, transaction=False)

    # -- Storage -------------------------------------------------------------------

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* into its selector's row in one statement; committed on return.

        The account password (``report.password``) is not a column: it is never written.
        """
        (row,) = self._rows(self._sql.upsert, _params(report, now))
        return _decode(row)

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every ``(report, now)`` in one transaction, in order: one commit.

        All or nothing: on failure nothing of the batch is stored and
        ``StorageUnavailable`` is raised. Reports of one selector are merged in order;
        the rows are written (locked) in selector order, the registrations returned in
        the order of *items*.
        """
        params = [_params(report, now) for report, now in items]
        if not params:
            return []
        order = _by_selector(params)

        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            rows = []
            with conn.cursor() as cursor:
                cursor.executemany(self._sql.upsert, [params[i] for i in order], returning=True)
                while True:
                    row = cursor.fetchone()
                    assert row is not None  # RETURNING gives one row per statement
                    rows.append(row)
                    if not cursor.nextset():
                        break
            return rows

        rows = self._run(work)
        placed: list[tuple[Any, ...]] = [()] * len(rows)
        for i, row in zip(order, rows):
            placed[i] = row
        return [_decode(row) for row in placed]

    def put_many(self, registrations: Sequence[Registration]) -> None:
        """Store *registrations* exactly as given (``first_seen``, ``last_seen`` and
        ``reports`` included), replacing any row of the same selector, in one
        transaction: one commit, the rows written in selector order. All or nothing."""
        params = [_put_params(r) for r in registrations]
        if not params:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(self._sql.put, [params[i] for i in _by_selector(params)])

        self._run(work)

    def upsert_if(
        self,
        report: Report,
        *,
        now: datetime,
        allowed: Callable[[Registration | None], bool],
    ) -> Registration | None:
        """:meth:`upsert`, unless ``allowed(the stored registration or None)`` is false:
        then nothing is written and ``None`` returned. One transaction that first takes
        an advisory lock on the selector, so two such writes of one selector, from any
        host, take turns and the second decides on what the first committed (*allowed*
        is asked again if the transaction is run again: see :meth:`_run`)."""

        def work(conn: psycopg.Connection[Any]) -> Registration | None:
            conn.execute(self._sql.selector_turn, (self._sql.lock_key, report.selector))
            row = conn.execute(self._sql.get, (report.selector,)).fetchone()
            if not allowed(None if row is None else _decode(row)):
                return None
            written = conn.execute(self._sql.upsert, _params(report, now)).fetchone()
            assert written is not None  # RETURNING gives the row
            return _decode(written)

        return self._run(work)

    def remove_if(
        self, selector: str, allowed: Callable[[Registration | None], bool]
    ) -> Registration | None:
        """Delete the registration of *selector* if ``allowed(it, or None)`` is true, in
        one transaction as :meth:`upsert_if`; the registration deleted, or ``None``."""

        def work(conn: psycopg.Connection[Any]) -> Registration | None:
            conn.execute(self._sql.selector_turn, (self._sql.lock_key, selector))
            row = conn.execute(self._sql.get, (selector,)).fetchone()
            stored = None if row is None else _decode(row)
            if not allowed(stored):
                return None
            # A tombstone even when nothing is stored: a report spooled on another
            # host may be on its way.
            conn.execute(self._sql.tombstone, (selector,))
            if stored is None:
                return None
            conn.execute(self._sql.remove, (selector,))
            return stored

        return self._run(work)

    def get(self, selector: str) -> Registration | None:
        rows = self._rows(self._sql.get, (selector,))
        return _decode(rows[0]) if rows else None

    def find(self, *, username: str | None = None) -> list[Registration]:
        if username is None:
            return list(self)
        return [_decode(row) for row in self._rows(self._sql.find, (username,))]

    def __iter__(self) -> Iterator[Registration]:
        # Keyset pages: no connection is held between yields, so a caller may remove()
        # while iterating, and a slow consumer does not starve the pool.
        rows = self._rows(self._sql.page_first, (PAGE_SIZE,))
        while True:
            for row in rows:
                yield _decode(row)
            if len(rows) < PAGE_SIZE:
                return
            rows = self._rows(self._sql.page_after, (rows[-1][0], PAGE_SIZE))

    def remove(self, selector: str) -> bool:
        """Delete the registration of *selector*, and leave a tombstone (even when there
        was none: a report spooled on another host may be on its way)."""

        def work(conn: psycopg.Connection[Any]) -> bool:
            # The selector's lock, which a spool applying a report of it holds too:
            # without it, a report inserted by a transaction still open is invisible
            # to this DELETE, the tombstone to its insert, and both commit.
            conn.execute(self._sql.selector_turn, (self._sql.lock_key, selector))
            removed = conn.execute(self._sql.remove, (selector,)).rowcount > 0
            conn.execute(self._sql.tombstone, (selector,))
            return removed

        return self._run(work)

    def count(self) -> int:
        """How many registrations are stored (the ``pushreport_registrations`` gauge)."""
        ((n,),) = self._rows(self._sql.count, ())
        return int(n)

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* where it is held: one ``UPDATE … RETURNING``, committed on
        return. The selectors changed, sorted."""
        params = {"token": token, "keep": keep, "selector": selector}
        statement = self._sql.forget_all if selector is None else self._sql.forget_one
        return sorted(row[0] for row in self._rows(statement, params))

    def find_token(self, token: str) -> list[Registration]:
        """Registrations holding *token*, by selector (a scan: tokens are not indexed)."""
        return [_decode(row) for row in self._rows(self._sql.find_token, (token, token))]

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete the rows last seen before *before*: one ``DELETE … RETURNING``,
        committed on return. The registrations deleted (would be), by selector."""
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")
        if dry_run:
            rows = self._rows(self._sql.stale, (before,))
        else:
            # Tombstones older than *before* go too: a report received before them
            # would be pruned now anyway.
            def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
                found: list[tuple[Any, ...]] = conn.execute(self._sql.prune, (before,)).fetchall()
                conn.execute(self._sql.forget_tombstones, (before,))
                return found

            rows = self._run(work)
        return sorted((_decode(row) for row in rows), key=lambda r: r.selector)

    # -- the report spool's capability (pushreport.storage.SpoolTarget) ----------------

    def spool_marks(self) -> dict[str, int]:
        """How far each file of this handle's spool (*spool_host*) is applied."""
        with self._connection() as conn:
            return dict(conn.execute(self._sql.spool_marks, (self.spool_host,)).fetchall())

    def apply_spooled(self, take: Callable[[Mapping[str, int]], SpooledBatch]) -> int:
        """Apply one batch of the report spool and record its marks, in one
        transaction that first takes this spool's advisory lock (so that two appliers
        of one spool, in any process, take turns); see
        :meth:`pushreport.storage.SpoolTarget.apply_spooled`. A report that a removal
        outlived (:func:`pushreport_core.outlived_by_removal`) is skipped; it counts
        as applied. The rows are written in selector order (reports of one selector
        in the order given); a transaction that deadlocked is run again, *take* asked
        again from the marks it then reads."""
        s, host = self._sql, self.spool_host

        def work(conn: psycopg.Connection[Any]) -> int:
            conn.execute(s.selector_lock, (f"{s.lock_key}:spool", host))
            # The table's write lock, even for an empty batch: a spool probes so
            # whether the table can be written again.
            conn.execute(s.ping)
            batch = take(dict(conn.execute(s.spool_marks, (host,)).fetchall()))
            with conn.cursor() as cursor:
                count = self._apply_lines(cursor, batch.lines) if batch.lines else None
                if count is None:
                    params = [_params(report, now) for report, now in batch.items]
                    count = len(params)
                    if params:
                        # Each selector's lock, as a removal takes it (see remove), in
                        # one order for every applier (no deadlock between two hosts'
                        # batches): the tombstone check then sees every removal
                        # committed before.
                        selectors = list({report.selector for report, _ in batch.items})
                        cursor.execute(s.selector_turns, (s.lock_key, selectors))
                        cursor.executemany(
                            s.spooled_upsert, [params[i] for i in _by_selector(params)]
                        )
                if batch.marks:
                    cursor.executemany(
                        s.spool_advance, [(host, n, at) for n, at in batch.marks.items()]
                    )
                if batch.forget:
                    cursor.execute(s.spool_forget, (host, list(batch.forget)))
            return count

        return self._run(work)

    def _apply_lines(self, cursor: psycopg.Cursor[Any], lines: Sequence[bytes]) -> int | None:
        """Apply the spool's *lines* as they are (:attr:`SpooledBatch.lines`), as the
        decoded reports would be: the selectors' turns, then one statement per
        generation (each selector's first report of the batch, then its second, ...:
        one statement may meet a row only once), each in selector order. How many
        lines were applied (those a removal outlived count, as in the decoded path), or
        ``None`` when one of them is not a report: nothing was, under a savepoint, and
        the caller applies the decoded reports."""
        s = self._sql
        selectors: list[bytes] = []
        for line in lines:
            m = _LINE_SELECTOR.match(line)
            if m is None:
                return None
            selectors.append(m[1])
        generations: list[list[bytes]] = []
        seen: dict[bytes, int] = {}
        for selector, line in zip(selectors, lines):
            g = seen.get(selector, 0)
            seen[selector] = g + 1
            if g == len(generations):
                generations.append([])
            generations[g].append(line)
        try:
            whole = (b"[" + b",".join(lines) + b"]").decode("utf-8")
            texts = [(b"[" + b",".join(g) + b"]").decode("utf-8") for g in generations]
            turns = [selector.decode("utf-8") for selector in seen]
        except UnicodeDecodeError:
            return None
        cursor.execute("SAVEPOINT lines")
        try:
            invalid = cursor.execute(s.spooled_lines_invalid, (whole,)).fetchone()
            if invalid is None or invalid[0]:
                raise errors.DataError("a spool line is not a report's values")
            cursor.execute(s.selector_turns, (s.lock_key, turns))
            for text in texts:
                cursor.execute(s.spooled_upsert_lines, (text,))
        except errors.DataError:
            cursor.execute("ROLLBACK TO SAVEPOINT lines")
            return None
        cursor.execute("RELEASE SAVEPOINT lines")
        return len(lines)

    def limit_state(self) -> PostgreSQLLimitState:
        """The limits' shared state, in the table ``<table>_limits`` of this database:
        every host sharing it counts together (:mod:`pushreport.limitstate`)."""
        from ._limitstate import PostgreSQLLimitState

        return PostgreSQLLimitState(self)

    def ping(self) -> None:
        """Take and release the table's write lock: fails on a locked table, a read-only
        server or an unreachable one."""
        with self._connection() as conn:
            conn.execute(self._sql.ping)

    def close(self) -> None:
        """Close this process's pool; a pool inherited through fork() is left to its owner."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()
