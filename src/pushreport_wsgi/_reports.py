"""The report paths over WSGI: request → :meth:`Receiver.receive <pushreport.Receiver.receive>`
→ response.

This module only reads the environ (the raw target, the mount point, the body stream)
and sends what the service decides: which requests are on a report path, the body's
limits, the :class:`~pushreport.Outcome` as an answer and the access-log line are
``pushreport._http``'s, shared with the ASGI adapter.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable, Sequence
from urllib.parse import quote

from werkzeug.wsgi import get_input_stream

from pushreport import (
    SAFE_PATH,
    Answer,
    LimitsConfig,
    Receiver,
    client_address,
    declared_length,
    log_access,
    mounted_target,
    origin_form,
    outcome_answer,
    whole_body,
)
from pushreport_core import InvalidReport
from pushreport_core import Request as CoreRequest

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ReportMiddleware", "environ_client", "forwarded_key", "raw_target", "send"]


def raw_target(environ: WSGIEnvironment) -> str:
    """The request target as it came over the wire, still percent-encoded.

    Servers that have it say so in ``RAW_URI`` (gunicorn, werkzeug) or ``REQUEST_URI``
    (uWSGI, mod_wsgi); PEP 3333's ``PATH_INFO`` is already decoded, and an encoded slash
    in a token would be lost, so it is only the fallback.
    """
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target:
        target = origin_form(str(target))
        if "?" not in target:
            # Some servers (and werkzeug's test client) leave the query out of it.
            query = environ.get("QUERY_STRING")
            if query:
                return f"{target}?{query}"
        return target
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1"), safe=SAFE_PATH)
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def send(answer: Answer, start_response: StartResponse) -> Iterable[bytes]:
    """Start *answer* (the service's :class:`~pushreport.Answer`) and return its body."""
    start_response(answer.status_line, list(answer.headers))
    return [answer.body]


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
        self._forwarded = forwarded_key(limits)
        self._trusted = limits.trusted_proxies
        self._max_body = receiver.config.reporter.max_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        target = mounted_target(
            self.receiver, method, raw_target(environ), environ.get("SCRIPT_NAME", "")
        )
        if target is None:
            return self.app(environ, start_response)
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
        else:
            environ["pushreport.error"] = outcome.reason
        answer = outcome_answer(outcome)
        log_access(
            self.receiver,
            remote_addr=environ.get("REMOTE_ADDR"),
            method=environ.get("REQUEST_METHOD", "-"),
            target=target,
            outcome=outcome,
            started=started,
        )
        return send(answer, start_response)

    def _client(self, environ: WSGIEnvironment) -> str | None:
        return environ_client(environ, self._forwarded, self._trusted)

    def _read_body(self, environ: WSGIEnvironment) -> bytes:
        limit = self._max_body
        n = declared_length(environ.get("CONTENT_LENGTH"), limit)
        if not environ.get("CONTENT_LENGTH") and not environ.get("wsgi.input_terminated"):
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
        return whole_body(chunks, n, limit)
