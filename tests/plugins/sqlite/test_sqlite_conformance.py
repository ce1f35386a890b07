"""The built-in SQLite backend runs the storage conformance suite, as any plugin would:
plain, behind the report spool (its default configuration), and the spool's capability."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from typing import Any, Iterator

import pytest

from pushreport.testing import SpoolTargetConformance, StorageConformance
from pushreport_sqlite import SQLiteStorage

from .conftest import spooled


@contextlib.contextmanager
def write_locked(storage: Any) -> Iterator[None]:
    """Another connection holds the write lock longer than busy_timeout."""
    storage.ping()  # the file and its schema exist
    other = sqlite3.connect(storage.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


class TestSQLiteConformance(StorageConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, tmp_path):
        return functools.partial(SQLiteStorage, tmp_path / "pushreport.sqlite3", busy_timeout=0.05)

    def make_unavailable(self, storage: SQLiteStorage) -> contextlib.AbstractContextManager[None]:
        return write_locked(storage)


class TestSpooledSQLiteConformance(TestSQLiteConformance):
    """What ``[storage.sqlite] spool = true`` (the default) serves: the same suite."""

    @pytest.fixture
    def make_storage(self, tmp_path):
        return functools.partial(spooled, tmp_path / "pushreport.sqlite3", busy_timeout=0.05)


class TestSQLiteSpoolTargetConformance(SpoolTargetConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, tmp_path):
        return functools.partial(SQLiteStorage, tmp_path / "pushreport.sqlite3", busy_timeout=0.05)

    def make_unavailable(self, storage: SQLiteStorage) -> contextlib.AbstractContextManager[None]:
        return write_locked(storage)
