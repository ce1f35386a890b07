"""The limits' shared state in PostgreSQL: one table beside the registrations
(``<table>_limits``), so that every host sharing the database counts together."""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Protocol

import attrs
import psycopg

from pushreport.limitstate import LimitStatements, StatementLimitState

__all__ = ["PostgreSQLLimitState"]


class _Database(Protocol):
    """What the state uses of its :class:`PostgreSQLStorage` (named structurally, so that
    this module and the storage's do not import each other)."""

    @property
    def table(self) -> str: ...

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


@attrs.define(eq=False)
class PostgreSQLLimitState(StatementLimitState):
    """:class:`~pushreport.limitstate.LimitState` in the table ``<table>_limits``
    of a :class:`PostgreSQLStorage`'s database, through that storage's connections (its
    pool, its timeouts, its errors: a failure raises ``StorageUnavailable``).

    Each operation is one statement, atomic across hosts; writes commit without
    waiting for a disk flush (:class:`~pushreport.limitstate.LimitStatements`).
    The table is created on first use, hosts starting together taking turns (an
    advisory lock).
    """

    storage: _Database
    _sql: LimitStatements = attrs.field(init=False, repr=False)
    _ready: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._sql = LimitStatements(f"{self.storage.table}_limits", "postgresql")

    @property
    def table(self) -> str:
        return self._sql.table

    @property
    def where(self) -> str:
        return f"table {self.table}"

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The storage's pooled connection (its errors become ``StorageUnavailable``),
        on which the table exists."""
        with self.storage._connection() as conn:
            if not self._ready:
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pushreport:{self.table}",)
                    )
                    conn.execute(self._sql.schema.encode())
                self._ready = True
            yield conn

    def _rows(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            cursor = conn.execute(statement.encode(), params)
            return cursor.fetchall() if cursor.description is not None else []

    def purge(self, *, now: float, keep: int) -> int:
        with self._connection() as conn, conn.transaction():
            deleted = conn.execute(self._sql.purge_expired.encode(), {"now": now}).rowcount
            row = conn.execute(self._sql.count_kept.encode()).fetchone()
            over = (row[0] if row else 0) - keep
            if over > 0:
                deleted += conn.execute(self._sql.purge_oldest.encode(), {"over": over}).rowcount
        return int(deleted)

    def close(self) -> None:
        """Nothing of its own to release: the storage's pool is closed with it."""
