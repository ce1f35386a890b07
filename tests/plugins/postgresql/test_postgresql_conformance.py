"""The PostgreSQL backend runs the storage conformance suite, as any plugin would."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

from pushreport.testing import SpoolTargetConformance, StorageConformance
from pushreport_postgresql import PostgreSQLStorage


class TestPostgreSQLConformance(StorageConformance):
    supports_unavailable = True
    # Every step is a few round trips to a server: fewer runs than the profile's, so
    # the suite stays fast on 2 cores (the profile's derandomize etc. still apply).
    machine_settings = settings(
        max_examples=25,
        deadline=None,
        stateful_step_count=30,
        suppress_health_check=[HealthCheck.too_slow],
    )

    @pytest.fixture
    def make_storage(self, pg_dsn: str, pg_table: str):
        # A partial of an importable class pickles: the process test spawns fresh
        # interpreters, each with its own pool, as separate hosts would have.
        return functools.partial(PostgreSQLStorage, dsn=pg_dsn, table=pg_table, timeout=0.5)

    @contextlib.contextmanager
    def make_unavailable(self, storage: PostgreSQLStorage) -> Iterator[None]:
        # Another session holds the table's strongest lock longer than the timeout.
        storage.ping()  # the table exists
        with psycopg.connect(storage.dsn) as other:
            other.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(storage.table)
                )
            )
            try:
                yield
            finally:
                other.rollback()


class TestPostgreSQLSpoolTargetConformance(SpoolTargetConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, pg_dsn: str, pg_table: str):
        # Every handle is the same host's: they share the spool's marks.
        return functools.partial(
            PostgreSQLStorage, dsn=pg_dsn, table=pg_table, timeout=0.5, spool_host="h1"
        )

    def make_unavailable(
        self, storage: PostgreSQLStorage
    ) -> contextlib.AbstractContextManager[None]:
        return TestPostgreSQLConformance.make_unavailable(TestPostgreSQLConformance(), storage)
