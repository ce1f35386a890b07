"""The receiver: one report in, one durable registration out.

It ties the pure core to the plugins (authentication, transformation, storage,
notification). It knows nothing of HTTP: the WSGI adapter turns its results and errors
into responses.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Literal

import attrs
import pluggy

from pushreport_core import (
    AuthenticationFailed,
    AuthenticationRequired,
    Claim,
    ConfigurationError,
    PushReportError,
    Registration,
    Removal,
    RemovalPlan,
    Report,
    Request,
    ServiceUnavailable,
    Shapes,
    StorageUnavailable,
    claim,
    claimed_tokens,
    may_write,
    parse_removal,
    parse_request,
    plan_token_move,
    redact_target,
    shorten,
)

from ._auth import build_authenticators, secret_fields
from ._backends import STARTUP_WAIT, Backend, close_backends, open_backends, open_now
from ._config import Config
from ._limits import Limiter, share_limit_state
from ._logs import ThrottledLog
from ._metrics import Metrics, NullMetrics, make_metrics
from ._plugins import authentication, make_plugin_manager, transform_report
from .spool import PendingSyncs, SpooledStorage, deferring_syncs
from .storage import Capability, Storage

__all__ = [
    "Receiver",
    "Backend",
    "RemovalOutcome",
    "Outcome",
    "open_backends",
    "open_now",
    "open_reader",
    "STARTUP_WAIT",
]

if TYPE_CHECKING:
    from ._prune import PruneSchedule

log = logging.getLogger("pushreport")


def _removes(plan: RemovalPlan, backend: Backend) -> bool:
    """Whether *plan* calls *backend*'s remove: to delete, and for a selector stored
    nowhere when the backend records removals
    (:attr:`~pushreport.storage.Capability.TOMBSTONES`: a report another host spooled
    before the removal must not register it after)."""
    return plan is RemovalPlan.DELETE or (
        plan is RemovalPlan.GONE and Capability.TOMBSTONES in backend.capabilities
    )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@attrs.frozen(kw_only=True)
class RemovalOutcome:
    """What an Account Removal Reporter call did."""

    removal: Removal
    #: The registration deleted, as the first backend that held it had it; ``None``
    #: when nothing was deleted (already gone, or kept as newer).
    removed: Registration | None = None
    #: A backend kept a registration of the selector because it is newer than the
    #: removal (it holds another token than the one the removal names).
    kept_newer: bool = False

    @property
    def selector(self) -> str:
        return self.removal.selector

    @property
    def happened(self) -> Happened:
        """``"removed"``, else ``"kept"`` (a newer registration), else ``"gone"``."""
        if self.removed is not None:
            return "removed"
        return "kept" if self.kept_newer else "gone"


#: What a request on a report path came to (:attr:`Outcome.happened`).
Happened = Literal["stored", "removed", "gone", "kept", "refused"]


@attrs.frozen(kw_only=True)
class Outcome:
    """What one request on a report path came to, as :meth:`Receiver.receive` returns
    it: an adapter builds the response and the access-log line from it, and decides
    nothing itself."""

    #: ``"stored"``: the report is stored; ``"removed"``: the removal deleted the
    #: registration; ``"gone"``: there was nothing to delete; ``"kept"``: a newer
    #: registration was kept; ``"refused"``: see :attr:`error`.
    happened: Happened
    #: The shape that parsed the request (``"removal"`` for a removal); ``None`` when it
    #: was refused before it was parsed.
    shape: str | None = None
    selector: str | None = None
    #: The registration as stored, when it was read back (see :meth:`Receiver.receive`).
    registration: Registration | None = None
    #: What a removal did.
    removal: RemovalOutcome | None = None
    #: Why the request was refused: a :class:`~pushreport_core.PushReportError` (the
    #: client's fault, or a backend's), or any other exception (a bug).
    error: Exception | None = None

    @property
    def status(self) -> int:
        """The HTTP status to answer: 200, the error's status hint, or 500."""
        if self.error is None:
            return 200
        if isinstance(self.error, PushReportError):
            return self.error.error_status_hint
        return 500

    @property
    def reason(self) -> str:
        """Why, in one line that never echoes request values (``""`` for a success)."""
        if self.error is None:
            return ""
        if isinstance(self.error, PushReportError):
            return self.error.msg
        return "internal error"


@attrs.define
class Receiver:
    """Parse, authenticate, transform and store reports for one configuration."""

    config: Config
    shapes: Shapes
    plugin_manager: pluggy.PluginManager
    backends: list[Backend]
    clock: Callable[[], datetime] = _utcnow
    failures: dict[str, int] = attrs.field(factory=dict)
    #: The ``[limits]``: rate limits, lock-out, length limits (``None``: none at all).
    limiter: Limiter | None = None
    #: Fields that carry a configured secret: masked in logs (``[auth] secret_field``).
    secret_fields: frozenset[str] = frozenset()
    #: The Account Removal Reporter's shapes (``None``: removals are not accepted).
    removal_shapes: Shapes | None = None
    #: Counters the receiver and the adapter feed (``[metrics]``; no-ops when off).
    metrics: Metrics = attrs.field(factory=NullMetrics)
    #: The background prune of :meth:`start_pruning`, when started.
    pruner: PruneSchedule | None = attrs.field(default=None, init=False)
    #: Built to answer requests (:meth:`from_config`'s *serving*); ``False``: no
    #: authenticator was built, and requests are refused.
    serving: bool = True
    #: For a backend without ``upsert_if``/``remove_if``: the ownership check and the
    #: write of one selector are one step among this process's threads (striped locks).
    _owner_locks: tuple[threading.Lock, ...] = attrs.field(
        init=False, factory=lambda: tuple(threading.Lock() for _ in range(64))
    )
    #: Storage failures, logged once a minute with a count, not once per request
    #: (the adapters' 503 warnings go through it too).
    failure_log: ThrottledLog = attrs.field(
        factory=lambda: ThrottledLog(log), init=False, repr=False
    )
    #: The last :meth:`claim` asked and its answer.
    _last_claim: tuple[str, str, Claim | None] = attrs.field(
        default=("", "", None), init=False, repr=False
    )
    #: :meth:`quick`'s part that the configuration decides, once known.
    _quick: bool | None = attrs.field(default=None, init=False, repr=False)

    @classmethod
    def from_config(
        cls,
        config: Config | None = None,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        clock: Callable[[], datetime] = _utcnow,
        serving: bool = True,
        create: bool = True,
    ) -> Receiver:
        """The receiver *config* describes, its backends open.

        *serving*: build what answers requests, reading the secrets that ``[auth]`` and
        ``[lookup]`` name by ``*_env`` (an unset variable fails here, at start-up).
        ``False`` for commands that only read or change storage (``pushreport list``,
        ``stats``, ``prune``, ``push``): they need none of those variables, and the
        receiver refuses to handle requests. *create*: whether the backends may create a
        missing store (``False`` for a command that only reads: see
        :func:`open_backends`).
        """
        config = config if config is not None else Config()
        pm = plugin_manager or make_plugin_manager(blocked=config.blocked_plugins)
        shapes = config.reporter.shapes()

        def seconds() -> float:
            return clock().timestamp()

        # The built-in authenticators are plugins like any other, registered from the
        # configuration; a refusal at start-up (the template carries no credential) comes
        # before any backend is opened.
        removal_shapes = config.removal.shapes(shapes)
        authenticators = (
            build_authenticators(config.auth, shapes, clock=seconds, removal_shapes=removal_shapes)
            if serving
            else []
        )
        for plugin in authenticators:
            pm.register(plugin)
        if serving and config.lookup.enabled:
            config.lookup.bearer_token()  # the endpoint's token: read and checked now
        if serving and config.admin.enabled:
            config.admin.bearer_token()  # the support page's, likewise
        authenticates = bool(pm.hook.pushreport_authenticate.get_hookimpls())
        limiter = Limiter.from_config(
            config.limits,
            clock=seconds,
            authenticates=authenticates,
            logins=serving and config.admin.enabled,
        )
        backends = open_backends(config, pm, create=create)
        share_limit_state(limiter, config, backends, authenticators)
        if config.reporter.token_owner == "newest":
            for b in backends:
                if b.capabilities.forget_token is None:
                    raise ConfigurationError(
                        f'"newest" needs forget_token, which storage backend {b.name!r} lacks',
                        key="reporter.token_owner",
                    )
        return cls(
            config=config,
            shapes=shapes,
            plugin_manager=pm,
            backends=backends,
            clock=clock,
            limiter=limiter,
            secret_fields=secret_fields(config.auth),
            removal_shapes=removal_shapes,
            metrics=make_metrics(config.metrics),
            serving=serving,
        )

    def claim(self, method: str, raw_path: str) -> Claim | None:
        """Which shapes take a *method* request for *raw_path*: ``"report"``,
        ``"removal"`` or ``None`` (:func:`pushreport_core.claim`)."""
        last = self._last_claim  # an adapter asks about one request several times
        if last[0] == method and last[1] == raw_path:
            return last[2]
        answer = claim(method, raw_path, reporter=self.shapes, removal=self.removal_shapes)
        self._last_claim = (method, raw_path, answer)  # one assignment: thread-safe
        return answer

    def owns(self, method: str, raw_path: str) -> bool:
        return self.claim(method, raw_path) is not None

    def removes(self, method: str, raw_path: str) -> bool:
        """Whether a *method* request for *raw_path* goes to the Account Removal Reporter
        (:meth:`remove`) rather than to the reporter (:meth:`handle`)."""
        return self.claim(method, raw_path) == "removal"

    def quick(self, method: str, raw_path: str) -> bool:
        """Whether :meth:`receive_at_once` may take a *method* request for *raw_path*
        on an event loop: its storage work is an append to a report spool (whose
        fsync, if any, it defers), nothing slower: a report (a removal applies the
        spool first), no ``[limits]`` rate or lock-out (their state is shared, in a
        database), no authentication, no plugin hook on reports, ``token_owner`` not
        ``"newest"``, and every backend such a spool, already reached by this process."""
        if not self._quick_setup():
            return False
        if self.claim(method, raw_path) != "report":
            return False
        return all(b.storage.appends_at_once for b in self.backends)  # type: ignore[attr-defined]

    def _quick_setup(self) -> bool:
        """The part of :meth:`quick` that the configuration decides (once)."""
        if self._quick is not None:
            return self._quick
        hooks = self.plugin_manager.hook
        self._quick = (
            self.serving
            and (self.limiter is None or self.limiter.state is None)
            and self.config.reporter.token_owner != "newest"
            and not hooks.pushreport_authenticate.get_hookimpls()
            and not hooks.pushreport_transform_report.get_hookimpls()
            and not hooks.pushreport_report_stored.get_hookimpls()
            and bool(self.backends)
            and all(isinstance(b.storage, SpooledStorage) for b in self.backends)
        )
        return self._quick

    def shapes_for(self, method: str, raw_path: str) -> Shapes:
        """The shapes that answer a *method* request for *raw_path* (for redaction)."""
        if self.removal_shapes is not None and self.removes(method, raw_path):
            return self.removal_shapes
        return self.shapes

    def receive(self, request: Request) -> Outcome:
        """Carry out the report or the removal *request* carries, whichever shape claims
        it (:meth:`removes`): the one call an adapter makes per request.

        Never raises for what a request brings or a backend does: a refusal or a failure
        is the :attr:`Outcome.error`, counted in the metrics and logged (a storage
        failure once a minute, an unexpected exception with its traceback). The stored
        registration is read back only when something needs it (a
        ``pushreport_report_stored`` hook, ``token_owner = "newest"``), so that a backend
        that can skip the read (``quiet_upsert``) does.
        """
        return self._receive(request, deferred=False)

    def receive_at_once(self, request: Request) -> tuple[Outcome, PendingSyncs | None]:
        """:meth:`receive` for a request that :meth:`quick` allows, on an event loop:
        a ``full`` spool's ``fdatasync`` is not waited for. With :class:`PendingSyncs`,
        the outcome may not be answered yet: once its :meth:`~PendingSyncs.synced` (or
        :meth:`~PendingSyncs.sync`, off the loop) returns or raises, :meth:`synced`
        gives the outcome to answer. Without, it is final, as :meth:`receive`'s."""
        with deferring_syncs() as waits:
            outcome = self._receive(request, deferred=True)
        if not waits or outcome.error is not None:
            if outcome.error is None:
                self.metrics.report_accepted()
            return outcome, None
        return outcome, PendingSyncs(tuple(waits))

    def synced(self, outcome: Outcome, error: Exception | None = None) -> Outcome:
        """The outcome to answer for :meth:`receive_at_once`'s *outcome* once its syncs
        returned (*error*: what one of them raised), counted."""
        if error is not None:
            return self.refuse(error, shape=outcome.shape, selector=outcome.selector)
        self.metrics.report_accepted()
        return outcome

    def _receive(self, request: Request, *, deferred: bool) -> Outcome:
        started = time.perf_counter()
        shape: str | None = None
        selector: str | None = None
        try:
            if self.removes(request.method, request.path):
                removal = self._parse_removal(request)
                shape, selector = "removal", removal.selector
                done = self._remove(removal, request)
                outcome = Outcome(
                    happened=done.happened,
                    shape=shape,
                    selector=selector,
                    removal=done,
                )
                self.metrics.removal_done(done.happened)
            else:
                report = self._parse_report(request)
                shape, selector = report.shape, report.selector
                stored = self._store(report, request, read_back=False)
                outcome = Outcome(
                    happened="stored", shape=shape, selector=selector, registration=stored
                )
        except Exception as e:
            outcome = self.refuse(e, shape=shape, selector=selector)
        else:
            if not deferred:  # (receive_at_once counts it once it is on disk)
                self.metrics.report_accepted()
        self.metrics.request_done(time.perf_counter() - started)
        return outcome

    def refuse(
        self, error: Exception, *, shape: str | None = None, selector: str | None = None
    ) -> Outcome:
        """The outcome of a request refused for *error*, counted and logged: what
        :meth:`receive` returns on a refusal, and what an adapter returns for a request
        it could not even read (a body cut short, or over ``max_body``)."""
        self.metrics.report_refused(error)
        if isinstance(error, ServiceUnavailable):
            # One line a minute per reason, with a count: a full disk is not worth a
            # line per report (18,237 lines in 12 s, once).
            self.failure_log.warning(
                "%s: %s",
                "storage unavailable" if isinstance(error, StorageUnavailable) else "unavailable",
                error.msg,
            )
        elif not isinstance(error, PushReportError):
            self.failure_log.error(
                "internal error while handling a report",
                key=("internal error", type(error).__name__),
                exc_info=error,
            )
        return Outcome(happened="refused", shape=shape, selector=selector, error=error)

    def handle(self, request: Request) -> Registration:
        """Store the report *request* carries; return the registration as stored.

        Raises a :class:`~pushreport_core.PushReportError` subclass when the report is
        refused (nothing stored) or a required backend failed (the app retries).
        """
        stored = self._store(self._parse_report(request), request, read_back=True)
        assert stored is not None
        return stored

    def _parse_report(self, request: Request) -> Report:
        """The request's length and rate limits, then the report it carries."""
        if self.limiter is not None:
            self.limiter.check_request(request)
        return parse_request(request, self.shapes, max_body=self.config.reporter.max_body)

    def _store(self, report: Report, request: Request, *, read_back: bool) -> Registration | None:
        pm = self.plugin_manager
        identified = self._admit(report, request, "report")
        report = transform_report(pm, report, request)
        now = self.clock()
        newest = self.config.reporter.token_owner == "newest"
        before = self._stored_before(report) if newest else None
        stored_hooks = pm.hook.pushreport_report_stored
        read_back = read_back or newest or bool(stored_hooks.get_hookimpls())
        stored: Registration | None = None
        committed = False
        # An identified user writes only what is theirs: the first required backend
        # decides, atomically with its write, before any other backend is written.
        owner = self._authority() if identified else None
        for backend in self._in_write_order(owner):
            started = time.perf_counter()
            refused = False
            try:
                if backend is owner:
                    result = self._upsert_owned(backend, report, now)
                    refused = result is None
                else:
                    # read_back=False: a backend that declares quiet_upsert reads
                    # nothing back (SQLite: no RETURNING).
                    result = backend.writer.upsert(report, now=now, read_back=read_back)
            except StorageUnavailable as e:
                self.metrics.storage_failed(backend.name, time.perf_counter() - started)
                if backend.required:
                    raise
                self._best_effort_failed(backend, e)
                continue
            except Exception as e:
                self.metrics.storage_failed(backend.name, time.perf_counter() - started)
                if backend.required:
                    self._backend_failed(backend, e)
                    raise StorageUnavailable(f"storage backend {backend.name!r} failed") from e
                self._best_effort_failed(backend, e)
                continue
            self.metrics.storage_done(backend.name, time.perf_counter() - started)
            if refused:
                raise self._not_theirs(report.selector, report.username, "report")
            if not committed:
                stored, committed = result, True
        if not committed:  # pragma: no cover - open_backends requires one required
            raise StorageUnavailable("no storage backend committed the report")
        if not read_back:
            return None
        assert stored is not None
        if newest:
            stored = self._claim_tokens(before, report, stored)
        try:
            stored_hooks(registration=stored, report=report)
        except Exception:
            log.exception("a pushreport_report_stored hook failed; the report is stored")
        return stored

    def _admit(self, report: Report, request: Request, kind: str) -> bool:
        """Length and rate limits, then authentication: raise unless *report* may go on.

        A refusal counts against the ``[limits]`` lock-out of its username. Returns
        whether authentication identified the user (a plugin vouched for the username:
        :class:`~pushreport._plugins.Verdict`).
        """
        if not self.serving:
            # Built without its authenticators: it must not store what nobody checked.
            raise RuntimeError("this Receiver was built with serving=False")
        limiter = self.limiter
        if limiter is not None:
            limiter.check_report(report, request)
        try:
            verdict = authentication(self.plugin_manager, report, request, kind=kind)
        except AuthenticationRequired as e:
            if e.failed and limiter is not None:
                limiter.failed(report, request)
            raise
        if not verdict.accepted:
            if limiter is not None:
                limiter.failed(report, request)
            raise AuthenticationFailed("authentication refused")
        if limiter is not None:
            limiter.admitted(report, request)
        return verdict.identified

    # -- a registration belongs to its username ----------------------------------------

    def _authority(self) -> Backend:
        """The backend whose registration decides who owns a selector: the first
        required one (the one whose failure fails the report)."""
        return next(b for b in self.backends if b.required)

    def _in_write_order(self, first: Backend | None) -> list[Backend]:
        if first is None or first is self.backends[0]:
            return self.backends
        return [first, *(b for b in self.backends if b is not first)]

    def _owner_lock(self, selector: str) -> threading.Lock:
        return self._owner_locks[hash(selector) % len(self._owner_locks)]

    def _upsert_owned(
        self, backend: Backend, report: Report, now: datetime
    ) -> Registration | None:
        """Store *report* in *backend* unless its selector is stored under another
        username than the report's (:func:`~pushreport_core.may_write`): ``None`` then,
        and nothing written.

        With the backend's ``upsert_if`` the read, the decision and the write are one
        transaction, so two users racing for a new selector cannot both pass, across
        processes and hosts; without it they are one step among this process's threads.
        The read sees every report answered 200 before (SQLite applies its spool first).
        """

        def allowed(stored: Registration | None) -> bool:
            return may_write(stored, report.username)

        upsert_if = backend.capabilities.upsert_if
        if upsert_if is not None:
            return upsert_if(report, now=now, allowed=allowed)
        with self._owner_lock(report.selector):
            if not allowed(backend.storage.get(report.selector)):
                return None
            return backend.writer.upsert(report, now=now)

    def _remove_owned(
        self, backend: Backend, removal: Removal
    ) -> tuple[bool, Registration | None, bool]:
        """Carry *removal* out in *backend* when its selector is not stored under
        another username (:func:`~pushreport_core.may_write`), atomically like
        :meth:`_upsert_owned`. Returns (refused, the registration deleted, whether a
        newer one was kept: :meth:`~pushreport_core.Removal.plan`)."""
        seen: list[Registration | None] = []

        def allowed(stored: Registration | None) -> bool:
            seen.append(stored)
            return _removes(removal.plan(stored, identified=True), backend)

        remove_if = backend.capabilities.remove_if
        if remove_if is not None:
            removed = remove_if(removal.selector, allowed)
        else:
            with self._owner_lock(removal.selector):
                stored = backend.storage.get(removal.selector)
                removed = (
                    stored
                    if allowed(stored) and backend.storage.remove(removal.selector)
                    else None
                )
        # The plan as the decision saw it.
        plan = removal.plan(seen[-1] if seen else None, identified=True)
        return plan is RemovalPlan.REFUSE, removed, plan is RemovalPlan.KEEP_NEWER

    def _not_theirs(self, selector: str, username: str | None, kind: str) -> AuthenticationFailed:
        log.info(
            "%s of %s by %r refused: it is stored under another username", kind, selector, username
        )
        return AuthenticationFailed("selector belongs to another username")

    def redact(self, target: str, method: str = "GET") -> str:
        """*target* as it may be logged: what the shapes that answer it read as the
        password or the configured secret masked, tokens shortened
        (:func:`pushreport_core.redact_target`)."""
        shapes = self.shapes_for(method, target.partition("?")[0])
        return redact_target(target, shapes, secret_fields=self.secret_fields)

    def remove(self, request: Request) -> RemovalOutcome:
        """Carry out the Account Removal Reporter call *request* carries.

        Deletes the registration of the removal's selector from every backend, unless
        the removal names a token and the backend holds another one (a newer report
        came after it: :meth:`~pushreport_core.Removal.applies_to`). Idempotent:
        removing what is already gone is a success. Raises a
        :class:`~pushreport_core.PushReportError` subclass when the removal is refused
        (nothing deleted) or a required backend failed (the app may call again).

        When authentication identifies the user, a selector stored under another
        username is refused (403, nothing deleted anywhere), decided by the first
        required backend atomically with its deletion (:meth:`_remove_owned`).

        Otherwise each backend is read, then deleted from: not one atomic step. A
        report of the same selector committed between the two is deleted with it; its
        app reports again on its next start. It takes a stale removal and a fresh
        report of one selector arriving within the same moment.
        """
        return self._remove(self._parse_removal(request), request)

    def _parse_removal(self, request: Request) -> Removal:
        """The request's length and rate limits, then the removal it carries."""
        if self.removal_shapes is None:
            raise ConfigurationError("removals are disabled", key="removal.enabled")
        if self.limiter is not None:
            self.limiter.check_request(request)
        return parse_removal(request, self.removal_shapes, max_body=self.config.reporter.max_body)

    def _remove(self, removal: Removal, request: Request) -> RemovalOutcome:
        identified = self._admit(removal.as_report(), request, "removal")
        return self._carry_out(removal, identified=identified)

    def forget(self, selector: str) -> RemovalOutcome:
        """Delete the registration of *selector* from every backend, as an Account
        Removal Reporter call naming only the selector would, and notify
        ``pushreport_registration_removed``: the support page's "forget this
        registration" (an erasure request). The caller has authorised it; nothing here
        checks a username. Idempotent, like :meth:`remove`.

        :raises ValueError: an empty selector.
        :raises StorageUnavailable: a required backend failed (nothing may be left
            half-forgotten: try again).
        """
        if not selector:
            raise ValueError("give a selector")
        return self._carry_out(Removal(selector=selector, shape="admin"), identified=False)

    def _carry_out(self, removal: Removal, *, identified: bool) -> RemovalOutcome:
        pm = self.plugin_manager
        removed: Registration | None = None
        kept = False
        owner = self._authority() if identified else None
        for backend in self._in_write_order(owner):
            refused = False
            started = time.perf_counter()
            try:
                if backend is owner:
                    refused, deleted, newer = self._remove_owned(backend, removal)
                    removed = removed or deleted
                    kept = kept or newer
                else:
                    stored = backend.storage.get(removal.selector)
                    plan = removal.plan(stored)
                    if _removes(plan, backend):
                        if backend.storage.remove(removal.selector) and removed is None:
                            removed = stored
                    elif plan is RemovalPlan.KEEP_NEWER:
                        kept = True
            except StorageUnavailable as e:
                self.metrics.storage_failed(backend.name, time.perf_counter() - started)
                if backend.required:
                    raise
                self._best_effort_failed(backend, e)
                continue
            except Exception as e:
                self.metrics.storage_failed(backend.name, time.perf_counter() - started)
                if backend.required:
                    self._backend_failed(backend, e)
                    raise StorageUnavailable(f"storage backend {backend.name!r} failed") from e
                self._best_effort_failed(backend, e)
                continue
            self.metrics.storage_done(backend.name, time.perf_counter() - started)
            if refused:
                raise self._not_theirs(removal.selector, removal.username, "removal")
        if kept:
            log.info(
                "removal of %s kept a newer registration (its token differs)", removal.selector
            )
        if removed is not None:
            try:
                pm.hook.pushreport_registration_removed(registration=removed, removal=removal)
            except Exception:
                log.exception(
                    "a pushreport_registration_removed hook failed; the registration is removed"
                )
        return RemovalOutcome(removal=removal, removed=removed, kept_newer=kept)

    # -- token_owner = "newest" -------------------------------------------------------

    def _stored_before(self, report: Report) -> Registration | None:
        """The first backend's registration before the report (``None`` when it cannot
        say: every token of the report is then looked up, which is correct, only slower)."""
        try:
            return self.backends[0].storage.get(report.selector)
        except Exception as e:
            log.warning("token_owner: cannot read %s before storing: %s", report.selector, e)
            return None

    def _claim_tokens(
        self, before: Registration | None, report: Report, stored: Registration
    ) -> Registration:
        """Make *stored* the only owner of each token its report brought, among other
        usernames (:func:`pushreport_core.plan_token_move`): the others forget it, in
        every backend. A token the selector already held was claimed when it came, so
        most reports (the same tokens on every app start) look nothing up.

        Not one transaction with the upsert: each ``forget_token`` is atomic, and a
        failure here is logged, not answered 503: the report is stored, and a retry
        would not claim again. Returns *stored*, without a token it lost to a holder
        that reported later (two reports racing)."""
        primary = self.backends[0].storage
        find = self.backends[0].capabilities.find_token
        for token in claimed_tokens(before, report, stored):
            try:
                # Without find_token every registration is a candidate: the plan passes
                # over those that do not hold the token.
                move = plan_token_move(stored, token, find(token) if find is not None else primary)
            except Exception as e:
                log.warning(
                    "token_owner: cannot look up the holders of token %s: %s", shorten(token), e
                )
                continue
            for selector in move.forget:
                for backend in self.backends:
                    # from_config checked that every backend declares forget_token.
                    forget = backend.capabilities.forget_token
                    try:
                        assert forget is not None
                        forget(token, selector=selector)
                    except Exception as e:
                        log.warning(
                            "token_owner: backend %r could not forget token %s in %s: %s",
                            backend.name,
                            shorten(token),
                            selector,
                            e,
                        )
                log.info(
                    "token %s moved to %s: forgotten in %s",
                    shorten(token),
                    stored.selector,
                    selector,
                )
            stored = move.stored
        return stored

    def start_pruning(self) -> bool:
        """Prune on ``[prune]``'s schedule, on a background thread, until :meth:`close`
        (``pushreport serve`` does this in every worker; one of them prunes per
        interval). For a long-lived receiver only. ``False`` when ``[prune]
        older_than`` is empty (the default)."""
        from ._prune import PruneSchedule

        if self.pruner is None:
            self.pruner = PruneSchedule.from_config(
                self.config,
                [(b.name, b.storage) for b in self.backends],
                clock=self.clock,
                beside=self.backends[0].capabilities.path,
                metrics=self.metrics,
            )
            if self.pruner is None:
                return False
            self.metrics.watch_prune(self.pruner)
            self.pruner.start()
        return True

    def _best_effort_failed(self, backend: Backend, error: Exception) -> None:
        self.failures[backend.name] = self.failures.get(backend.name, 0) + 1
        self.failure_log.warning("best-effort storage backend %r failed: %s", backend.name, error)

    def _backend_failed(self, backend: Backend, error: Exception) -> None:
        """A required backend raised something else than StorageUnavailable (a bug,
        or a failure it does not translate): its traceback, once a minute per kind."""
        self.failure_log.error(
            "storage backend %r failed",
            backend.name,
            key=("backend failed", backend.name, type(error).__name__),
            exc_info=error,
        )

    @property
    def storage(self) -> Storage:
        """The first backend: the one ``pushreport list`` reads."""
        return self.backends[0].storage

    def close(self) -> None:
        if self.pruner is not None:
            self.pruner.stop()
            self.pruner = None
        if self.limiter is not None:
            self.limiter.close()
        close_backends(self.backends)


def open_reader(config: Config) -> Receiver:
    """The receiver of a command that only reads (``list``, ``stats``, ``prune``,
    ``push``): it creates no store, and each backend is opened at once, so that a
    missing or unusable one fails the command with a message that names it."""
    receiver = Receiver.from_config(config, serving=False, create=False)
    try:
        open_now(receiver.backends)
    except BaseException:
        receiver.close()
        raise
    return receiver
