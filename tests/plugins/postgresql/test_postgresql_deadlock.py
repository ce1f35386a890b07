"""Deadlocks and serialization failures on the real PostgreSQL server: batches lock their
rows in selector order (two batches cannot wait for each other), a transaction that
deadlocked anyway is run again after a short back-off and nothing is lost, and a failure
that is not transient is not run again."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from pushreport.storage import SpooledBatch
from pushreport_core import Report, StorageUnavailable
from pushreport_postgresql import PostgreSQLStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTORS = [f"{i:040x}:c0f" for i in range(8)]
A, B = SELECTORS[0], SELECTORS[1]
RETRY_LINE = "running it again"


def report(selector: str, n: int = 0) -> Report:
    return Report(selector=selector, token_calls=f"tok{n:04d}AAAA", appid_calls="com.x.voip")


@pytest.fixture
def storage(pg_dsn: str, pg_table: str) -> Iterator[PostgreSQLStorage]:
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=10.0, pool_max=4)
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def raw(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own, outside the storage's pool. Superuser: it puts
    its own deadlock check off, so that of two transactions deadlocked, the storage's
    is the one the server ends (a superuser-only setting)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        try:
            conn.execute("SET deadlock_timeout = '60s'")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test server's user may not set deadlock_timeout (superuser)")
        yield conn


def reports_of(storage: PostgreSQLStorage) -> dict[str, int]:
    return {r.selector: r.reports for r in storage}


def wait_until_blocked(pg_dsn: str, table: str, *, waiting: int = 1) -> None:
    """Until *waiting* of the storage's statements on *table* wait for a lock (a
    bounded poll: the test fails, naming it, if they never do)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{table}%",),
            ).fetchone()
            if row is not None and row[0] >= waiting:
                return
            time.sleep(0.02)
    pytest.fail(f"no statement on {table} came to wait for a lock")


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # reported by the test
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _upsert_many(s: PostgreSQLStorage, selectors: list[str]) -> Any:
    return s.upsert_many([(report(sel), T0) for sel in selectors])


def _put_many(s: PostgreSQLStorage, selectors: list[str]) -> Any:
    regs = {r.selector: r for r in s}
    return s.put_many([regs[sel] for sel in selectors])


def _apply_spooled(s: PostgreSQLStorage, selectors: list[str]) -> Any:
    items = [(report(sel), T0) for sel in selectors]
    return s.apply_spooled(lambda marks: SpooledBatch(items=items, marks={"f": 1}))


@pytest.mark.parametrize(
    "batch",
    [_upsert_many, _put_many, _apply_spooled],
    ids=["upsert_many", "put_many", "apply_spooled"],
)
def test_a_batch_locks_its_rows_in_selector_order(
    storage: PostgreSQLStorage,
    raw: psycopg.Connection[Any],
    pg_dsn: str,
    pg_table: str,
    batch: Callable[[PostgreSQLStorage, list[str]], Any],
) -> None:
    """Given B before A, the batch takes A first: while it waits for B (held by another
    transaction), A is already locked by it."""
    storage.upsert_many([(report(A), T0), (report(B), T0)])
    table = sql.Identifier(pg_table)
    with raw.transaction():
        raw.execute(sql.SQL("SELECT 1 FROM {} WHERE selector = %s FOR UPDATE").format(table), (B,))
        thread, result = in_thread(lambda: batch(storage, [B, A]))
        wait_until_blocked(pg_dsn, pg_table)
        with psycopg.connect(pg_dsn, autocommit=True) as probe:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                probe.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE selector = %s FOR UPDATE NOWAIT").format(
                        table
                    ),
                    (A,),
                )
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not isinstance(result[0], BaseException), result[0]


def test_upsert_many_answers_in_the_order_given(storage: PostgreSQLStorage) -> None:
    given = [SELECTORS[3], SELECTORS[1], SELECTORS[3], SELECTORS[0]]
    got = storage.upsert_many(
        [(report(sel, n), T0 + timedelta(seconds=n)) for n, sel in enumerate(given)]
    )
    assert [r.selector for r in got] == given
    assert [r.reports for r in got] == [1, 1, 2, 1]
    # Reports of one selector merged in the order given: the later one's token stays.
    assert got[2].token_calls == report(SELECTORS[3], 2).token_calls
    assert storage.get(SELECTORS[3]).token_calls == report(SELECTORS[3], 2).token_calls  # type: ignore[union-attr]


def test_a_deadlocked_batch_is_run_again_and_nothing_is_lost(
    storage: PostgreSQLStorage,
    raw: psycopg.Connection[Any],
    pg_dsn: str,
    pg_table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real deadlock: another transaction holds B and then wants A, which the batch
    [A, B] holds while it waits for B. The server ends the batch's transaction (40P01);
    the batch is run again once the other has committed, and both writes are kept."""
    storage.upsert_many([(report(A), T0), (report(B), T0)])
    bump = sql.SQL("UPDATE {} SET reports = reports + 100 WHERE selector = %s").format(
        sql.Identifier(pg_table)
    )
    caplog.set_level(logging.INFO, logger="pushreport.postgresql")
    with raw.transaction():
        raw.execute(bump, (B,))
        thread, result = in_thread(lambda: _upsert_many(storage, [A, B]))
        wait_until_blocked(pg_dsn, pg_table)
        raw.execute(bump, (A,))  # waits for the batch's A until the server ends it
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not isinstance(result[0], BaseException), result[0]
    assert [r.selector for r in result[0]] == [A, B]
    assert reports_of(storage) == {A: 102, B: 102}
    retries = [r.getMessage() for r in caplog.records if RETRY_LINE in r.getMessage()]
    assert retries and "SQLSTATE 40P01" in retries[0], retries
    print(retries)


def test_hosts_batching_the_same_selectors_in_any_order_lose_nothing(
    pg_dsn: str, pg_table: str
) -> None:
    """Two handles ("hosts", each its own pool) and four threads each, batching the same
    selectors in shuffled orders at once: every batch is answered, every report counted."""
    hosts = [PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=10.0) for _ in range(2)]
    rounds, threads = 15, 8
    failures: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        rng = random.Random(t)
        host = hosts[t % 2]
        try:
            barrier.wait(timeout=30)
            for n in range(rounds):
                order = SELECTORS[:]
                rng.shuffle(order)
                host.upsert_many([(report(sel, n), T0 + timedelta(seconds=n)) for sel in order])
        except BaseException as exc:
            failures.append(exc)

    try:
        hosts[0].open()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not failures, failures[:3]
        assert reports_of(hosts[0]) == {sel: rounds * threads for sel in SELECTORS}
    finally:
        for h in hosts:
            h.close()


def test_a_failure_that_is_not_transient_is_not_run_again(
    pg_dsn: str, pg_table: str, raw: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A row held past the storage's timeout (55P03 or 57014): one attempt, then
    StorageUnavailable, and the batch stored nothing."""
    s = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=0.3)
    caplog.set_level(logging.INFO, logger="pushreport.postgresql")
    try:
        s.upsert_many([(report(A), T0)])
        with raw.transaction():
            raw.execute(
                sql.SQL("SELECT 1 FROM {} WHERE selector = %s FOR UPDATE").format(
                    sql.Identifier(pg_table)
                ),
                (A,),
            )
            with pytest.raises(
                StorageUnavailable, match="^postgresql (table is locked|statement timed out)$"
            ):
                s.upsert_many([(report(B), T0), (report(A), T0)])
        assert reports_of(s) == {A: 1}
    finally:
        s.close()
    assert not [r for r in caplog.records if RETRY_LINE in r.getMessage()]


def test_a_transaction_deadlocked_every_time_ends_in_storage_unavailable(
    storage: PostgreSQLStorage,
    raw: psycopg.Connection[Any],
    pg_dsn: str,
    pg_table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """upsert_if deadlocked on each attempt (the other transaction holds the row and
    wants the selector's advisory lock that upsert_if holds): after TRANSIENT_ATTEMPTS
    attempts, StorageUnavailable naming the deadlock, and nothing written."""
    from pushreport_postgresql import _storage

    storage.upsert_many([(report(A), T0)])
    caplog.set_level(logging.INFO, logger="pushreport.postgresql")
    key = f"pushreport:{pg_table}"
    others: list[threading.Thread] = []
    asked = []

    def want_the_advisory_lock() -> None:
        # In a savepoint, rolled back once granted: the lock goes, the row lock stays.
        raw.execute("SAVEPOINT other")
        raw.execute(  # the selector's turn, as the storage takes it
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s) & %s)",
            (key, A, _storage.SELECTOR_TURNS - 1),
        )
        raw.execute("ROLLBACK TO SAVEPOINT other")

    def allowed(stored: object) -> bool:
        # In the storage's transaction, after it took the advisory lock: the other
        # transaction, which holds A's row, now asks for that lock, and waits.
        asked.append(stored)
        for thread in others:
            thread.join(timeout=30)
        thread, _ = in_thread(want_the_advisory_lock)
        others.append(thread)
        wait_until_blocked(pg_dsn, "pg_advisory_xact_lock")
        return True

    row_lock = sql.SQL("SELECT 1 FROM {} WHERE selector = %s FOR UPDATE").format(
        sql.Identifier(pg_table)
    )
    raw.execute("BEGIN")
    raw.execute(row_lock, (A,))
    # Each attempt: the storage's upsert waits for A's row, the server ends it (40P01),
    # the other transaction gets the advisory lock; it keeps the row for the next one.
    with pytest.raises(StorageUnavailable) as caught:
        storage.upsert_if(report(A, 1), now=T0, allowed=allowed)
    for thread in others:
        thread.join(timeout=30)
    raw.execute("ROLLBACK")
    assert str(caught.value) == (
        f"postgresql transaction deadlocked (SQLSTATE 40P01), {_storage.TRANSIENT_ATTEMPTS} times"
    )
    assert len(asked) == _storage.TRANSIENT_ATTEMPTS
    assert reports_of(storage) == {A: 1}
    retries = [r for r in caplog.records if RETRY_LINE in r.getMessage()]
    assert len(retries) == _storage.TRANSIENT_ATTEMPTS - 1
