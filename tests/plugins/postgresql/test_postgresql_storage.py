"""The PostgreSQL backend beyond the conformance suite: options, secrecy, hosts, forks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pushreport.storage import StorageContext
from pushreport_core import MERGE_POLICY, ConfigurationError, Policy, Report, StorageUnavailable
from pushreport_postgresql import SCHEMA_VERSION, PostgreSQLStorage

from ...conftest import wait_for_child

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTORS = (
    "0123456789abcdef0123456789abcdef01234567:c0f",
    "fedcba9876543210fedcba9876543210fedcba98:c0f",
)
FULL = Report(
    selector=SELECTORS[0],
    username="alice",
    token_calls="Y2FsbHM=",
    appid_calls="com.example.app.voip",
    token_msgs="bXNncw==",
    appid_msgs="com.example.app",
)
SECRET_DSN = "postgresql://pushreport:s3cr3t-pw@127.0.0.1:1/test"
CONTEXT = StorageContext(base_dir=Path("/nonexistent"))


def options(**kw: object) -> PostgreSQLStorage:
    return PostgreSQLStorage.from_options(kw, CONTEXT, environ={})


# -- options ---------------------------------------------------------------------------


def test_registered_as_an_entry_point() -> None:
    (ep,) = [ep for ep in entry_points(group="pushreport") if ep.name == "postgresql"]
    assert ep.value == "pushreport_postgresql"
    assert ep.load().pushreport_register_storage is not None


def test_defaults() -> None:
    s = options(dsn="dbname=test")
    assert (s.table, s.pool_min, s.pool_max, s.timeout) == ("pushreport_registrations", 1, 4, 2.0)


def test_dsn_from_the_environment_when_the_option_is_absent() -> None:
    s = PostgreSQLStorage.from_options(
        {}, CONTEXT, environ={"PUSHREPORT_DATABASE_URL": "dbname=x"}
    )
    assert s.dsn == "dbname=x"
    assert (
        PostgreSQLStorage.from_options(
            {"dsn": "dbname=y"}, CONTEXT, environ={"PUSHREPORT_DATABASE_URL": "dbname=x"}
        ).dsn
        == "dbname=y"
    )


def test_no_dsn_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        options()
    assert str(info.value) == (
        "storage.postgresql.dsn: missing: set it, or the "
        "environment variable PUSHREPORT_DATABASE_URL"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dsn", 5, "must be a connection string (a non-empty string)"),
        ("pool_min", -1, "must be a whole number from 0 to 1000, not -1"),
        ("pool_max", 0, "must be a whole number from 1 to 1000, not 0"),
        ("pool_max", True, "must be a whole number from 1 to 1000, not True"),
        ("pool_min", 5, "must be at most pool_max (4), not 5"),
        ("timeout", 0, "must be a number of seconds more than 0 and at most 60, not 0"),
        ("timeout", "2", "must be a number of seconds more than 0 and at most 60, not '2'"),
        (
            "table",
            "x; DROP TABLE y",
            "must be a table name of letters, digits and _ (at most "
            "48, not starting with a digit), not 'x; DROP TABLE y'",
        ),
        (
            "tabel",
            "x",
            "unknown option; the options are dsn, pool_min, pool_max, timeout, table, "
            "spool, spool_interval, spool_max_bytes, spool_dir, spool_fsync",
        ),
        ("spool", "yes", "must be true or false, not 'yes'"),
        ("spool_fsync", 1, "must be true or false, not 1"),
    ],
)
def test_bad_options_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        options(**{"dsn": "dbname=test", key: value})
    assert str(info.value) == f"storage.postgresql.{key}: {message}"


def test_the_dsn_is_in_no_repr_and_no_error() -> None:
    s = options(dsn=SECRET_DSN, timeout=0.3)
    try:
        assert "s3cr3t" not in repr(s) and "dsn" not in repr(s)
        with pytest.raises(StorageUnavailable) as info:
            s.ping()  # nothing listens on port 1
        assert str(info.value) == "postgresql connection pool timed out"
        assert info.value.retry_after == 1
    finally:
        s.close()


def test_a_closed_storage_is_unavailable(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    s.close()
    with pytest.raises(StorageUnavailable, match="^postgresql storage is closed$"):
        s.get(SELECTORS[0])


def test_naive_now_is_refused(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        with pytest.raises(ValueError, match="aware datetime"):
            s.upsert(FULL, now=T0.replace(tzinfo=None))
    finally:
        s.close()


# -- the schema --------------------------------------------------------------------------


def test_schema_columns_and_version(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        s.upsert(FULL, now=T0)
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s",
                (pg_table,),
            ).fetchall()
        )
        version = conn.execute(
            sql.SQL("SELECT version FROM {}").format(sql.Identifier(f"{pg_table}_schema"))
        ).fetchall()
        row = conn.execute(
            sql.SQL("SELECT extra, reports FROM {}").format(sql.Identifier(pg_table))
        ).fetchone()
    assert types["extra"] == "jsonb" and types["reports"] == "integer"
    assert types["first_seen"] == types["last_seen"] == "timestamp with time zone"
    assert version == [(SCHEMA_VERSION,)]
    assert row == ({}, 1)


def test_many_handles_starting_together_create_the_schema_once(pg_dsn: str, pg_table: str) -> None:
    handles = [PostgreSQLStorage(dsn=pg_dsn, table=pg_table, pool_min=0) for _ in range(6)]
    barrier = threading.Barrier(len(handles))
    errors: list[BaseException] = []

    def start(s: PostgreSQLStorage) -> None:
        try:
            barrier.wait(timeout=10)
            s.ping()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for s in handles:
        s.close()
    assert errors == []
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{pg_table}_schema"))
        ).fetchone() == (1,)


def test_a_newer_schema_is_refused(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    s.ping()
    s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET version = %s").format(sql.Identifier(f"{pg_table}_schema")),
            (SCHEMA_VERSION + 1,),
        )
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        with pytest.raises(StorageUnavailable) as info:
            s.get(SELECTORS[0])
        assert str(info.value) == (
            f"postgresql table schema version {SCHEMA_VERSION + 1} "
            f"is newer than this pushreport's ({SCHEMA_VERSION})"
        )
    finally:
        s.close()


# -- two hosts, forks, batches ---------------------------------------------------------------


def test_two_hosts_never_erase_a_known_token(pg_dsn: str, pg_table: str) -> None:
    """Two handles with separate pools stand for two hosts behind a load balancer: one
    gets the full reports, the other the iOS-delayed ones with no tokens at all."""
    full_host = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    late_host = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    count = 40
    returned: list = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(host: PostgreSQLStorage, tokens: bool, worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(count):
                selector = SELECTORS[i % 2]
                report = (
                    Report(
                        selector=selector,
                        token_calls=f"c{worker}x{i}",
                        token_msgs=f"m{worker}x{i}",
                    )
                    if tokens
                    else Report(selector=selector, extra={"w": str(worker)})
                )
                returned.append(host.upsert(report, now=T0 + timedelta(milliseconds=i)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        # Both selectors known first, so that no report may ever see them tokenless.
        for selector in SELECTORS:
            full_host.upsert(Report(selector=selector, token_calls="c", token_msgs="m"), now=T0)
        threads = [
            threading.Thread(target=work, args=(host, tokens, w))
            for w, (host, tokens) in enumerate([(full_host, True), (late_host, False)] * 2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(returned) == 4 * count
        assert all(r.token_calls and r.token_msgs for r in returned)
        for selector in SELECTORS:
            stored = late_host.get(selector)
            assert stored is not None and stored.token_calls and stored.token_msgs
            assert stored.reports == 1 + 2 * count
            assert sorted(r.reports for r in returned if r.selector == selector) == list(
                range(2, 2 + 2 * count)
            )
    finally:
        full_host.close()
        late_host.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_opens_its_own_pool(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        s.upsert(FULL, now=T0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                code = 0 if s.upsert(FULL, now=T0).reports == 2 else 2
                s.close()
            finally:
                os._exit(code)
        assert wait_for_child(pid) == 0
        # The parent's connections survived the child's use and close.
        assert s.upsert(FULL, now=T0).reports == 3
    finally:
        s.close()


def test_a_failed_batch_stores_nothing(pg_dsn: str, pg_table: str) -> None:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=0.3)
    try:
        s.ping()
        items = [(Report(selector=sel, token_calls="dG9r"), T0) for sel in SELECTORS]
        with psycopg.connect(pg_dsn) as other:
            # The second row locked elsewhere: the first one must not stay behind.
            other.execute(
                sql.SQL(
                    "INSERT INTO {} (selector, first_seen, last_seen, reports)"
                    " VALUES (%s, now(), now(), 1)"
                ).format(sql.Identifier(pg_table)),
                (SELECTORS[1],),
            )
            with pytest.raises(StorageUnavailable) as info:
                s.upsert_many(items)
            assert str(info.value) in (
                "postgresql table is locked",
                "postgresql statement timed out",
            )
            other.rollback()
        assert s.get(SELECTORS[0]) is None and s.get(SELECTORS[1]) is None
        assert [r.reports for r in s.upsert_many(items + items[:1])] == [1, 1, 2]
    finally:
        s.close()


def test_the_plugin_loads_without_psycopg() -> None:
    """psycopg is optional: without it the plugin still loads (every installation loads
    it), and only choosing the backend is an error, naming the extra to install."""
    code = textwrap.dedent("""
        import sys
        sys.modules["psycopg"] = sys.modules["psycopg_pool"] = None  # not installed
        from pathlib import Path
        import pushreport_postgresql as plugin
        from pushreport_core import ConfigurationError
        from pushreport.storage import StorageContext
        factories = {}
        def register(name, factory, **declared):
            factories[name] = factory
        plugin.pushreport_register_storage(register=register)
        try:
            factories["postgresql"]({"dsn": "dbname=x"}, StorageContext(base_dir=Path(".")))
        except ConfigurationError as exc:
            print(exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == (
        "storage.postgresql: needs psycopg 3 and psycopg-pool, which are not "
        "installed: pip install 'pushreport[postgresql]'\n"
    )


def test_every_merge_policy_has_its_postgresql_expression(pg_dsn: str) -> None:
    """A policy added to the core without its SQL here fails, not an upsert."""
    from pushreport_postgresql import _storage as pg

    assert set(pg.NEW_SQL) == set(Policy)
    assert set(pg.MERGE_SQL) == set(Policy) - {Policy.KEY}
    with psycopg.connect(pg_dsn) as conn:
        upsert = pg._Statements("t").upsert.as_string(conn)
    for column, policy in MERGE_POLICY.items():
        if policy is not Policy.KEY:
            expression = pg.MERGE_SQL[policy].format(c=f'"{column}"', p="", now="")
            assert f'"{column}" = {expression}' in upsert
    assert upsert.count(" = ") == len(MERGE_POLICY) - 1
