"""``pushreport serve`` on uvicorn (``[server] engine = "uvicorn"``): pre-forked worker
processes, each an event loop (uvloop) with httptools' parser, serving the ASGI
adapter on the socket the master bound.

uvicorn keeps the raw target (``raw_path``, ``query_string``: ``%2F`` survives), and on
an event loop a slow or idle client costs a socket, not a worker. What httptools does
not limit, :func:`limited_protocol` does, as gunicorn does for the sync engine: a
request target over :data:`MAX_TARGET` (414), a header line over ``[limits]
max_header`` or more than ``max_headers`` of them (431), a request head that grows past
what those allow (431, so a header flood costs no memory), and a request that has not
fully arrived ``[server] timeout`` seconds after its first byte (408; checked every
min(1 s, timeout / 4)).

The master forks the workers itself (uvicorn's own multi-worker mode re-imports the app
by name in spawned processes, and a configuration holding secrets does not travel that
way), restarts one that dies, and on SIGTERM or SIGINT stops them gracefully: each
closes its service at lifespan shutdown, applying its report spool.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any, Callable

log = logging.getLogger("pushreport")

#: The longest request target answered (gunicorn's ``limit_request_line`` default).
MAX_TARGET = 8190
#: Seconds a worker is given to finish its requests and close its service at shutdown.
GRACEFUL = 10
#: A worker's exit status when it could not start (its service did not open).
BOOT_FAILED = 3

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}
#: Peers whose ``X-Forwarded-Proto`` is believed (gunicorn's ``forwarded_allow_ips``).
_LOCAL_PROXIES = ("127.0.0.1", "::1")
#: A request line as HTTP/1.x has it (RFC 9112, 3): what a head must start with.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ ]+ HTTP/1\.[01]\r?")


def limited_protocol(*, max_header: int, max_headers: int, timeout: float) -> type[Any]:
    """uvicorn's httptools protocol with the limits of the module's docstring."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    # A head can hold the request line, the headers allowed, and their line ends.
    max_head = MAX_TARGET + 64 + max_headers * (max_header + 4)

    class _Refused(Exception):
        pass

    # Deadlines are checked by one sweep per loop every `period` seconds, over the
    # connections it serves, rather than by a timer made and cancelled for every
    # connection: a deadline fires up to `period` late.
    period = min(1.0, timeout / 4)
    live: dict[Any, set[Any]] = {}

    def sweep(loop: Any) -> None:
        protocols = live.get(loop)
        if not protocols:
            live.pop(loop, None)  # nobody connected: the next connection starts it again
            return
        now = loop.time()
        for protocol in [p for p in protocols if p._deadline is not None and now >= p._deadline]:
            protocol._deadline = None
            protocol._timed_out()
        loop.call_later(period, sweep, loop)

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _refusal: tuple[int, str] | None = None
        _head: int | None = 0  # bytes of the current head so far; None: head complete
        #: ``loop.time()`` by which the current request must have come whole (None: no
        #: request under way).
        _deadline: float | None = None
        _eof = False
        #: The current head's first bytes (its request line), while it comes.
        _first = b""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._refusal = None
            self._head = 0
            loop = self.loop
            # A connection that never sends a byte is held no longer than a request.
            self._deadline = loop.time() + timeout
            protocols = live.get(loop)
            if protocols is None:
                protocols = live[loop] = set()
                loop.call_later(period, sweep, loop)
            protocols.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline = None
            protocols = live.get(self.loop)
            if protocols is not None:
                protocols.discard(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._head is not None:
                if self._head == 0:
                    self._first = b""
                    if self._deadline is None:
                        self._deadline = self.loop.time() + timeout
                if len(self._first) <= MAX_TARGET + 64:
                    self._first += data[: MAX_TARGET + 65 - len(self._first)]
                self._head += len(data)
                if self._head > max_head:
                    self._refuse(431, "request header fields too large")
                    return
            super().data_received(data)

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > MAX_TARGET:
                self._refusal = (414, "request target too long")
                raise _Refused

        def on_headers_complete(self) -> None:
            self._head = None
            if self.parser.get_http_version() not in ("1.0", "1.1"):
                # llhttp reads a request line without a version as HTTP/0.9.
                self._refusal = (400, "invalid request line")
                raise _Refused
            # The header limits, checked once the head is whole (data_received bounds
            # its size meanwhile, so a flood costs no memory): one pass, not a call per
            # header.
            headers = self.headers
            if len(headers) > max_headers:
                self._refusal = (431, "too many request header fields")
                raise _Refused
            # As gunicorn (forwarded_allow_ips): a TLS proxy on this host says the
            # request came over https (the support page's cookie is Secure then). Only
            # the scheme: the client's address is [limits]' business.
            client = self.client
            proxied = client is not None and client[0] in _LOCAL_PROXIES
            for name, value in headers:
                if len(name) + len(value) + 2 > max_header:
                    self._refusal = (431, "request header field too large")
                    raise _Refused
                if proxied and name == b"x-forwarded-proto" and value.lower() == b"https":
                    self.scope["scheme"] = "https"
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._deadline = None
            self._head = 0
            super().on_message_complete()

        def eof_received(self) -> bool | None:  # type: ignore[override]
            # The client shut its writing side after a whole request head (as clients
            # that send one request may): answer it, then close, as gunicorn does. A
            # body announced longer than what came is cut there (the app refuses it).
            cycle = self.cycle
            if self._head:
                line, newline, _ = self._first.partition(b"\n")
                if newline and not _REQUEST_LINE.fullmatch(line):
                    # A whole first line that is no request line (no version, empty):
                    # refused, as gunicorn does; a head merely cut short gets no answer.
                    self._refuse(400, "invalid request line")
                return None
            if cycle is None or cycle.response_complete:
                return None  # nothing to answer: the transport closes
            self._eof = True
            if cycle.more_body:
                cycle.more_body = False
                cycle.message_event.set()
            return True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._eof and not self.transport.is_closing():
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # httptools raised: our refusal from a callback, or its own parse error.
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                super().send_400_response(msg)

        def _timed_out(self) -> None:
            if self.transport.is_closing():
                return
            if self._head == 0 and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()  # nothing came: nothing to answer
            elif self.cycle is None or self.cycle.response_complete or self._head is not None:
                self._refuse(408, "request timed out")
            else:  # the body is slow: the app waits on it; end the connection
                self.cycle.disconnected = True
                self.cycle.message_event.set()
                self.transport.close()

        def _refuse(self, status: int, text: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            body = (text + "\n").encode("ascii")
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
            self.transport.close()

    return LimitedHttpToolsProtocol


def uvicorn_config(app: Any, *, server: Any, limits: Any) -> Any:
    """The ``uvicorn.Config`` of one worker serving *app* (``[server]``, ``[limits]``)."""
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # no wheel for this platform: asyncio's own loop
        loop = "asyncio"
    return uvicorn.Config(
        app,
        loop=loop,
        http=limited_protocol(
            max_header=limits.max_header, max_headers=limits.max_headers, timeout=server.timeout
        ),
        lifespan="on",
        # Our own access log redacts credentials; uvicorn's would log the raw target.
        access_log=False,
        log_config=None,
        # The level its loggers have anyway (ours decide), set on them: with none set,
        # uvicorn formats a TRACE line at every connection made and lost.
        log_level=logging.getLogger("uvicorn.error").getEffectiveLevel(),
        server_header=False,
        # The client is the peer, or what [limits] client_header says from a trusted
        # proxy: never uvicorn's own reading of X-Forwarded-For.
        proxy_headers=False,
        timeout_keep_alive=server.keepalive,
        timeout_graceful_shutdown=GRACEFUL,
    )


def run_workers(
    sock: socket.socket,
    workers: int,
    worker: Callable[[socket.socket], int],
    *,
    child_exit: Callable[[int], None] | None = None,
) -> int:
    """Fork *workers* processes that each run ``worker(sock)``, restart one that dies,
    and stop them all on SIGTERM or SIGINT (SIGKILL after :data:`GRACEFUL` seconds and
    a margin). Returns 0, or :data:`BOOT_FAILED` when a worker could not start."""
    children: set[int] = set()
    stopping = False

    master = os.getpid()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # Until uvicorn's own handlers are in (and after: it re-raises the
                # signal it stopped on), a stop request is noted, not fatal.
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, _stop_requested)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                _stop_with_the_master(master)
                _plain_log_records()
                code = worker(sock)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.add(pid)

    def restart(signum: int, frame: FrameType | None) -> None:
        # SIGHUP, as under gunicorn: every worker stops gracefully and a new one starts.
        log.info("restarting the workers")
        for pid in list(children):
            _kill(pid, signal.SIGTERM)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("stopping the workers")
        stopping = True
        for pid in list(children):
            _kill(pid, signal.SIGTERM)
        signal.alarm(GRACEFUL + 5)

    def kill(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            _kill(pid, signal.SIGKILL)

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, stop),
            (signal.SIGINT, stop),
            (signal.SIGHUP, restart),
            (signal.SIGALRM, kill),
        )
    }
    failed = False
    try:
        for _ in range(workers):
            spawn()
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            if child_exit is not None:
                child_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                continue
            if code == BOOT_FAILED:
                log.error("worker %d failed to start: stopping", pid)
                failed = True
                stop(signal.SIGTERM, None)
                continue
            log.warning("worker %d exited (%d): starting another", pid, code)
            time.sleep(0.1)  # a worker that dies at once does not spin the master
            spawn()
    finally:
        signal.alarm(0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return BOOT_FAILED if failed else 0


#: The uvicorn server this worker runs, once built (:func:`serve_worker`).
_serving: list[Any] = []
_stopping: list[bool] = []


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    _stopping.append(True)
    for server in _serving:
        server.should_exit = True


def serve_worker(app: Any, sock: socket.socket, *, server: Any, limits: Any) -> bool:
    """Serve *app* on *sock* with uvicorn until told to stop; whether it started (a
    stop requested before it even started counts as started: nothing failed)."""
    import uvicorn

    if _stopping:
        return True
    running = uvicorn.Server(uvicorn_config(app, server=server, limits=limits))
    _serving.append(running)
    # A signal that came before this point was noted, and is seen by uvicorn now.
    running.should_exit = bool(_stopping)
    running.run(sockets=[sock])
    return bool(running.started or _stopping)


def _stop_with_the_master(master: int) -> None:
    """Ask the kernel for a SIGTERM when the master dies (Linux), so that a master
    killed with SIGKILL leaves no worker serving on its own."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != master:  # it died before the request: no signal will come
        os._exit(0)


class _NoColor(logging.Filter):
    """uvicorn adds ``color_message`` (ANSI escapes) to its records: not for our lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def _plain_log_records() -> None:
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(_NoColor())


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
