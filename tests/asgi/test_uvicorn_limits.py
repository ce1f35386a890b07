"""The request limits of ``pushreport serve`` on both engines, over loopback: what
httptools does not limit under uvicorn, ``pushreport._uvicorn`` does, so the engines
refuse alike (414, 431, 413); a header flood is cut off with the worker's memory
bounded; under uvicorn a request head or body that does not arrive within
``[server] timeout`` is ended (408 for a head), and slow clients cost a socket, not a
worker: ``/healthz`` and a valid report are answered while hundreds of them trickle."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

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


#: Slow clients for the test below: each sends one header byte a second.
SLOW_CLIENTS = 500


async def _slow_clients(port: int, n: int, stop: asyncio.Event) -> int:
    async def one() -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            while not stop.is_set():
                writer.write(b"X")
                await writer.drain()
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.gather(*tasks)
    return n


def test_hundreds_of_slow_clients_cost_no_worker(tmp_path: Path) -> None:
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text("[server]\ntimeout = 60\n")
    server = Server(tmp_path, "--config", str(cfg), "--engine", "uvicorn", workers=2)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    runner = threading.Thread(
        target=lambda: loop.run_until_complete(_slow_clients(server.port, SLOW_CLIENTS, stop))
    )
    try:
        runner.start()
        time.sleep(3)  # every slow client connected and trickling
        took = []
        for i in range(10):
            started = time.monotonic()
            assert answer(server, HEALTHZ, timeout=10)[0] == 200
            assert answer(server, report_request(3, i), timeout=10)[0] == 200
            took.append(time.monotonic() - started)
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=30)
        server.stop()
    assert len(stored(server.db)) == 10
    print(
        f"{SLOW_CLIENTS} slow clients, uvicorn x2: 10 healthz + report pairs, "
        f"slowest pair {max(took) * 1000:.1f} ms"
    )
