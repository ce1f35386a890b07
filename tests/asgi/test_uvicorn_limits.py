"""The request limits of ``pushreport serve`` on both engines, over loopback: what
httptools does not limit under uvicorn, ``pushreport._uvicorn`` does, so the engines
refuse alike (414, 431, 413); a header flood is cut off with the worker's memory
bounded; under uvicorn a request head or body that does not arrive within
``[server] timeout`` is ended (408 for a head), and slow clients cost a socket, not a
worker: ``/healthz`` and a valid report are answered while a thousand of them trickle."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import attrs
import pytest

from pushreport._server import OPEN_FILES_UNLIMITED

from ..e2e.conftest import Server
from ..faults.conftest import answer, report_request, stored

pytestmark = pytest.mark.e2e
pytest.importorskip("uvicorn", reason="uvicorn is in the asgi extra (and the test extras)")

#: ``[server] timeout`` for these servers (the default is 30).
TIMEOUT = 2
ENGINES = ["gunicorn", "uvicorn"]


def _server(tmp_path: Path, engine: str) -> Server:
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text(f"[server]\ntimeout = {TIMEOUT}\n[reporter]\nmax_body = 4096\n")
    return Server(tmp_path, "--config", str(cfg), "--engine", engine, workers=1)


@pytest.fixture(params=ENGINES)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    s = _server(tmp_path, request.param)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def uvicorn_server(tmp_path: Path) -> Iterator[Server]:
    s = _server(tmp_path, "uvicorn")
    try:
        yield s
    finally:
        s.stop()


def _get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"


HEALTHZ = _get(b"/healthz")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(_get(b"/token/?selector=" + b"a" * 20000), 414, id="20,000-char target"),
        pytest.param(_get(b"/" + b"a" * 8200), 414, id="8,201-char target"),
        pytest.param(_get(b"/healthz", b"X-Big: " + b"a" * 200_000 + b"\r\n"), 431, id="200 KB"),
        pytest.param(_get(b"/healthz", b"X-Big: " + b"a" * 8200 + b"\r\n"), 431, id="8 KB header"),
        pytest.param(
            _get(b"/healthz", b"".join(b"X-%d: 1\r\n" % i for i in range(150))),
            431,
            id="150 headers",
        ),
        pytest.param(
            b"POST /token/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: 5000\r\n\r\n" + b"a" * 5000,
            413,
            id="body over max_body",
        ),
    ],
)
def test_the_engines_refuse_alike(server: Server, raw: bytes, status: int) -> None:
    assert answer(server, raw)[0] == status
    assert answer(server, HEALTHZ)[0] == 200
    assert answer(server, report_request(1, 0))[0] == 200
    assert len(stored(server.db)) == 1


def _workers_rss(server: Server) -> int:
    """The resident memory of the master's children, in KiB."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for child in children:
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _flood(port: int, head: bytes, filler: bytes, most: int) -> int:
    """Send *head* then *filler* over and over, up to *most* bytes, until the server
    ends the connection; return the bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
            while sent < most:
                s.sendall(filler)
                sent += len(filler)
        except OSError:
            pass
    return sent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "filler",
    [
        pytest.param(b"a" * 65536, id="one endless header"),
        pytest.param(b"X: 1\r\n" * 10000, id="endless headers"),
    ],
)
def test_a_100_mb_header_flood_is_cut_off_with_memory_bounded(
    server: Server, filler: bytes
) -> None:
    answer(server, HEALTHZ)
    before = _workers_rss(server)
    most = 100 * 1024 * 1024
    sent = _flood(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ", filler, most)
    after = _workers_rss(server)
    assert sent < most  # the server ended it long before
    assert after - before < 32 * 1024, (before, after)
    assert answer(server, HEALTHZ)[0] == 200
    engine = server.proc.args[server.proc.args.index("--engine") + 1]
    print(f"{engine}: flood cut after {sent} bytes; RSS {before} -> {after} KiB")


def _trickle(port: int, raw: bytes, delay: float) -> bytes:
    """Send *raw* a byte every *delay* seconds; what the server answered, once it
    ends the connection (``b""``: it closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 10) as s:
        try:
            for byte in raw:
                s.sendall(bytes([byte]))
                time.sleep(delay)
        except OSError:
            pass
        try:
            return s.recv(65536)
        except OSError:
            return b""


def test_a_slow_head_is_answered_408(uvicorn_server: Server) -> None:
    got = _trickle(uvicorn_server.port, report_request(2, 0), 0.25)
    assert got.startswith(b"HTTP/1.1 408 "), got[:100]
    assert stored(uvicorn_server.db) == {}


def test_a_slow_body_is_ended_and_nothing_stored(uvicorn_server: Server) -> None:
    body = b"selector=" + b"AB" * 20 + b":01&token_msgs=abcdefghijkl"
    head = (
        b"POST /token/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    result: list[bytes] = []
    slow = threading.Thread(
        target=lambda: result.append(_trickle(uvicorn_server.port, head + body, 0.1))
    )
    slow.start()
    # Meanwhile the worker (there is one) answers everyone else.
    assert answer(uvicorn_server, HEALTHZ)[0] == 200
    slow.join(timeout=TIMEOUT * 20)
    assert not slow.is_alive()
    assert not result[0].startswith(b"HTTP/1.1 200"), result[0][:100]
    assert stored(uvicorn_server.db) == {}


#: Slow clients for the test below: each sends one header byte a second (issue 16: a
#: thousand of them), fewer only where the hard limit of open files does not allow.
SLOW_CLIENTS = 1000
#: The soft limit of open files the server is started with, as many systems' default
#: (1,024) would be for it: too few for the slow clients unless ``serve`` raises it.
SERVER_SOFT_NOFILE = 256


@attrs.define
class _Held:
    """How many slow clients hold a connection the server has not ended."""

    open: int = 0
    dropped: int = 0


async def _slow_clients(port: int, n: int, stop: asyncio.Event, held: _Held) -> None:
    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            held.dropped += 1
            return
        held.open += 1
        # Done once the server answers (a 408) or ends the connection.
        ended = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            while not stop.is_set():
                if ended.done():
                    break
                writer.write(b"X")
                await writer.drain()
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            ended.cancel()
            held.open -= 1
            if not stop.is_set():
                held.dropped += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))


def _nofile(pid: int) -> tuple[int, int]:
    """The soft and hard limits of open files of process *pid*."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = (
                resource.RLIM_INFINITY if v == "unlimited" else int(v) for v in line.split()[3:5]
            )
            return soft, hard
    raise AssertionError(f"no open-files limit in /proc/{pid}/limits")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc")
def test_a_thousand_slow_clients_cost_no_worker(tmp_path: Path) -> None:
    """Issue 16, item 5: with ``serve``'s default engine, 1,000 connections that each
    send one header byte a second; /healthz and a valid report are answered while every
    one of them holds its connection. The server starts with a low soft limit of open
    files, which ``serve`` raises to the hard limit (its workers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # What serve raises its soft limit to (OPEN_FILES_UNLIMITED when there is no hard one).
    top = OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    # The clients' sockets are the test's own descriptors.
    resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    n = min(SLOW_CLIENTS, top - 200)
    if n < SLOW_CLIENTS and os.environ.get("CI") == "true":
        pytest.fail(f"the hard limit of open files ({hard}) allows {n} slow clients")
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text("[server]\ntimeout = 60\n")
    low = min(SERVER_SOFT_NOFILE, top)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        server = Server(tmp_path, "--config", str(cfg), "--engine", "uvicorn", workers=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    stop = asyncio.Event()
    held = _Held()
    loop = asyncio.new_event_loop()
    runner = threading.Thread(
        target=lambda: loop.run_until_complete(_slow_clients(server.port, n, stop, held))
    )
    try:
        workers = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
        for pid in [server.proc.pid, *map(int, workers.split())]:
            assert _nofile(pid) == (top, hard), pid
        runner.start()
        deadline = time.monotonic() + 20
        while held.open < n and not held.dropped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (held.open, held.dropped) == (n, 0)
        time.sleep(2)  # every one of them trickling
        took = []
        for i in range(10):
            started = time.monotonic()
            assert answer(server, HEALTHZ, timeout=10)[0] == 200
            assert answer(server, report_request(3, i), timeout=10)[0] == 200
            took.append(time.monotonic() - started)
        # Answered while every slow client held on: none was ended meanwhile.
        assert (held.open, held.dropped) == (n, 0)
        output = server.output()
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=30)
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(stored(server.db)) == 10
    if low < top:
        assert f"open files: soft limit raised from {low} to {top}" in output
    print(
        f"{n} slow clients, uvicorn x2: 10 healthz + report pairs, "
        f"slowest pair {max(took) * 1000:.1f} ms"
    )
