"""The storage contract: everything pushreport may call on a storage backend.

A backend stores one :class:`~pushreport_core.Registration` per ``selector``. It
implements the small required protocol :class:`Storage`, and **declares** what more it
can do in a ``capabilities`` attribute: a set of :class:`Capability` values, each of
which promises a method (or an attribute) documented on the value itself, like zarr's
``supports_*`` properties of a store::

    class MyStorage:
        name = "mine"
        capabilities = frozenset({Capability.OPEN, Capability.COUNT})

        def open(self) -> None: ...
        def count(self) -> int: ...
        # ... and the methods of Storage

The declaration is read and checked once, when the backend is built
(:meth:`Capabilities.of`, from ``open_backends``): a capability declared without its
method stops the start with a message that names the backend and the method, and the
host never looks a method up at call time. What is not declared is not called: a
backend that declares nothing gets the required protocol called, and nothing else.

Backends are registered by name through the ``pushreport_register_storage`` hook
(:data:`RegisterStorage`), with a factory that builds one from its
``[storage.<name>]`` table and a :class:`StorageContext`, and optionally the
:class:`MainOption` that ``pushreport migrate NAME:VALUE`` and ``--db`` set.

The one write is :meth:`Storage.upsert`: it applies the merge rule of
:func:`pushreport_core.merge` atomically (a token the report does not know never
erases a stored one) and returns only once the result is durable. A backend that cannot
do that now raises :class:`~pushreport_core.StorageUnavailable`; it never returns as if
it had stored. The conformance kit (:class:`pushreport.testing.StorageConformance`)
tests all of it, each capability where the backend declares it.
"""

from __future__ import annotations

import enum
import functools
import inspect
import os
from datetime import datetime
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

import attrs

from pushreport_core import ConfigurationError, Registration, Report, StorageUnavailable

if TYPE_CHECKING:
    from .limitstate import LimitState

__all__ = [
    "Storage",
    "Capability",
    "Capabilities",
    "MainOption",
    "RegisterStorage",
    "SpoolTarget",
    "SpooledBatch",
    "StorageContext",
    "StorageFactory",
    "BackendOptions",
    "StorageStarting",
    "NO_DATABASE_HINT",
]

#: What a command that only reads says after "… does not exist": who creates one.
NO_DATABASE_HINT = "pushreport serve creates it"


@attrs.frozen(kw_only=True)
class StorageContext:
    """What a backend factory may need besides its own options."""

    #: The folder relative paths in the configuration are resolved against (the
    #: configuration file's folder, or the working directory).
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: Whether the backend may create its store (a file, a folder, a table) when it is
    #: missing. ``pushreport serve`` and ``migrate --to`` create; the commands that only
    #: read (``list``, ``stats``, ``prune``, ``push``, ``migrate --from``) do not: a
    #: missing store is then an error that names it, and nothing is left behind.
    create: bool = True


class StorageStarting(StorageUnavailable):
    """The backend cannot serve yet, but may soon without anyone's help: a database
    server that is still starting or not reachable yet. ``pushreport serve`` waits for
    it at start-up (for a bound its documentation states) before it gives up; any
    other ``StorageUnavailable`` at start-up stops it at once."""


@runtime_checkable
class Storage(Protocol):
    """What pushreport needs of every storage backend.

    Besides these, a backend may declare :class:`Capability` values in a
    ``capabilities`` attribute (a class attribute, or one set per instance when it
    depends on the options); see the module's documentation.
    """

    #: The name the backend was registered under.
    name: str

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* into the stored registration of its selector, durably.

        Atomic against concurrent upserts of the same selector (several threads,
        processes or hosts). Returns the registration as stored. Raises
        ``StorageUnavailable`` when it cannot commit within a short bound. (A backend
        that declares :attr:`Capability.QUIET_UPSERT` also takes ``read_back=False``.)
        """
        ...

    def get(self, selector: str) -> Registration | None:
        """The registration of *selector*, or ``None``."""
        ...

    def find(self, *, username: str | None = None) -> list[Registration]:
        """Registrations of *username* (all of them when ``None``), by selector."""
        ...

    def __iter__(self) -> Iterator[Registration]:
        """Every registration, in selector order."""
        ...

    def remove(self, selector: str) -> bool:
        """Delete the registration of *selector*; ``False`` when there was none."""
        ...

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete every registration whose ``last_seen`` is earlier than *before* (an
        aware datetime); return those deleted, by selector. With *dry_run*, delete
        nothing and return those that would go. One transaction: durable on return,
        all or nothing; a registration reported again meanwhile (``last_seen`` no
        longer earlier) is kept.
        """
        ...

    def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend can serve now."""
        ...

    def close(self) -> None:
        """Release connections and files. The object is not used afterwards."""
        ...


class Capability(enum.StrEnum):
    """What a backend may declare it can do, beyond :class:`Storage`.

    Each value names the method (or attribute) the backend then has, with the
    signature and the promise given here; the host calls it only when declared. A
    value compares equal to its text, so ``capabilities = {"count"}`` declares
    :attr:`COUNT` too.
    """

    #: ``open() -> None``: open the store now (connect, read the file's header, create
    #: what is missing when ``StorageContext.create``) instead of at the first call.
    #: Raises ``StorageUnavailable`` with a message for a person at a terminal: where
    #: (a path, or a database and its host; never a password) and why, e.g. ``sqlite
    #: database /srv/x.sqlite3 does not exist (pushreport serve creates it)``;
    #: :class:`StorageStarting` for what may pass by itself. Commands call it before
    #: they read, ``pushreport serve`` before it listens (``ping()`` without it).
    OPEN = "open"

    #: ``upsert(report, *, now, read_back=True) -> Registration | None``: with
    #: ``read_back=False`` the report is stored as by ``upsert`` (as durably, as
    #: atomically) without reading the registration back, and ``None`` is returned;
    #: the receiver asks for it when nothing needs the registration (no
    #: ``pushreport_report_stored`` hook, no ``token_owner = "newest"``).
    QUIET_UPSERT = "quiet_upsert"

    #: Needs :attr:`QUIET_UPSERT`. ``upsert(..., read_back=False)`` is a cheap append
    #: of its own (a report spool), durable on return and applied later: the receiver
    #: does not batch concurrent reports for it. Every read, and ``upsert_if`` and
    #: ``remove_if``, must still see every report acknowledged before.
    SPOOLS = "spools"

    #: ``upsert_many(items: Sequence[tuple[Report, datetime]]) -> list[Registration]``:
    #: upsert every ``(report, now)`` in one transaction, in order, all or nothing;
    #: the receiver batches concurrent reports of a process through it (group commit).
    UPSERT_MANY = "upsert_many"

    #: ``put_many(registrations: Sequence[Registration]) -> None``: store these
    #: registrations exactly as given (``first_seen``, ``last_seen`` and ``reports``
    #: included, not merged as a new report), replacing any with the same selector, in
    #: one transaction; all or nothing. ``pushreport migrate`` copies through it, so a
    #: rerun gives the same target.
    PUT_MANY = "put_many"

    #: ``count() -> int``: how many registrations are stored; the
    #: ``pushreport_registrations{backend}`` gauge, taken when Prometheus scrapes (at
    #: most once per ``[metrics] count_interval`` per process). Should be cheap.
    COUNT = "count"

    #: ``metrics() -> Mapping[str, float]``: the backend's own figures, e.g.
    #: ``{"webhook_outbox_pending": 3}``, called when Prometheus scrapes: each key
    #: becomes the gauge ``pushreport_<key>{backend="<name>"}``. Keys are lower_case
    #: names (``[a-z_][a-z0-9_]*``); others are skipped with a warning. A backend that
    #: raises gives no figures for that scrape. Keep it cheap (no scan of every row).
    METRICS = "metrics"

    #: ``find_token(token: str) -> list[Registration]``: the registrations whose
    #: ``token_calls`` or ``token_msgs`` equals *token*, by selector. ``[reporter]
    #: token_owner = "newest"`` finds a token's other holders through it (without it,
    #: by iterating every registration).
    FIND_TOKEN = "find_token"

    #: ``forget_token(token: str, *, selector: str | None = None, keep: str | None =
    #: None) -> list[str]``: clear *token* from the registrations holding it,
    #: atomically. In the registration of *selector* (every registration holding
    #: *token* when ``None``), except the one whose selector is *keep*, ``token_calls``
    #: and ``token_msgs`` become ``None`` where they equal *token*; the app ids, times
    #: and ``reports`` stay (:func:`pushreport_core.without_token`). Returns the
    #: selectors changed, sorted; idempotent. Durable on return. ``token_owner =
    #: "newest"`` needs it of every backend; ``pushreport push`` forgets a token the
    #: gateway calls invalid through it.
    FORGET_TOKEN = "forget_token"

    #: ``upsert_if(report, *, now, allowed: Callable[[Registration | None], bool])
    #: -> Registration | None``: ``upsert``, unless ``allowed`` (called with the stored
    #: registration, ``None`` when there is none) says no: then nothing changes and
    #: ``None`` is returned. The read, the decision and the write are atomic against
    #: every other ``upsert_if`` and ``remove_if`` of the selector, in any process or
    #: host, and the read sees every report acknowledged before. When authentication
    #: identifies the user, the receiver writes through it so that two users racing
    #: for one selector cannot both pass :func:`pushreport_core.may_write` (without
    #: it, it reads, decides and writes under a lock of its own process only).
    UPSERT_IF = "upsert_if"

    #: ``remove_if(selector: str, allowed: Callable[[Registration | None], bool]) ->
    #: Registration | None``: ``remove``, unless ``allowed`` says no, atomically as
    #: :attr:`UPSERT_IF`; returns the registration it deleted (``None``: nothing).
    REMOVE_IF = "remove_if"

    #: ``limit_state() -> LimitState``: the shared state of the ``[limits]`` and of
    #: Digest nonce counts (:class:`pushreport.limitstate.LimitState`), kept where
    #: every process and host that shares this backend sees it (the SQLite backend a
    #: file beside its database, the PostgreSQL backend a table beside its
    #: registrations). Called once, when the receiver is built and a limit is in use:
    #: the first required backend (in ``[storage] backends`` order) that declares it
    #: provides the state, unless ``[limits] state_path`` names a file; with none, a
    #: SQLite file in the configuration's folder. Opens nothing until first used;
    #: ``LimitStateConformance`` (:mod:`pushreport.testing`) is its test suite.
    LIMIT_STATE = "limit_state"

    #: ``spool_marks()`` and ``apply_spooled(take)`` (:class:`SpoolTarget`): a report
    #: spool (:class:`pushreport.spool.SpooledStorage`) can wrap the backend, recording
    #: its progress in the same transaction as each batch; ``SpoolTargetConformance``
    #: (:mod:`pushreport.testing`) is its test suite.
    SPOOL_TARGET = "spool_target"

    #: ``remove`` and ``remove_if`` record a removal even when nothing is stored (a
    #: tombstone), so that a report received before it and applied after (another
    #: host's report spool) does not bring the selector back: the receiver calls them
    #: for a selector it finds stored nowhere too (a write; without the capability a
    #: removal of nothing writes nothing).
    TOMBSTONES = "tombstones"

    #: ``path: str | os.PathLike[str]``, an attribute: the file or folder on this host
    #: where the backend keeps its data. ``pushreport serve`` names it at start-up, and
    #: the prune schedule keeps its lock beside the first backend's
    #: (``<path>.prune-lock``), so that every process sharing it prunes in turn.
    PATH = "path"


# What each capability needs of the backend, checked when it is built: callable methods
# (or, for PATH, an attribute that is a path), and other capabilities.
_METHODS: dict[Capability, tuple[str, ...]] = {
    Capability.OPEN: ("open",),
    Capability.QUIET_UPSERT: ("upsert",),
    Capability.SPOOLS: (),
    Capability.UPSERT_MANY: ("upsert_many",),
    Capability.PUT_MANY: ("put_many",),
    Capability.COUNT: ("count",),
    Capability.METRICS: ("metrics",),
    Capability.FIND_TOKEN: ("find_token",),
    Capability.FORGET_TOKEN: ("forget_token",),
    Capability.UPSERT_IF: ("upsert_if",),
    Capability.REMOVE_IF: ("remove_if",),
    Capability.LIMIT_STATE: ("limit_state",),
    Capability.SPOOL_TARGET: ("spool_marks", "apply_spooled"),
    Capability.TOMBSTONES: (),
    Capability.PATH: (),
}
_NEEDS: dict[Capability, Capability] = {Capability.SPOOLS: Capability.QUIET_UPSERT}


class QuietUpsert(Protocol):
    """A bound ``upsert(..., read_back=False)`` (:attr:`Capability.QUIET_UPSERT`)."""

    def __call__(self, report: Report, *, now: datetime) -> None: ...


class ForgetToken(Protocol):
    """A bound ``forget_token`` (:attr:`Capability.FORGET_TOKEN`)."""

    def __call__(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]: ...


class UpsertIf(Protocol):
    """A bound ``upsert_if`` (:attr:`Capability.UPSERT_IF`)."""

    def __call__(
        self, report: Report, *, now: datetime, allowed: Callable[[Registration | None], bool]
    ) -> Registration | None: ...


#: A bound ``remove_if`` (:attr:`Capability.REMOVE_IF`).
RemoveIf = Callable[[str, Callable[[Registration | None], bool]], Registration | None]


@attrs.frozen(kw_only=True)
class Capabilities:
    """What one backend declared, checked: for each capability, its method bound (or
    its value), ``None`` when the backend does not declare it. The host calls a
    backend's optional methods through this, never by looking them up.

    Made once per backend, when it is built (:meth:`of`).
    """

    declared: frozenset[Capability] = frozenset()
    open: Callable[[], None] | None = None
    quiet_upsert: QuietUpsert | None = None
    spools: bool = False
    upsert_many: Callable[[Sequence[tuple[Report, datetime]]], list[Registration]] | None = None
    put_many: Callable[[Sequence[Registration]], None] | None = None
    count: Callable[[], int] | None = None
    metrics: Callable[[], Mapping[str, float]] | None = None
    find_token: Callable[[str], list[Registration]] | None = None
    forget_token: ForgetToken | None = None
    upsert_if: UpsertIf | None = None
    remove_if: RemoveIf | None = None
    limit_state: Callable[[], LimitState] | None = None
    path: Path | None = None

    def __contains__(self, capability: object) -> bool:
        return capability in self.declared

    @classmethod
    def of(cls, storage: object, name: str | None = None) -> Capabilities:
        """Read and check what *storage* declares in its ``capabilities`` attribute.

        :param name: the backend's name in the configuration, for the messages
            (default: its ``name`` attribute).
        :raises ConfigurationError: the declaration is not a set of capabilities, names
            one that does not exist, or declares one without its method (or attribute,
            or the capability it needs); the message names the backend and what is
            missing.
        """
        backend: Any = storage
        label = repr(name if name is not None else getattr(backend, "name", type(storage)))
        declared = _declared(backend, label)
        for capability in sorted(declared):
            need = _NEEDS.get(capability)
            if need is not None and need not in declared:
                raise ConfigurationError(
                    f"storage backend {label} declares {capability.value!r} without {need.value!r}"
                )
            for method in _METHODS[capability]:
                if not callable(getattr(backend, method, None)):
                    raise ConfigurationError(
                        f"storage backend {label} declares {capability.value!r} "
                        f"but has no {method}() method"
                    )
        if Capability.QUIET_UPSERT in declared and not _takes_read_back(backend.upsert):
            raise ConfigurationError(
                f"storage backend {label} declares 'quiet_upsert' but its upsert() "
                "takes no read_back argument"
            )
        path: Path | None = None
        if Capability.PATH in declared:
            where = getattr(backend, "path", None)
            if not isinstance(where, (str, os.PathLike)) or not os.fspath(where):
                raise ConfigurationError(
                    f"storage backend {label} declares 'path' but has no path attribute "
                    "(a file or folder)"
                )
            path = Path(where)

        def bound(capability: Capability, method: str) -> Any:
            return getattr(backend, method) if capability in declared else None

        quiet = None
        if Capability.QUIET_UPSERT in declared:
            quiet = functools.partial(backend.upsert, read_back=False)
        return cls(
            declared=declared,
            open=bound(Capability.OPEN, "open"),
            quiet_upsert=quiet,
            spools=Capability.SPOOLS in declared,
            upsert_many=bound(Capability.UPSERT_MANY, "upsert_many"),
            put_many=bound(Capability.PUT_MANY, "put_many"),
            count=bound(Capability.COUNT, "count"),
            metrics=bound(Capability.METRICS, "metrics"),
            find_token=bound(Capability.FIND_TOKEN, "find_token"),
            forget_token=bound(Capability.FORGET_TOKEN, "forget_token"),
            upsert_if=bound(Capability.UPSERT_IF, "upsert_if"),
            remove_if=bound(Capability.REMOVE_IF, "remove_if"),
            limit_state=bound(Capability.LIMIT_STATE, "limit_state"),
            path=path,
        )


def _declared(backend: Any, label: str) -> frozenset[Capability]:
    # The one place the declaration is read.
    raw = getattr(backend, "capabilities", ())
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise ConfigurationError(
            f"storage backend {label} declares capabilities that are not a set of "
            f"Capability values: {raw!r}"
        )
    declared = set()
    for item in raw:
        try:
            declared.add(Capability(item))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise ConfigurationError(
                f"storage backend {label} declares an unknown capability {item!r} "
                f"(the capabilities are {known})"
            ) from None
    return frozenset(declared)


def _takes_read_back(upsert: Any) -> bool:
    try:
        parameters = inspect.signature(upsert).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin: cannot tell
        return True
    return "read_back" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


@attrs.frozen
class MainOption:
    """The option of a backend that names its store: what ``pushreport migrate``'s
    ``NAME:VALUE`` sets (``sqlite:/srv/x.sqlite3``), and ``--db`` for the first backend
    in ``[storage] backends`` that has one. Declared when the backend is registered
    (:data:`RegisterStorage`)."""

    #: The option's key in ``[storage.<name>]``, e.g. ``"path"`` or ``"dsn"``.
    key: str
    #: The value is a file or folder: given on the command line, it is relative to the
    #: working directory (made absolute before the factory sees it).
    is_path: bool = False
    #: The value may hold a password (a DSN): never printed (``postgresql:***``).
    secret: bool = False


StorageFactory = Callable[[Mapping[str, Any], StorageContext], Storage]


class RegisterStorage(Protocol):
    """The ``register`` callable of the ``pushreport_register_storage`` hook."""

    def __call__(
        self,
        name: str,
        factory: StorageFactory,
        *,
        main_option: MainOption | None = None,
        secret_options: Iterable[str] = (),
    ) -> None: ...


@attrs.frozen(kw_only=True)
class SpooledBatch:
    """What a report spool hands its backend to apply in one transaction
    (:meth:`SpoolTarget.apply_spooled`): reports, and how far that takes the spool."""

    #: ``(report, when it was received)``, in the order received.
    items: Sequence[tuple[Report, datetime]] = ()
    #: ``{file name: bytes of it applied}`` after this batch, to record with it.
    marks: Mapping[str, int] = attrs.field(factory=dict)
    #: Files whose marks are no longer needed (the files are gone), to delete with it.
    forget: Sequence[str] = ()
    #: The same reports as the spool's lines, in the same order, when it read them so
    #: (empty otherwise): each a JSON array of :data:`pushreport.spool.FIELDS`, the
    #: report's stored fields (``extra`` as a JSON object in text) and the time received
    #: as :func:`~pushreport_core.format_time` writes it. A
    #: backend may apply these instead of :attr:`items` (which are then never
    #: decoded), but only all of them: a line it cannot apply sends it to
    #: :attr:`items`, which skip what is not a report.
    lines: Sequence[bytes] = ()


@runtime_checkable
class SpoolTarget(Protocol):
    """A backend that a report spool can wrap (:class:`pushreport.spool.SpooledStorage`):
    it takes reports in batches and records the spool's progress (how many bytes of
    each spool file are applied: its *marks*) in the same transaction as the batch. So
    a report is applied exactly once, whichever process applies it and whatever
    happens to the process that does.
    """

    def spool_marks(self) -> dict[str, int]:
        """The marks as committed (``{}`` before the first batch): a read that takes no
        write lock. Opens the store first when needed (creating it when the context
        allows). Raises ``StorageUnavailable`` when the store cannot be read."""
        ...

    def apply_spooled(self, take: Callable[[Mapping[str, int]], SpooledBatch]) -> int:
        """Apply one batch of the spool, all or nothing, in one transaction that
        excludes every other ``apply_spooled`` of the same store, in any process or
        host:

        1. read the marks, inside the transaction;
        2. ``batch = take(marks)``: the spool reads its files from there. An exception
           from *take* rolls back and propagates unchanged; *take* may be called again
           when the transaction is retried, and only the committed call's batch counts;
        3. merge ``batch.items`` in order, as :meth:`Storage.upsert` would one by one
           (nothing needs to be read back), set ``batch.marks`` and delete the marks
           of ``batch.forget``; commit, durably.

        Even with no item, the write lock is taken (a spool probes the store that
        way). An item that cannot be stored for its values (the spool checks what it
        appends, so a bug or a hand-edited file) is logged and skipped: it must not
        stop the spool. Returns how many items were stored; raises
        ``StorageUnavailable`` when the store cannot commit within its bound (nothing
        of the batch is kept).
        """
        ...


class BackendOptions:
    """Checked access to a backend's ``[storage.<name>]`` table, for factories.

    Every error is a :class:`~pushreport_core.ConfigurationError` naming
    ``storage.<name>.<key>`` and the reason, raised when the configuration is loaded::

        opts = BackendOptions("files", options, allowed=("path", "fsync"))
        path = opts.string("path", "pushreport-files")
        fsync = opts.boolean("fsync", True)
    """

    def __init__(self, backend: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        self.backend = backend
        self.options = options
        for key in options:
            if key not in allowed:
                raise self.error(key, "unknown option; the options are " + ", ".join(allowed))

    def error(self, key: str, reason: str) -> ConfigurationError:
        return ConfigurationError(reason, key=f"storage.{self.backend}.{key}")

    def string(
        self,
        key: str,
        default: str,
        *,
        what: str = "a non-empty string",
        choices: tuple[str, ...] = (),
    ) -> str:
        value = self.options.get(key, default)
        if choices:
            if not isinstance(value, str) or value.lower() not in choices:
                raise self.error(
                    key, "must be " + " or ".join(f'"{c}"' for c in choices) + f", not {value!r}"
                )
            return value.lower()
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be {what}, not {value!r}")
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        low: float,
        high: float,
        what: str = "a number of seconds",
    ) -> float:
        value = self.options.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise self.error(key, f"must be {what} from {low:g} to {high:g}, not {value!r}")
        return float(value)

    def integer(
        self, key: str, default: int, *, low: int, high: int, what: str = "a whole number"
    ) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be {what} from {low} to {high}, not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value
