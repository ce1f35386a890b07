"""The WSGI adapter: request → one receiver call → response.

:class:`PushReportMiddleware` wraps any WSGI app (Flask, Django, ...), answers exactly
the requests that match the configured shapes, and passes every other request through
untouched. :func:`create_app` is the same thing standing alone, answering 404 to the rest.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable
from urllib.parse import quote

from werkzeug.wsgi import get_input_stream

from pushreport._config import Config, load_config
from pushreport._health import operator_routes
from pushreport._limits import client_address
from pushreport._lookup import LookupApp
from pushreport._service import Receiver
from pushreport_core import (
    AuthenticationRequired,
    InvalidReport,
    MethodNotAllowed,
    PushReportError,
    RequestTooLarge,
    ServiceUnavailable,
    StorageUnavailable,
    TooManyRequests,
    shorten,
)
from pushreport_core import Request as CoreRequest

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PushReportMiddleware", "create_app", "raw_target"]

log = logging.getLogger("pushreport")
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


def _as_config(config: Config | str | os.PathLike[str] | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    return load_config(config)


class PushReportMiddleware:
    """Mount pushreport in front of any WSGI app.

    :param app: the WSGI app to pass every other request to.
    :param config: a :class:`Config`, or the path of a TOML configuration file; ``None``
        is the embedded default (default shapes, SQLite in ``./pushreport.sqlite3``).
    :param receiver: an already built :class:`Receiver` (tests, custom plugin managers);
        *config* is ignored then.

    Requests whose path matches the configured shapes (the reporter's, and the Account
    Removal Reporter's) are answered here: ``200`` with an empty body once every
    required backend has committed (a removal: deleted, or found already gone);
    ``400``/``403``/``405``/``413`` with a one-line ``text/plain`` reason when the
    request is refused (nothing stored or deleted); ``401`` with ``WWW-Authenticate``
    when HTTP Digest credentials are needed; ``429`` with ``Retry-After`` over a rate
    limit or during a lock-out; ``503`` with ``Retry-After`` when storage fails, so that
    the app retries.
    Handled requests carry ``pushreport.*`` keys in the environ for outer middleware.
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        receiver: Receiver | None = None,
    ) -> None:
        self.app = app
        self.receiver = (
            receiver if receiver is not None else Receiver.from_config(_as_config(config))
        )
        #: Health checks and metrics by path ([health], [metrics]): never report paths.
        self.operator_routes = operator_routes(self.receiver)
        # [lookup] enabled: the lookup endpoint, answered before the report shapes.
        self.lookup: LookupApp | None = None
        if self.receiver.config.lookup.enabled:
            self.lookup = LookupApp.from_config(self.receiver.config.lookup, self.receiver.storage)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        operator = self.operator_routes.get(environ.get("PATH_INFO", ""))
        if operator is not None:
            return operator(environ, start_response)
        lookup = self.lookup
        if lookup is not None and lookup.owns(environ):
            return lookup(environ, start_response)
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
        method = environ.get("REQUEST_METHOD", "GET")
        environ["pushreport.handled"] = True
        status = 500
        # The report's shape and selector, once parsed: for the access log.
        notes: dict[str, str] = environ.setdefault("pushreport.report", {})
        try:
            body = self._read_body(environ)
            request = CoreRequest(
                method=method,
                target=target,
                body=body,
                content_type=environ.get("CONTENT_TYPE") or None,
                user_agent=environ.get("HTTP_USER_AGENT"),
                authorization=environ.get("HTTP_AUTHORIZATION"),
                client=client_address(environ, self.receiver.config.limits),
            )
            if self.receiver.removes(method, request.path):
                outcome = self.receiver.remove(request, notes=notes)
                environ["pushreport.removed"] = outcome.removed is not None
                selector = outcome.selector
            else:
                selector = self.receiver.accept(request, notes=notes)
        except PushReportError as e:
            self.receiver.metrics.report_refused(e)
            status = e.error_status_hint
            environ["pushreport.error"] = e.msg
            headers: list[tuple[str, str]] = []
            if isinstance(e, ServiceUnavailable):
                headers.append(("Retry-After", str(e.retry_after)))
                # One line a minute per reason, with a count: a full disk is not
                # worth a line per report (18,237 lines in 12 s, once).
                self.receiver.failure_log.warning(
                    "%s: %s",
                    "storage unavailable" if isinstance(e, StorageUnavailable) else "unavailable",
                    e.msg,
                )
            elif isinstance(e, MethodNotAllowed):
                headers.append(("Allow", ", ".join(e.allowed)))
            elif isinstance(e, TooManyRequests):
                headers.append(("Retry-After", str(e.retry_after)))
            elif isinstance(e, AuthenticationRequired):
                headers.extend(("WWW-Authenticate", c) for c in e.challenges)
            return self._plain(start_response, status, e.msg, headers, environ, target, started)
        except Exception as e:
            self.receiver.metrics.report_refused(e)
            self.receiver.failure_log.error(
                "internal error while handling a report",
                key=("internal error", type(e).__name__),
                exc_info=e,
            )
            return self._plain(start_response, 500, "internal error", [], environ, target, started)
        status = 200
        self.receiver.metrics.report_accepted()
        environ["pushreport.selector"] = selector
        start_response("200 OK", list(_OK_HEADERS))
        self._log(environ, target, status, started)
        return [b""]

    def _read_body(self, environ: WSGIEnvironment) -> bytes:
        limit = self.receiver.config.reporter.max_body
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

    def _plain(
        self,
        start_response: StartResponse,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        environ: WSGIEnvironment,
        target: str,
        started: float,
    ) -> Iterable[bytes]:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        # One line, plain text: the reason never echoes request values.
        text = (reason.splitlines()[0] if reason else phrase) + "\n"
        data = text.encode("utf-8")
        start_response(
            f"{status} {phrase}",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(data))),
                *headers,
            ],
        )
        self._log(environ, target, status, started)
        return [data]

    def _log(self, environ: WSGIEnvironment, target: str, status: int, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        # One line per request; the same fields as attributes of the record, for a
        # structured formatter (pushreport._logs.JsonFormatter).
        notes = environ.get("pushreport.report") or {}
        fields = {
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"),
            "target": self.receiver.redact(target, environ.get("REQUEST_METHOD", "GET")),
            "status": status,
            "shape": notes.get("shape", "-"),
            "selector": shorten(notes["selector"], 12) if "selector" in notes else "-",
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
        access_log.info(
            '%(remote_addr)s "%(method)s %(target)s" %(status)d %(shape)s '
            "%(selector)s %(latency_ms).1fms",
            fields,
            extra=fields,
        )

    def close(self) -> None:
        self.receiver.close()


def _not_found(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    data = b"not found\n"
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def create_app(
    config: Config | str | os.PathLike[str] | None = None, *, receiver: Receiver | None = None
) -> PushReportMiddleware:
    """A standalone WSGI app: the shapes of *config*, 404 for anything else."""
    return PushReportMiddleware(_not_found, config, receiver=receiver)
