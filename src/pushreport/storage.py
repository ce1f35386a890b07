"""The storage protocol that every backend implements.

A backend stores one :class:`~pushreport_core.Registration` per ``selector``. The one
write is :meth:`Storage.upsert`: it applies the merge rule of
:func:`pushreport_core.merge` atomically (a token the report does not know never
erases a stored one) and returns only once the result is durable. A backend that cannot
do that now raises :class:`~pushreport_core.StorageUnavailable`; it never returns as if
it had stored.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import attrs

from pushreport_core import ConfigurationError, Registration, Report, StorageUnavailable

__all__ = [
    "Storage",
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
    """What pushreport needs of a storage backend."""

    #: The name the backend was registered under.
    name: str

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* into the stored registration of its selector, durably.

        Atomic against concurrent upserts of the same selector (several threads,
        processes or hosts). Returns the registration as stored. Raises
        ``StorageUnavailable`` when it cannot commit within a short bound.
        """
        ...

    # Optional methods, looked up with ``getattr`` (not part of the runtime check):
    #
    # ``upsert_many(items: Sequence[tuple[Report, datetime]]) -> list[Registration]``
    #     Upsert every ``(report, now)`` in one transaction, in order; the receiver
    #     batches concurrent reports through it.
    #
    # ``put_many(registrations: Sequence[Registration]) -> None``
    #     Store these registrations exactly as given (``first_seen``, ``last_seen`` and
    #     ``reports`` included, not merged as a new report), replacing any with the same
    #     selector, in one transaction (one commit, one fsync); all or nothing.
    #     ``pushreport migrate`` copies through it, so a rerun gives the same target.
    #
    # ``count() -> int``
    #     How many registrations are stored; the ``pushreport_registrations{backend}``
    #     gauge, taken when Prometheus scrapes (at most once per ``[metrics]
    #     count_interval`` per process). Should be cheap: one ``COUNT(*)``.
    #
    # ``metrics() -> dict[str, float]``
    #     The backend's own figures, e.g. ``{"webhook_outbox_pending": 3,
    #     "webhook_outbox_dead": 0}``, called when Prometheus scrapes: each key becomes the
    #     gauge ``pushreport_<key>{backend="<name>"}``. Keys are lower_case names
    #     (``[a-z_][a-z0-9_]*``); others are skipped with a warning. A backend that
    #     raises gives no figures for that scrape. Keep it cheap (no scan of every row).
    #
    # ``open() -> None``
    #     Open the store now (connect, read the file's header, create what is missing
    #     when ``StorageContext.create``) instead of at the first call. Raises
    #     ``StorageUnavailable`` with a message for a person at a terminal: where (a
    #     path, or a database and its host; never a password) and why, e.g. ``sqlite
    #     database /srv/x.sqlite3 does not exist (pushreport serve creates it)``;
    #     ``StorageStarting`` for what may pass by itself. Commands call it before they
    #     read, ``pushreport serve`` before it listens.
    #
    # ``find_token(token: str) -> list[Registration]``
    #     Registrations whose ``token_calls`` or ``token_msgs`` equals *token*, by
    #     selector. ``[reporter] token_owner = "newest"`` finds a token's other holders
    #     through it (without it, by iterating every registration).
    #
    # ``upsert_if(report, *, now, allowed: Callable[[Registration | None], bool])
    #     -> Registration | None``
    # ``remove_if(selector, allowed: Callable[[Registration | None], bool])
    #     -> Registration | None``
    #     ``upsert`` and ``remove``, unless ``allowed`` (called with the stored
    #     registration, ``None`` when there is none) says no: then nothing changes and
    #     ``None`` is returned (``remove_if`` returns the registration it deleted). The
    #     read, the decision and the write are atomic against every other ``upsert_if``
    #     and ``remove_if`` of the selector, in any process or host, and the read sees
    #     every report acknowledged before. When authentication identifies the user,
    #     the receiver writes through them so that two users racing for one selector
    #     cannot both pass :func:`pushreport_core.may_write` (without them it reads,
    #     decides and writes under a lock of its own process only).
    #
    # ``limit_state() -> LimitState``
    #     The shared state of the ``[limits]`` and of Digest nonce counts
    #     (:class:`pushreport.limitstate.LimitState`), kept where every process
    #     and host that shares this backend sees it: the SQLite backend a file beside
    #     its database (``<path>.limits``), the PostgreSQL backend a table beside its
    #     registrations (``<table>_limits``). Looked up once, when the receiver is
    #     built and a limit is in use: the first required backend (in ``[storage]
    #     backends`` order) that has it provides the state, unless ``[limits]
    #     state_path`` names a file; with none, a SQLite file in the configuration's
    #     folder. Opens nothing until first used; ``LimitStateConformance``
    #     (:mod:`pushreport.testing`) is its test suite.
    #
    # ``spool_marks()`` and ``apply_spooled(take)``: :class:`SpoolTarget`, the
    #     capability that lets :class:`pushreport.spool.SpooledStorage` wrap the backend
    #     (checked when it is wrapped; ``SpoolTargetConformance`` is its test suite).

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

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* from the registrations holding it, atomically.

        In the registration of *selector* (every registration holding *token* when
        ``None``), except the one whose selector is *keep*, ``token_calls`` and
        ``token_msgs`` become ``None`` where they equal *token*; the app ids, times and
        ``reports`` stay (:func:`pushreport_core.without_token`). Returns the selectors
        changed, sorted; idempotent (an absent token gives ``[]``). Durable on return;
        raises ``StorageUnavailable`` when it cannot commit.
        """
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


StorageFactory = Callable[[Mapping[str, Any], StorageContext], Storage]


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
