"""Health checks and the other operator endpoints, off the report paths.

- ``/healthz`` (``[health] healthz``): the process answers at all;
- ``/readyz`` (``[health] readyz``): every *required* storage backend's ``ping()``
  succeeds within ``[health] timeout`` seconds (:class:`Readiness`), else the names of
  the failing backends (only their names: no message, no path, no DSN, which the log
  gets);
- the metrics path (``[metrics] path``), when metrics are on.

Each answers GET and HEAD only. :meth:`OperatorPaths.of` says which are on, where, and
refuses, at start-up, a path that a report shape owns or that two endpoints share. The
adapters answer them (:mod:`pushreport_wsgi`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, ClassVar, Sequence

import attrs

from pushreport_core import ConfigurationError

from ._logs import ThrottledLog
from ._metrics import PrometheusMetrics

if TYPE_CHECKING:
    from ._backends import Backend
    from ._service import Receiver

__all__ = ["OperatorPaths", "Readiness"]

log = logging.getLogger("pushreport")


@attrs.frozen
class OperatorPaths:
    """The operator endpoints a receiver's configuration turns on: their paths
    (``None``: off)."""

    #: What they answer; anything else is 405.
    methods: ClassVar[tuple[str, ...]] = ("GET", "HEAD")

    healthz: str | None = None
    readyz: str | None = None
    metrics: str | None = None

    @classmethod
    def of(cls, receiver: Receiver) -> OperatorPaths:
        """The endpoints of *receiver*'s configuration.

        :raises ConfigurationError: a path a report shape owns, or one two endpoints share.
        """
        config = receiver.config
        keys: dict[str, str] = {}

        def path(key: str, value: str) -> str:
            for method in cls.methods:
                if receiver.owns(method, value):
                    raise ConfigurationError(
                        f"{value} is a report path of the configured shapes", key=key
                    )
            if value in keys:
                raise ConfigurationError(f"{value} is already {keys[value]}", key=key)
            keys[value] = key
            return value

        health = config.health
        return cls(
            healthz=path("health.healthz", health.healthz) if health.enabled else None,
            readyz=path("health.readyz", health.readyz) if health.enabled else None,
            metrics=(
                path("metrics.path", config.metrics.path)
                if isinstance(receiver.metrics, PrometheusMetrics)
                else None
            ),
        )


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
    """Whether the required backends answer: :meth:`failing` pings each of them."""

    def __init__(self, backends: Sequence[Backend], *, timeout: float) -> None:
        self.timeout = timeout
        self._probes = [_Probe(b) for b in backends if b.required]
        # A load balancer checks every few seconds: one line a minute per reason.
        self._log = ThrottledLog(log)

    def failing(self) -> list[str]:
        """Names of the required backends that do not answer now, in order (empty:
        ready)."""
        failed = []
        for probe in self._probes:
            error = probe.check(self.timeout)
            if error is not None:
                failed.append(probe.backend.name)
                self._log.warning(
                    "readyz: storage backend %r is not ready: %s", probe.backend.name, error
                )
        return failed
