"""The report spool in front of PostgreSQL, with two hosts sharing one database: each
host's spool in a folder of its own, its marks under its own name; a removal on one
host is never undone by a report the other spooled before it (tombstones in
``<table>_removed``, the core's ``outlived_by_removal``). Real server, real files."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg import sql

from pushreport.spool import SpooledStorage
from pushreport.storage import SpooledBatch, StorageContext
from pushreport_core import Report, outlived_by_removal
from pushreport_postgresql import SCHEMA_VERSION, PostgreSQLStorage

SELECTOR = "0123456789abcdef0123456789abcdef01234567:c0f"
OTHER = "fedcba9876543210fedcba9876543210fedcba98:c0f"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _report(token: str, selector: str = SELECTOR) -> Report:
    return Report(selector=selector, username="alice", token_msgs=token, appid_msgs="com.x")


@pytest.fixture
def host(
    pg_dsn: str, pg_table: str, tmp_path: Path
) -> Iterator[functools.partial[SpooledStorage]]:
    """A factory of hosts: each a spooled storage on the shared table, with a spool of
    its own (no background rounds: the test applies when it says so)."""
    made: list[SpooledStorage] = []

    def make(name: str) -> SpooledStorage:
        backend = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=2, spool_host=name)
        storage = SpooledStorage(backend, folder=tmp_path / f"{name}.spool", interval=10)
        made.append(storage)
        return storage

    yield functools.partial(make)
    for storage in made:
        storage.close()


def test_a_removal_is_not_undone_by_a_report_spooled_before_it(host) -> None:
    a, b = host("host-a"), host("host-b")
    a.upsert(_report("T0"), now=_now(), read_back=False)
    a.apply_spool()
    assert b.get(SELECTOR) is not None
    # Host A receives R (t1) and spools it; host B removes the selector (t2 > t1)
    # before A's applier runs.
    a.upsert(_report("T1"), now=_now(), read_back=False)
    assert b.remove(SELECTOR) is True
    assert a.apply_spool() == 1  # applied: skipped, not kept for later
    assert a.get(SELECTOR) is None and b.get(SELECTOR) is None
    # A report received after the removal registers again.
    a.upsert(_report("T2"), now=_now(), read_back=False)
    a.apply_spool()
    stored = b.get(SELECTOR)
    assert stored is not None and stored.token_msgs == "T2" and stored.reports == 1


def test_a_removal_of_a_selector_never_stored_still_outlives_a_spooled_report(host) -> None:
    a, b = host("host-a"), host("host-b")
    a.upsert(_report("T1"), now=_now(), read_back=False)
    assert b.remove(SELECTOR) is False  # nothing stored yet: A's report is on its way
    a.apply_spool()
    assert b.get(SELECTOR) is None


@pytest.mark.parametrize("how", ["remove", "remove_if"])
def test_a_removal_during_an_open_apply_of_an_earlier_report_holds(
    host, pg_dsn: str, pg_table: str, how: str
) -> None:
    """Host A's applier has inserted a report received before the removal but not yet
    committed (a trigger holds its transaction open) when host B removes the selector:
    B's DELETE cannot see that row, nor A's check B's tombstone. Both take the
    selector's lock, so B waits for A's commit and deletes what A applied."""
    import threading

    a, b = host("host-a"), host("host-b")
    a.ping(), b.ping()  # the schema exists
    hold = sql.Identifier(f"{pg_table}_hold")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$"
            ).format(hold)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER hold AFTER INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(pg_table), hold)
        )
    try:
        a.upsert(_report("T1"), now=_now(), read_back=False)  # received before the removal
        applier = threading.Thread(target=a.apply_spool)
        applier.start()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while not conn.execute(  # A's insert is done, its transaction open
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE %s",
                (f"%{pg_table}%",),
            ).fetchone():
                assert applier.is_alive(), "the apply ended before the trigger held it"
        if how == "remove":
            b.remove(SELECTOR)
        else:
            b.remove_if(SELECTOR, lambda stored: True)
        applier.join()
        assert b.get(SELECTOR) is None and a.get(SELECTOR) is None
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(hold))


def test_remove_if_of_nothing_stored_leaves_a_tombstone_unless_refused(host) -> None:
    a, b = host("host-a"), host("host-b")
    a.upsert(_report("T1"), now=_now(), read_back=False)
    a.upsert(_report("T1", OTHER), now=_now(), read_back=False)
    assert b.remove_if(SELECTOR, lambda stored: stored is None) is None
    assert b.remove_if(OTHER, lambda stored: False) is None  # refused: no tombstone
    a.apply_spool()
    assert b.get(SELECTOR) is None
    assert b.get(OTHER) is not None


def test_remove_if_leaves_a_tombstone_too(host) -> None:
    a, b = host("host-a"), host("host-b")
    a.upsert(_report("T0"), now=_now(), read_back=False)
    a.apply_spool()
    a.upsert(_report("T1"), now=_now(), read_back=False)
    assert b.remove_if(SELECTOR, lambda stored: True) is not None
    a.apply_spool()
    assert b.get(SELECTOR) is None


def test_each_host_keeps_its_own_marks(host, pg_dsn: str, pg_table: str) -> None:
    """A host's round never forgets the other's marks (its files are not in its own
    folder): every report is applied once, whichever host applies when."""
    a, b = host("host-a"), host("host-b")
    for i in range(3):
        a.upsert(_report(f"A{i}"), now=_now(), read_back=False)
        b.upsert(_report(f"B{i}", OTHER), now=_now(), read_back=False)
        b.apply_spool()
        a.apply_spool()
    b.apply_spool()
    a.apply_spool()
    stored_a, stored_b = b.get(SELECTOR), a.get(OTHER)
    assert stored_a is not None and stored_a.reports == 3 and stored_a.token_msgs == "A2"
    assert stored_b is not None and stored_b.reports == 3 and stored_b.token_msgs == "B2"
    with psycopg.connect(pg_dsn) as conn:
        hosts = conn.execute(
            sql.SQL("SELECT DISTINCT host FROM {} ORDER BY host").format(
                sql.Identifier(f"{pg_table}_spool")
            )
        ).fetchall()
    assert hosts == [("host-a",), ("host-b",)]


@pytest.mark.parametrize("offset_us", [-1, 0, 1])
def test_the_sql_decides_as_the_core_does(pg_dsn: str, pg_table: str, offset_us: int) -> None:
    """One rule: a spooled report received *offset_us* from a tombstone is applied
    exactly when ``outlived_by_removal`` says it is not outlived."""
    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, spool_host="h")
    try:
        storage.ping()  # the schema exists
        removed_at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("INSERT INTO {} (selector, removed_at) VALUES (%s, %s)").format(
                    sql.Identifier(f"{pg_table}_removed")
                ),
                (SELECTOR, removed_at),
            )
        received = removed_at + timedelta(microseconds=offset_us)
        storage.apply_spooled(lambda marks: SpooledBatch(items=[(_report("T"), received)]))
        applied = storage.get(SELECTOR) is not None
        assert applied is not outlived_by_removal(received, removed_at)
    finally:
        storage.close()


def test_outlived_by_removal() -> None:
    t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert outlived_by_removal(t, None) is False
    assert outlived_by_removal(t, t) is True
    assert outlived_by_removal(t - timedelta(microseconds=1), t) is True
    assert outlived_by_removal(t + timedelta(microseconds=1), t) is False


def test_prune_forgets_old_tombstones(pg_dsn: str, pg_table: str) -> None:
    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        storage.remove(SELECTOR)
        removed = sql.Identifier(f"{pg_table}_removed")
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            count = sql.SQL("SELECT count(*) FROM {}").format(removed)
            assert conn.execute(count).fetchone() == (1,)
            storage.prune(_now() - timedelta(days=1))
            assert conn.execute(count).fetchone() == (1,)
            storage.prune(_now() - timedelta(days=1), dry_run=True)
            storage.prune(_now() + timedelta(seconds=5))
            assert conn.execute(count).fetchone() == (0,)
    finally:
        storage.close()


def test_a_version_1_table_is_upgraded_keeping_its_rows(pg_dsn: str, pg_table: str) -> None:
    old = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    old.upsert(_report("T0"), now=_now())
    old.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # back to what version 1 made
        for suffix in ("_spool", "_removed"):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"{pg_table}{suffix}")))
        conn.execute(
            sql.SQL("UPDATE {} SET version = 1").format(sql.Identifier(f"{pg_table}_schema"))
        )
    new = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, spool_host="h")
    try:
        assert new.spool_marks() == {}
        assert new.remove(SELECTOR) is True
        with psycopg.connect(pg_dsn) as conn:
            version = conn.execute(
                sql.SQL("SELECT max(version) FROM {}").format(sql.Identifier(f"{pg_table}_schema"))
            ).fetchone()
        assert version == (SCHEMA_VERSION,) == (2,)
    finally:
        new.close()


def test_spool_option_wraps_it_with_a_spool_of_this_host(
    pg_dsn: str, pg_table: str, tmp_path: Path
) -> None:
    context = StorageContext(base_dir=tmp_path)
    plain = PostgreSQLStorage.from_options({"dsn": pg_dsn, "table": pg_table}, context)
    assert isinstance(plain, PostgreSQLStorage)
    spooled = PostgreSQLStorage.from_options(
        {"dsn": pg_dsn, "table": pg_table, "spool": True, "spool_dir": "s"}, context
    )
    try:
        assert isinstance(spooled, SpooledStorage)
        assert spooled.folder == tmp_path / "s" and spooled.fsync is True
        assert isinstance(spooled.storage, PostgreSQLStorage)
        assert spooled.storage.spool_host.endswith(f":{tmp_path / 's'}")
        spooled.upsert(_report("T0"), now=_now(), read_back=False)
        assert len(list((tmp_path / "s").glob("*.jsonl"))) == 1
        assert plain.get(SELECTOR) is None  # spooled, not applied yet
        spooled.apply_spool()
        stored = plain.get(SELECTOR)
        assert stored is not None and stored.token_msgs == "T0"
    finally:
        spooled.close()
        plain.close()


def test_the_spooled_upserts_column_types_are_the_tables(pg_dsn: str, pg_table: str) -> None:
    from pushreport_postgresql._storage import _COLUMN_TYPES

    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        storage.ping()
    finally:
        storage.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns"
            " JOIN pg_attribute ON attrelid = %s::regclass AND attname = column_name"
            " WHERE table_name = %s",
            (pg_table, pg_table),
        ).fetchall()
    names = {"timestamp with time zone": "timestamptz"}
    assert {c: names.get(t, t) for c, t in rows} == dict(_COLUMN_TYPES)


def test_a_backlog_of_any_size_is_applied_in_one_batch(pg_dsn: str, pg_table: str) -> None:
    """A spool's backlog after an outage (20,000 selectors) is one batch: its selectors'
    turns are a bounded number of advisory locks, not one each (which would exhaust the
    server's shared lock table, max_locks_per_transaction x max_connections, and leave
    the spool unable to drain)."""
    backend = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=60, spool_host="backlog")
    try:
        received = _now()
        items = [(_report("T", selector=f"{i:040x}:c0f"), received) for i in range(20_000)]
        assert backend.apply_spooled(lambda marks: SpooledBatch(items=items)) == 20_000
        assert backend.count() == 20_000
    finally:
        backend.close()
