"""Health checks and the other operator endpoints, off the report paths.

- ``/healthz`` (``[health] healthz``): ``200 ok`` while the process answers at all;
- ``/readyz`` (``[health] readyz``): ``200 ok`` when every *required* storage backend's
  ``ping()`` succeeds within ``[health] timeout`` seconds, else ``503`` naming the
  failing backends (only their names: no message, no path, no DSN, which the log gets);
- the metrics path (``[metrics] path``), when metrics are on.

Each answers GET and HEAD only. :func:`operator_routes` builds them and refuses, at
start-up, a path that a report shape owns or that two endpoints share.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Iterable, Sequence

from pushreport_core import ConfigurationError

from ._logs import ThrottledLog
from ._metrics import PrometheusMetrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._service import Backend, Receiver

__all__ = ["Readiness", "operator_routes"]

log = logging.getLogger("pushreport")

_METHODS = ("GET", "HEAD")


def _answer(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    text: str,
    headers: Sequence[tuple[str, str]] = (),
) -> Iterable[bytes]:
    data = text.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]


def _only_get(app: WSGIApplication) -> WSGIApplication:
    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in _METHODS:
            return _answer(
                environ,
                start_response,
                "405 Method Not Allowed",
                "method not allowed\n",
                [("Allow", ", ".join(_METHODS))],
            )
        return app(environ, start_response)

    return guarded


def healthz(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return _answer(environ, start_response, "200 OK", "ok\n")


class _Probe:
    """One backend's ping, run on a thread of its own so that a hung backend costs the
    check *timeout* seconds, not the backend's; at most one ping per backend runs."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None

    def check(self, timeout: float) -> BaseException | None:
        """``None`` when the backend answered within *timeout*, else what went wrong."""
        with self._lock:
            # A new ping unless one is still waiting for its answer. (Not "unless its
            # thread is alive": one that has answered may not have ended yet, and its
            # answer is old.)
            if self._running is None or self._done.is_set():
                self._done = threading.Event()
                self._error = None
                self._running = threading.Thread(
                    target=self._ping,
                    args=(self._done,),
                    daemon=True,
                    name=f"pushreport-readyz-{self.backend.name}",
                )
                self._running.start()
            done = self._done
        if not done.wait(timeout):
            return TimeoutError(f"no answer within {timeout:g} s")
        return self._error

    def _ping(self, done: threading.Event) -> None:
        try:
            self.backend.storage.ping()
        except BaseException as e:
            self._error = e
        finally:
            done.set()


class Readiness:
    """``/readyz``: ping every required backend; 503 naming the ones that failed."""

    def __init__(self, backends: Sequence[Backend], *, timeout: float) -> None:
        self.timeout = timeout
        self._probes = [_Probe(b) for b in backends if b.required]
        # A load balancer checks every few seconds: one line a minute per reason.
        self._log = ThrottledLog(log)

    def failing(self) -> list[str]:
        """Names of the required backends that do not answer now, in order."""
        failed = []
        for probe in self._probes:
            error = probe.check(self.timeout)
            if error is not None:
                failed.append(probe.backend.name)
                self._log.warning(
                    "readyz: storage backend %r is not ready: %s", probe.backend.name, error
                )
        return failed

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        failed = self.failing()
        if failed:
            return _answer(
                environ,
                start_response,
                "503 Service Unavailable",
                f"not ready: {', '.join(failed)}\n",
            )
        return _answer(environ, start_response, "200 OK", "ok\n")


def operator_routes(receiver: Receiver) -> dict[str, WSGIApplication]:
    """The operator endpoints *receiver*'s configuration turns on, by path.

    :raises ConfigurationError: a path a report shape owns, or one two endpoints share.
    """
    config = receiver.config
    routes: dict[str, tuple[str, WSGIApplication]] = {}

    def add(key: str, path: str, app: WSGIApplication) -> None:
        for method in _METHODS:
            if receiver.owns(method, path):
                raise ConfigurationError(
                    f"{path} is a report path of the configured shapes", key=key
                )
        if path in routes:
            raise ConfigurationError(f"{path} is already {routes[path][0]}", key=key)
        routes[path] = (key, _only_get(app))

    if config.health.enabled:
        add("health.healthz", config.health.healthz, healthz)
        add(
            "health.readyz",
            config.health.readyz,
            Readiness(receiver.backends, timeout=config.health.timeout),
        )
    metrics = receiver.metrics
    if isinstance(metrics, PrometheusMetrics):
        add("metrics.path", config.metrics.path, metrics.wsgi_app(receiver.backends))
    return {path: app for path, (_, app) in routes.items()}
