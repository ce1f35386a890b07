"""The webhook backend runs the storage conformance suite, as any plugin would, with its
deliverer on and sending to a real receiver: delivery never disturbs the storage."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pushreport.testing import StorageConformance
from pushreport_webhook import WebhookStorage

from .conftest import SECRET, Receiver


class TestWebhookConformance(StorageConformance):
    supports_unavailable = True
    # The registrations are the SQLite backend's, which runs the machine at full length:
    # fewer runs here keep this file fast (each one starts and stops a deliverer).
    machine_settings = settings(
        max_examples=40,
        deadline=None,
        stateful_step_count=30,
        suppress_health_check=[HealthCheck.too_slow],
    )

    @pytest.fixture
    def make_storage(self, tmp_path, receiver: Receiver):
        return functools.partial(
            WebhookStorage,
            tmp_path / "outbox.sqlite3",
            busy_timeout=0.5,
            url=receiver.url,
            secret=SECRET,
            poll_interval=0.02,
            backoff_base=0.01,
            backoff_max=0.05,
            timeout=1.0,
        )

    @contextlib.contextmanager
    def make_unavailable(self, storage: WebhookStorage) -> Iterator[None]:
        # Another connection holds the write lock longer than busy_timeout.
        storage.ping()
        other = sqlite3.connect(storage.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
