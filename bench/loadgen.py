"""Drive a receiver on loopback with reports as the app sends them.

Every request is one report in the recommended default shape (``GET /token/?username=
…&selector=…&token_calls=…&appid_calls=…&token_msgs=…&appid_msgs=…``) with the app's
headers, ``Connection: close`` among them, so every request is a new TCP connection, as
in the field. The selector (40 hex digits, ``:``, 8 hex digits) and the tokens (base64,
``/``, ``+`` and ``=`` percent-encoded as the app does) vary over a pool of distinct
registrations, so a receiver inserts and updates rows instead of hitting one.

Two engines, same requests, same figures:

- ``wrk`` when it is on ``PATH`` (``apt-get install wrk``): a Lua script picks the next
  report of the pool in wrk's ``request()`` hook and prints the figures from ``done()``.
- otherwise a bundled generator: N processes, each with several non-blocking raw
  sockets in one ``epoll`` loop (no ``http.client``), for a fixed duration or a fixed
  number of requests.

Latency runs from the first byte of the request sent to the complete answer (wrk: the
answer parsed; the bundled generator: the server's close, which follows the answer at
once with ``Connection: close``). ``req/s`` counts 2xx answers only; errors are non-2xx
answers, refused or reset connections and requests that took longer than the timeout.

Loopback only: any other host is refused. Every loop is bounded in time.

::

    python bench/loadgen.py --port 8080 --duration 10 --connections 32
    python bench/loadgen.py --port 8080 --requests 20000 --tool python --json
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any, Sequence

import attrs

__all__ = [
    "LOOPBACK",
    "Result",
    "drive",
    "run_python",
    "run_wrk",
    "report_target",
    "request_bytes",
    "machine",
    "has_wrk",
    "POOL",
]

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: Distinct registrations the requests cycle through.
POOL = 100_000
#: Seconds a request may take before it counts as an error.
TIMEOUT = 10.0
USER_AGENT = "CloudSoftphone/1.5.6"
APPID_CALLS = "com.cloudsoftphone.app.pushkit"
APPID_MSGS = "com.cloudsoftphone.app"


# -- the reports ---------------------------------------------------------------------


def _b64_quoted(raw: bytes) -> str:
    # base64 as the app sends it in a query: "+", "/" and "=" percent-encoded.
    return (
        base64.b64encode(raw)
        .decode("ascii")
        .replace("+", "%2B")
        .replace("/", "%2F")
        .replace("=", "%3D")
    )


def report_target(i: int) -> str:
    """The request target of report *i* of the pool: selector, tokens and username.

    Two registrations per username (a phone and a tablet), as find() by username sees.
    """
    d = hashlib.shake_256(b"pushreport-bench:%d" % i).digest(100)
    selector = f"{d[:20].hex().upper()}:{i & 0xFFFFFFFF:08X}"
    # A PushKit token as base64 (32 bytes: 44 characters, "=" padded) and an FCM-like
    # one (48 bytes: 64 characters), as the spec's examples look.
    return (
        f"/token/?username=user{i // 2:07d}&selector={selector}"
        f"&token_calls={_b64_quoted(d[20:52])}&appid_calls={APPID_CALLS}"
        f"&token_msgs={_b64_quoted(d[52:100])}&appid_msgs={APPID_MSGS}"
    )


def request_bytes(i: int, host: str) -> bytes:
    """Report *i* as the app sends it (the spec's GET example, byte for byte in shape)."""
    return (
        f"GET {report_target(i)} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Connection: close\r\n"
        "Cache-Control: max-age=0\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "\r\n"
    ).encode("ascii")


# -- results ---------------------------------------------------------------------------


def _nonzero(errors: dict[str, int]) -> dict[str, int]:
    return {kind: n for kind, n in errors.items() if n}


@attrs.frozen(kw_only=True)
class Result:
    """What one drive measured."""

    tool: str
    #: Seconds of the measured window.
    elapsed: float
    #: 2xx answers.
    ok: int
    #: Failures by kind (connect, read, write, status, timeout); kinds with none left out.
    errors: dict[str, int] = attrs.field(converter=_nonzero)
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "seconds": round(self.elapsed, 3),
            "ok": self.ok,
            "rps": round(self.rps, 1),
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
        }

    def line(self) -> str:
        kinds = f" {self.errors}" if self.errors else ""
        return (
            f"{self.tool}: {self.rps:,.0f} req/s, p50 {_fmt(self.p50_ms)} ms, "
            f"p99 {_fmt(self.p99_ms)} ms, {self.ok} ok, {self.error_count} errors"
            f"{kinds} in {self.elapsed:.2f} s"
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _percentile(sorted_values: Sequence[int], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k] / 1000.0  # µs → ms


# -- the bundled generator -----------------------------------------------------------


class _Conn:
    __slots__ = ("sock", "data", "buf", "started", "sent")

    def __init__(self, sock: socket.socket, data: bytes, started: float) -> None:
        self.sock = sock
        self.data = data
        self.buf = b""
        self.started = started
        self.sent = 0.0


def _status(buf: bytes) -> int:
    # "HTTP/1.1 200 OK\r\n..."
    if buf[:7] != b"HTTP/1." or len(buf) < 12:
        return 0
    try:
        return int(buf[9:12])
    except ValueError:
        return 0


_REFUSED = (errno.ECONNREFUSED, errno.ECONNRESET, errno.ENETUNREACH, errno.EADDRNOTAVAIL)


def _worker(
    host: str,
    port: int,
    connections: int,
    duration: float | None,
    quota: int | None,
    first: int,
    stride: int,
    pool: int,
    timeout: float,
    barrier: Any,
    out: Any,
) -> None:
    """One load process: *connections* concurrent requests on one epoll loop.

    Stops starting requests after *duration* seconds (in-flight ones are abandoned, as
    wrk does) or after *quota* requests (in-flight ones are awaited, for at most
    *timeout* seconds).
    """
    import select

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ep = select.epoll()
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    latencies = array("I")
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    ok = 0
    launched = 0
    index = first
    active: dict[int, _Conn] = {}  # by file descriptor
    perf = time.perf_counter

    def close(fd: int) -> None:
        # Closing the socket also takes it out of the epoll set.
        active.pop(fd).sock.close()

    def send(fd: int, conn: _Conn) -> bool:
        """Send what is left of the request; False once the socket is given up."""
        try:
            n = conn.sock.send(conn.data)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            errors[
                "connect" if exc.errno in _REFUSED or exc.errno == errno.ENOTCONN else "write"
            ] += 1
            close(fd)
            return False
        if not conn.sent:
            conn.sent = perf()
        conn.data = conn.data[n:]
        return True

    def finish(fd: int, conn: _Conn) -> None:
        nonlocal ok
        # The server closed: the answer is complete (Connection: close).
        status = _status(conn.buf)
        if status == 0:
            errors["read"] += 1
        else:
            latencies.append(min(int((perf() - conn.sent) * 1e6), 0xFFFFFFFF))
            if 200 <= status < 300:
                ok += 1
            else:
                errors["status"] += 1
        close(fd)

    def launch(now: float) -> None:
        nonlocal index, launched
        data = request_bytes(index % pool, host_header)
        index += stride
        launched += 1
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        rc = sock.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            errors["connect"] += 1
            sock.close()
            time.sleep(0.001)  # a refused connection returns at once: do not spin
            return
        fd = sock.fileno()
        conn = active[fd] = _Conn(sock, data, now)
        # On loopback the handshake is over when connect() returns: send at once.
        if not send(fd, conn):
            return
        ep.register(fd, EPOLLOUT if conn.data else EPOLLIN)

    barrier.wait(timeout=60)
    start = perf()
    stop_at = start + duration if duration is not None else start + 3600.0
    hard_stop = stop_at + (timeout if quota is not None else 0.0)
    next_sweep = start + 0.5
    stopping = False
    while True:
        now = perf()
        if not stopping and (now >= stop_at or (quota is not None and launched >= quota)):
            stopping = True
            if quota is None:
                break  # duration mode: abandon in-flight requests, as wrk does
        if stopping and (not active or now >= hard_stop):
            break
        while (
            not stopping
            and len(active) < connections
            and (quota is None or launched < quota)
            and perf() < stop_at
        ):
            launch(now)
        for fd, _mask in ep.poll(0.05):
            conn = active.get(fd)
            if conn is None:
                continue
            if conn.data:
                if send(fd, conn) and not conn.data:
                    ep.modify(fd, EPOLLIN)
                continue
            # Read until EAGAIN or the server's close; the close usually comes with
            # the answer, so this rarely waits for a second event.
            while True:
                try:
                    chunk = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    errors["read"] += 1
                    close(fd)
                    break
                if not chunk:
                    finish(fd, conn)
                    break
                conn.buf += chunk
        if now >= next_sweep:
            next_sweep = now + 0.5
            for fd in [fd for fd, c in active.items() if now - c.started > timeout]:
                errors["timeout"] += 1
                close(fd)
    elapsed = (min(perf(), stop_at) if quota is None else perf()) - start
    for fd in list(active):
        close(fd)
    ep.close()
    out.send({"ok": ok, "errors": errors, "elapsed": elapsed, "latencies": latencies.tobytes()})
    out.close()


def _check_loopback(host: str) -> None:
    if host not in LOOPBACK:
        raise ValueError(
            f"the load generator only drives loopback ({', '.join(LOOPBACK)}), not {host!r}"
        )


def run_python(
    host: str,
    port: int,
    *,
    connections: int = 32,
    processes: int = 2,
    duration: float | None = 10.0,
    requests: int | None = None,
    first: int = 0,
    pool: int = POOL,
    timeout: float = TIMEOUT,
) -> Result:
    """The bundled generator: *processes* processes sharing *connections*.

    Give *duration* (seconds) or *requests* (total, then the run ends when all are
    answered, or *timeout* seconds after the last is sent).
    """
    _check_loopback(host)
    if host == "localhost":
        host = "127.0.0.1"
    if (duration is None) == (requests is None):
        raise ValueError("give either duration or requests")
    processes = max(1, min(processes, connections))
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    barrier = ctx.Barrier(processes + 1)
    pipes, procs = [], []
    for k in range(processes):
        share = connections // processes + (1 if k < connections % processes else 0)
        quota = None
        if requests is not None:
            quota = requests // processes + (1 if k < requests % processes else 0)
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker,
            daemon=True,
            args=(
                host,
                port,
                share,
                duration,
                quota,
                first + k,
                processes,
                pool,
                timeout,
                barrier,
                send_end,
            ),
        )
        proc.start()
        send_end.close()
        pipes.append(recv_end)
        procs.append(proc)
    results = []
    try:
        barrier.wait(timeout=60)
        bound = (duration if duration is not None else 3600.0) + timeout + 30
        deadline = time.monotonic() + bound
        for recv_end in pipes:
            left = max(0.1, deadline - time.monotonic())
            if not recv_end.poll(left):
                raise RuntimeError("a load process did not report in time")
            results.append(recv_end.recv())
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    errors: dict[str, int] = {}
    latencies = array("I")
    for r in results:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        part = array("I")
        part.frombytes(r["latencies"])
        latencies.extend(part)
    ordered = sorted(latencies)
    return Result(
        tool="python",
        elapsed=max(r["elapsed"] for r in results),
        ok=sum(r["ok"] for r in results),
        errors=errors,
        p50_ms=_percentile(ordered, 50),
        p99_ms=_percentile(ordered, 99),
    )


# -- wrk -------------------------------------------------------------------------------


# The same shape as report_target(): wrk's Lua has no SHA, so the selectors and tokens
# are drawn at random once per thread (seeded; distinct by their index suffix).
def _wrk_script() -> str:
    return r"""
-- pushreport bench: one report per request, the selector varied over a pool.
-- Thread tid sends pool indices tid, tid + nthreads, ... in turn. The selector is 40 hex
-- digits from a small table plus the index as its 8 hex digits, so every index is a
-- distinct registration; building a request is a few concatenations, and init() is
-- cheap: wrk starts the first thread before it initialises the next.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local pool = tonumber(os.getenv("PUSHREPORT_BENCH_POOL"))
local nthreads = tonumber(os.getenv("PUSHREPORT_BENCH_THREADS"))
local started = 0
local HEXES, CALLS, MSGS = {}, {}, {}
local N = 1021  -- a prime, so the three tables do not repeat in step with the index
local i, tail

function setup(thread)
  thread:set("tid", started)
  started = started + 1
end

local function b64(len)
  local t = {}
  for k = 1, len do
    local r = math.random(1, 64)
    local ch = B64:sub(r, r)
    if ch == "+" then ch = "%2B" elseif ch == "/" then ch = "%2F" end
    t[k] = ch
  end
  return table.concat(t)
end

local function hex(len)
  local t = {}
  for k = 1, len / 4 do t[k] = string.format("%04X", math.random(0, 65535)) end
  return table.concat(t)
end

function init(args)
  math.randomseed(7919 * (tid + 1))
  for k = 0, N - 1 do
    HEXES[k] = hex(40)
    CALLS[k] = b64(43) .. "%3D"   -- 32 bytes: 44 characters, "=" padded
    MSGS[k] = b64(64)             -- 48 bytes: 64 characters
  end
  i = tid
  tail = " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port
    .. "\r\nConnection: close\r\nCache-Control: max-age=0\r\nUser-Agent: "
    .. os.getenv("PUSHREPORT_BENCH_UA") .. "\r\n\r\n"
end

function request()
  local k = i % N
  local path = "/token/?username=user" .. string.format("%07d", math.floor(i / 2))
    .. "&selector=" .. HEXES[k] .. ":" .. string.format("%08X", i)
    .. "&token_calls=" .. CALLS[(k * 7) % N]
    .. "&appid_calls=com.cloudsoftphone.app.pushkit"
    .. "&token_msgs=" .. MSGS[(k * 13) % N]
    .. "&appid_msgs=com.cloudsoftphone.app"
  i = i + nthreads
  if i >= pool then i = tid end
  return "GET " .. path .. tail
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PUSHREPORT_BENCH %d %d %d %d %d %d %d %d %d\n",
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


_WRK_LINE = re.compile(r"^PUSHREPORT_BENCH " + " ".join([r"(\d+)"] * 9) + r"\s*$", re.M)


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    host: str,
    port: int,
    *,
    connections: int = 32,
    threads: int = 2,
    duration: float = 10.0,
    pool: int = POOL,
    timeout: float = TIMEOUT,
) -> Result:
    """wrk with the report script; *duration* is rounded up to whole seconds."""
    _check_loopback(host)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    threads = max(1, min(threads, connections))
    seconds = max(1, int(-(-duration // 1)))
    url_host = f"[{host}]" if ":" in host else host
    with tempfile.NamedTemporaryFile(
        "w", suffix=".lua", prefix="pushreport-bench-", delete=False
    ) as f:
        f.write(_wrk_script())
        script = f.name
    env = dict(
        os.environ,
        PUSHREPORT_BENCH_POOL=str(pool),
        PUSHREPORT_BENCH_THREADS=str(threads),
        PUSHREPORT_BENCH_UA=USER_AGENT,
    )
    try:
        cmd = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"--timeout={int(timeout)}s",
            "-s",
            script,
            f"http://{url_host}:{port}/",
        ]
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=seconds + timeout + 60
        )
    finally:
        os.unlink(script)
    m = _WRK_LINE.search(out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    (dur_us, requests, connect, read, write, status, tmo, p50_us, p99_us) = map(int, m.groups())
    return Result(
        tool="wrk",
        elapsed=dur_us / 1e6,
        ok=requests - status,
        errors={
            "connect": connect,
            "read": read,
            "write": write,
            "status": status,
            "timeout": tmo,
        },
        p50_ms=p50_us / 1000.0,
        p99_ms=p99_us / 1000.0,
    )


def drive(
    host: str,
    port: int,
    *,
    duration: float,
    connections: int = 32,
    threads: int = 2,
    tool: str = "auto",
    pool: int = POOL,
) -> Result:
    """Drive for *duration* seconds with wrk if present (``tool="auto"``), else Python."""
    if tool not in ("auto", "wrk", "python"):
        raise ValueError(f"tool must be auto, wrk or python, not {tool!r}")
    if tool == "wrk" or (tool == "auto" and has_wrk()):
        return run_wrk(
            host, port, connections=connections, threads=threads, duration=duration, pool=pool
        )
    return run_python(
        host, port, connections=connections, processes=threads, duration=duration, pool=pool
    )


# -- the machine -----------------------------------------------------------------------


def machine() -> dict[str, str]:
    """Where the figures were taken: cores, CPU, Python, SQLite, gunicorn, wrk, and the
    load average when asked (other work on the machine skews every figure)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        gunicorn = version("gunicorn")
    except Exception:  # pragma: no cover - not installed
        gunicorn = "-"
    wrk = "-"
    if has_wrk():
        try:
            first = subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True, timeout=10
            ).stdout.splitlines()
            wrk = first[0].split(" [")[0].removeprefix("wrk ") if first else "?"
        except (OSError, subprocess.SubprocessError):
            wrk = "?"
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            loadavg = " ".join(f.read().split()[:3])
    except OSError:
        loadavg = "-"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "loadavg": loadavg,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "gunicorn": gunicorn,
        "wrk": wrk,
        "os": platform.platform(),
    }


# -- command line ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument(
        "--requests", type=int, help="send this many requests instead (python engine)"
    )
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument(
        "--threads", "-t", type=int, default=2, help="wrk threads or load processes (default 2)"
    )
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--first", type=int, default=0, help="pool index to start at (python engine)"
    )
    parser.add_argument(
        "--pool", type=int, default=POOL, help=f"distinct registrations (default {POOL})"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.requests is not None:
        result = run_python(
            args.host,
            args.port,
            connections=args.connections,
            processes=args.threads,
            duration=None,
            requests=args.requests,
            first=args.first,
            pool=args.pool,
        )
    else:
        result = drive(
            args.host,
            args.port,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            tool=args.tool,
            pool=args.pool,
        )
    if args.json:
        json.dump(result.as_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
