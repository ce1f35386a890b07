"""A running ``pushreport serve`` whose database is locked, read-only or on a full disk:
each report gets ``503`` with ``Retry-After`` (the app retries any non-2xx) and nothing
of it is stored; once the fault clears, the very same server answers ``200`` again by
itself, without a restart. Every report answered 200 is stored, none answered 503 is.
A server asked to start on a database it cannot write refuses to start, saying why.

With the report spool (the default), reports that reach a worker before its background
thread has found the database broken are spooled and answered 200: they must be
stored once the fault clears, like every other 200.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from ..e2e.conftest import free_port, run_pushreport
from .conftest import (
    Ledger,
    Server,
    immutable,
    log_lines,
)

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, path: str = "pushreport.sqlite3") -> str:
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text(f'[storage.sqlite]\npath = "{path}"\nbusy_timeout = 0.2\n')
    return str(cfg)


def test_locked_database_is_503_then_200_once_the_lock_is_released(tmp_path: Path) -> None:
    server = Server(tmp_path, "--config", _config(tmp_path))
    try:
        ledger = Ledger(server, 1)
        assert ledger.report()[0] == 200
        locker = sqlite3.connect(server.db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            ledger.during_fault(4, "sqlite database is locked")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        took = ledger.recovers()
    finally:
        server.stop()
    ledger.check_stored(server.db)
    print(f"locked: {len(ledger.refused)} answered 503, recovered in {took:.2f} s, 0 lost")


def test_read_only_database_is_503_then_200_once_writable(tmp_path: Path) -> None:
    # While the server runs: the database and its WAL become immutable. (Not the -shm
    # file: SQLite maps it, and a write fault there is a SIGBUS that kills the worker,
    # which then restarts; the app sees a dropped connection and retries.)
    server = Server(tmp_path, "--config", _config(tmp_path))
    files = [server.db, server.db.with_name(server.db.name + "-wal")]
    try:
        ledger = Ledger(server, 2)
        assert ledger.report()[0] == 200
        assert all(f.exists() for f in files)
        immutable(files, True)
        try:
            ledger.during_fault(4, ("sqlite database is read-only", "sqlite disk I/O error"))
        finally:
            immutable(files, False)
        took = ledger.recovers()
    finally:
        server.stop()
    ledger.check_stored(server.db)
    print(f"read-only: {len(ledger.refused)} answered 503, recovered in {took:.2f} s, 0 lost")


def refused_at_start(tmp_path: Path, cfg: str) -> subprocess.CompletedProcess[str]:
    """``pushreport serve`` on a database it cannot write: it must not start."""
    return run_pushreport(
        tmp_path, "serve", "--config", cfg, "--port", str(free_port()), "--workers", "1"
    )


def test_serve_refuses_a_read_only_database_then_starts_once_writable(tmp_path: Path) -> None:
    # Issue 14, item 12: a server that cannot store would answer every report 503
    # forever; it says why at start-up instead, and starts once the cause is gone.
    first = Server(tmp_path, "--config", _config(tmp_path))
    try:
        ledger = Ledger(first, 3)
        assert ledger.report()[0] == 200
    finally:
        first.stop()
    files = sorted(tmp_path.glob("pushreport.sqlite3*"))
    immutable(files, True)
    try:
        proc = refused_at_start(tmp_path, _config(tmp_path))
    finally:
        immutable(files, False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"pushreport: cannot open sqlite database {first.db}: it cannot be written "
        "(a read-only file, or no permission)\n"
    )
    server = Server(tmp_path, "--config", _config(tmp_path))
    try:
        ledger.server = server
        ledger.recovers()
    finally:
        server.stop()
    ledger.check_stored(server.db)


def test_serve_refuses_a_read_only_folder_then_starts_once_writable(tmp_path: Path) -> None:
    # A folder where SQLite cannot create the database's -wal and -shm files.
    data = tmp_path / "data"
    data.mkdir()
    cfg = _config(tmp_path, "data/pushreport.sqlite3")
    db = data / "pushreport.sqlite3"
    first = Server(tmp_path, "--config", cfg, db=False)
    try:
        ledger = Ledger(first, 4)
        assert ledger.report()[0] == 200
    finally:
        first.stop()
    # The last connection to close removes -wal and -shm.
    last = sqlite3.connect(db)
    assert last.execute("SELECT count(*) FROM registrations").fetchone() == (1,)
    last.close()
    # (.writers is the writers' turn lock, an empty file, and .spool the report spool,
    # emptied when the workers stopped; -wal and -shm must be gone.)
    assert sorted(p.name for p in data.iterdir()) == [
        "pushreport.sqlite3",
        "pushreport.sqlite3.spool",
        "pushreport.sqlite3.writers",
    ]
    assert list((data / "pushreport.sqlite3.spool").glob("*.jsonl")) == []
    immutable([data], True)
    try:
        proc = refused_at_start(tmp_path, cfg)
    finally:
        immutable([data], False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"pushreport: cannot open sqlite database {db}: its folder {data} cannot be written "
        "(SQLite keeps the database's -wal and -shm files beside it)\n"
    )
    server = Server(tmp_path, "--config", cfg, db=False)
    try:
        ledger.server = server
        ledger.recovers()
    finally:
        server.stop()
    ledger.check_stored(db)


def test_full_disk_is_503_then_200_once_space_is_freed(tmp_path: Path, tmpfs: Path) -> None:
    cfg = _config(tmp_path, "disk/pushreport.sqlite3")
    db = tmpfs / "pushreport.sqlite3"
    server = Server(tmp_path, "--config", cfg, db=False)
    filler = tmpfs / "filler"
    try:
        ledger = Ledger(server, 5)
        assert ledger.report()[0] == 200
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28  # ENOSPC: the disk is full
        finally:
            os.close(fd)
        # Reports that still fit in pages SQLite already has may be stored (and
        # answered 200): the first refused one shows the fault has bitten.
        for _ in range(200):
            if ledger.report()[0] == 503:
                break
        assert ledger.refused, "the full disk never refused a report"
        ledger.during_fault(
            3,
            (
                "sqlite database or disk is full",
                "sqlite disk I/O error",
                "sqlite report spool: the disk is full",
            ),
        )
        for _ in range(50):  # a burst of reports while the disk stays full
            ledger.report()
        filler.unlink()
        took = ledger.recovers()
    finally:
        server.stop()
    ledger.check_stored(db)
    # One warning per reason and worker (at most three reasons, two workers), not one
    # per 503 (18,237 lines in 12 s, once).
    warnings = log_lines(server, "storage unavailable:")
    assert len(ledger.refused) > 20 and 1 <= len(warnings) <= 6, warnings
    print(f"full disk: {len(ledger.refused)} answered 503, recovered in {took:.2f} s, 0 lost")
