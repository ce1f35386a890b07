"""Outbound HTTP: the one way the service POSTs to somebody else's server.

The push gateway client (:mod:`pushreport._push`), the ``http`` authentication
callout (:mod:`pushreport._auth`) and the webhook backend's deliverer (a plugin: this
module is public) all POST with :mod:`urllib.request` through
:func:`post`, which

- never follows a redirect: urllib would turn a POST into a GET without its body, and a
  provider that moved is a deployer's problem to fix, not one to guess around; the
  ``3xx`` is returned as the answer it is;
- bounds the whole exchange by *timeout*, not each read: urllib's own timeout applies
  to every socket operation, so a server that trickles one byte a second would hold
  the caller for as long as it likes. A timer shuts the connection's socket down when
  the time is up (the blocked read then returns), and the failure reads "timed out";
- resolves the host name within the same time: ``getaddrinfo`` cannot be interrupted,
  so it runs in a thread of its own that the caller stops waiting for (the thread ends
  when the resolver gives up); an IP address is used as it is;
- describes a failure in a few words (:func:`describe`) that name neither the URL nor
  anything sent, and :func:`where` gives the part of a URL that is safe to log.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import attrs

__all__ = ["Answer", "OPENER", "OutboundError", "describe", "post", "where", "USER_AGENT"]

USER_AGENT = "pushreport"


class OutboundError(Exception):
    """No HTTP answer came: *reason* says why in a few words (no URL, nothing sent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen(kw_only=True)
class Answer:
    """An HTTP answer, whatever its status (``3xx`` included: not followed)."""

    status: int
    headers: Message | None = attrs.field(default=None, repr=False)
    body: bytes = attrs.field(default=b"", repr=False)


class _Deadline:
    """Shut the exchange's socket down *timeout* seconds after :meth:`start`.

    The socket is handed over by the connection as soon as it is connected
    (:meth:`arm`); a deadline that passed before that shuts it down at once.
    :meth:`finish` disarms it before the caller closes the answer. Shutting down acts
    on the socket object, never on a bare descriptor number: a socket closed meanwhile
    answers ``EBADF``, it cannot hit another connection that reused the number.
    """

    def __init__(self, timeout: float) -> None:
        self._end = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = False
        self.expired = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left; a timeout (``TimeoutError``) when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def arm(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._done or sock is None:
                return
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._sock = None
        self._timer.cancel()


def _resolve(host: str, port: int, deadline: _Deadline) -> list[Any]:
    """``getaddrinfo`` for a TCP connection, given up on when the deadline passes."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address: nothing to look up, no thread
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    found: list[Any] = []
    failed: list[OSError] = []

    def look_up() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as e:
            failed.append(e)

    thread = threading.Thread(target=look_up, name="pushreport-resolve", daemon=True)
    thread.start()
    thread.join(deadline.remaining())
    if thread.is_alive():
        raise TimeoutError("name resolution timed out")
    if failed:
        raise failed[0]
    return found


def _connect(
    address: tuple[str, int], deadline: _Deadline, source: tuple[str, int] | None
) -> socket.socket:
    """``socket.create_connection`` within the deadline, name resolution included."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, where_to in _resolve(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            if source:
                sock.bind(source)
            sock.connect(where_to)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError("getaddrinfo returned nothing")


def _connect_within(deadline: _Deadline) -> Callable[..., socket.socket]:
    # http.client connects through the instance's _create_connection(address, timeout,
    # source_address) (socket.create_connection): the time is the deadline's here.
    def create_connection(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        return _connect(address, deadline, source_address)

    return create_connection


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed, or never connected
        pass


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        if deadline is not None:
            self._create_connection = _connect_within(deadline)

    def connect(self) -> None:
        super().connect()
        if self._deadline is not None:
            self._deadline.arm(self.sock)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, http.client.HTTPSConnection):
    # The same watch, before HTTPSConnection in the order: its connect() does the TLS
    # handshake, each of whose reads is bounded by the socket timeout, and a deadline
    # that passed meanwhile shuts the socket down right after.
    pass


class _Request(urllib.request.Request):
    deadline: _Deadline | None = None


def _watched(http_class: Any, req: urllib.request.Request) -> Callable[..., Any]:
    watched = (
        _WatchedHTTPSConnection
        if issubclass(http_class, http.client.HTTPSConnection)
        else _WatchedHTTPConnection
    )
    return functools.partial(watched, deadline=getattr(req, "deadline", None))


class _HTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class, req), req, **kwargs)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class, req), req, **kwargs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as what it is, never followed: urllib would turn the POST
    into a GET without its body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: The opener every outbound POST goes through: no redirects, whole-exchange deadline.
OPENER = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)


def describe(error: BaseException) -> str:
    """A short reason for a request that got no answer: no URL, no body, no header."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "connection reset"
    if isinstance(error, http.client.HTTPException):
        return "no valid HTTP answer"
    if isinstance(error, socket.gaierror):
        return "host name not resolved"
    if isinstance(error, ssl.SSLError):
        return "TLS error"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"request failed ({type(error).__name__})"


def post(
    url: str,
    data: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    max_answer: int = 0,
    opener: urllib.request.OpenerDirector | None = None,
) -> Answer:
    """POST *data* to *url*; the answer, whatever its status.

    At most *max_answer* bytes of the body are read (0: none). The whole exchange,
    resolving the host name included, takes at most *timeout* seconds.

    :raises OutboundError: no answer came (its ``reason``: "timed out", "connection
        refused", ...).
    """
    request = _Request(
        url, data=data, method="POST", headers={"User-Agent": USER_AGENT, **headers}
    )
    deadline = request.deadline = _Deadline(timeout)
    deadline.start()
    try:
        try:
            response = (opener or OPENER).open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            # urllib raises every status but 2xx (a 3xx too: the redirect not followed).
            try:
                return Answer(status=e.code, headers=e.headers, body=_read(e, max_answer))
            finally:
                e.close()
        with response:
            return Answer(
                status=response.status,
                headers=response.headers,
                body=_read(response, max_answer),
            )
    except (OSError, ValueError, http.client.HTTPException) as e:
        # URLError is an OSError; ValueError: a URL urllib cannot use.
        raise OutboundError("timed out" if deadline.expired else describe(e)) from None
    finally:
        deadline.finish()


def _read(response: Any, limit: int) -> bytes:
    if limit <= 0:
        return b""
    try:
        return bytes(response.read(limit))
    except (OSError, ValueError, http.client.HTTPException):
        return b""


def where(url: str) -> str:
    """The scheme, host and port of *url*, for logs (its path or user may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
