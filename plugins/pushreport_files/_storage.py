"""The files storage backend: an append-only JSON Lines log and a compact snapshot.

The folder holds three files:

``log.jsonl``
    The log. Its first line is a header, ``{"format": 1, "generation": N}``; every
    other line is one record: ``{"op": "report", ...the report's fields..., "now": T}``
    (the account password is never one of them), ``{"op": "put", ...a registration's
    JSON...}`` (``put_many``: the registration as given replaces its selector's state)
    , ``{"op": "remove", "selector": S}``, ``{"op": "forget", "token": T, "selectors":
    [...]}`` (``forget_token``: those registrations lose the token) or ``{"op": "prune",
    "before": T}`` (every registration last seen before *T* is deleted).
    A record is appended with one ``write()`` and ``fsync``-ed before the method
    returns.
``snapshot.json``
    ``{"format": 1, "generation": N, "registrations": [...]}``: the state before the
    first record of the log of generation *N*.
``lock``
    Empty; ``flock(LOCK_EX)`` on it around every write, ``LOCK_SH`` around every read.

The state is the snapshot with ``pushreport_core.merge`` folded over the log's records
(the merge rule is the core's, not re-implemented here). Each handle keeps it in memory
and, under the lock, catches up with what other processes appended since it last looked:
it keeps the log it read open, and reads on from its offset while the log's path still
names that same file (an open file's inode cannot be reused, so the comparison is safe),
else it reloads everything.

**Compaction** (after ``compact_after`` records, under ``LOCK_EX``): the snapshot of
generation *N+1* is written to a temporary file, fsync-ed and renamed over
``snapshot.json``; then a new log with the header of generation *N+1* is written,
fsync-ed and renamed over ``log.jsonl``; the folder is fsync-ed after each rename. A
reader sees either the old pair or the new one. After a crash between the two renames,
the log's generation is older than the snapshot's: the snapshot already holds all of it,
so it is ignored, and the next write starts the new log. A log newer than its snapshot
cannot happen and is an error.

**A torn last line** (a crash in the middle of an append) is what follows the last
complete record: a last line without its ``\\n``, or a last line that is not JSON. It
is ignored when reading and truncated away, under ``LOCK_EX``, before the next append.
An unreadable line anywhere else is corruption: ``StorageUnavailable``, never skipped.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar

import attrs

from pushreport.storage import NO_DATABASE_HINT, BackendOptions, Capability, StorageContext
from pushreport_core import (
    Registration,
    Report,
    StorageUnavailable,
    format_time,
    merge,
    parse_time,
    without_token,
)

T = TypeVar("T")

__all__ = [
    "FilesStorage",
    "FORMAT",
    "DEFAULT_PATH",
    "DEFAULT_COMPACT_AFTER",
    "DEFAULT_LOCK_TIMEOUT",
    "MAX_LOCK_TIMEOUT",
]

#: The ``format`` of the log header and the snapshot.
FORMAT = 1
#: ``[storage.files] path`` when unset, relative to the configuration's folder.
DEFAULT_PATH = "pushreport-data"
DEFAULT_COMPACT_AFTER = 10000
DEFAULT_LOCK_TIMEOUT = 2.0
#: A request waiting longer than this for the lock is worth less than a 503: the app
#: retries any non-2xx answer.
MAX_LOCK_TIMEOUT = 60.0

LOG = "log.jsonl"
SNAPSHOT = "snapshot.json"
LOCK = "lock"

OPTIONS_DOC = {
    "path": "the folder holding the JSON Lines log and the snapshot, relative to the "
    "configuration file's folder (default pushreport-data)",
    "compact_after": "log records after which the snapshot is rewritten (atomically: "
    "write, fsync, rename) and the log started afresh (default 10000)",
    "fsync": "fsync the log before answering 200 (default true; false survives a crash "
    "of the process but not a power loss)",
    "lock_timeout": "seconds a write waits for another process's lock before the app is "
    "answered 503 (default 2)",
}
_OPTIONS = tuple(OPTIONS_DOC)


class _Corrupt(Exception):
    """A line that cannot be read; a torn tail when it is the last one."""


def _dumps(value: Any) -> bytes:
    return (
        json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"
    ).encode("utf-8")


def _report_record(report: Report, now: datetime) -> dict[str, Any]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return {"op": "report", **report.stored_fields(), "now": format_time(now)}


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise _Corrupt from exc
    if not isinstance(record, dict):
        raise _Corrupt
    return record


def _record_registration(record: Mapping[str, Any]) -> Registration:
    return Registration.from_json({k: v for k, v in record.items() if k != "op"})


def _apply(state: dict[str, Registration], record: Mapping[str, Any]) -> None:
    """Fold one log record into *state*, with the core's merge rule."""
    op = record.get("op")
    if op == "report":
        report = Report.from_stored(record)
        selector = report.selector
        state[selector] = merge(state.get(selector), report, now=parse_time(record["now"]))
    elif op == "put":
        registration = _record_registration(record)
        state[registration.selector] = registration
    elif op == "remove":
        state.pop(record["selector"], None)
    elif op == "forget":
        token = record["token"]
        for selector in record["selectors"]:
            if selector in state:
                state[selector] = without_token(state[selector], token)
    elif op == "prune":
        before = parse_time(record["before"])
        for selector in [s for s, r in state.items() if r.last_seen < before]:
            del state[selector]
    else:
        raise _Corrupt


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.define(eq=False)
class FilesStorage:
    """A :class:`~pushreport.storage.Storage` in a folder of plain files.

    Safe across threads (one lock per handle) and processes (``flock`` on the folder's
    ``lock`` file, re-opened after ``fork()``). Every write is appended to the log and
    fsync-ed before the method returns; a lock held longer than *lock_timeout* seconds,
    or any ``OSError`` (read-only, disk full, permission), raises
    :class:`~pushreport_core.StorageUnavailable`.
    """

    #: ``[storage.files]`` options and their meaning (the generated reference).
    OPTIONS_DOC = OPTIONS_DOC

    name = "files"
    #: What it can do beyond the required protocol (:mod:`pushreport.storage`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.OPEN,
            Capability.UPSERT_MANY,
            Capability.PUT_MANY,
            Capability.COUNT,
            Capability.FIND_TOKEN,
            Capability.FORGET_TOKEN,
            Capability.PATH,
        }
    )

    path: Path = attrs.field(converter=Path)
    compact_after: int = attrs.field(default=DEFAULT_COMPACT_AFTER, kw_only=True)
    fsync: bool = attrs.field(default=True, kw_only=True)
    lock_timeout: float = attrs.field(default=DEFAULT_LOCK_TIMEOUT, converter=float, kw_only=True)
    #: Create the folder when it is missing (``StorageContext.create``); ``False``: a
    #: missing folder is an error.
    create: bool = attrs.field(default=True, kw_only=True)
    _mutex: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _pid: int = attrs.field(init=False, default=0, repr=False)
    _lock_fd: int | None = attrs.field(init=False, default=None, repr=False)
    # The log this handle has read (kept open: see the module's docstring), how far,
    # and how many records it holds; None when there is no current log.
    _log_fd: int | None = attrs.field(init=False, default=None, repr=False)
    # The snapshot read last, kept open for the same reason; None when there was none.
    _snapshot_fd: int | None = attrs.field(init=False, default=None, repr=False)
    _offset: int = attrs.field(init=False, default=0, repr=False)
    _records: int = attrs.field(init=False, default=0, repr=False)
    _generation: int = attrs.field(init=False, default=0, repr=False)
    _state: dict[str, Registration] = attrs.field(init=False, factory=dict, repr=False)
    _loaded: bool = attrs.field(init=False, default=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: StorageContext) -> FilesStorage:
        """The backend for the ``[storage.files]`` table of the configuration.

        Options: ``path`` (a folder, default ``pushreport-data``, relative to
        ``context.base_dir``, created when missing), ``compact_after`` (log records,
        default 10000), ``fsync`` (default true) and ``lock_timeout`` (seconds,
        default 2). Opens nothing yet.

        :raises ConfigurationError: an unknown option or a value of the wrong type,
            naming ``storage.files.<option>``.
        """
        opts = BackendOptions("files", options, _OPTIONS)
        path = opts.string("path", DEFAULT_PATH, what="a folder path (a non-empty string)")
        compact_after = opts.integer(
            "compact_after",
            DEFAULT_COMPACT_AFTER,
            low=1,
            high=10**9,
            what="a whole number of log records",
        )
        fsync = opts.boolean("fsync", True)
        lock_timeout = opts.number(
            "lock_timeout", DEFAULT_LOCK_TIMEOUT, low=0, high=MAX_LOCK_TIMEOUT
        )
        return cls(
            path=Path(context.base_dir, path),
            compact_after=compact_after,
            fsync=fsync,
            lock_timeout=lock_timeout,
            create=context.create,
        )

    def open(self) -> None:
        """Read the folder now (creating it, with *create*, and then checking that the
        log can be written); a failure names the folder and the reason."""
        where = f"files storage folder {self.path}"
        if self.path.exists() and not self.path.is_dir():
            raise StorageUnavailable(f"cannot open {where}: it is a file, not a folder")
        if not self.path.exists():
            for parent in self.path.parents:
                if parent.exists():
                    if not parent.is_dir():
                        raise StorageUnavailable(f"cannot open {where}: {parent} is not a folder")
                    break
            if not self.create:
                raise StorageUnavailable(f"{where} does not exist ({NO_DATABASE_HINT})")
        try:
            if self.create:
                self.ping()
            else:
                self._locked(fcntl.LOCK_SH, lambda: None)
        except StorageUnavailable as exc:
            raise StorageUnavailable(f"cannot open {where}: {exc}") from None

    # -- files and locks ---------------------------------------------------------------

    def _forget_files(self) -> None:
        for fd in (self._lock_fd, self._log_fd, self._snapshot_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._lock_fd = self._log_fd = self._snapshot_fd = None
        self._loaded = False

    def _flock(self, mode: int) -> None:
        """Take the folder's lock, polling until *lock_timeout*."""
        if self._closed:
            raise StorageUnavailable("files storage is closed")
        if self._pid != os.getpid():
            # After fork(): the inherited descriptions are shared with the parent, and
            # so would be its lock. Open our own.
            self._forget_files()
            self._pid = os.getpid()
        if self._lock_fd is None:
            if self.create:
                self.path.mkdir(parents=True, exist_ok=True)
            elif not self.path.is_dir():
                raise StorageUnavailable("files storage folder does not exist")
            self._lock_fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0005
        while True:
            try:
                fcntl.flock(self._lock_fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageUnavailable(
                        "files storage is locked", retry_after=max(1, math.ceil(self.lock_timeout))
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)

    def _locked(self, mode: int, action: Callable[[], T]) -> T:
        with self._mutex:
            try:
                self._flock(mode)
                try:
                    self._catch_up()
                    return action()
                finally:
                    if self._lock_fd is not None:
                        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise StorageUnavailable(f"files storage failed: {exc.strerror or exc}") from exc

    # -- reading -----------------------------------------------------------------------

    def _same(self, name: str, fd: int | None) -> bool:
        """Whether *name* in the folder is the open file *fd* (both absent: the same)."""
        try:
            current = os.stat(self.path / name)
        except FileNotFoundError:
            return fd is None
        if fd is None:
            return False
        mine = os.fstat(fd)
        return (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev)

    def _catch_up(self) -> None:
        """Bring the state up to the files on disk (under the lock)."""
        if self._loaded and self._same(SNAPSHOT, self._snapshot_fd):
            if self._log_fd is not None and self._same(LOG, self._log_fd):
                self._read_log(self._state)
                return
            if self._log_fd is None and not (self.path / LOG).exists():
                return
        self._reload()

    def _reload(self) -> None:
        for fd in (self._log_fd, self._snapshot_fd):
            if fd is not None:
                os.close(fd)
        self._log_fd = self._snapshot_fd = None
        self._loaded = False
        state: dict[str, Registration] = {}
        generation = 0
        try:
            self._snapshot_fd = os.open(self.path / SNAPSHOT, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        else:
            size = os.fstat(self._snapshot_fd).st_size
            data = os.pread(self._snapshot_fd, size, 0)
            try:
                snapshot = json.loads(data)
                if snapshot.get("format") != FORMAT:
                    raise ValueError("format")
                generation = int(snapshot["generation"])
                for item in snapshot["registrations"]:
                    registration = Registration.from_json(item)
                    state[registration.selector] = registration
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                raise StorageUnavailable("files storage snapshot cannot be read") from exc
        self._state, self._generation, self._offset, self._records = state, generation, 0, 0
        try:
            fd = os.open(self.path / LOG, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            self._loaded = True
            return
        try:
            header_line = os.pread(fd, 4096, 0).split(b"\n", 1)
            if len(header_line) < 2:
                raise _Corrupt
            header = _parse_line(header_line[0])
            if header.get("format") != FORMAT:
                raise _Corrupt
            log_generation = int(header["generation"])
        except (_Corrupt, KeyError, TypeError, ValueError) as exc:
            os.close(fd)
            raise StorageUnavailable("files storage log header cannot be read") from exc
        if log_generation > generation:
            os.close(fd)
            raise StorageUnavailable("files storage log is newer than its snapshot")
        if log_generation < generation:
            # A crash between the two renames of a compaction: the snapshot holds it all.
            os.close(fd)
            self._loaded = True
            return
        self._log_fd, self._offset = fd, len(header_line[0]) + 1
        self._loaded = True
        self._read_log(state)

    def _read_log(self, state: dict[str, Registration]) -> None:
        """Fold the log's records past the offset into *state* (under the lock)."""
        assert self._log_fd is not None
        size = os.fstat(self._log_fd).st_size
        if size <= self._offset:
            return
        data = os.pread(self._log_fd, size - self._offset, self._offset)
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail: after the last "\n" (torn or b"")
        for index, line in enumerate(complete):
            try:
                record = _parse_line(line)
                _apply(state, record)
            except (_Corrupt, KeyError, TypeError, ValueError) as exc:
                if index == len(complete) - 1 and not tail:
                    return  # a torn last line: ignored, truncated before the next append
                raise StorageUnavailable(
                    f"files storage log is corrupt at byte {self._offset}"
                ) from exc
            self._offset += len(line) + 1
            self._records += 1
        del tail

    # -- writing -----------------------------------------------------------------------

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    def _replace(self, name: str, content: bytes) -> None:
        """Write *content* to *name* atomically: a temporary file, fsync, rename."""
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            self._sync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path / name)
        if self.fsync:
            _fsync_dir(self.path)

    def _start_log(self) -> None:
        """A new, empty log of the current generation (under ``LOCK_EX``)."""
        self._replace(LOG, _dumps({"format": FORMAT, "generation": self._generation}))
        self._reload()

    def _append(self, lines: list[bytes]) -> None:
        """Append *lines* with one write and one fsync (under ``LOCK_EX``).

        On failure nothing of them stays in the log.
        """
        if self._log_fd is None:
            self._start_log()
        fd = self._log_fd
        assert fd is not None
        if os.fstat(fd).st_size != self._offset:
            os.ftruncate(fd, self._offset)  # the torn tail of a crashed append
        data = b"".join(lines)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "short write")
            self._sync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._offset)
            except OSError:
                pass
            raise
        self._offset += len(data)
        self._records += len(lines)

    def _maybe_compact(self) -> None:
        """Compact after *compact_after* records (under ``LOCK_EX``, after an append).

        The append is durable already: a failure here is not the caller's, so it is
        swallowed, and the next call reloads from whatever the disk holds (see the
        module's docstring: every crash point leaves a readable pair).
        """
        if self._records < self.compact_after:
            return
        registrations = [self._state[s].to_json() for s in sorted(self._state)]
        try:
            self._generation += 1
            self._replace(
                SNAPSHOT,
                json.dumps(
                    {
                        "format": FORMAT,
                        "generation": self._generation,
                        "registrations": registrations,
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                ).encode("utf-8"),
            )
            self._start_log()
        except (OSError, StorageUnavailable):
            self._loaded = False

    def _upsert_locked(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        changed: dict[str, Registration] = {}  # applied to the state once in the log
        lines, results = [], []
        for report, now in items:
            record = _report_record(report, now)
            selector = report.selector
            stored = changed[selector] if selector in changed else self._state.get(selector)
            changed[selector] = merge(stored, Report.from_stored(record), now=now)
            lines.append(_dumps(record))
            results.append(changed[selector])
        if lines:
            self._append(lines)
            self._state.update(changed)
            self._maybe_compact()
        return results

    # -- Storage -----------------------------------------------------------------------

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* into its selector's registration; in the log on return."""
        (registration,) = self.upsert_many([(report, now)])
        return registration

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every ``(report, now)`` with one append and one fsync.

        All or nothing: on failure nothing of the batch is stored and
        ``StorageUnavailable`` is raised. Reports of one selector are merged in order.
        """
        items = list(items)
        return self._locked(fcntl.LOCK_EX, lambda: self._upsert_locked(items))

    def put_many(self, registrations: Sequence[Registration]) -> None:
        """Store *registrations* exactly as given (``first_seen``, ``last_seen`` and
        ``reports`` included), replacing any state of the same selector: ``put``
        records, with one append and one fsync. All or nothing."""
        lines = [_dumps({"op": "put", **r.to_json()}) for r in registrations]

        def put_locked() -> None:
            if not lines:
                return
            self._append(lines)
            for r in registrations:
                self._state[r.selector] = r
            self._maybe_compact()

        self._locked(fcntl.LOCK_EX, put_locked)

    def get(self, selector: str) -> Registration | None:
        return self._locked(fcntl.LOCK_SH, lambda: self._state.get(selector))

    def find(self, *, username: str | None = None) -> list[Registration]:
        def select() -> list[Registration]:
            return [
                self._state[s]
                for s in sorted(self._state)
                if username is None or self._state[s].username == username
            ]

        return self._locked(fcntl.LOCK_SH, select)

    def __iter__(self) -> Iterator[Registration]:
        # A copy: a caller may remove() while iterating.
        return iter(self.find())

    def remove(self, selector: str) -> bool:
        def remove_locked() -> bool:
            if selector not in self._state:
                return False
            self._append([_dumps({"op": "remove", "selector": selector})])
            del self._state[selector]
            self._maybe_compact()
            return True

        return self._locked(fcntl.LOCK_EX, remove_locked)

    def count(self) -> int:
        """How many registrations are stored (the ``pushreport_registrations`` gauge)."""
        return self._locked(fcntl.LOCK_SH, lambda: len(self._state))

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* where it is held: one ``forget`` record naming the registrations
        changed, appended and fsync-ed. The selectors changed, sorted."""

        def forget_locked() -> list[str]:
            candidates = sorted(self._state) if selector is None else [selector]
            changed = [
                s
                for s in candidates
                if s != keep
                and s in self._state
                and token in (self._state[s].token_calls, self._state[s].token_msgs)
            ]
            if changed:
                record = {"op": "forget", "token": token, "selectors": changed}
                self._append([_dumps(record)])
                _apply(self._state, record)
                self._maybe_compact()
            return changed

        return self._locked(fcntl.LOCK_EX, forget_locked)

    def find_token(self, token: str) -> list[Registration]:
        def select() -> list[Registration]:
            return [
                self._state[s]
                for s in sorted(self._state)
                if token in (self._state[s].token_calls, self._state[s].token_msgs)
            ]

        return self._locked(fcntl.LOCK_SH, select)

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete the registrations last seen before *before*: one ``prune`` record,
        appended and fsync-ed (all or nothing, even torn). Those deleted, by selector."""
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")

        def prune_locked() -> list[Registration]:
            gone = [
                self._state[s] for s in sorted(self._state) if self._state[s].last_seen < before
            ]
            if gone and not dry_run:
                record = {"op": "prune", "before": format_time(before)}
                self._append([_dumps(record)])
                _apply(self._state, record)
                self._maybe_compact()
            return gone

        return self._locked(fcntl.LOCK_SH if dry_run else fcntl.LOCK_EX, prune_locked)

    def ping(self) -> None:
        """Take the write lock and make sure the log exists and can be written."""

        def check() -> None:
            if self._log_fd is None:
                self._start_log()
            os.fstat(self._log_fd)  # type: ignore[arg-type]
            if not os.access(self.path / LOG, os.W_OK):
                raise StorageUnavailable("files storage log is read-only")

        self._locked(fcntl.LOCK_EX, check)

    def close(self) -> None:
        """Close the files; the object is not used afterwards."""
        with self._mutex:
            self._closed = True
            if self._pid == os.getpid():
                self._forget_files()
            self._state = {}
