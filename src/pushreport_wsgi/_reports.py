"""The report paths over WSGI: request → :meth:`Receiver.receive <pushreport.Receiver.receive>`
→ response.

Everything this module decides is about HTTP: which requests are on a report path (the
raw target, a mount prefix), reading the body, and turning the :class:`~pushreport.Outcome`
into a status, headers and a one-line body, and into the access-log line.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable, Sequence
from urllib.parse import quote

from werkzeug.wsgi import get_input_stream

from pushreport import LimitsConfig, Outcome, Receiver, client_address
from pushreport_core import (
    AuthenticationRequired,
    InvalidReport,
    MethodNotAllowed,
    RequestTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    shorten,
)
from pushreport_core import Request as CoreRequest

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ReportMiddleware", "environ_client", "forwarded_key", "raw_target"]

access_log = logging.getLogger("pushreport.access")

_SAFE_PATH = "/:@!$&'()*+,;=-._~"
_OK_HEADERS: list[tuple[str, str]] = [("Content-Length", "0")]


def raw_target(environ: WSGIEnvironment) -> str:
    """The request target as it came over the wire, still percent-encoded.

    Servers that have it say so in ``RAW_URI`` (gunicorn, werkzeug) or ``REQUEST_URI``
    (uWSGI, mod_wsgi); PEP 3333's ``PATH_INFO`` is already decoded, and an encoded slash
    in a token would be lost, so it is only the fallback.
    """
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target:
        if not target.startswith("/"):
            # absolute-form ("http://host/path?q"): keep the path and query only.
            scheme_end = target.find("://")
            if scheme_end != -1:
                slash = target.find("/", scheme_end + 3)
                target = target[slash:] if slash != -1 else "/"
        if "?" not in target:
            # Some servers (and werkzeug's test client) leave the query out of it.
            query = environ.get("QUERY_STRING")
            if query:
                return f"{target}?{query}"
        return str(target)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1"), safe=_SAFE_PATH)
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _error_headers(error: Exception | None) -> list[tuple[str, str]]:
    """The headers an error's answer carries (the error knows the values, the adapter
    their HTTP names)."""
    if isinstance(error, (ServiceUnavailable, TooManyRequests)):
        return [("Retry-After", str(error.retry_after))]
    if isinstance(error, MethodNotAllowed):
        return [("Allow", ", ".join(error.allowed))]
    if isinstance(error, AuthenticationRequired):
        return [("WWW-Authenticate", c) for c in error.challenges]
    return []


def forwarded_key(limits: LimitsConfig) -> str | None:
    """The environ key of ``[limits] client_header`` (``None``: the peer is the client)."""
    header = limits.client_header
    return "HTTP_" + header.upper().replace("-", "_") if header else None


def environ_client(
    environ: WSGIEnvironment, forwarded_key: str | None, trusted: Sequence[str]
) -> str | None:
    """The client of a request, as ``[limits]`` counts it (:func:`client_address`)."""
    peer = environ.get("REMOTE_ADDR")
    forwarded = environ.get(forwarded_key) if forwarded_key else None
    return client_address(
        peer if isinstance(peer, str) else None,
        forwarded if isinstance(forwarded, str) else None,
        trusted,
    )


class ReportMiddleware:
    """Answer the requests on *receiver*'s report and removal paths; pass every other
    request to *app* untouched."""

    def __init__(self, app: WSGIApplication, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver
        limits = receiver.config.limits
        #: The environ key of ``[limits] client_header`` (``None``: the peer is the client).
        self._forwarded = forwarded_key(limits)
        self._trusted = limits.trusted_proxies
        self._max_body = receiver.config.reporter.max_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        target = raw_target(environ)
        path = target.partition("?")[0]
        receiver = self.receiver
        method = environ.get("REQUEST_METHOD", "GET")
        if not receiver.owns(method, path):
            script_name = environ.get("SCRIPT_NAME", "")
            # Mounted under a prefix (a dispatcher, a portal's sub-path): the shapes may
            # be written relative to the mount point.
            prefix = quote(script_name.encode("latin-1"), safe=_SAFE_PATH)
            if not (
                script_name
                and path.startswith(prefix)
                and receiver.owns(method, path[len(prefix) :])
            ):
                return self.app(environ, start_response)
            target = target[len(prefix) :]
        return self._handle(environ, start_response, target)

    def _handle(
        self, environ: WSGIEnvironment, start_response: StartResponse, target: str
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        environ["pushreport.handled"] = True
        try:
            request = CoreRequest(
                method=environ.get("REQUEST_METHOD", "GET"),
                target=target,
                body=self._read_body(environ),
                content_type=environ.get("CONTENT_TYPE") or None,
                user_agent=environ.get("HTTP_USER_AGENT"),
                authorization=environ.get("HTTP_AUTHORIZATION"),
                client=self._client(environ),
            )
        except Exception as e:  # the body could not be read: no request to hand over
            outcome = self.receiver.refuse(e)
        else:
            outcome = self.receiver.receive(request)
        environ["pushreport.outcome"] = outcome
        if outcome.error is None:
            environ["pushreport.selector"] = outcome.selector
            if outcome.removal is not None:
                environ["pushreport.removed"] = outcome.removal.removed is not None
            start_response("200 OK", list(_OK_HEADERS))
            self._log(environ, target, outcome, started)
            return [b""]
        status = outcome.status
        environ["pushreport.error"] = outcome.reason
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        # One line, plain text: the reason never echoes request values.
        data = ((outcome.reason.splitlines() or [phrase])[0] + "\n").encode("utf-8")
        start_response(
            f"{status} {phrase}",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(data))),
                *_error_headers(outcome.error),
            ],
        )
        self._log(environ, target, outcome, started)
        return [data]

    def _client(self, environ: WSGIEnvironment) -> str | None:
        return environ_client(environ, self._forwarded, self._trusted)

    def _read_body(self, environ: WSGIEnvironment) -> bytes:
        limit = self._max_body
        length = environ.get("CONTENT_LENGTH")
        n = -1
        if length:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n > limit:
                raise RequestTooLarge(f"body is too large ({n} > {limit} bytes)")
        elif not environ.get("wsgi.input_terminated"):
            return b""
        stream = get_input_stream(environ, safe_fallback=True)
        chunks: list[bytes] = []
        got = 0
        try:
            while got <= limit:  # read() may return less than asked before the end
                chunk: bytes = stream.read(limit + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                if 0 <= n <= got:
                    break
        except Exception as e:
            # The client's fault, found while the server decodes the body for us: bad
            # chunked framing, or the connection gone before Content-Length bytes came
            # (gunicorn's InvalidChunkSize, NoMoreData; OSError). Not a 500.
            raise InvalidReport("body could not be read") from e
        body = b"".join(chunks)
        if len(body) < n:
            # The connection ended early (gunicorn hands over what came): a cut form
            # would still parse, with a token cut short.
            raise InvalidReport(f"body ended after {len(body)} of {n} bytes")
        if len(body) > limit:
            raise RequestTooLarge(f"body is too large (> {limit} bytes)")
        return body

    def _log(
        self, environ: WSGIEnvironment, target: str, outcome: Outcome, started: float
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        # One line per request; the same fields as attributes of the record, for a
        # structured formatter (pushreport's JsonFormatter).
        method = environ.get("REQUEST_METHOD", "GET")
        fields = {
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"),
            "target": self.receiver.redact(target, method),
            "status": outcome.status,
            "shape": outcome.shape or "-",
            "selector": shorten(outcome.selector, 12) if outcome.selector else "-",
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
        access_log.info(
            '%(remote_addr)s "%(method)s %(target)s" %(status)d %(shape)s '
            "%(selector)s %(latency_ms).1fms",
            fields,
            extra=fields,
        )
