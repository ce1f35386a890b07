"""The spool's batch in one statement (``UPSERT_BATCH``): the same rows as a statement
per report, in the order received, whatever a selector's reports change in between
(its username, a token reported as null by the iOS delay, extra fields)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pushreport_sqlite._storage as sqlite_storage
from pushreport._spool import encode_report
from pushreport_core import Report
from pushreport_core.testing.strategies import reports

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

#: Reports of the conformance kit on a few selectors and usernames, so that a batch
#: repeats selectors and changes their usernames.
_reports = reports(
    selector=st.sampled_from([f"{i:040X}:7C3A0D14" for i in range(3)]),
    username=st.one_of(st.none(), st.sampled_from(["alice", "bob"])),
)


def _table(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_storage.SCHEMA:
        conn.execute(statement)
    return conn


def _rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM registrations ORDER BY selector").fetchall()


@pytest.mark.parametrize("given_as", ["reports", "lines"])
@settings(max_examples=120, deadline=None)
@given(st.lists(_reports, max_size=12), st.lists(_reports, max_size=12))
def test_a_batch_is_applied_in_one_statement_as_one_per_report_would(
    tmp_path_factory: pytest.TempPathFactory,
    given_as: str,
    stored: list[Report],
    batch: list[Report],
) -> None:
    """The batch as decoded reports (``_apply_reports``) or as the spool's lines
    (``_apply_lines``)."""
    folder = tmp_path_factory.mktemp("batch")
    items = [(r, T0 + timedelta(seconds=i)) for i, r in enumerate(batch)]
    earlier = [(r, T0 - timedelta(hours=1, seconds=-i)) for i, r in enumerate(stored)]
    one, whole = _table(folder / "one.sqlite3"), _table(folder / "whole.sqlite3")
    try:
        for conn in (one, whole):
            sqlite_storage._apply_one_by_one(conn, earlier)
        assert sqlite_storage._apply_one_by_one(one, items) == len(items)
        statements: list[str] = []
        whole.set_trace_callback(statements.append)
        if given_as == "lines":
            lines = [encode_report(r, now).rstrip(b"\n") for r, now in items]
            assert sqlite_storage._apply_lines(whole, lines)
        else:
            assert sqlite_storage._apply_reports(whole, items) == len(items)
        assert _rows(whole) == _rows(one)
        if items:  # one statement, not one per report
            upserts = [s for s in statements if s.startswith("INSERT INTO registrations")]
            assert len(upserts) == 1 and "json_each" in upserts[0]
    finally:
        one.close()
        whole.close()


def test_a_batch_that_cannot_be_bound_falls_back_and_drops_only_the_bad_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = Report(selector="A" * 40 + ":7C3A0D14", username="alice", token_msgs="QVBBOTFi")
    bad = Report(selector="B" * 40 + ":7C3A0D14", username=["a"], token_msgs="x")  # type: ignore[arg-type]
    conn = _table(tmp_path / "db.sqlite3")
    try:
        assert sqlite_storage._apply_reports(conn, [(good, T0), (bad, T0)]) == 1
        assert [r[0] for r in _rows(conn)] == [good.selector]
        assert "cannot be applied and is dropped" in caplog.text
    finally:
        conn.close()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b'["A:1",["a","list"],null,null,"x",null,"{}",null,"%s"]', id="a-list"),
        pytest.param(b'["A:1","u",null,null,"x",null,"[1]",null,"%s"]', id="extra-no-object"),
        pytest.param(b'["A:1","u",null,null,"x",null,"{\\"k\\":1}",null,"%s"]', id="extra-number"),
        pytest.param(b'["A:1","u",null,null,"x",null,"{}",null]', id="too-short"),
        pytest.param(b'{"selector":"A:1"}', id="an-object"),
        pytest.param(b'["A:1","u",null,null,"x",null,"{}",null,"%s"', id="no-json"),
        pytest.param(b'[null,"u",null,null,"x",null,"{}",null,"%s"]', id="no-selector"),
    ],
)
def test_lines_with_one_that_is_no_report_apply_nothing(tmp_path: Path, bad: bytes) -> None:
    """The caller then applies the decoded items, which skip the bad line (and say so)."""
    at = b"2024-05-01T12:00:00.000000Z"
    good = encode_report(Report(selector="B" * 40 + ":7C3A0D14", token_msgs="QVBB"), T0)
    conn = _table(tmp_path / "db.sqlite3")
    try:
        bad_line = bad.replace(b"%s", at)
        assert not sqlite_storage._apply_lines(conn, [good.rstrip(b"\n"), bad_line])
        assert _rows(conn) == []
    finally:
        conn.close()


def test_a_spool_round_applies_the_lines_without_decoding_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import spooled

    storage = spooled(tmp_path / "db.sqlite3", interval=10)
    try:
        for i in range(5):
            storage.upsert(
                Report(selector=f"{i:040X}:7C3A0D14", username="u", token_msgs="QVBBOTFi"),
                now=T0 + timedelta(seconds=i),
                read_back=False,
            )

        def no(*args: object) -> int:
            raise AssertionError("the reports were decoded")

        monkeypatch.setattr(sqlite_storage, "_apply_reports", no)
        assert storage.apply_spool() == 5
        assert len(storage.find(username="u")) == 5
    finally:
        monkeypatch.undo()
        storage.close()
