"""The PostgreSQL backend applies the spool's lines as they are (``SpooledBatch.lines``):
the same rows as the decoded reports, a selector's reports in the order received (one
statement per generation: ON CONFLICT meets a row once per statement), a removal that
outlived a report still wins, and a batch with a line that is not a report falls back
to the decoded reports, which skip that line. Real server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pushreport_postgresql._storage as pg_storage
from pushreport._spool import encode_report
from pushreport.storage import SpooledBatch
from pushreport_core import Report
from pushreport_core.testing.strategies import reports
from pushreport_postgresql import PostgreSQLStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTORS = [f"{i:040x}:c0f" for i in range(3)]

#: Reports of the conformance kit on a few selectors and usernames, so that a batch
#: repeats selectors and changes their usernames.
_reports = reports(
    selector=st.sampled_from(SELECTORS),
    username=st.one_of(st.none(), st.sampled_from(["alice", "bob"])),
)


@pytest.fixture
def two(pg_dsn: str, pg_table: str) -> Iterator[tuple[PostgreSQLStorage, PostgreSQLStorage]]:
    """Two tables: one fed decoded reports, one fed lines."""
    made = [
        PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=2),
        PostgreSQLStorage(dsn=pg_dsn, table=pg_table + "_l", timeout=2),
    ]
    yield made[0], made[1]
    for storage in made:
        storage.close()
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for suffix in ("", "_schema", "_spool", "_removed", "_limits"):
            conn.execute(f'DROP TABLE IF EXISTS "{pg_table}_l{suffix}"')


def _rows(storage: PostgreSQLStorage) -> list[Any]:
    return sorted((r.to_json() for r in storage), key=lambda r: r["selector"])


def _lines(items: list[tuple[Report, datetime]]) -> list[bytes]:
    return [encode_report(r, now).rstrip(b"\n") for r, now in items]


def _apply(storage: PostgreSQLStorage, batch: SpooledBatch) -> int:
    return storage.apply_spooled(lambda marks: batch)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(_reports, max_size=10))
def test_lines_give_the_rows_the_decoded_reports_give(
    two: tuple[PostgreSQLStorage, PostgreSQLStorage],
    monkeypatch: pytest.MonkeyPatch,
    batch: list[Report],
) -> None:
    decoded, lined = two
    for storage in two:  # a fresh start: every selector removed now (tombstones)
        for selector in SELECTORS:
            storage.remove(selector)
    # Half the reports received before those removals (they stay out), half after.
    now = datetime.now(timezone.utc)
    items = [(r, now + timedelta(minutes=i - len(batch) // 2)) for i, r in enumerate(batch)]
    assert _apply(decoded, SpooledBatch(items=items)) == len(items)

    def no(*args: object) -> Any:
        raise AssertionError("the lines were decoded")

    with monkeypatch.context() as m:
        m.setattr(pg_storage, "_params", no)
        assert _apply(lined, SpooledBatch(items=[], lines=_lines(items))) == len(items)
    assert _rows(lined) == _rows(decoded)


def test_a_batch_with_a_line_that_is_no_report_is_applied_from_the_reports(
    two: tuple[PostgreSQLStorage, PostgreSQLStorage],
) -> None:
    _, lined = two
    later = datetime.now(timezone.utc) + timedelta(hours=1)  # than each removal below
    good = (Report(selector=SELECTORS[0], username="alice", token_msgs="QVBB"), later)
    bad_lines = [
        b'["%s","u",null,null,"x",null,"not json",null,"2024-05-01T12:00:00.000000Z"]',
        b'["%s",["a"],null,null,"x",null,"{}",null,"2024-05-01T12:00:00.000000Z"]',
        b'["%s","u",null,null,"x",null,"{\\"k\\":1}",null,"2024-05-01T12:00:00.000000Z"]',
    ]
    for bad in bad_lines:
        line = bad.replace(b"%s", SELECTORS[1].encode())
        # The items are what the spool decoded: the bad line is not among them.
        batch = SpooledBatch(items=[good], lines=[*_lines([good]), line])
        assert _apply(lined, batch) == 1
        assert [r.selector for r in lined] == [SELECTORS[0]]
        lined.remove(SELECTORS[0])


def test_a_spool_round_on_postgresql_applies_lines(
    pg_dsn: str, pg_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushreport.spool import SpooledStorage

    backend = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=2)
    storage = SpooledStorage(backend, folder=tmp_path / "spool", interval=10)
    try:
        for i in range(6):
            report = Report(selector=SELECTORS[i % 3], username="u", token_msgs=f"T{i}")
            storage.upsert(report, now=T0 + timedelta(seconds=i), read_back=False)

        def no(*args: object) -> Any:
            raise AssertionError("the lines were decoded")

        monkeypatch.setattr(pg_storage, "_params", no)
        assert storage.apply_spool() == 6
        monkeypatch.undo()
        got = {r.selector: (r.token_msgs, r.reports) for r in storage}
        assert got == {SELECTORS[0]: ("T3", 2), SELECTORS[1]: ("T4", 2), SELECTORS[2]: ("T5", 2)}
    finally:
        storage.close()
