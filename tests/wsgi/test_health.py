"""/healthz and /readyz: off the report paths, GET/HEAD only, /readyz fails while the
database is locked, while another process holds the writers' turn, and while the report
spool is past its bound."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from pushreport._config import HealthConfig, load_config
from pushreport.testing import MemoryStorage, MemoryStore
from pushreport_core import ConfigurationError
from pushreport_wsgi import Backend, Config, PushReportMiddleware, Receiver, create_app

from .conftest import SPEC_GET, make_config


def portal(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"portal:" + environ["PATH_INFO"].encode()]


def health_config(
    tmp_path: Path,
    *,
    busy_timeout: float = 0.3,
    sqlite: dict[str, Any] | None = None,
    **health: Any,
) -> Config:
    config = make_config(tmp_path)
    options = {
        "sqlite": {
            **config.storage.options["sqlite"],
            "busy_timeout": busy_timeout,
            **(sqlite or {}),
        }
    }
    return attrs.evolve(
        config,
        health=HealthConfig(**health),
        storage=attrs.evolve(config.storage, options=options),
    )


class Locked:
    """Another connection holding the exclusive lock on the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_healthz_answers_ok_get_and_head(config):
    c = Client(create_app(config))
    resp = c.get("/healthz")
    assert (resp.status_code, resp.data) == (200, b"ok\n")
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    head = c.head("/healthz")
    assert (head.status_code, head.data, head.headers["Content-Length"]) == (200, b"", "3")


def test_health_paths_answer_get_and_head_only(config):
    c = Client(create_app(config))
    for path in ("/healthz", "/readyz"):
        resp = c.post(path)
        assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD"


def test_readyz_fails_while_the_database_is_locked_and_recovers(tmp_path):
    app = create_app(health_config(tmp_path))
    c = Client(app)
    assert Client(app).get(SPEC_GET).status_code == 200  # the file exists, in WAL mode
    assert c.get("/readyz").data == b"ok\n"
    lock = Locked(tmp_path / "db.sqlite3")
    try:
        resp = c.get("/readyz")
        assert (resp.status_code, resp.data) == (503, b"not ready: sqlite\n")
        assert str(tmp_path) not in resp.get_data(as_text=True)
        assert c.get("/healthz").status_code == 200  # the process is still up
    finally:
        lock.release()
    resp = c.get("/readyz")
    assert (resp.status_code, resp.data) == (200, b"ok\n")


def test_readyz_fails_while_another_process_holds_the_writers_turn(tmp_path, caplog):
    app = create_app(health_config(tmp_path, busy_timeout=0.2))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert c.get("/readyz").data == b"ok\n"
    # Another process's flock on <db>.writers (a descriptor of its own stands for it),
    # held and never let go: the writes could not go through.
    fd = os.open(tmp_path / "db.sqlite3.writers", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        answers = [c.get("/readyz") for _ in range(20)]
        assert {(r.status_code, r.data) for r in answers} == {(503, b"not ready: sqlite\n")}
        # A report is spooled (200) until the applier's round meets the held turn,
        # which it does within busy_timeout; from then on every report is refused.
        accepted, deadline = 0, time.monotonic() + 10
        while (resp := c.get(SPEC_GET)).status_code == 200:
            accepted += 1
            assert time.monotonic() < deadline, "reports still accepted"
            time.sleep(0.02)
        reports = [resp] + [c.get(SPEC_GET) for _ in range(5)]
        assert {(r.status_code, r.data) for r in reports} == {
            (503, b"sqlite database is locked\n")
        }
    finally:
        os.close(fd)
    # One line for 20 checks (the next one would come a minute later, with a count).
    assert [r.getMessage() for r in caplog.records if "readyz" in r.getMessage()] == [
        "readyz: storage backend 'sqlite' is not ready: sqlite database is locked"
    ]
    deadline = time.monotonic() + 10
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.05)
    assert c.get(SPEC_GET).status_code == 200
    # Everything acknowledged is stored: the first report, those spooled during the
    # hold, the last one.
    stored = app.receiver.storage.get(SPEC_GET.split("selector=")[1].split("&")[0])
    assert stored is not None and stored.reports == accepted + 2


def test_readyz_fails_while_the_report_spool_is_past_its_bound(tmp_path):
    config = health_config(tmp_path, sqlite={"spool_max_bytes": 1024, "spool_interval": 10})
    receiver = Receiver.from_config(config)
    c = Client(create_app(receiver=receiver))
    statuses = [c.get(SPEC_GET).status_code for _ in range(20)]
    assert 200 in statuses and statuses[-1] == 503
    assert c.get(SPEC_GET).data == b"sqlite report spool is full\n"
    resp = c.get("/readyz")
    assert (resp.status_code, resp.data) == (503, b"not ready: sqlite\n")
    receiver.storage.apply_round()  # type: ignore[attr-defined]
    assert c.get("/readyz").data == b"ok\n"
    assert c.get(SPEC_GET).status_code == 200
    stored = receiver.storage.get(SPEC_GET.split("selector=")[1].split("&")[0])
    assert stored is not None and stored.reports == statuses.count(200) + 1
    receiver.close()


def test_readyz_answers_within_its_timeout_when_a_backend_hangs(tmp_path, caplog):
    app = create_app(health_config(tmp_path, busy_timeout=3.0, timeout=0.1))
    c = Client(app)
    assert c.get("/readyz").status_code == 200
    lock = Locked(tmp_path / "db.sqlite3")
    try:
        started = time.monotonic()
        first = c.get("/readyz")
        second = c.get("/readyz")
        elapsed = time.monotonic() - started
        assert (first.status_code, second.status_code) == (503, 503)
        assert elapsed < 1.5, elapsed  # not the backend's 3 s, twice
        # The first ping is still waiting: the second check did not start another.
        pings = [t for t in threading.enumerate() if t.name == "pushreport-readyz-sqlite"]
        assert len(pings) == 1
    finally:
        lock.release()
    assert "storage backend 'sqlite' is not ready: no answer within 0.1 s" in caplog.text
    deadline = time.monotonic() + 10
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.05)


class _Lingering:
    """Kept in a ping thread's locals: its thread ends a while after it answered (as a
    thread closing a database connection or a lock file at its end does)."""

    def __del__(self) -> None:
        time.sleep(0.5)


class LingeringStorage(MemoryStorage):
    def ping(self) -> None:
        super().ping()
        _ping_locals.lingering = _Lingering()


_ping_locals = threading.local()


def test_readyz_never_answers_with_the_previous_pings_answer(tmp_path):
    store = MemoryStore()
    receiver = Receiver.from_config(make_config(tmp_path))
    receiver.backends[:] = [Backend("memory", LingeringStorage(store))]
    c = Client(create_app(receiver=receiver))
    assert c.get("/readyz").data == b"ok\n"
    store.down = True  # while the thread of that ping is still ending
    resp = c.get("/readyz")
    assert (resp.status_code, resp.data) == (503, b"not ready: memory\n")


def test_readyz_names_required_backends_only(tmp_path):
    down = MemoryStore(down=True)
    receiver = Receiver.from_config(make_config(tmp_path))
    receiver.backends.append(Backend("memory", MemoryStorage(down), required=False))
    assert Client(create_app(receiver=receiver)).get("/readyz").data == b"ok\n"
    receiver = Receiver.from_config(make_config(tmp_path))
    receiver.backends.append(Backend("memory", MemoryStorage(down), required=True))
    resp = Client(create_app(receiver=receiver)).get("/readyz")
    assert (resp.status_code, resp.data) == (503, b"not ready: memory\n")


def test_health_paths_are_configurable_and_pass_through_when_off(tmp_path):
    app = PushReportMiddleware(
        portal, health_config(tmp_path, healthz="/ops/live", readyz="/ops/ready")
    )
    c = Client(app)
    assert c.get("/ops/live").data == b"ok\n"
    assert c.get("/ops/ready").data == b"ok\n"
    assert c.get("/healthz").data == b"portal:/healthz"
    off = PushReportMiddleware(portal, health_config(tmp_path, enabled=False))
    assert Client(off).get("/healthz").data == b"portal:/healthz"


def test_health_paths_are_relative_to_the_mount_point(tmp_path):
    inner = PushReportMiddleware(portal, make_config(tmp_path))
    app = DispatcherMiddleware(portal, {"/push": inner})
    assert Client(app).get("/push/healthz").data == b"ok\n"
    assert Client(app).get("/healthz").data == b"portal:/healthz"


@pytest.mark.parametrize(
    "health, message",
    [
        (
            {"healthz": "/token/"},
            "health.healthz: /token/ is a report path of the configured shapes",
        ),
        (
            {"readyz": "/pushToken/u/s/t&appid=a"},
            "health.readyz: /pushToken/u/s/t&appid=a is a report path of the configured shapes",
        ),
    ],
)
def test_health_paths_must_not_be_report_paths(tmp_path, health, message):
    with pytest.raises(ConfigurationError) as e:
        create_app(health_config(tmp_path, **health))
    assert str(e.value) == message


@pytest.mark.parametrize(
    "toml, message",
    [
        ('healthz = "healthz"', "health.healthz: must be a path starting with /, not 'healthz'"),
        ('readyz = "/r?x=1"', "health.readyz: must be a path starting with /, not '/r?x=1'"),
        ('readyz = "/healthz"', "health.readyz: must differ from health.healthz"),
        ("timeout = 0", "health.timeout: must be between 0.01 and 60, not 0"),
    ],
)
def test_health_configuration_errors(tmp_path, toml, message):
    (tmp_path / "p.toml").write_text(f"[health]\n{toml}\n")
    with pytest.raises(ConfigurationError) as e:
        load_config(tmp_path / "p.toml")
    assert str(e.value) == message
