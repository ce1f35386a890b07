"""Fixtures for the PostgreSQL backend's tests: a real server, a fresh table per test.

The server is ``$PUSHREPORT_TEST_DATABASE_URL``, else the local one at 127.0.0.1:5432
(database ``test``, user ``postgres`` or ``root``). Without one the tests are skipped,
except under ``CI=true``, where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is not installed: pip install 'pushreport[postgresql]'"
)
from psycopg import sql  # noqa: E402

_CANDIDATES = (
    "host=127.0.0.1 port=5432 dbname=test user=postgres",
    "host=127.0.0.1 port=5432 dbname=test user=root",
)


def _find_server() -> tuple[str | None, str]:
    env = os.environ.get("PUSHREPORT_TEST_DATABASE_URL")
    candidates = (env,) if env else _CANDIDATES
    reasons = []
    for dsn in candidates:
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return dsn, ""
        except psycopg.Error as exc:
            reasons.append(type(exc).__name__)
    where = "$PUSHREPORT_TEST_DATABASE_URL" if env else "127.0.0.1:5432 (database test)"
    return None, f"no PostgreSQL server reachable at {where}: {', '.join(reasons)}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn, reason = _find_server()
    if dsn is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return dsn


@pytest.fixture
def pg_table(pg_dsn: str) -> Iterator[str]:
    """A table name no other test run uses; the table is dropped afterwards."""
    table = f"pushreport_t_{uuid.uuid4().hex[:16]}"
    yield table
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in (
            table,
            f"{table}_schema",
            f"{table}_limits",
            f"{table}_spool",
            f"{table}_removed",
        ):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
