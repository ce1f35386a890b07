"""The report spool's backlog as /metrics reports it: read from the spool files and the
backend's marks when scraped, so that every process reports the same."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pushreport._spool import SpoolFiles, encode_report
from pushreport.storage import Capabilities
from pushreport_core import Report

from .conftest import spooled
from .test_spool import report, spool_files


def test_the_backlog_is_what_waits_and_is_gone_once_applied(db_path: Path) -> None:
    storage = spooled(db_path, interval=10)  # its own applier waits 10 s: not in this test
    try:
        metrics = Capabilities.of(storage).metrics
        assert metrics is not None, "the spool declares metrics"
        assert metrics() == {
            "spool_backlog_lines": 0,
            "spool_backlog_bytes": 0,
            "spool_max_bytes": 16 << 20,
            "spool_oldest_age_seconds": 0.0,
        }
        # Another process's file: two reports received an hour ago and a minute ago,
        # then a line being written (no newline yet).
        now = datetime.now(timezone.utc)
        other = SpoolFiles(Path(f"{db_path}.spool"))
        lines = [
            encode_report(report(1), now - timedelta(hours=1)),
            encode_report(report(2), now - timedelta(minutes=1)),
        ]
        for line in lines:
            other.append(line)
        partial = encode_report(report(3), now)[:-10]
        (name,) = spool_files(db_path)
        with open(Path(f"{db_path}.spool", name), "ab") as f:
            f.write(partial)
        # And this process's own report, received now.
        storage.upsert(report(4), now=now, read_back=False)
        own = encode_report(report(4), now)
        figures = metrics()
        assert figures["spool_backlog_lines"] == 3
        waiting = sum(map(len, lines)) + len(partial) + len(own)
        assert figures["spool_backlog_bytes"] == waiting
        assert 3600 <= figures["spool_oldest_age_seconds"] < 3600 + 600
        assert storage.apply_spool() == 3
        figures = metrics()
        assert figures["spool_backlog_lines"] == 0
        assert figures["spool_backlog_bytes"] == len(partial)  # a line being written
        assert figures["spool_oldest_age_seconds"] == 0.0
        other.close()
    finally:
        storage.close()


def test_a_line_that_is_no_report_counts_but_has_no_age(db_path: Path) -> None:
    storage = spooled(db_path, interval=10)
    try:
        folder = Path(f"{db_path}.spool")
        folder.mkdir()
        (folder / "1-00000000.jsonl").write_bytes(b"not a report\n")
        other = SpoolFiles(folder)
        other.append(encode_report(Report(selector="A" * 40 + ":1"), datetime.now(timezone.utc)))
        figures = Capabilities.of(storage).metrics()  # type: ignore[misc]
        assert figures["spool_backlog_lines"] == 2
        assert 0 <= figures["spool_oldest_age_seconds"] < 600
        other.close()
    finally:
        storage.close()


def test_no_spool_folder_yet_is_no_backlog(db_path: Path) -> None:
    storage = spooled(db_path)
    try:
        assert not os.path.exists(f"{db_path}.spool")
        assert Capabilities.of(storage).metrics()["spool_backlog_lines"] == 0  # type: ignore[misc]
    finally:
        storage.close()
