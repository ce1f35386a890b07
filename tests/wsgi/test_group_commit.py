"""Group commit: concurrent upserts share transactions and lose nothing."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from pushreport._batch import GroupCommit
from pushreport_core import Report, StorageUnavailable, merge
from pushreport_sqlite import SQLiteStorage

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def selector(i: int) -> str:
    return f"{i:040X}:0A"


def test_concurrent_upserts_are_batched_and_all_committed(tmp_path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3", synchronous="full")
    group = GroupCommit(storage)
    threads, per_thread = 16, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            try:
                reg = group.upsert(
                    Report(
                        selector=selector(i % 10),
                        token_msgs=f"TOKEN{t:03d}AAAA",
                        username=f"user{i % 10}",
                    ),
                    now=T0 + timedelta(seconds=i),
                )
                assert reg.selector == selector(i % 10)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=60)
    assert errors == []
    assert group.reports == threads * per_thread
    assert group.batches < group.reports  # some reports shared a commit
    stored = {r.selector: r for r in storage}
    assert len(stored) == 10
    assert sum(r.reports for r in stored.values()) == threads * per_thread
    assert all(r.token_msgs and r.token_msgs.startswith("TOKEN") for r in stored.values())


def test_batch_applies_the_merge_rule_in_order(tmp_path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    reports = [
        Report(selector=selector(1), token_msgs="AAAAAAAAAAAA", appid_msgs="com.a.b"),
        Report(selector=selector(1), token_calls="BBBBBBBBBBBB"),
        Report(selector=selector(1), token_msgs="CCCCCCCCCCCC"),
    ]
    results = storage.upsert_many([(r, T0 + timedelta(seconds=i)) for i, r in enumerate(reports)])
    expected = None
    for i, r in enumerate(reports):
        expected = merge(expected, r, now=T0 + timedelta(seconds=i))
    assert results[-1] == expected == storage.get(selector(1))
    assert [r.reports for r in results] == [1, 2, 3]


def test_a_failed_batch_fails_every_waiter_and_stores_nothing(tmp_path):
    import sqlite3

    storage = SQLiteStorage(tmp_path / "db.sqlite3", busy_timeout=0.2)
    storage.upsert(Report(selector=selector(0)), now=T0)
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageUnavailable):
            storage.upsert_many([(Report(selector=selector(i)), T0) for i in range(1, 4)])
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert [r.selector for r in storage] == [selector(0)]
