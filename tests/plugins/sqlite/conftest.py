"""Fixtures for the SQLite backend's tests: real files in tmp_path, no mocks."""

from __future__ import annotations

import array
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushreport.spool import SpooledStorage
from pushreport_sqlite import SQLiteStorage


def spooled(
    path: Path,
    *,
    busy_timeout: float = 2.0,
    synchronous: str = "normal",
    **spool: Any,
) -> SpooledStorage:
    """The SQLite backend behind the report spool, as ``[storage.sqlite] spool = true``
    builds it (``test_from_options_builds_what_spooled_builds`` holds them together);
    *spool*: the spool's settings (``interval``, ``max_bytes``, ``rotate_bytes``,
    ``idle_wait``)."""
    storage = SQLiteStorage(path, busy_timeout=busy_timeout, synchronous=synchronous)
    return SpooledStorage(
        storage, folder=Path(f"{path}.spool"), fsync=synchronous == "full", **spool
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "pushreport.sqlite3"


@pytest.fixture
def storage(db_path: Path) -> Iterator[SQLiteStorage]:
    s = SQLiteStorage(path=db_path, busy_timeout=0.3)
    yield s
    s.close()


_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | _FS_IMMUTABLE_FL if on else flags[0] & ~_FS_IMMUTABLE_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


@pytest.fixture
def make_read_only() -> Iterator[object]:
    """Make a file read-only even for root (who ignores file modes): the immutable flag."""
    done: list[tuple[Path, int]] = []

    def make(path: Path) -> None:
        mode = path.stat().st_mode
        path.chmod(0o444)
        done.append((path, mode))
        if os.geteuid() == 0:
            try:
                _set_immutable(path, True)
            except OSError as exc:
                pytest.skip(f"running as root and this filesystem has no immutable flag: {exc}")
        with pytest.raises(PermissionError):  # the precondition really holds
            open(path, "r+b").close()

    yield make
    for path, mode in done:
        if os.geteuid() == 0:
            try:
                _set_immutable(path, False)
            except OSError:
                pass
        path.chmod(mode)
