"""Prometheus metrics, through ``prometheus_client`` (the optional ``metrics`` extra).

The hot path only increments: a report costs one counter increment and, per backend,
two ``time.perf_counter()`` calls and one histogram observation. Everything else (the
count of registrations, a backend's own figures) is computed when Prometheus scrapes.

Metrics (all prefixed ``pushreport_``):

- ``reports_total{outcome="accepted"|"refused", reason}`` — every request on a report
  path; ``reason`` is one of :data:`REASONS` for a refusal (derived from the error's
  status hint, never from its message), empty for an accepted report; ``challenge`` is
  the 401 that asks a request without credentials for HTTP Digest ones;
- ``auth_failures_total`` — reports refused for their credentials (403, or a 401 to
  wrong digest credentials);
- ``storage_seconds{backend}`` — histogram of each backend's write (a report's, or a
  removal's read and delete), failures included;
- ``backend_failures_total{backend}`` — writes that failed, required or best-effort;
- ``registrations{backend}`` — stored registrations, for backends with ``count()``;
- ``<key>{backend}`` — every figure of a backend's optional ``metrics()`` (e.g. the
  webhook backend's ``webhook_outbox_pending`` and ``webhook_outbox_dead``, the report
  spool's ``spool_backlog_lines``, ``spool_backlog_bytes``, ``spool_max_bytes`` and
  ``spool_oldest_age_seconds``);
- ``request_seconds`` — histogram of the time the receiver takes over one request on
  a report or removal path (parse, authentication, storage), refusals included;
- ``removals_total{outcome="removed"|"gone"|"kept"}`` — removals carried out;
- ``pushes_total{outcome="delivered"|"token_invalid"|"retry"|"failed"}`` — pushes sent
  by :func:`pushreport.push` with this receiver, by the last answer's judgement;
- ``prune_runs_total{outcome="success"|"failure"}`` and ``pruned_total`` — the
  scheduled prunes this server ran, and the registrations they deleted;
- ``prune_last_success_timestamp_seconds`` and ``prune_interval_seconds`` — when a
  scheduled prune last went through (read from the schedule's lock file when
  Prometheus scrapes, so every worker and a restarted server report the same; 0 when
  none ever did) and ``[prune] interval``; only while ``[prune] older_than`` is set.

Several worker processes (``pushreport serve`` under gunicorn) share their counters
through prometheus_client's multiprocess mode: ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any worker starts, and a scrape
answered by any worker adds up every worker's files (:func:`prepare_multiprocess`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    Protocol,
    Sequence,
    get_args,
)

from pushreport_core import ConfigurationError, OutcomeKind, StorageUnavailable

if TYPE_CHECKING:
    from ._backends import Backend
    from ._config import MetricsConfig

__all__ = [
    "Metrics",
    "NullMetrics",
    "PrometheusMetrics",
    "make_metrics",
    "refusal_reason",
    "REASONS",
    "prepare_multiprocess",
    "MULTIPROC_ENV",
    "PruneWatch",
    "REMOVAL_OUTCOMES",
    "PUSH_OUTCOMES",
]

log = logging.getLogger("pushreport")

#: Every ``reason`` a refused report is counted under.
REASONS = (
    "invalid",
    "too_large",
    "method",
    "challenge",
    "auth",
    "rate_limited",
    "storage",
    "unavailable",
    "internal",
)
_BY_STATUS = {
    401: "auth",
    403: "auth",
    405: "method",
    413: "too_large",
    414: "too_large",
    431: "too_large",
    429: "rate_limited",
    503: "storage",
}
#: Storage latency buckets, in seconds: a commit takes about a millisecond, a locked
#: database up to its busy timeout (2 s by default).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Request latency buckets, in seconds: few (each is a series per worker in
#: multiprocess mode), around a report's millisecond and a locked backend's seconds.
REQUEST_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0)
#: Every ``outcome`` of a removal (:attr:`pushreport.Outcome.happened`).
REMOVAL_OUTCOMES = ("removed", "gone", "kept")
#: Every ``outcome`` of a push (:data:`pushreport_core.OutcomeKind`).
PUSH_OUTCOMES: tuple[str, ...] = get_args(OutcomeKind)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_KEY = re.compile(r"[a-z_][a-z0-9_]*\Z")
_MISSING = "metrics need the prometheus_client package: pip install 'pushreport[metrics]'"


def refusal_reason(error: BaseException) -> str:
    """The ``reason`` label of a refused report: one of :data:`REASONS`.

    Taken from the error's status hint, so that a new error class (a rate limiter's
    429) lands in the right bucket without being known here; anything that is not a
    :class:`~pushreport_core.PushReportError` is ``"internal"``.
    """
    status = getattr(error, "error_status_hint", None)
    if not isinstance(status, int):
        return "internal"
    if status == 401 and getattr(error, "failed", True) is False:
        # A digest challenge to a request that brought no credentials: the normal
        # first half of every digest-authenticated report, not a failure.
        return "challenge"
    if status == 503 and not isinstance(error, StorageUnavailable):
        return "unavailable"  # the credential check failed, not a backend
    reason = _BY_STATUS.get(status)
    if reason is not None:
        return reason
    return "invalid" if 400 <= status < 500 else "internal"


class Metrics(Protocol):
    """What the receiver and the adapter tell the metrics; every method is cheap."""

    enabled: bool

    def report_accepted(self) -> None: ...

    def report_refused(self, error: BaseException) -> None: ...

    def storage_done(self, backend: str, seconds: float) -> None: ...

    def storage_failed(self, backend: str, seconds: float) -> None: ...

    def request_done(self, seconds: float) -> None: ...

    def removal_done(self, outcome: str) -> None: ...

    def push_done(self, outcome: str) -> None: ...

    def prune_done(self, pruned: int) -> None: ...

    def prune_failed(self) -> None: ...

    def watch_prune(self, schedule: PruneWatch) -> None: ...


class PruneWatch(Protocol):
    """What the metrics read of a prune schedule when Prometheus scrapes
    (:class:`pushreport._prune.PruneSchedule`)."""

    @property
    def interval(self) -> timedelta: ...

    def last_success(self) -> datetime | None: ...


class NullMetrics:
    """Metrics off (``[metrics] enabled = false``): every call does nothing."""

    enabled = False

    def report_accepted(self) -> None:
        pass

    def report_refused(self, error: BaseException) -> None:
        pass

    def storage_done(self, backend: str, seconds: float) -> None:
        pass

    def storage_failed(self, backend: str, seconds: float) -> None:
        pass

    def request_done(self, seconds: float) -> None:
        pass

    def removal_done(self, outcome: str) -> None:
        pass

    def push_done(self, outcome: str) -> None:
        pass

    def prune_done(self, pruned: int) -> None:
        pass

    def prune_failed(self) -> None:
        pass

    def watch_prune(self, schedule: PruneWatch) -> None:
        pass


class PrometheusMetrics:
    """The metrics of one receiver, in prometheus_client objects of its own.

    The objects are registered in no global registry (two apps in one process keep
    their own counts); :meth:`registry` is what the adapters' scrape endpoint exposes.
    """

    enabled = True

    def __init__(self, *, count_interval: float = 60.0) -> None:
        try:
            from prometheus_client import Counter, Histogram
        except ImportError:
            raise ConfigurationError(_MISSING, key="metrics.enabled") from None
        self.count_interval = count_interval
        self.reports = Counter(
            "pushreport_reports",
            "Reports received, by outcome and refusal reason",
            ["outcome", "reason"],
            registry=None,
        )
        self.auth_failures = Counter(
            "pushreport_auth_failures",
            "Reports refused by an authentication plugin",
            registry=None,
        )
        self.storage_seconds = Histogram(
            "pushreport_storage_seconds",
            "Time of one storage write, by backend",
            ["backend"],
            buckets=BUCKETS,
            registry=None,
        )
        self.backend_failures = Counter(
            "pushreport_backend_failures",
            "Storage writes that failed, by backend",
            ["backend"],
            registry=None,
        )
        self.request_seconds = Histogram(
            "pushreport_request_seconds",
            "Time the receiver takes over one request on a report or removal path",
            buckets=REQUEST_BUCKETS,
            registry=None,
        )
        self.removals = Counter(
            "pushreport_removals",
            "Removals carried out, by outcome",
            ["outcome"],
            registry=None,
        )
        self.pushes = Counter(
            "pushreport_pushes",
            "Pushes sent through the gateway, by the last answer's judgement",
            ["outcome"],
            registry=None,
        )
        self.prune_runs = Counter(
            "pushreport_prune_runs",
            "Scheduled prunes run by this server, by outcome",
            ["outcome"],
            registry=None,
        )
        self.pruned = Counter(
            "pushreport_pruned",
            "Registrations deleted by scheduled prunes (of the first backend)",
            registry=None,
        )
        # Label children resolved once: an increment is then a lock and an addition.
        # Each one exists from the start, at 0 (a rule's rate() needs the series before
        # its first increment).
        self._accepted = self.reports.labels(outcome="accepted", reason="")
        self._refused = {r: self.reports.labels(outcome="refused", reason=r) for r in REASONS}
        self._removals = {o: self.removals.labels(outcome=o) for o in REMOVAL_OUTCOMES}
        self._pushes = {o: self.pushes.labels(outcome=o) for o in PUSH_OUTCOMES}
        self._prune_ok = self.prune_runs.labels(outcome="success")
        self._prune_failed = self.prune_runs.labels(outcome="failure")
        self._observe_request = self.request_seconds.observe
        #: The prune schedule whose last run the scrape reports (:meth:`watch_prune`).
        self.prune_schedule: PruneWatch | None = None
        self._observe: dict[str, Callable[[float], None]] = {}
        self._fail: dict[str, Callable[[], None]] = {}

    # -- the hot path ----------------------------------------------------------------

    def report_accepted(self) -> None:
        self._accepted.inc()

    def report_refused(self, error: BaseException) -> None:
        reason = refusal_reason(error)
        self._refused[reason].inc()
        if reason == "auth":
            self.auth_failures.inc()

    def storage_done(self, backend: str, seconds: float) -> None:
        observe = self._observe.get(backend)
        if observe is None:
            observe = self._observe[backend] = self.storage_seconds.labels(backend).observe
        observe(seconds)

    def storage_failed(self, backend: str, seconds: float) -> None:
        self.storage_done(backend, seconds)
        fail = self._fail.get(backend)
        if fail is None:
            fail = self._fail[backend] = self.backend_failures.labels(backend).inc
        fail()

    def request_done(self, seconds: float) -> None:
        self._observe_request(seconds)

    def removal_done(self, outcome: str) -> None:
        child = self._removals.get(outcome)
        if child is not None:
            child.inc()

    # -- off the hot path ------------------------------------------------------------

    def push_done(self, outcome: str) -> None:
        child = self._pushes.get(outcome)
        if child is not None:
            child.inc()

    def prune_done(self, pruned: int) -> None:
        self._prune_ok.inc()
        self.pruned.inc(pruned)

    def prune_failed(self) -> None:
        self._prune_failed.inc()

    def watch_prune(self, schedule: PruneWatch) -> None:
        """Report *schedule*'s last successful run and interval at every scrape."""
        self.prune_schedule = schedule

    # -- scraping --------------------------------------------------------------------

    def registry(self, backends: Sequence[Backend]) -> Any:
        """A registry holding this process's metrics, or every worker's in multiprocess
        mode, and the figures computed at scrape time from *backends*."""
        from prometheus_client import CollectorRegistry

        for backend in backends:
            # Every backend's failure counter exists from the start, at 0: an alert's
            # rate() needs the series before the first failure.
            if backend.name not in self._fail:
                self._fail[backend.name] = self.backend_failures.labels(backend.name).inc
        registry = CollectorRegistry(auto_describe=False)
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:
            registry.register(_MultiProcessCollector(folder))
        else:
            for metric in (
                self.reports,
                self.auth_failures,
                self.storage_seconds,
                self.backend_failures,
                self.request_seconds,
                self.removals,
                self.pushes,
                self.prune_runs,
                self.pruned,
            ):
                registry.register(metric)
        registry.register(_BackendCollector(backends, self.count_interval))
        registry.register(_PruneCollector(self))
        return registry


class _MultiProcessCollector:
    """prometheus_client's ``MultiProcessCollector``, but for the files too short to
    hold a header: a worker killed between creating its file and sizing it leaves an
    empty one, and prometheus_client then fails every scrape (``struct.error``,
    client_python issue #1199) until the folder is cleared. Such a file holds no
    count yet; it is skipped, and said once."""

    #: An mmap file's header: its used length (4 bytes) and padding.
    HEADER = 8

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._warned: set[str] = set()

    def collect(self) -> Iterable[Any]:
        from prometheus_client import multiprocess

        files = []
        for path in glob.glob(os.path.join(self.folder, "*.db")):
            try:
                size = os.path.getsize(path)
            except OSError:
                continue  # its process's files were just removed
            if size < self.HEADER:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("metrics: %s is empty (a worker died creating it); skipped", path)
                continue
            files.append(path)
        merged: Iterable[Any] = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


class _PruneCollector:
    """The prune schedule's last success and interval, read when Prometheus scrapes."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        schedule = self.metrics.prune_schedule
        if schedule is None:
            return
        try:
            last = schedule.last_success()
        except Exception as e:  # an unreadable lock file: no figure this time
            log.warning("metrics: reading the last prune failed: %s", e)
            return
        yield GaugeMetricFamily(
            "pushreport_prune_last_success_timestamp_seconds",
            "When a scheduled prune last went through (Unix time; 0: never)",
            value=last.timestamp() if last is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "pushreport_prune_interval_seconds",
            "How often the server prunes ([prune] interval)",
            value=schedule.interval.total_seconds(),
        )


class _BackendCollector:
    """Gauges computed when Prometheus scrapes: registrations and backends' figures."""

    def __init__(self, backends: Sequence[Backend], count_interval: float) -> None:
        self.backends = backends
        self.count_interval = count_interval
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _count(self, backend: Backend) -> int | None:
        count = backend.capabilities.count
        if count is None:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._counts.get(backend.name)
            if cached is not None and now - cached[0] < self.count_interval:
                return cached[1]
        try:
            n = int(count())
        except Exception as e:  # a locked or broken backend: no figure this time
            log.warning("metrics: counting registrations in %r failed: %s", backend.name, e)
            return None
        with self._lock:
            self._counts[backend.name] = (now, n)
        return n

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        registrations = GaugeMetricFamily(
            "pushreport_registrations", "Registrations stored, by backend", labels=["backend"]
        )
        figures: dict[str, GaugeMetricFamily] = {}
        for backend in self.backends:
            n = self._count(backend)
            if n is not None:
                registrations.add_metric([backend.name], n)
            for key, value in self._figures(backend):
                family = figures.get(key)
                if family is None:
                    family = figures[key] = GaugeMetricFamily(
                        f"pushreport_{key}",
                        f"{key}, as reported by the backend",
                        labels=["backend"],
                    )
                family.add_metric([backend.name], value)
        yield registrations
        yield from figures.values()

    def _figures(self, backend: Backend) -> Iterable[tuple[str, float]]:
        figures = backend.capabilities.metrics
        if figures is None:
            return []
        try:
            items = list(figures().items())
        except Exception as e:
            log.warning("metrics: backend %r failed to report its metrics: %s", backend.name, e)
            return []
        out = []
        for key, value in items:
            if (
                not (isinstance(key, str) and _KEY.match(key))
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                if f"{backend.name}.{key}" not in self._warned:
                    self._warned.add(f"{backend.name}.{key}")
                    log.warning(
                        "metrics: backend %r reported %r, which is not a "
                        "lower_case name with a number",
                        backend.name,
                        key,
                    )
                continue
            out.append((key, float(value)))
        return out


def make_metrics(config: MetricsConfig) -> Metrics:
    """The metrics *config* asks for: :class:`NullMetrics` when they are off.

    :raises ConfigurationError: metrics are on and prometheus_client is missing.
    """
    if not config.enabled:
        return NullMetrics()
    return PrometheusMetrics(count_interval=config.count_interval)


def prepare_multiprocess() -> Callable[[int], None]:
    """Point prometheus_client at a fresh folder shared by every worker process.

    Must run before prometheus_client is first imported (it picks its storage then);
    ``pushreport serve`` calls it in the gunicorn master before anything else. Returns
    the function to call with a dead worker's pid (gunicorn's ``child_exit``); the folder
    is removed when the master exits.

    :raises ConfigurationError: prometheus_client is missing, or was imported already
        in single-process mode.
    """
    import atexit
    import sys

    imported = "prometheus_client.values" in sys.modules
    folder = tempfile.mkdtemp(prefix="pushreport-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    master = os.getpid()

    def remove() -> None:
        # Forked workers inherit this handler and exit through it: only the master
        # removes the folder, when every worker is gone.
        if os.getpid() == master:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    log.info("metrics of the worker processes meet in %s", folder)
    try:
        from prometheus_client import multiprocess, values
    except ImportError:
        raise ConfigurationError(_MISSING, key="metrics.enabled") from None
    if imported and not getattr(values.ValueClass, "_multiprocess", False):
        # Something imported prometheus_client before serve could set the folder:
        # switch it to multiprocess values now, before any metric of ours exists.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]

    def child_exit(pid: int) -> None:
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]

    return child_exit
