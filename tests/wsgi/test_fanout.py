"""Several backends: acknowledged only when every required one committed; best-effort
failures are logged and counted, never shown to the app."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest
from werkzeug.test import Client

from pushreport._config import StorageConfig
from pushreport_core import ConfigurationError
from pushreport_wsgi import Config, Receiver, create_app

from .conftest import SELECTOR, SPEC_GET, TOKEN_MSGS


def fanout(tmp_path: Path, *, files_required: bool) -> Config:
    return Config(
        storage=StorageConfig(
            backends=("sqlite", "files"),
            options={
                "sqlite": {"path": str(tmp_path / "db.sqlite3"), "busy_timeout": 0.3},
                "files": {
                    "path": str(tmp_path / "files"),
                    "lock_timeout": 0.3,
                    "required": files_required,
                },
            },
        ),
        base_dir=tmp_path,
    )


def test_every_backend_gets_the_report(tmp_path):
    app = create_app(fanout(tmp_path, files_required=True))
    assert Client(app).get(SPEC_GET).status_code == 200
    [sqlite_backend, files_backend] = app.receiver.backends
    for backend in (sqlite_backend, files_backend):
        [reg] = list(backend.storage)
        assert (reg.selector, reg.token_msgs) == (SELECTOR, TOKEN_MSGS)
    app.close()


def _lock_files(tmp_path: Path) -> subprocess.Popen[bytes]:
    """Hold the files backend's write lock from another process."""
    lock = tmp_path / "files" / "lock"
    lock.parent.mkdir(exist_ok=True)
    lock.touch()
    holder = subprocess.Popen(["flock", "-x", str(lock), "sleep", "30"], start_new_session=True)
    # Wait until the other process holds it.
    import fcntl
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return holder
        finally:
            os.close(fd)
        time.sleep(0.02)
    _release(holder)
    raise AssertionError("could not take the files lock from another process")


def _release(holder: subprocess.Popen[bytes]) -> None:
    # flock(1) and the command it runs both hold the lock: end the whole group.
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()


@pytest.mark.skipif(not Path("/usr/bin/flock").exists(), reason="needs util-linux flock")
def test_best_effort_failure_is_logged_and_counted_not_shown(tmp_path, caplog):
    app = create_app(fanout(tmp_path, files_required=False))
    list(app.receiver.backends[1].storage)  # create the folder and its files
    holder = _lock_files(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="pushreport"):
            resp = Client(app).get(SPEC_GET)
    finally:
        _release(holder)
    assert resp.status_code == 200
    assert app.receiver.failures == {"files": 1}
    assert "best-effort storage backend 'files' failed" in caplog.text
    assert [r.selector for r in app.receiver.backends[0].storage] == [SELECTOR]
    app.close()


@pytest.mark.skipif(not Path("/usr/bin/flock").exists(), reason="needs util-linux flock")
def test_required_failure_is_503(tmp_path):
    app = create_app(fanout(tmp_path, files_required=True))
    list(app.receiver.backends[1].storage)
    holder = _lock_files(tmp_path)
    try:
        resp = Client(app).get(SPEC_GET)
    finally:
        _release(holder)
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    # The app retries; once the backend is back the report lands in both.
    assert Client(app).get(SPEC_GET).status_code == 200
    assert [r.selector for r in app.receiver.backends[1].storage] == [SELECTOR]
    app.close()


def test_at_least_one_backend_must_be_required(tmp_path):
    config = fanout(tmp_path, files_required=False)
    options = {k: dict(v) for k, v in config.storage.options.items()}
    options["sqlite"]["required"] = False
    with pytest.raises(ConfigurationError, match="at least one backend must be required"):
        Receiver.from_config(
            Config(
                storage=StorageConfig(backends=("sqlite", "files"), options=options),
                base_dir=tmp_path,
            )
        )


def test_required_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigurationError, match=r"storage\.sqlite\.required: must be true"):
        Receiver.from_config(
            Config(
                storage=StorageConfig(
                    backends=("sqlite",),
                    options={"sqlite": {"path": str(tmp_path / "x"), "required": "yes"}},
                ),
                base_dir=tmp_path,
            )
        )
