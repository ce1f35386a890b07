"""``synchronous = "full"``: a report is answered 200 only once the spool's fdatasync
covered it. When the sync fails (EIO), every report that was waiting for it is answered
503 with Retry-After, from every thread at once (group commit), and the next report
after the fault goes to a new spool file and is answered 200. The app is the real WSGI
app over real files; only the spool's ``os.fdatasync`` is wrapped, in-process."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from werkzeug.test import Client

from pushreport._config import StorageConfig
from pushreport_wsgi import Config, create_app

THREADS = 8


def _target(i: int) -> str:
    return f"/token/?selector={i:040X}:7C3A0D14&token_msgs=TOKEN{i:08d}AAAA&appid_msgs=com.x"


def test_a_failed_sync_answers_every_waiting_report_503_and_the_next_one_200(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.sqlite3"
    spool = f"{db}.spool"
    config = Config(
        storage=StorageConfig(
            backends=("sqlite",),
            options={"sqlite": {"path": str(db), "synchronous": "full", "spool_interval": 10}},
        ),
        base_dir=tmp_path,
    )
    real = os.fdatasync
    failing = threading.Event()
    failing.set()
    calls: list[str] = []

    def fdatasync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(spool) and failing.is_set():
            calls.append(path)
            threading.Event().wait(0.02)  # the other threads' reports pile up meanwhile
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    app = create_app(config)
    try:
        answers: list[tuple[int, str | None]] = []
        start = threading.Barrier(THREADS)

        def report(i: int) -> None:
            start.wait()
            response = Client(app).get(_target(i))
            answers.append((response.status_code, response.headers.get("Retry-After")))

        threads = [threading.Thread(target=report, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(answers) == THREADS
        assert all(status == 503 and retry for status, retry in answers), answers
        # Fewer syncs than reports: they waited on one another's, and each failed
        # sync poisoned its file (a report after it starts a new one).
        assert 1 <= len(calls) < THREADS
        files = {os.path.basename(p) for p in calls}
        assert len(files) == len(calls), "a poisoned file was synced again"

        failing.clear()
        response = Client(app).get(_target(100))
        assert response.status_code == 200
        stored = app.receiver.storage.get(f"{100:040X}:7C3A0D14")
        assert stored is not None and stored.token_msgs == f"TOKEN{100:08d}AAAA"
    finally:
        app.close()
