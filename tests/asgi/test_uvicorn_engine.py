"""The uvicorn engine's master (``pushreport._uvicorn.run_workers``) over real processes:
SIGHUP replaces the workers, a worker that dies is replaced, a master killed with
SIGKILL takes its workers with it, and a connection that never sends a byte is closed
after ``[server] timeout``."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..e2e.conftest import Server
from ..faults.conftest import answer, report_request, stored

pytestmark = pytest.mark.e2e

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def workers_of(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def wait_for(check, what: str, more=lambda: "", seconds: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: {more()}"
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text("[server]\ntimeout = 2\n")
    s = Server(tmp_path, "--config", str(cfg), "--engine", "uvicorn", workers=2)
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_sighup_replaces_the_workers_and_a_dead_one_is_replaced(server: Server) -> None:
    master = server.proc.pid
    first = wait_for(lambda: len(workers_of(master)) == 2 and workers_of(master), "2 workers")
    assert answer(server, report_request(1, 0))[0] == 200
    os.kill(master, signal.SIGHUP)
    second = wait_for(
        lambda: (w := workers_of(master)) and len(w) == 2 and not (w & first) and w,
        "two new workers after SIGHUP",
    )
    victim = min(second)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: (w := workers_of(master)) and len(w) == 2 and victim not in w,
        "a worker in place of the killed one",
    )
    assert answer(server, HEALTHZ)[0] == 200
    assert answer(server, report_request(1, 1))[0] == 200
    server.stop()
    # The replaced workers applied their spools when they stopped: both reports stored.
    assert len(stored(server.db)) == 2


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_workers_do_not_outlive_a_killed_master(server: Server) -> None:
    master = server.proc.pid
    workers = wait_for(lambda: len(workers_of(master)) == 2 and workers_of(master), "workers")
    os.kill(master, signal.SIGKILL)  # the master alone, not its process group
    server.proc.wait(timeout=10)

    def gone() -> bool:
        for pid in workers:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rpartition(")")[2].split()[0] != "Z":
                return False
        return True

    def states() -> str:
        return (
            "; ".join(
                Path(f"/proc/{pid}/status").read_text().split("\n", 3)[2]
                if Path(f"/proc/{pid}").exists()
                else f"{pid} gone"
                for pid in workers
            )
            + "\n"
            + server.output()[-1500:]
        )

    wait_for(gone, "the workers exit once their master is gone", lambda: states())


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        assert s.recv(100) == b""  # closed by the server after [server] timeout
    assert answer(server, HEALTHZ)[0] == 200
