"""The files backend runs the storage conformance suite, as any plugin would."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from typing import Iterator

import pytest

from pushreport.testing import StorageConformance
from pushreport_files import FilesStorage


class TestFilesConformance(StorageConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, tmp_path):
        return functools.partial(FilesStorage, tmp_path / "store", lock_timeout=10)

    @contextlib.contextmanager
    def make_unavailable(self, storage: FilesStorage) -> Iterator[None]:
        # Another open file description holds the folder's lock longer than lock_timeout
        # (shortened here; the factory's is long enough for the process test's contention).
        storage.ping()  # the folder and its lock file exist
        fd = os.open(storage.path / "lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        patience, storage.lock_timeout = storage.lock_timeout, 0.05
        try:
            yield
        finally:
            storage.lock_timeout = patience
            os.close(fd)
