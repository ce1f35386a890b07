"""The ASGI adapter: :class:`PushReportMiddleware` and :func:`create_app`.

The same service as the WSGI adapter's, and the same answers byte for byte: what to
answer (``pushreport._http``: an :class:`~pushreport.Outcome` as status, headers and
body; the operator endpoints'; the body's limits; the access-log line) is decided in
the service, once. This module reads a scope and its messages, and sends.

The service is synchronous (a storage backend's calls block): they run on a thread
pool of the middleware's own (``[server] threads`` threads), so that a slow backend (a
locked SQLite file, a PostgreSQL round trip, a ``full`` fsync) never stalls the event
loop, its idle connections or ``/healthz``. The one exception is a report whose only
storage work is an append to a report spool that does not fsync
(:meth:`~pushreport.Receiver.quick`): it is received on the loop, which costs less than
the hop to a thread and back.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Collection, MutableMapping, TypeVar
from urllib.parse import parse_qsl, quote

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_cookie, parse_options_header

from pushreport import (
    SAFE_PATH,
    AdminPage,
    AdminRequest,
    Answer,
    Config,
    LookupEndpoint,
    OperatorPaths,
    Outcome,
    PendingSyncs,
    PrometheusMetrics,
    Readiness,
    Receiver,
    as_config,
    client_address,
    declared_length,
    log_access,
    lookup_answer,
    method_not_allowed,
    mounted_target,
    open_now,
    origin_form,
    outcome_answer,
    text_answer,
    whole_body,
)
from pushreport_core import InvalidReport, RequestTooLarge
from pushreport_core import Request as CoreRequest

from ._sync import GroupSync

__all__ = ["PushReportMiddleware", "create_app", "raw_target"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

_METHODS = OperatorPaths.methods


def raw_target(scope: Scope) -> str:
    """The request target as it came over the wire, still percent-encoded: ASGI servers
    keep it in ``raw_path`` and ``query_string`` (``path`` is decoded: an encoded slash
    in a token would be lost, so it is only the fallback)."""
    raw = scope.get("raw_path")
    if raw:
        path = raw.decode("latin-1").partition("?")[0]
    else:
        path = quote(scope.get("path", "").encode("utf-8"), safe=SAFE_PATH)
    query = scope.get("query_string", b"").decode("latin-1")
    path = origin_form(path)
    return f"{path}?{query}" if query else path


def _route_path(scope: Scope) -> str:
    """The decoded path relative to the mount point (``root_path``), as ``PATH_INFO``."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _header(scope: Scope, name: bytes) -> str | None:
    """*name*'s value (lower case), repeated ones joined by commas as WSGI servers do."""
    return _headers(scope, (name,)).get(name)


def _headers(scope: Scope, names: Collection[bytes]) -> dict[bytes, str]:
    """The values of those of *names* (lower case) that came, in one pass over the
    headers: each as :func:`_header` reads it."""
    found: dict[bytes, list[bytes]] = {}
    for k, v in scope.get("headers", ()):
        k = k.lower()
        if k in names:
            found.setdefault(k, []).append(v)
    return {k: b",".join(v).decode("latin-1") for k, v in found.items()}


@functools.lru_cache(maxsize=256)
def _encoded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """*headers* as ASGI sends them (the few distinct answers' headers, encoded once)."""
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)


def _parsed(text: str) -> dict[str, list[str]]:
    """A query string or form's values by name, in order (as werkzeug reads them)."""
    values: dict[str, list[str]] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace"):
        values.setdefault(name, []).append(value)
    return values


async def _send(send: Send, answer: Answer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": list(_encoded(answer.headers)),
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """:func:`create_app`'s app behind the middleware: 404 to everything, and the
    lifespan protocol's plain answers."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]  # startup, shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    data = b"not found\n"
    await _send(
        send,
        Answer(
            404,
            (("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))),
            data,
        ),
    )


class PushReportMiddleware:
    """Mount pushreport in front of any ASGI app (Starlette, FastAPI, ...).

    :param app: the ASGI app to pass every other request (and websocket) to.
    :param config: a :class:`~pushreport.Config`, or the path of a TOML configuration
        file; ``None`` is the embedded default.
    :param receiver: an already built :class:`~pushreport.Receiver`; *config* is
        ignored then.

    It answers what the WSGI adapter's ``PushReportMiddleware`` answers, byte for byte:
    the report and removal paths, and the health, metrics and lookup endpoints its
    configuration turns on. Handled requests carry ``pushreport.handled`` and
    ``pushreport.outcome`` in the scope for outer middleware. The lifespan protocol is
    passed on to *app*: at start-up every backend is opened (a store that cannot be
    used fails the start, naming it), at shutdown the service is closed (the report
    spool applied).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        receiver: Receiver | None = None,
    ) -> None:
        self.app = app
        self.receiver = (
            receiver if receiver is not None else Receiver.from_config(as_config(config))
        )
        settings = self.receiver.config
        paths = OperatorPaths.of(self.receiver)
        self._exact: dict[str, ASGIApp] = {}
        if paths.healthz is not None:
            self._exact[paths.healthz] = self._healthz
        if paths.readyz is not None:
            self._readiness = Readiness(self.receiver.backends, timeout=settings.health.timeout)
            self._exact[paths.readyz] = self._readyz
        if paths.metrics is not None and isinstance(self.receiver.metrics, PrometheusMetrics):
            self._registry = self.receiver.metrics.registry(self.receiver.backends)
            self._exact[paths.metrics] = self._metrics
        self.lookup = (
            LookupEndpoint.from_config(settings.lookup, self.receiver.storage, whole=settings)
            if settings.lookup.enabled
            else None
        )
        self.admin = AdminPage.from_config(self.receiver) if settings.admin.enabled else None
        limits = settings.limits
        self._forwarded = limits.client_header.lower().encode() if limits.client_header else None
        self._trusted = limits.trusted_proxies
        #: The headers a report's request is read with (in one pass).
        self._read_headers = frozenset(
            {b"content-length", b"content-type", b"user-agent", b"authorization"}
            | ({self._forwarded} if self._forwarded else set())
        )
        self._max_body = settings.reporter.max_body
        self._pool: ThreadPoolExecutor | None = None
        #: The reports waiting for their spool's fdatasync (``full``).
        self._syncs = GroupSync(self.run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        method: str = scope.get("method", "GET")
        endpoint = self._exact.get(path)
        if endpoint is not None:
            scope["pushreport.handled"] = True
            if method not in _METHODS:
                return await _send(send, method_not_allowed(head=method == "HEAD"))
            return await endpoint(scope, receive, send)
        if self.lookup is not None and self.lookup.owns(path):
            return await self._lookup(scope, send, self.lookup, path)
        admin = self.admin
        if admin is not None and (path == admin.path or path.startswith(admin.path + "/")):
            return await self._admin(scope, receive, send, admin, path)
        target = mounted_target(
            self.receiver, method, raw_target(scope), scope.get("root_path", "")
        )
        if target is None:
            return await self.app(scope, receive, send)
        return await self._report(scope, receive, send, target)

    async def run(self, call: Callable[[], T]) -> T:
        """*call* on the middleware's threads (the service's calls block)."""
        if self._pool is None:
            # ``[server] threads`` (default 1): as many service calls at once as a
            # worker of gunicorn's runs. More overlap fsyncs (``full``), but they also
            # meet in the database: with 8, two hosts' PostgreSQL upserts of the same
            # selectors deadlocked now and then (503, SQLSTATE 40P01).
            threads = self.receiver.config.server.threads
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pushreport")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def open(self) -> None:
        """Open every backend now (a store that cannot be used raises, naming it)."""
        open_now(self.receiver.backends)

    def close(self) -> None:
        """Close the service: the report spool is applied, the storage closed."""
        self.receiver.close()
        self._stop_threads()

    async def aclose(self) -> None:
        """:meth:`close` from the event loop (lifespan shutdown): the storage is closed
        on the middleware's threads, which then end."""
        await self.run(self.receiver.close)
        self._stop_threads()

    def _stop_threads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # --- the report paths ------------------------------------------------------------

    async def _report(self, scope: Scope, receive: Receive, send: Send, target: str) -> None:
        started = time.perf_counter()
        scope["pushreport.handled"] = True
        method: str = scope.get("method", "GET")
        outcome: Outcome
        headers = _headers(scope, self._read_headers)
        try:
            limit = self._max_body
            declared = declared_length(headers.get(b"content-length"), limit)
            body = await self._read(receive, declared, limit)
        except Exception as e:  # the body could not be read: no request to hand over
            outcome = self.receiver.refuse(e)
        else:
            client = scope.get("client")
            peer = client[0] if client else None
            forwarded = headers.get(self._forwarded) if self._forwarded else None
            request = CoreRequest(
                method=method,
                target=target,
                body=body,
                content_type=headers.get(b"content-type") or None,
                user_agent=headers.get(b"user-agent"),
                authorization=headers.get(b"authorization"),
                client=client_address(peer, forwarded, self._trusted),
            )
            if self.receiver.quick(method, target.partition("?")[0]):
                # An append to a spool (~15 µs): cheaper on the loop than the hop to a
                # thread and back (measured: bench/README.md); a ``full`` spool's
                # fdatasync is awaited, shared with every report written meanwhile.
                outcome, pending = self.receiver.receive_at_once(request)
                if pending is not None:
                    outcome = await self._synced(outcome, pending)
            else:
                outcome = await self.run(lambda: self.receiver.receive(request))
        scope["pushreport.outcome"] = outcome
        client = scope.get("client")
        log_access(
            self.receiver,
            remote_addr=client[0] if client else None,
            method=method,
            target=target,
            outcome=outcome,
            started=started,
        )
        await _send(send, outcome_answer(outcome))

    async def _synced(self, outcome: Outcome, pending: PendingSyncs) -> Outcome:
        """*outcome* once *pending* is on disk, its sync shared with every report
        written meanwhile (:mod:`pushreport_asgi._sync`)."""
        try:
            await self._syncs.wait(pending)
        except Exception as e:
            return self.receiver.synced(outcome, e)
        return self.receiver.synced(outcome)

    async def _read(self, receive: Receive, declared: int, limit: int) -> bytes:
        """The body (at most *limit* bytes, *declared* by Content-Length or -1), read
        from the messages and checked as :func:`~pushreport.whole_body` says."""
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The connection ended before the body did (as werkzeug's stream under
                # the WSGI adapter says it).
                raise InvalidReport("body could not be read")
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            got += len(chunk)
            if not message.get("more_body", False):
                break
        return whole_body(chunks, declared, limit)

    # --- the endpoints beside them ----------------------------------------------------

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send(send, text_answer(200, "ok\n", head=scope.get("method") == "HEAD"))

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        failed = await self.run(self._readiness.failing)
        head = scope.get("method") == "HEAD"
        if failed:
            text = f"not ready: {', '.join(failed)}\n"
            return await _send(send, text_answer(503, text, head=head))
        await _send(send, text_answer(200, "ok\n", head=head))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The scrape, in the text format prometheus_client's WSGI app sends by default,
        with its length (prometheus_client's ASGI app would send it chunked); collected
        on the threads, as the workers' files are read."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data = await self.run(lambda: generate_latest(self._registry))
        head = scope.get("method") == "HEAD"
        headers = (("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data))))
        await _send(send, Answer(200, headers, b"" if head else data))

    async def _lookup(self, scope: Scope, send: Send, lookup: LookupEndpoint, path: str) -> None:
        scope["pushreport.handled"] = True
        method: str = scope.get("method", "GET")
        query = _parsed(scope.get("query_string", b"").decode("utf-8", "replace"))
        answer = await self.run(
            lambda: lookup.answer(
                method=method,
                path=path,
                query=query,
                authorization=_header(scope, b"authorization") or "",
            )
        )
        await _send(send, lookup_answer(answer, head=method == "HEAD"))

    #: The largest support-page form read (the WSGI adapter's ``AdminApp.max_form``).
    max_form = 64 * 1024

    async def _admin(
        self, scope: Scope, receive: Receive, send: Send, page: AdminPage, path: str
    ) -> None:
        scope["pushreport.handled"] = True
        method: str = scope.get("method", "GET")
        head = method == "HEAD"
        form: dict[str, list[str]] = {}
        if method == "POST":
            try:
                declared = declared_length(_header(scope, b"content-length"), self.max_form)
                body = await self._read(receive, declared, self.max_form)
            except RequestTooLarge:
                return await _send(send, text_answer(413, "form too large\n", head=head))
            except InvalidReport:
                return await _send(send, text_answer(400, "form could not be read\n", head=head))
            # werkzeug's own form parser, as the WSGI adapter's request.form reads it.
            mimetype, options = parse_options_header(_header(scope, b"content-type") or "")
            parser = FormDataParser(max_form_memory_size=self.max_form)
            try:
                _, fields, _ = parser.parse(io.BytesIO(body), mimetype, len(body), options)
            except RequestEntityTooLarge:
                return await _send(send, text_answer(413, "form too large\n", head=head))
            form = fields.to_dict(flat=False)
        client = scope.get("client")
        forwarded = _header(scope, self._forwarded) if self._forwarded else None
        request = AdminRequest(
            method=method,
            path=path,
            query=_parsed(scope.get("query_string", b"").decode("utf-8", "replace")),
            form=form,
            cookies=dict(parse_cookie(_header(scope, b"cookie") or "")),
            authorization=_header(scope, b"authorization") or "",
            client=client_address(client[0] if client else None, forwarded, self._trusted),
            secure=scope.get("scheme") == "https",
            script_root=scope.get("root_path", ""),
        )
        answer = await self.run(lambda: page.answer(request))
        data = answer.body.encode("utf-8")
        headers = (*answer.headers, ("Content-Length", str(len(data))))
        await _send(send, Answer(answer.status, headers, b"" if head else data))

    # --- lifespan ---------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan protocol on to the wrapped app, opening the service before
        its start-up and closing it after its shutdown message."""
        started = False

        async def on_receive() -> Message:
            nonlocal started
            message = await receive()
            if message["type"] == "lifespan.startup":
                started = True
                try:
                    await self.run(self.open)
                except Exception as e:
                    # Said before the wrapped app sees it fail: a server that guesses
                    # whether lifespan is spoken ("auto") must not start without storage.
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    raise
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        try:
            await self.app(scope, on_receive, send)
        except Exception:
            if started:
                raise
            # The wrapped app does not speak lifespan: answer it ourselves.
            await _own_lifespan(self, receive, send)


async def _own_lifespan(middleware: PushReportMiddleware, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await middleware.run(middleware.open)
            except Exception as e:
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await middleware.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    config: Config | str | os.PathLike[str] | None = None, *, receiver: Receiver | None = None
) -> PushReportMiddleware:
    """A standalone ASGI app: the shapes of *config*, 404 for anything else."""
    return PushReportMiddleware(not_found, config, receiver=receiver)
