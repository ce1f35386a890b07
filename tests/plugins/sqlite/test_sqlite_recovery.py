"""A database that failed for a reason other than a lock serves again by itself once the
reason is gone: no stale connection keeps answering "read-only" (found by
tests/faults/test_storage_faults.py against a running server)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pushreport_core import Report, StorageUnavailable
from pushreport_sqlite import SQLiteStorage

from .conftest import _set_immutable

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def immutable(db_path: Path) -> Iterator[Callable[[bool], None]]:
    """Make the file read-only even for root, and let the test undo it halfway."""
    if os.geteuid() != 0:
        pytest.skip("needs root for the immutable flag (file modes do not stop root)")
    first = SQLiteStorage(path=db_path)
    first.upsert(Report(selector=SELECTOR, token_msgs="tok12345"), now=T0)
    first.close()
    files = sorted(db_path.parent.glob(db_path.name + "*"))
    state = {"on": False}

    def set_(on: bool) -> None:
        for f in files:
            try:
                _set_immutable(f, on)
            except OSError as exc:
                pytest.skip(f"this filesystem has no immutable flag: {exc}")
        state["on"] = on

    yield set_
    if state["on"]:
        set_(False)


@pytest.mark.parametrize("use", ["upsert", "upsert_many", "ping"])
def test_read_only_then_writable_again_recovers_without_reopening(
    db_path: Path, immutable: Callable[[bool], None], use: str
) -> None:
    immutable(True)
    s = SQLiteStorage(path=db_path, busy_timeout=0.1)
    report = Report(selector=SELECTOR, token_calls="call1234")

    def write() -> None:
        if use == "upsert":
            s.upsert(report, now=T0)
        elif use == "upsert_many":
            s.upsert_many([(report, T0)])
        else:
            s.ping()

    try:
        for _ in range(2):
            with pytest.raises(StorageUnavailable, match="^sqlite database is read-only$"):
                write()
        immutable(False)
        write()  # the same storage object, the same thread
        if use != "ping":
            stored = s.get(SELECTOR)
            assert stored is not None and stored.token_calls == "call1234"
            assert stored.reports == 2
    finally:
        s.close()
