"""The report spool: a wrapper that answers a report once it is appended to a file, and
applies the spool to the backend it wraps in batches, exactly once, in the order the
reports were received.

Committing each report from the request costs a transaction per request, and the
workers queue for one write lock (measured with SQLite: ~80 µs against ~8 µs for the
append). :class:`SpooledStorage` wraps any backend that declares the capability
(:class:`~pushreport.storage.SpoolTarget`: it takes batches, and records the spool's
progress in the batch's own transaction) and is itself a
:class:`~pushreport.storage.Storage`, as zarr's ``WrapperStore`` is a store:

- ``upsert(..., read_back=False)`` (a report whose registration nobody reads back)
  appends one line to this process's spool file (:mod:`pushreport._spool`) and
  returns: durable against a crash of the process, and with *fsync* against a power
  loss;
- a background thread of every process applies every process's files to the backend
  (``apply_round``), one batch per round;
- every other call (a read, a removal, an upsert that reads back, ``forget_token``,
  ``prune``, ``ping``) applies the spool first, so it sees every report answered
  before, or fails with :class:`~pushreport_core.StorageUnavailable` when reports are
  waiting and the backend cannot take them.

No report is answered 200 that no process will apply: when a round fails, or the spool
holds more than *max_bytes* not yet applied, reports are refused (503) until a round
goes through; ``ping`` (``/readyz``) fails meanwhile. What the operator sees is in
``docs/spool.md``.

A backend offers the spool through its factory, with the same three options for every
backend (:data:`OPTIONS_DOC`), e.g. the SQLite backend::

    storage = SQLiteStorage(...)
    return SpooledStorage.from_options(
        storage, opts, folder=Path(f"{path}.spool"), fsync=synchronous == "full"
    )
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Protocol, overload

import attrs

from pushreport_core import Registration, Report, StorageUnavailable

from ._logs import ThrottledLog
from ._spool import (
    FIELDS,
    ROTATE_BYTES,
    DecodedLines,
    SpoolFiles,
    Unsynced,
    current_pid,
    encode,
    encode_report,
    in_time_order,
    lines_in_time_order,
)
from .storage import (
    BackendOptions,
    Capabilities,
    Capability,
    SpooledBatch,
    SpoolTarget,
    Storage,
)

__all__ = [
    "SpooledStorage",
    "Spoolable",
    "PendingSyncs",
    "deferring_syncs",
    "OPTIONS_DOC",
    "options_doc",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_RANGE",
    "INTERVAL_RANGE",
    "IDLE_WAIT",
    "encode",
    "encode_report",
    "FIELDS",
]

#: ``spool_interval``: seconds between two rounds of the background thread.
DEFAULT_INTERVAL = 0.05
INTERVAL_RANGE = (0.001, 10.0)
#: ``spool_max_bytes``: about 75,000 reports, which one round applies in a few seconds
#: and holds in memory while it does (a line is about 220 bytes).
DEFAULT_MAX_BYTES = 16 << 20
MAX_BYTES_RANGE = (1024, 1 << 40)
#: The longest an idle applier thread sleeps between rounds (an append wakes it).
IDLE_WAIT = 1.0


def options_doc(*, folder: str, fsync: str) -> dict[str, str]:
    """The spool's options, for the generated configuration reference of a backend
    that offers it: *folder* says where its spool is, *fsync* when an append is synced
    (e.g. ``"when synchronous is full"``)."""
    return {
        "spool": f"true (default): a report is appended to a file of its process's in "
        f"{folder} (with an fdatasync {fsync}) and answered, and a background thread "
        "applies the spool to the database in batches; every read through pushreport "
        "applies it first. false: each report is its own transaction",
        "spool_interval": "seconds between two applications of the spool by the background "
        f"thread (default {DEFAULT_INTERVAL:g}; {INTERVAL_RANGE[0]:g} to "
        f"{INTERVAL_RANGE[1]:g}): how long a report may take to show in the "
        "database for a reader that opens it directly",
        "spool_max_bytes": "bytes of reports the spool may hold not yet applied (default "
        f"{DEFAULT_MAX_BYTES}, {DEFAULT_MAX_BYTES >> 20} MiB; {MAX_BYTES_RANGE[0]} to "
        "2^40): past it reports are answered 503 and /readyz fails until the background "
        "thread has caught up. Counted by each process: its own appends since the last "
        "round that went through, and every file as a round found them",
    }


#: The spool's options, as :func:`options_doc` words them for any backend.
OPTIONS_DOC = options_doc(folder="its spool folder", fsync="when the backend syncs")


@attrs.frozen
class PendingSyncs:
    """What the appends made under :func:`deferring_syncs` still wait for: their
    ``fdatasync`` (a ``full`` spool's). Each spool file's appends share one sync (group
    commit), so an event loop that answers many reports at once waits for one sync per
    file, whoever leads it."""

    waits: tuple[tuple[SpooledStorage, Unsynced], ...]

    def synced(self) -> bool:
        """Whether every append is on disk now (never blocks).

        :raises StorageUnavailable: a sync that did not cover one of them failed.
        """
        for storage, unsynced in self.waits:
            try:
                if not unsynced.synced():
                    return False
            except OSError as exc:
                raise StorageUnavailable(storage._append_failed(exc)) from exc
        return True

    def sync(self) -> None:
        """Return once every append is on disk (blocks: call it off the event loop).

        :raises StorageUnavailable: a sync that did not cover one of them failed.
        """
        for storage, unsynced in self.waits:
            try:
                unsynced.sync()
            except OSError as exc:
                raise StorageUnavailable(storage._append_failed(exc)) from exc


#: The appends that :func:`deferring_syncs` collects (``None``: appends wait themselves).
_deferred: ContextVar[list[tuple[SpooledStorage, Unsynced]] | None] = ContextVar(
    "pushreport_deferred_syncs", default=None
)


@contextmanager
def deferring_syncs() -> Iterator[list[tuple[SpooledStorage, Unsynced]]]:
    """Within it, an append to a spool with *fsync* returns once written, without
    waiting for its ``fdatasync``, and is collected in the list it gives; the caller
    answers nothing before :class:`PendingSyncs` of that list says it is on disk."""
    collected: list[tuple[SpooledStorage, Unsynced]] = []
    token = _deferred.set(collected)
    try:
        yield collected
    finally:
        _deferred.reset(token)


class Spoolable(Storage, SpoolTarget, Protocol):
    """What :class:`SpooledStorage` wraps: a storage with the spool's capability."""


def _check_target(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, SpooledStorage):
        raise TypeError("a spooled storage cannot be spooled again")
    if not isinstance(value, SpoolTarget):
        name = getattr(value, "name", type(value).__name__)
        raise TypeError(
            f"storage backend {name!r} cannot be spooled: it has no spool_marks() and "
            "apply_spooled() (pushreport.storage.SpoolTarget)"
        )


def _check_interval(instance: Any, attribute: Any, value: float) -> None:
    low, high = INTERVAL_RANGE
    if not low <= value <= high:
        raise ValueError(f"spool_interval must be {low:g} to {high:g} seconds, not {value!r}")


def _check_max_bytes(instance: Any, attribute: Any, value: int) -> None:
    low, high = MAX_BYTES_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"spool_max_bytes must be {low} to {high} bytes, not {value!r}")


#: Optional methods of the wrapped backend passed through without applying the spool
#: first: they neither read nor write registrations. Any other method is passed
#: through after the spool is applied (see :meth:`SpooledStorage.__getattr__`).
_UNSETTLED = frozenset({"open", "metrics", "limit_state"})
#: Not passed through: a spooled storage is not itself a spool's target.
_HIDDEN = frozenset({"spool_marks", "apply_spooled"})


@attrs.define(eq=False)
class SpooledStorage:
    """*storage* behind a report spool in *folder* (see the module's documentation).

    Thread-safe and fork-safe as the backends are: after a ``fork()`` the child appends
    to a file of its own and starts its own applier at its first report.

    The wrapped backend's optional methods (``count``, ``find_token``, ``upsert_if``,
    ``put_many``, …) are this storage's too, each after the spool is applied; those it
    lacks, this one lacks.
    """

    storage: Spoolable = attrs.field(validator=_check_target)
    #: The folder of the spool files (created at the first report).
    folder: Path = attrs.field(converter=Path, kw_only=True)
    #: ``fdatasync`` every append: a report answered survives a power loss.
    fsync: bool = attrs.field(default=False, kw_only=True)
    interval: float = attrs.field(
        default=DEFAULT_INTERVAL, converter=float, validator=_check_interval, kw_only=True
    )
    max_bytes: int = attrs.field(
        default=DEFAULT_MAX_BYTES, validator=_check_max_bytes, kw_only=True
    )
    #: A writer starts a new file once its current one is this long.
    rotate_bytes: int = attrs.field(default=ROTATE_BYTES, kw_only=True)
    #: The longest an idle applier sleeps (rounds that find nothing double the wait).
    idle_wait: float = attrs.field(default=IDLE_WAIT, kw_only=True)
    #: The wrapped backend's name.
    name: str = attrs.field(init=False)
    #: What this storage declares (:class:`pushreport.storage.Capability`).
    capabilities: frozenset[Capability] = attrs.field(init=False, repr=False)
    _files: SpoolFiles = attrs.field(init=False, repr=False)
    #: The backend's logger (``pushreport.<name>``): the spool's lines say whose it is.
    _log: logging.Logger = attrs.field(init=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    #: The backend answered this storage once (it was opened): close() applies.
    _reached: bool = attrs.field(init=False, default=False, repr=False)
    #: The last round failed: reports are refused with this until one succeeds, so that
    #: a broken backend answers 503 instead of filling the spool.
    _error: StorageUnavailable | None = attrs.field(init=False, default=None, repr=False)
    #: Rounds failed in a row (for the line that says they go through again).
    _failed_rounds: int = attrs.field(init=False, default=0, repr=False)
    #: ``SpoolFiles.appended`` when the last round that went through began: what this
    #: process appended before it is applied.
    _applied_mark: int = attrs.field(init=False, default=0, repr=False)
    #: Bytes not yet applied in every file, as the round under way (or the last one,
    #: when it failed) found them; 0 once a round went through.
    _backlog: int = attrs.field(init=False, default=0, repr=False)
    #: The applier's failures and the spool's strays: one line a minute, with a count.
    _round_log: ThrottledLog = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _applier_pid: int = attrs.field(init=False, default=0, repr=False)
    _applier_stop: threading.Event = attrs.field(init=False, factory=threading.Event, repr=False)
    _applier_wake: threading.Event = attrs.field(init=False, factory=threading.Event, repr=False)
    #: The applier thread found nothing last round and sleeps longer: an append wakes it.
    _applier_idle: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.name = self.storage.name
        # What the wrapped backend declares is this storage's too (each method called
        # after the spool is applied), but for being a spool's target; its quiet write
        # is an append of its own (``spools``: not batched by the receiver).
        declared = Capabilities.of(self.storage, self.name).declared
        self.capabilities = (declared - {Capability.SPOOL_TARGET}) | {
            Capability.QUIET_UPSERT,
            Capability.SPOOLS,
            Capability.METRICS,
        }
        self._log = logging.getLogger(f"pushreport.{self.name}")
        self._round_log = ThrottledLog(self._log)
        self._files = SpoolFiles(
            self.folder, fsync=self.fsync, log=self._log, rotate_bytes=self.rotate_bytes
        )

    @classmethod
    def from_options(
        cls,
        storage: Spoolable,
        opts: BackendOptions,
        *,
        folder: Path,
        fsync: bool,
        default: bool = True,
    ) -> Storage:
        """*storage* behind a spool as the backend's options ``spool``,
        ``spool_interval`` and ``spool_max_bytes`` say (:data:`OPTIONS_DOC`; the
        backend lists them among its allowed options), or *storage* itself when
        ``spool`` is false (its default: *default*).

        :raises ConfigurationError: a value of the wrong type or out of its range,
            naming ``storage.<name>.<option>``.
        """
        enabled = opts.boolean("spool", default)
        interval = opts.number(
            "spool_interval", DEFAULT_INTERVAL, low=INTERVAL_RANGE[0], high=INTERVAL_RANGE[1]
        )
        low, high = MAX_BYTES_RANGE
        max_bytes = opts.integer(
            "spool_max_bytes", DEFAULT_MAX_BYTES, low=low, high=high, what="a number of bytes"
        )
        if not enabled:
            return storage
        return cls(storage, folder=folder, fsync=fsync, interval=interval, max_bytes=max_bytes)

    # -- the wrapped backend's other methods -------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """The wrapped backend's attribute *name*; a method that reads or writes
        registrations is called after the spool is applied (every method but
        :data:`_UNSETTLED`'s), so that it sees every report answered before."""
        if name.startswith("_") or name in _HIDDEN or name in _FIELDS:
            raise AttributeError(name)
        value = getattr(self.storage, name)
        if not callable(value) or name in _UNSETTLED:
            return value

        def settled(*args: Any, **kwargs: Any) -> Any:
            self._settle()
            return value(*args, **kwargs)

        settled.__name__ = name
        settled.__doc__ = getattr(value, "__doc__", None)
        return settled

    # -- Storage ---------------------------------------------------------------------

    def _append(self, report: Report, now: datetime) -> None:
        """Append *report* to this process's spool file: stored when this returns (on
        disk too with *fsync*); applied by the background thread.

        :raises StorageUnavailable: reports are refused now (the last round failed,
            the spool is past *max_bytes*), the backend cannot be opened (this
            process's first report), or the append failed.
        """
        if self._closed:
            raise StorageUnavailable(f"{self.name} storage is closed")
        error = self._refusal()
        if error is not None:
            raise error
        first = self._applier_pid != current_pid()
        if first:
            # This process's first report: the backend is opened (and created) now,
            # and fails this report if it cannot be, rather than only its spool.
            self.storage.spool_marks()
            self._reached = True
        line = encode_report(report, now)
        deferred = _deferred.get() if self.fsync else None
        try:
            unsynced = self._files.append(line, defer=deferred is not None)
        except OSError as exc:
            raise StorageUnavailable(self._append_failed(exc)) from exc
        if unsynced is not None and deferred is not None:
            deferred.append((self, unsynced))
        if first:
            self._start_applier()
        elif self._applier_idle:
            self._applier_idle = False
            self._applier_wake.set()

    @property
    def appends_at_once(self) -> bool:
        """Whether a quiet upsert (an append) waits on nothing slow now, but for its
        fsync, which :func:`deferring_syncs` defers: this process has already reached
        the backend (its first report opens it)."""
        return not self._closed and self._applier_pid == current_pid()

    @overload
    def upsert(
        self, report: Report, *, now: datetime, read_back: Literal[True] = True
    ) -> Registration: ...

    @overload
    def upsert(self, report: Report, *, now: datetime, read_back: bool) -> Registration | None: ...

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        """With ``read_back=False`` (``quiet_upsert``): an append to the spool, and
        ``None``. Else the backend's ``upsert``, after the spool (what was answered
        first)."""
        if not read_back:
            self._append(report, now)
            return None
        self._settle()
        return self.storage.upsert(report, now=now)

    def get(self, selector: str) -> Registration | None:
        self._settle()
        return self.storage.get(selector)

    def find(self, *, username: str | None = None) -> list[Registration]:
        self._settle()
        return self.storage.find(username=username)

    def __iter__(self) -> Iterator[Registration]:
        self._settle()
        return iter(self.storage)

    def remove(self, selector: str) -> bool:
        self._settle()  # a report spooled before the removal must not outlive it
        return self.storage.remove(selector)

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        self._settle()
        return self.storage.prune(before, dry_run=dry_run)

    def ping(self) -> None:
        """Fail while reports are refused (the last round failed, or the spool is past
        its bound) or the spool cannot be applied now; else the backend's ``ping``.

        What waits in the spool is applied here, as before a read: that is how a
        process whose own applier has not run yet (no report reached it) learns that
        a file cannot be read or the backend cannot take it."""
        error = self._refusal()
        if error is not None:
            raise error
        self.apply_spool()
        self.storage.ping()

    def close(self) -> None:
        """Stop the applier, apply the spool (this process's file is deleted once it
        is), then close the backend."""
        # (A storage whose backend never answered spooled nothing, and could apply
        # nothing: one whose open() failed closes without touching the spool.)
        if not self._closed and self._reached:
            self._applier_stop.set()
            self._applier_wake.set()
            self._files.close()
            try:
                self.apply_spool()
            except StorageUnavailable as exc:  # the next process that opens it applies it
                self._log.warning("the report spool is left to apply later: %s", exc)
        self._closed = True
        self.storage.close()

    def metrics(self) -> dict[str, float]:
        """The wrapped backend's figures, if it has any, and the spool's backlog, read
        from the files and the backend's marks when Prometheus scrapes (the same in
        every process): ``spool_backlog_lines`` and ``spool_backlog_bytes`` not yet
        applied, ``spool_max_bytes`` (the bound past which reports are refused) and
        ``spool_oldest_age_seconds``, how long ago the oldest waiting report was
        received (0 when none waits).

        :raises StorageUnavailable: the backend's marks cannot be read.
        """
        figures: dict[str, float] = {}
        own = Capabilities.of(self.storage, self.name).metrics
        if own is not None:
            figures.update(own())
        lines, size, oldest = self._files.backlog(self.storage.spool_marks())
        age = 0.0
        if oldest is not None:
            age = max(0.0, time.time() - oldest.timestamp())
        figures.update(
            spool_backlog_lines=lines,
            spool_backlog_bytes=size,
            spool_max_bytes=self.max_bytes,
            spool_oldest_age_seconds=age,
        )
        return figures

    # -- applying the spool ----------------------------------------------------------

    def _settle(self) -> None:
        """Apply the spool before a read or another write, so that they see every
        report answered so far. When reports are waiting and the backend cannot take
        them, raise :class:`StorageUnavailable` rather than answer without them (a
        removal that found nothing would let a spooled report bring the
        registration back); with nothing waiting, nothing is written."""
        self.apply_spool()

    def _refusal(self) -> StorageUnavailable | None:
        """Why a report is refused now, if it is: the last round failed, or the spool
        holds more than *max_bytes* not yet applied. (A new exception each time:
        tracebacks would pile up on a shared one.)"""
        error = self._error
        if error is not None:
            return StorageUnavailable(str(error), retry_after=error.retry_after)
        if max(self._backlog, self._files.appended - self._applied_mark) > self.max_bytes:
            return StorageUnavailable(f"{self.name} report spool is full")
        return None

    def _append_failed(self, exc: OSError) -> str:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{self.name} report spool: the disk is full"
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"{self.name} report spool cannot be written (read-only)"
        return f"{self.name} report spool cannot be written"

    def apply_spool(self, *, probe: bool = False) -> int:
        """Apply what the spool files of every process hold to the backend, in one
        batch; the number of reports applied. Files that nobody writes to any more
        and that are fully applied are deleted. With *probe*, take the backend's write
        lock even when nothing is waiting (to learn whether it can be written again).

        Entries that are not regular files are moved aside (see :mod:`pushreport._spool`).

        :raises StorageUnavailable: the backend cannot take the batch now, or a spool
            file cannot be read; nothing of this round is applied, and the spool keeps
            it for the next.
        """
        mark = self._files.appended  # what this process appended before this round
        try:
            count = self._apply(probe)
        except OSError as exc:
            raise StorageUnavailable(f"{self.name} report spool cannot be read") from exc
        self._reached = True
        self._applied_mark = max(self._applied_mark, mark)
        self._backlog = 0
        return count

    def _apply(self, probe: bool) -> int:
        files = self._files
        names = files.names()
        if not names and not probe:
            return 0
        sizes, strays = files.scan(names)
        for name in strays:
            self._set_aside(name)
        applied = self.storage.spool_marks()
        backlog = sum(max(0, sizes[n] - applied.get(n, 0)) for n in sizes)
        if backlog > self.max_bytes:
            self._round_log.warning(
                "the report spool holds %d bytes not yet applied, past its bound of %d; "
                "refusing reports until it is applied",
                backlog,
                self.max_bytes,
                key="spool full",
            )
        self._backlog = backlog
        waiting = [n for n in sizes if sizes[n] > applied.get(n, 0)]
        ended: dict[str, int] = {n: sizes[n] for n in sizes if n not in waiting}
        count = 0
        if waiting or probe or not applied.keys() <= sizes.keys():

            def take(marks: Mapping[str, int]) -> SpooledBatch:
                read, advanced = [], {}
                # Every file, not only those found waiting: lines appended since the
                # scan (a round trip to the backend ago) to a file found idle would
                # otherwise wait for the next round, behind later lines of another
                # file read now, and be applied out of the order received.
                for name in sizes:
                    start = marks.get(name, 0)
                    lines, end, length = files.read_lines(name, start)
                    if end > start:
                        read.append((name, lines))
                        advanced[name] = end
                    # All of it applied but a line being written or cut short, if any:
                    # which of the two is decided below, by whether a writer holds it.
                    ended[name] = length
                # Marks of files deleted before (never of a file listed after `names`
                # was taken: a name is never used twice).
                gone = [n for n in marks if n not in sizes and not files.exists(n)]
                merged = lines_in_time_order(read)
                if merged is None:  # a line whose time cannot be read off: decode all
                    items = in_time_order(files.decode_lines(n, lines) for n, lines in read)
                    return SpooledBatch(items=list(items), marks=advanced, forget=gone)
                return SpooledBatch(
                    items=DecodedLines(files, merged),
                    lines=[line for _, line in merged],
                    marks=advanced,
                    forget=gone,
                )

            count = self.storage.apply_spooled(take)
        for name, length in ended.items():
            # Fully applied; deleted once its writer has let go of it, unless it grew
            # in between (its writer appended, then let go). What is left after the
            # last newline of a file nobody writes is a line cut short: never answered.
            if files.finished(name) and files.sizes([name]).get(name) == length:
                try:
                    files.delete(name)
                except OSError as exc:  # applied all the same: it stays, harmless
                    self._round_log.warning(
                        "an applied report spool file cannot be deleted: %s", exc, key="delete"
                    )
        return count

    def _set_aside(self, name: str) -> None:
        """Move an entry that is not a spool file out of the way, saying so once."""
        try:
            aside = self._files.set_aside(name)
        except FileNotFoundError:
            return  # another process's round moved it first
        except OSError as exc:  # it stays, and is skipped: it holds no report
            self._round_log.error(
                "the report spool entry %s is not a file it wrote and cannot be moved: %s",
                name,
                exc,
            )
            return
        self._log.error(
            "the report spool entry %s is not a file it wrote; moved to %s", name, aside
        )

    def apply_round(self, *, probe: bool = False) -> int:
        """One round of the background thread: apply the spool; when the backend
        cannot take it, refuse reports (503) until a later round can. A round after a
        failed one always takes the write lock (*probe*), to learn that it can.
        Returns how many reports it applied (0 when it failed).

        Any failure counts: an unexpected error refuses reports as a locked database
        does, and is logged (with its traceback) once a minute, not once a round.
        """
        failing = self._error is not None
        files = self._files
        behind = self._backlog > self.max_bytes
        if not (probe or failing or behind) and files.done_within(self.interval):
            # Another process's round just went through every file: what this one
            # appended before is applied (or will be by the next round, very soon).
            self._applied_mark = files.appended
            return 0
        try:
            applied = self.apply_spool(probe=probe or failing)
        except Exception as exc:
            if self._closed:
                return 0  # a round that close() cut short: close() applies the rest
            if isinstance(exc, StorageUnavailable):
                cause = exc.__cause__
                detail = f"{exc} ({cause})" if isinstance(cause, OSError) else str(exc)
                self._round_failed(exc, detail)
            else:
                error = StorageUnavailable(f"{self.name} report spool cannot be applied")
                self._round_failed(error, f"{type(exc).__name__}: {exc}", exc_info=exc)
            return 0
        files.round_done(ok=True)
        if failing:
            self._round_log.warning(
                "the report spool is applied again after %d failed rounds; accepting reports",
                self._failed_rounds,
                key="spool applied again",
            )
            self._error = None
            self._failed_rounds = 0
        return applied

    def _round_failed(
        self,
        error: StorageUnavailable,
        detail: str,
        *,
        exc_info: BaseException | None = None,
    ) -> None:
        """Refuse reports with *error* until a round goes through; say so once a minute."""
        self._error = error
        self._failed_rounds += 1
        self._files.round_done(ok=False)
        self._round_log.log(
            logging.ERROR if exc_info is not None else logging.WARNING,
            "the report spool cannot be applied: %s; refusing reports",
            detail,
            # What the line says: a lock met in SQLite's statement and one met waiting
            # for the writers' turn read the same, and are one line a minute.
            key=("spool failing", detail),
            exc_info=exc_info,
        )

    @property
    def applier_idle(self) -> bool:
        """The background thread found nothing last round and sleeps longer (up to
        *idle_wait*); the next report wakes it."""
        return self._applier_idle

    def _start_applier(self) -> None:
        """One daemon thread per process applies the spool every *interval*."""
        pid = os.getpid()
        with self._lock:
            if self._applier_pid == pid:
                return
            self._applier_pid = pid
            self._applier_stop = threading.Event()
            self._applier_wake = threading.Event()
            self._applier_idle = False
            threading.Thread(
                target=_apply_loop,
                args=(weakref.ref(self), self._applier_stop, self._applier_wake),
                name=f"pushreport-{self.name}-spool",
                daemon=True,
            ).start()


#: Its own attributes: never looked up in the wrapped backend (while __init__ has not
#: set them yet, say).
_FIELDS = frozenset(a.name for a in attrs.fields(SpooledStorage))


def _apply_loop(
    ref: weakref.ReferenceType[SpooledStorage],
    stop: threading.Event,
    wake: threading.Event,
) -> None:
    """The spool's background thread. It holds its storage weakly: a storage dropped
    without close() (its app gone) ends the thread instead of living on in it.

    Rounds that find nothing to apply double the wait, up to ``idle_wait``, so an idle
    server does not wake every worker 20 times a second (measured: 4.7 % of a core for
    5 idle workers, against 0.4 % without the spool); the next append wakes it."""
    storage = ref()
    if storage is None:
        return
    interval, wait = storage.interval, storage.interval
    del storage
    while True:
        wake.wait(wait)
        wake.clear()
        if stop.is_set():
            return
        storage = ref()
        if storage is None:
            return
        try:
            applied = storage.apply_round()
        except Exception:  # pragma: no cover - apply_round handles what it meets
            storage._round_log.error("applying the report spool failed", exc_info=True)
            applied = -1
        idle = applied == 0 and storage._error is None
        wait = min(wait * 2, storage.idle_wait) if idle else interval
        storage._applier_idle = idle
        del storage
