"""``kill -9`` of ``pushreport serve`` (master and workers at once) under concurrent load,
three times over the same database: after each restart, every report that was answered
200 is stored with its own token, and the restarted server answers 200 at once.

(Moved here from tests/e2e/test_serve.py and extended: several kills, the three
request shapes, values checked, the database's integrity checked.)
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from .conftest import Server, answer, report_request, selector_for, stored, token_for

pytestmark = pytest.mark.e2e

KILLS = 3
CLIENTS = 8
#: Reports answered 200 per round before the kill (or the round's deadline, whichever
#: comes first).
PER_ROUND = 150


def _load(
    server: Server,
    tag: int,
    answered: list[int],
    stop: threading.Event,
    lock: threading.Lock,
    counter: list[int],
    sent: list[int],
) -> None:
    shapes = ("get", "form", "json")
    while not stop.is_set():
        with lock:
            i = counter[0]
            counter[0] += 1
        if i >= 100_000:
            return
        raw = report_request(tag, i, shapes[i % 3])
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        except OSError:
            time.sleep(0.01)  # the server is gone: nothing was sent
            continue
        with lock:
            sent[0] += 1
        try:
            with s:
                s.sendall(raw)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            continue  # killed mid-request: not answered, so the app would retry
        if data.startswith(b"HTTP/1.1 200 "):
            with lock:
                answered.append(i)


#: ``synchronous = "full"`` with threaded workers: the spool's appends share their
#: fdatasync (group commit), and a report is answered only once one covers it.
FULL_THREADED = """
[server]
threads = 4

[storage.sqlite]
synchronous = "full"
"""


@pytest.mark.parametrize("setup", ["default", "full, threaded"])
def test_kill_9_under_load_loses_no_answered_report(tmp_path: Path, setup: str) -> None:
    args: list[str] = []
    if setup != "default":
        config = tmp_path / "pushreport.toml"
        config.write_text(FULL_THREADED)
        args = ["--config", str(config)]
    answered: dict[int, list[int]] = {}
    tried = 0
    for tag in range(1, KILLS + 1):
        server = Server(tmp_path, *args)
        answered[tag] = []
        stop, lock, counter, sent = threading.Event(), threading.Lock(), [0], [0]
        threads = [
            threading.Thread(
                target=_load, args=(server, tag, answered[tag], stop, lock, counter, sent)
            )
            for _ in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(answered[tag]) < PER_ROUND and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # while the clients are still sending
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.log.close()
        tried += sent[0]
        assert len(answered[tag]) >= 30, "the load did not get going"

    # A server started on what the kills left answers at once, and holds every report
    # that was ever answered 200, each with its own values.
    server = Server(tmp_path, *args)
    try:
        status, _, _ = answer(server, report_request(99, 0))
        assert status == 200
    finally:
        server.stop()
    rows = stored(server.db)
    lost = [
        (tag, i)
        for tag, ids in answered.items()
        for i in ids
        if rows.get(selector_for(tag, i)) != (token_for(tag, i), 1)
    ]
    assert lost == []
    with sqlite3.connect(server.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    total = sum(len(ids) for ids in answered.values())
    print(
        f"kill -9 ({setup}): {KILLS} kills under {CLIENTS} clients, {tried} reports sent, "
        f"{total} answered 200, {tried - total} cut off by the kills, {len(lost)} lost"
    )
