"""The report spool: reports appended to a file of their process's, applied in batches.

A report answered 200 must survive a crash of the process (``synchronous = "normal"``)
or a power loss (``"full"``). One ``write()`` to a file does the first: once it returns
the bytes are the kernel's, whatever happens to the process; with an ``fdatasync()``
after it, the disk's. Committing each report to SQLite from the request does both too,
but costs a transaction per request, a write lock the two workers queue for and a page
cache that the other worker's commit has just emptied (measured: ~80 µs against ~8 µs
for the append). So a report writer appends one line to its spool file and answers; a
background thread of every process applies what the spool files hold to the database,
many reports per transaction, and records in that same transaction how far it got.

Files: ``<db>.spool/<pid>-<random>.jsonl``, one per writing process, holding a shared
``flock`` for as long as the process writes to it: a file nobody holds is finished and
is deleted once applied. A line is one report (a JSON array, see :func:`encode`); a
line without its final newline is a write cut short (a full disk, a power loss before
the ``fdatasync``): nobody was answered 200 for it, and it is never applied.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import attrs

from pushreport_core import REGISTRATION_FIELDS

__all__ = ["Spool", "encode", "FIELDS", "ROTATE_BYTES"]

log = logging.getLogger("pushreport.sqlite")

#: The upsert's parameters, in the order a spool line holds them.
FIELDS = (
    *(f for f in REGISTRATION_FIELDS if f not in ("first_seen", "last_seen", "reports")),
    "now",
)
#: A writer starts a new file once its current one is this long; the old one is deleted
#: once applied, so the spool holds at most about this much per process beyond what is
#: waiting to be applied.
ROTATE_BYTES = 4 << 20
SUFFIX = ".jsonl"


# Made once: json.dumps/json.loads with arguments build a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


def encode(values: Sequence[Any]) -> bytes:
    """One spool line: the upsert's parameters in the order of :data:`FIELDS`, as a
    JSON array, newline-terminated and UTF-8 (strictly: a value that cannot be stored
    fails here, before it is spooled).

    JSON escapes every newline inside a string, so the last byte is the only newline.
    """
    return (_ENCODER.encode(values) + "\n").encode()


def decode(line: str) -> dict[str, Any]:
    values = _DECODER.decode(line)
    if not isinstance(values, list) or len(values) != len(FIELDS):
        raise ValueError("not a spool line")
    return dict(zip(FIELDS, values))


@attrs.define(eq=False)
class Spool:
    """The spool folder of one database file, as seen from one process.

    :meth:`append` is the writers' side (thread-safe; after a ``fork()`` the child
    starts a file of its own). :meth:`read` and :meth:`finished` are the applier's.
    """

    folder: Path
    fsync: bool = False
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _fd: int | None = attrs.field(init=False, default=None)
    _pid: int = attrs.field(init=False, default=0)
    _name: str = attrs.field(init=False, default="")
    _written: int = attrs.field(init=False, default=0)

    @property
    def own(self) -> str:
        """The name of this process's current file ("" before its first append)."""
        return self._name if self._pid == os.getpid() else ""

    def append(self, line: bytes) -> None:
        """Append *line* to this process's file; with *fsync*, on disk when it returns.

        :raises OSError: nothing was acknowledged; a line cut short is never applied,
            and the next append starts a new file so that it cannot follow one.
        """
        with self._lock:
            fd = self._fd if self._pid == os.getpid() else None
            if fd is None or self._written >= ROTATE_BYTES:
                fd = self._start()
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write to the report spool")
                if self.fsync:
                    os.fdatasync(fd)
            except OSError:
                self._drop()
                raise
            self._written += written

    def _start(self) -> int:
        """Open a new file of this process's (the old one, if any, is finished)."""
        self._drop()
        self.folder.mkdir(mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        fd = os.open(
            self.folder / name,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # "still being written": not to be deleted
            if self.fsync:  # the file's name must survive a power loss too
                folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._pid, self._name, self._written = fd, os.getpid(), name, 0
        return fd

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)  # releases its flock: the file is finished
            except OSError:
                pass
        self._name = ""

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __del__(self) -> None:
        # Dropped without close(): let go of the file (and its lock) all the same.
        self._drop()

    # -- the applier's side --------------------------------------------------------

    def names(self) -> list[str]:
        """The spool files there are now, oldest process first."""
        try:
            return sorted(n for n in os.listdir(self.folder) if n.endswith(SUFFIX))
        except FileNotFoundError:
            return []
        except PermissionError:
            # Another user's spool (a reader that may not see it, e.g. `pushreport list`
            # run as someone else): what is applied is all this process can read.
            log.debug("the report spool %s cannot be read by this user", self.folder)
            return []

    def sizes(self, names: Iterable[str]) -> dict[str, int]:
        sizes = {}
        for name in names:
            try:
                sizes[name] = os.stat(self.folder / name).st_size
            except FileNotFoundError:
                pass
        return sizes

    def read(self, name: str, offset: int) -> tuple[list[dict[str, Any]], int, int]:
        """The complete lines of *name* from *offset*: their reports, the offset after
        the last of them (a line still being written, or cut short, stays) and the
        file's length as read."""
        try:
            with open(self.folder / name, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset, offset
        end = data.rfind(b"\n") + 1
        reports = []
        for line in data[:end].split(b"\n")[:-1]:
            try:
                reports.append(decode(line.decode()))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                # Not written by append(): skipped rather than stopping the spool.
                log.error("%s: a line that is not a spooled report is skipped", name)
        return reports, offset + end, offset + len(data)

    def finished(self, name: str) -> bool:
        """Nobody writes to *name* any more (its writer closed it or is gone)."""
        if name == self.own:
            return False
        try:
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # releases the probe's lock

    def exists(self, name: str) -> bool:
        return os.path.exists(self.folder / name)

    def delete(self, name: str) -> None:
        try:
            os.unlink(self.folder / name)
        except FileNotFoundError:
            pass

    # -- what the appliers of all processes tell each other -------------------------
    # Two empty files: the time of ``applied`` is when a background round last went
    # through the whole spool, so that the other processes' rounds can skip theirs
    # (one full round per interval in all, not one per process); ``failing`` exists
    # while a round finds the database unwritable, so that no process skips then and
    # each one learns to refuse reports.

    def round_done(self, *, ok: bool) -> None:
        """Record a background round: its time when it went through, else the fault."""
        try:
            if ok:
                (self.folder / "applied").touch()
                if (self.folder / "failing").exists():
                    (self.folder / "failing").unlink(missing_ok=True)
            else:
                (self.folder / "failing").touch()
        except OSError:
            pass  # a hint only: without it every process runs its own rounds

    def done_within(self, seconds: float) -> bool:
        """Another process went through the spool less than *seconds* ago, and no
        round since has found the database failing."""
        try:
            if (self.folder / "failing").exists():
                return False
            return time.time() - os.stat(self.folder / "applied").st_mtime < seconds
        except OSError:
            return False


def in_time_order(batches: Iterable[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The reports of every file, merged by the time they were received; each file's
    own order kept (its writer appended them in that order)."""
    return heapq.merge(*batches, key=lambda params: params["now"])
