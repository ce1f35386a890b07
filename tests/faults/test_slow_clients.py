"""Slow clients (slowloris: a request head sent one byte at a time, never finished)
against ``pushreport serve`` with its default sync workers.

What was measured (2 workers, ``[server] timeout`` = T; docs/fuzzing.md has the figures):

- one slow client holds one worker; the other worker serves everyone else at once;
- as many slow clients as workers (or more) hold every worker: everyone else waits
  until gunicorn's arbiter kills the held workers at T seconds ("WORKER TIMEOUT") and
  boots new ones, and again each time the slow clients come back. Nothing is lost (the
  report is answered late, or the app retries), but each stall lasts up to T (30 s by
  default). gthread workers (``[server] threads``) only move the limit to
  workers x threads slow clients, and beyond it the stall has no bound at all, as the
  arbiter never kills a worker whose main thread is alive. The fix is a buffering
  proxy in front (nginx: it hands over only complete requests, and cuts slow ones
  with client_header_timeout/client_body_timeout), as gunicorn's docs advise.

These tests pin the bounds: no stall with one slow client; with three, every report
is still answered 200, within T plus a margin.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from .conftest import Server, answer, report_request

pytestmark = pytest.mark.e2e

#: ``[server] timeout`` for these servers (the default is 30).
TIMEOUT = 3


class Slowloris:
    """*n* connections that send a request head one byte every 0.3 s and never end it;
    a connection the server cuts is opened again, until stopped."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.cut = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        head = report_request(7, 0)[:-2]
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    for byte in head:
                        if self.stop.wait(0.3):
                            return
                        s.sendall(bytes([byte]))
            except OSError:
                self.cut += 1

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def _reports_during(server: Server, seconds: float, tag: int) -> list[tuple[int, float]]:
    """Report one after the other for *seconds*: (status, seconds it took) of each."""
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        started = time.monotonic()
        status, _, _ = answer(server, report_request(tag, i), timeout=TIMEOUT * 4)
        out.append((status, time.monotonic() - started))
        i += 1
        time.sleep(0.1)
    return out


def _server(tmp_path: Path) -> Server:
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text(f"[server]\ntimeout = {TIMEOUT}\n")
    return Server(tmp_path, "--config", str(cfg), workers=2)


def test_one_slow_client_does_not_stall_the_others(tmp_path: Path) -> None:
    server = _server(tmp_path)
    slow = Slowloris(server.port, 1)
    try:
        time.sleep(0.5)  # the slow client holds a worker now
        results = _reports_during(server, 2.0, 1)
    finally:
        slow.close()
        server.stop()
    assert all(status == 200 for status, _ in results), results
    worst = max(took for _, took in results)
    assert worst < 1.0, results
    print(f"1 slow client, 2 sync workers: {len(results)} reports, all 200, slowest {worst:.2f} s")


def test_three_slow_clients_stall_the_others_at_most_the_worker_timeout(tmp_path: Path) -> None:
    server = _server(tmp_path)
    slow = Slowloris(server.port, 3)
    try:
        time.sleep(0.5)
        results = _reports_during(server, TIMEOUT * 2, 2)
        out = server.output()
    finally:
        slow.close()
        server.stop()
    assert all(status == 200 for status, _ in results), results
    worst = max(took for _, took in results)
    # Bounded by the arbiter's timeout (and a margin for booting a worker here).
    assert worst < TIMEOUT + 3, results
    stalls = [round(took, 1) for _, took in results if took > 1]
    print(
        f"3 slow clients, 2 sync workers, timeout {TIMEOUT} s: {len(results)} reports, "
        f"all 200; stalls of {stalls} s; {out.count('WORKER TIMEOUT')} workers killed "
        f"by the timeout"
    )
