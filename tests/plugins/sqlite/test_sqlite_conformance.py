"""The built-in SQLite backend runs the storage conformance suite, as any plugin would."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from typing import Iterator

import pytest

from pushreport.testing import StorageConformance
from pushreport_sqlite import SQLiteStorage


class TestSQLiteConformance(StorageConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, tmp_path):
        return functools.partial(SQLiteStorage, tmp_path / "pushreport.sqlite3", busy_timeout=0.05)

    @contextlib.contextmanager
    def make_unavailable(self, storage: SQLiteStorage) -> Iterator[None]:
        # Another connection holds the write lock longer than busy_timeout.
        storage.ping()  # the file and its schema exist
        other = sqlite3.connect(storage.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
