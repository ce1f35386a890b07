"""The writers' turn: report writers queue on ``<db>.writers`` (an flock) instead of
sleeping inside SQLite; a scheduling hint that must never decide correctness."""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from pushreport_core import Report
from pushreport_sqlite import SQLiteStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
REPORT = Report(
    selector=SELECTOR,
    username="johndow",
    token_msgs="QVBBOTFiRzlhcVd2",
    appid_msgs="com.cloudsoftphone.app",
)


def test_a_writer_waits_for_its_turn_and_writes_once_it_has_it(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    try:
        storage.upsert(REPORT, now=T0, read_back=False)  # creates the turn file
        turn = tmp_path / "db.sqlite3.writers"
        assert turn.exists()
        fd = os.open(turn, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the turn
        done = threading.Event()

        def write() -> None:
            storage.upsert(REPORT, now=T0, read_back=False)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3), "wrote without its turn"
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert done.wait(5), "never got its turn after the holder let go"
        writer.join()
        os.close(fd)
        stored = storage.get(SELECTOR)
        assert stored is not None and stored.reports == 2
    finally:
        storage.close()


def test_without_a_turn_file_writes_go_on(tmp_path: Path) -> None:
    # A folder where the turn file cannot be created (here: its name is taken by a
    # folder): SQLite's own locking decides, as before.
    (tmp_path / "db.sqlite3.writers").mkdir()
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    try:
        storage.upsert(REPORT, now=T0, read_back=False)
        storage.upsert(REPORT, now=T0, read_back=False)
        stored = storage.get(SELECTOR)
        assert stored is not None and stored.reports == 2
    finally:
        storage.close()
