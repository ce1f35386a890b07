"""The endpoints beside the report paths, each a small WSGI app, and the dispatcher that
composes them (the shape of werkzeug's ``DispatcherMiddleware``, by ``PATH_INFO``, so
they are relative to the mount point).

- :func:`healthz`, :class:`ReadyApp`, the metrics scrape (``[health]``, ``[metrics]``):
  GET and HEAD only, ``text/plain``, never cached;
- :class:`LookupApp`: ``[lookup]``'s JSON endpoint;
- :class:`AdminApp`: ``[admin]``'s support page.

What they answer is the service's (:class:`~pushreport.Readiness`,
:class:`~pushreport.LookupEndpoint`, :class:`~pushreport.PrometheusMetrics`); this
module only speaks WSGI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from pushreport import (
    AdminPage,
    AdminRequest,
    Config,
    Lookup,
    LookupConfig,
    LookupEndpoint,
    OperatorPaths,
    PrometheusMetrics,
    Readiness,
    Receiver,
    Storage,
    lookup_answer,
    method_not_allowed,
    openapi_document,
    text_answer,
)
from pushreport_core import Secret

from ._reports import environ_client, forwarded_key, send

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["AdminApp", "LookupApp", "PathDispatcher", "ReadyApp", "healthz", "operator_apps"]

_METHODS = OperatorPaths.methods


def _head(environ: WSGIEnvironment) -> bool:
    return bool(environ.get("REQUEST_METHOD") == "HEAD")


def _only_get(app: WSGIApplication) -> WSGIApplication:
    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in _METHODS:
            return send(method_not_allowed(head=_head(environ)), start_response)
        return app(environ, start_response)

    return guarded


def healthz(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``200 ok`` while the process answers at all."""
    return send(text_answer(200, "ok\n", head=_head(environ)), start_response)


class ReadyApp:
    """``200 ok`` when every required backend answers, else ``503`` naming the others."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        failed = self.readiness.failing()
        if failed:
            text = f"not ready: {', '.join(failed)}\n"
            return send(text_answer(503, text, head=_head(environ)), start_response)
        return send(text_answer(200, "ok\n", head=_head(environ)), start_response)


class LookupApp:
    """The lookup endpoint under *path* (:class:`~pushreport.LookupEndpoint`) over WSGI,
    and its OpenAPI document *openapi* at ``{path}/openapi.json``."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        token: Secret,
        path: str,
        openapi: Mapping[str, Any] | None = None,
    ) -> None:
        self.endpoint = LookupEndpoint(lookup, token=token, path=path, openapi=openapi)

    @classmethod
    def from_config(
        cls, config: LookupConfig, storage: Storage, *, whole: Config | None = None
    ) -> LookupApp:
        """The app of *config*; *whole*, the configuration it is a section of, gives the
        OpenAPI document the health checks' paths."""
        return cls(
            Lookup(storage),
            token=config.bearer_token(),
            path=config.path,
            openapi=openapi_document(whole) if whole is not None else None,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["pushreport.handled"] = True
        request = Request(environ)
        answer = self.endpoint.answer(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(flat=False),
            authorization=request.headers.get("Authorization", ""),
        )
        return send(lookup_answer(answer, head=request.method == "HEAD"), start_response)


class AdminApp:
    """The support page (:class:`~pushreport.AdminPage`) over WSGI: the request parsed
    (a form of at most :attr:`max_form` bytes), the page's answer sent."""

    max_form = 64 * 1024

    def __init__(self, page: AdminPage) -> None:
        self.page = page
        limits = page.receiver.config.limits
        self._forwarded = forwarded_key(limits)
        self._trusted = limits.trusted_proxies

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["pushreport.handled"] = True
        request = Request(environ)
        request.max_content_length = self.max_form
        request.max_form_memory_size = self.max_form
        try:
            form = request.form.to_dict(flat=False) if request.method == "POST" else {}
        except RequestEntityTooLarge:
            return send(text_answer(413, "form too large\n", head=_head(environ)), start_response)
        answer = self.page.answer(
            AdminRequest(
                method=request.method,
                path=request.path,
                query=request.args.to_dict(flat=False),
                form=form,
                cookies=dict(request.cookies),
                authorization=request.headers.get("Authorization", ""),
                client=environ_client(environ, self._forwarded, self._trusted),
                secure=request.scheme == "https",
                script_root=request.root_path,
            )
        )
        response = Response(answer.body, status=answer.status)
        response.headers.clear()
        for name, value in answer.headers:
            response.headers.add(name, value)
        return response(environ, start_response)


def operator_apps(receiver: Receiver) -> dict[str, WSGIApplication]:
    """The health and metrics apps *receiver*'s configuration turns on, by path.

    :raises ConfigurationError: a path a report shape owns, or one two endpoints share.
    """
    paths = OperatorPaths.of(receiver)
    apps: dict[str, WSGIApplication] = {}
    if paths.healthz is not None:
        apps[paths.healthz] = healthz
    if paths.readyz is not None:
        timeout = receiver.config.health.timeout
        apps[paths.readyz] = ReadyApp(Readiness(receiver.backends, timeout=timeout))
    if paths.metrics is not None and isinstance(receiver.metrics, PrometheusMetrics):
        from prometheus_client import make_wsgi_app

        apps[paths.metrics] = make_wsgi_app(receiver.metrics.registry(receiver.backends))
    return {path: _only_get(app) for path, app in apps.items()}


class PathDispatcher:
    """Send a request to the app of its ``PATH_INFO``: one of *exact* paths, else one of
    *prefixes* (the prefix itself, or a path under it), else *default*."""

    def __init__(
        self,
        default: WSGIApplication,
        *,
        exact: Mapping[str, WSGIApplication] | None = None,
        prefixes: Mapping[str, WSGIApplication] | None = None,
    ) -> None:
        self.default = default
        self.exact = dict(exact or {})
        self.prefixes = [(p, p + "/", app) for p, app in (prefixes or {}).items()]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        app = self.exact.get(path)
        if app is None:
            app = self.default
            for prefix, under, candidate in self.prefixes:
                if path == prefix or path.startswith(under):
                    app = candidate
                    break
        return app(environ, start_response)
