"""A repeated failure is logged once per interval with a count: the helper itself, and
the receiver's 503 warnings, a failing backend's tracebacks and /readyz over a burst."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from pathlib import Path

import attrs
import pytest
from werkzeug.test import Client

from pushreport.testing import MemoryStorage, MemoryStore
from pushreport_core import Registration, Report
from pushreport_wsgi import Backend, Receiver, ThrottledLog, create_app

from .conftest import SPEC_GET, make_config

LOGGER = "pushreport.test-throttle"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture, name: str, text: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and text in r.getMessage()]


def test_the_first_occurrence_at_once_then_one_line_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger(LOGGER), interval=60, clock=clock)
    logged = []
    for _ in range(1000):  # one every 0.15 s: 150 s of failures
        logged.append(throttled.warning("disk full on %s", "db"))
        clock.now += 0.15
    assert messages(caplog, LOGGER) == [
        "disk full on db",
        "disk full on db (399 more times in the last 60 s)",
        "disk full on db (399 more times in the last 60 s)",
    ]
    assert logged.count(True) == 3
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.WARNING] * 3


def test_keys_are_counted_apart_and_a_quiet_key_is_logged_at_once_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger(LOGGER), interval=60, clock=clock)
    for _ in range(5):
        throttled.warning("locked")
        throttled.warning("read-only")
        throttled.error("spool failed", key="spool")
        throttled.error("spool failed differently", key="spool")  # same key: counted
    clock.now += 3600  # an hour later
    throttled.warning("locked")
    assert messages(caplog, LOGGER) == [
        "locked",
        "read-only",
        "spool failed",
        "locked (4 more times in the last 3600 s)",
    ]
    assert throttled.forget("spool") == 9
    throttled.error("spool failed", key="spool")
    assert messages(caplog, LOGGER)[-1] == "spool failed"


def test_a_traceback_is_logged_with_the_line_that_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttled = ThrottledLog(logging.getLogger(LOGGER), clock=Clock())
    for _ in range(3):
        try:
            raise OSError(5, "Input/output error")
        except OSError as e:
            throttled.error("applying failed", exc_info=e)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.exc_info is not None and record.exc_info[0] is OSError


def test_503s_of_a_locked_database_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, spool=False)
    options = {"sqlite": {**config.storage.options["sqlite"], "busy_timeout": 0.01}}
    client = Client(
        create_app(attrs.evolve(config, storage=attrs.evolve(config.storage, options=options)))
    )
    assert client.get(SPEC_GET).status_code == 200
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        statuses = [client.get(SPEC_GET).status_code for _ in range(50)]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert statuses == [503] * 50
    assert messages(caplog, "pushreport", "unavailable") == [
        "storage unavailable: sqlite database is locked"
    ]
    assert client.get(SPEC_GET).status_code == 200


class CrashingStorage(MemoryStorage):
    """A plugin's backend that fails with something else than StorageUnavailable."""

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        raise OSError(5, "Input/output error")


def test_a_backend_that_crashes_logs_one_traceback_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver.from_config(make_config(tmp_path))
    receiver.backends.insert(0, Backend("crashing", CrashingStorage(MemoryStore())))
    best_effort = Backend("down", MemoryStorage(MemoryStore(down=True)), required=False)
    receiver.backends.insert(0, best_effort)
    client = Client(create_app(receiver=receiver))
    responses = [client.get(SPEC_GET) for _ in range(30)]
    assert {(r.status_code, r.data) for r in responses} == {
        (503, b"storage backend 'crashing' failed\n")
    }
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == ["storage backend 'crashing' failed"]
    assert failed[0].exc_info is not None and failed[0].exc_info[0] is OSError
    assert failed[0].filename == "_service.py"  # the caller's line, not the helper's
    assert len(messages(caplog, "pushreport", "best-effort storage backend 'down'")) == 1
    assert len(messages(caplog, "pushreport", "storage unavailable")) == 1
    assert receiver.failures == {"down": 30}


def test_a_failing_authentication_callable_logs_one_line_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushreport import _auth, make_plugin_manager
    from pushreport._auth import CallableAuthenticator

    # The module's own throttle, fresh: another test's failure may be within its minute.
    monkeypatch.setattr(_auth, "_failures", ThrottledLog(_auth.log))

    def user_table_down(username: str, password: str) -> bool:
        raise ConnectionError("the user table is down")

    pm = make_plugin_manager(plugins=[CallableAuthenticator(user_table_down)])
    client = Client(
        create_app(receiver=Receiver.from_config(make_config(tmp_path), plugin_manager=pm))
    )
    assert {client.get(SPEC_GET).status_code for _ in range(30)} == {503}
    assert messages(caplog, "pushreport.auth", "failed") == [
        "authentication callable test_a_failing_authentication_callable_logs_one_line_per_interval"
        ".<locals>.user_table_down failed: ConnectionError"
    ]


def test_a_lookup_on_failing_storage_logs_one_line_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushreport import Lookup, _lookup
    from pushreport_core import Secret
    from pushreport_wsgi import LookupApp

    monkeypatch.setattr(_lookup, "_failures", ThrottledLog(_lookup.log))

    storage = MemoryStorage(MemoryStore(down=True))
    app = LookupApp(Lookup(storage), token=Secret("t" * 32), path="/pushreport/lookup")
    client = Client(app)
    headers = {"Authorization": "Bearer " + "t" * 32}
    statuses = {
        client.get("/pushreport/lookup/registrations?username=alice", headers=headers).status_code
        for _ in range(30)
    }
    assert statuses == {503}
    assert len(messages(caplog, "pushreport", "lookup: storage unavailable")) == 1


def test_a_failing_limit_state_logs_one_traceback_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushreport import limitstate
    from pushreport.limitstate import state_errors
    from pushreport_core import StorageUnavailable

    monkeypatch.setattr(limitstate, "_failures", ThrottledLog(limitstate.log))

    for _ in range(30):
        with pytest.raises(StorageUnavailable), state_errors():
            raise KeyError("a driver's surprise")
    failed = [r for r in caplog.records if r.name == "pushreport.limits"]
    assert [r.getMessage() for r in failed] == ["the limit state failed"]
    assert failed[0].exc_info is not None and failed[0].exc_info[0] is KeyError
