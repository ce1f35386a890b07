"""The report spool's files: reports appended to a file of their process's, read back in
the order received. :class:`pushreport.spool.SpooledStorage` is the storage side.

A report answered 200 must survive a crash of the process (a backend's ``normal``
durability) or a power loss (``full``). One ``write()`` to a file does the first: once it
returns the bytes are the kernel's, whatever happens to the process; with an
``fdatasync()`` after it, the disk's. So a report writer appends one line to its spool
file and answers; a background thread of every process applies what the spool files
hold to the backend, many reports per transaction, and the backend records in that
same transaction how far it got (:class:`pushreport.storage.SpoolTarget`).

Files: ``<folder>/<pid>-<random>.jsonl``, one per writing process, holding a shared
``flock`` for as long as the process writes to it: a file nobody holds is finished and
is deleted once applied. A line is one report (a JSON array, see :func:`encode`); a
line without its final newline is a write cut short (a full disk, a power loss before
the ``fdatasync``): nobody was answered 200 for it, and it is never applied.

An entry named like a spool file that is not a regular file (a directory, a FIFO, a
symbolic link: :meth:`SpoolFiles.append` never makes one) cannot hold a report and is
moved into ``<folder>/unreadable/``. A regular file that cannot be read may hold
reports answered 200, so it is left where it is and the applier fails until it can
read it.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import logging
import operator
import os
import re
import secrets
import stat
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import attrs

from pushreport_core import REPORTED_FIELDS, Report, format_time, parse_time

__all__ = [
    "SpoolFiles",
    "Unsynced",
    "current_pid",
    "Item",
    "encode",
    "encode_report",
    "in_time_order",
    "lines_in_time_order",
    "line_time",
    "DecodedLines",
    "FIELDS",
    "ROTATE_BYTES",
    "UNREADABLE",
]

#: A report as the spool holds it: the report, and when it was received.
Item = tuple[Report, datetime]

#: The report's stored fields (:data:`~pushreport_core.REPORTED_FIELDS`), in the order a
#: spool line holds them, then when the report was received. On disk: a spool written by
#: one version is applied by the next.
STORED = REPORTED_FIELDS
FIELDS = (*STORED, "now")
_EXTRA = STORED.index("extra")
_stored_values = operator.attrgetter(*STORED)
#: A writer starts a new file once its current one is this long; the old one is deleted
#: once applied, so the spool holds at most about this much per process beyond what is
#: waiting to be applied.
ROTATE_BYTES = 4 << 20
SUFFIX = ".jsonl"
#: Added to a new file's name until it is locked (an applier lists ``*.jsonl`` only).
NEW = ".new"
#: The folder inside the spool that entries which are not spool files are moved to.
UNREADABLE = "unreadable"
#: :meth:`SpoolFiles.backlog` reads a file this much at a time, and a first line up to
#: this long (a report line is about 220 bytes).
_BLOCK = 1 << 20
_FIRST_LINE = 1 << 20


# Made once: json.dumps/json.loads with arguments build a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_EXTRA_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_DECODER = json.JSONDecoder()


def encode(values: Sequence[Any]) -> bytes:
    """One spool line: the values of :data:`FIELDS` in order, as a JSON array,
    newline-terminated and UTF-8 (strictly: a value that cannot be stored fails here,
    before it is spooled).

    JSON escapes every newline inside a string, so the last byte is the only newline.
    """
    return (_ENCODER.encode(values) + "\n").encode()


def encode_report(report: Report, now: datetime) -> bytes:
    """The spool line of *report* received at *now* (an aware datetime): ``extra`` as
    a JSON object in text (its keys sorted), *now* as :func:`~pushreport_core.format_time`
    gives it. Never the password: it is not a stored field.

    :raises ValueError: *now* is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    values = list(_stored_values(report))
    extra = values[_EXTRA]
    values[_EXTRA] = _EXTRA_ENCODER.encode(extra) if extra else "{}"
    values.append(format_time(now))
    return encode(values)


def decode(line: str) -> Item:
    """The report and time of one spool line (as :func:`encode_report` writes it).

    :raises ValueError: it is not one (``UnicodeDecodeError`` and ``JSONDecodeError``
        are ``ValueError`` too).
    """
    values = _DECODER.decode(line)
    if type(values) is not list or len(values) != len(FIELDS):
        raise ValueError("not a spool line")
    now = values.pop()
    extra = values[_EXTRA]
    if extra == "{}":
        values[_EXTRA] = {}
    elif type(extra) is not str or type(extra := json.loads(extra)) is not dict:
        raise ValueError("not a spool line: extra")
    else:
        values[_EXTRA] = extra
    if type(now) is not str or type(values[0]) is not str:
        raise ValueError("not a spool line")
    return Report(**dict(zip(STORED, values))), parse_time(now)


def _forked() -> None:
    global _pid
    _pid = os.getpid()


#: This process's id, as :func:`current_pid` gives it (kept by a fork hook).
_pid = os.getpid()
os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """``os.getpid()`` without its system call (glibc no longer caches it): the writers
    and the spool ask it on every report, to tell a forked child from its parent."""
    return _pid


class _Syncs:
    """The ``fdatasync`` calls of one open spool file (group commit): lines are counted
    as written, and as synced once a sync that *began* after their write returned."""

    __slots__ = ("fd", "pid", "written", "synced", "syncing", "error")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        #: Lines written to the file, and how many of them a finished sync covers.
        self.written = 0
        self.synced = 0
        #: A leader is in ``fdatasync`` (without the lock) right now.
        self.syncing = False
        #: A sync failed: the file is poisoned. After an EIO the kernel may have dropped
        #: the dirty pages and a second fdatasync can succeed with them lost (PostgreSQL's
        #: "fsyncgate"), so it is never synced again and every line not yet covered fails.
        self.error: OSError | None = None

    def covers(self, line: int) -> bool:
        """Whether line number *line* is on disk now (never blocks).

        :raises OSError: a sync that did not cover it failed: it never will be (each
            caller gets an exception of its own: a shared one would gather every
            thread's traceback).
        """
        if self.synced >= line:
            return True
        if self.error is not None:
            raise OSError(self.error.errno, f"report spool sync failed: {self.error}")
        return False


class Unsynced:
    """A line :meth:`SpoolFiles.append` wrote with *defer*: on disk once
    :meth:`synced` says so. :meth:`sync` waits for it on the calling thread, leading or
    joining the file's group commit (one ``fdatasync`` for every line written before
    it began), so that many such lines share one sync."""

    __slots__ = ("files", "syncs", "line")

    def __init__(self, files: SpoolFiles, syncs: _Syncs, line: int) -> None:
        self.files = files
        self.syncs = syncs
        self.line = line

    def synced(self) -> bool:
        """Whether the line is on disk now (never blocks).

        :raises OSError: a sync that did not cover it failed: it never will be.
        """
        return self.syncs.covers(self.line)

    def sync(self) -> None:
        """Return once the line is on disk (blocks for a sync).

        :raises OSError: as :meth:`synced`.
        """
        files = self.files
        with files._lock:
            files._wait_synced(self.syncs, self.line)


@attrs.define(eq=False)
class SpoolFiles:
    """The spool folder of one backend, as seen from one process.

    :meth:`append` is the writers' side (thread-safe; after a ``fork()`` the child
    starts a file of its own). :meth:`read_lines` and :meth:`finished` are the applier's.

    With *fsync*, appends of concurrent threads share their ``fdatasync`` (group
    commit): each writer writes its line under the lock; then one of them, the leader,
    syncs once, without the lock, for every line written before its sync began, while
    the lines written meanwhile wait for the next sync; a writer returns once a sync
    that began after its write has returned. A failed sync fails every writer whose
    line it did not cover, and every later one of that file (see :class:`_Syncs`).
    """

    folder: Path
    fsync: bool = False
    #: Where its lines about the files go (the wrapped backend's logger).
    log: logging.Logger = attrs.field(default=logging.getLogger("pushreport.spool"), kw_only=True)
    #: A writer starts a new file once its current one is this long.
    rotate_bytes: int = attrs.field(default=ROTATE_BYTES, kw_only=True)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    #: Writers waiting for a sync wait on this (over ``_lock``).
    _synced: threading.Condition = attrs.field(init=False)
    _syncs: _Syncs | None = attrs.field(init=False, default=None)
    _fd: int | None = attrs.field(init=False, default=None)
    _pid: int = attrs.field(init=False, default=0)
    _name: str = attrs.field(init=False, default="")
    _written: int = attrs.field(init=False, default=0)
    #: Bytes this process has appended in all (the applier's measure of what it owes).
    appended: int = attrs.field(init=False, default=0)

    @_synced.default
    def _condition(self) -> threading.Condition:
        return threading.Condition(self._lock)

    #: fdatasync calls made, for the curious (tests, benchmarks).
    syncs: int = attrs.field(init=False, default=0)

    @property
    def own(self) -> str:
        """The name of this process's current file ("" before its first append)."""
        return self._name if self._pid == current_pid() else ""

    def append(self, line: bytes, *, defer: bool = False) -> Unsynced | None:
        """Append *line* to this process's file; with *fsync*, on disk when it returns,
        or, with *defer*, once the :class:`Unsynced` it returns says so (an event loop
        writes on the loop and waits for the sync without holding it up).

        :raises OSError: nothing was acknowledged; a line cut short is never applied,
            and the next append starts a new file so that it cannot follow one.
        """
        with self._lock:
            fd = self._fd if self._pid == current_pid() else None
            while fd is None or self._written >= self.rotate_bytes:
                if self._quiesce():  # a sync was under way: things may have changed
                    fd = self._fd if self._pid == current_pid() else None
                    continue
                fd = self._start()
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write to the report spool")
            except OSError:
                self._quiesce()
                if self._fd == fd:  # (else another writer has started a new file)
                    self._drop()
                raise
            self._written += written
            self.appended += written
            if self.fsync:
                syncs = self._syncs
                assert syncs is not None and syncs.fd == fd
                syncs.written += 1
                if defer:
                    return Unsynced(self, syncs, syncs.written)
                self._wait_synced(syncs, syncs.written)
        return None

    def _wait_synced(self, syncs: _Syncs, line: int) -> None:
        """Return once line number *line* of *syncs*' file is on disk: lead a sync when
        nobody is syncing, else wait for the one under way and check again (a sync
        under way may have begun before the line was written). Called with the lock
        held; a leader lets go of it while it syncs.

        :raises OSError: a sync that did not cover *line* failed (:meth:`_Syncs.covers`).
        """
        while not syncs.covers(line):
            if syncs.syncing:
                self._synced.wait()
                continue
            syncs.syncing = True
            target = syncs.written  # every line written before the sync begins
            error: OSError | None = None
            self._lock.release()
            try:
                os.fdatasync(syncs.fd)
            except OSError as exc:
                error = exc
            finally:
                self._lock.acquire()
                syncs.syncing = False
                self.syncs += 1
                self._synced.notify_all()
            if error is not None:
                syncs.error = error
                if self._syncs is syncs:
                    self._drop()  # the next append starts a new file
            else:
                syncs.synced = max(syncs.synced, target)

    def _start(self) -> int:
        """Open a new file of this process's (the old one, if any, is finished).

        It is made under a name no applier looks at, locked, and only then given its
        spool file's name: an applier that sees the name sees it held ("still being
        written"). Locked after it had its name, an applier's probe in between found
        an empty file nobody held, and deleted it under its writer (57 reports of
        3,000 lost in tests/plugins/sqlite/test_spool_faults.py, with a file each).
        """
        self._drop()
        self.folder.mkdir(mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        new = self.folder / f"{name}{NEW}"
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # nobody knows of it yet
            os.rename(new, self.folder / name)
            if self.fsync:  # the file's name must survive a power loss too
                folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(new)
            except OSError:
                pass
            raise
        self._fd, self._pid, self._name, self._written = fd, os.getpid(), name, 0
        self._syncs = _Syncs(fd) if self.fsync else None
        return fd

    def _quiesce(self) -> bool:
        """Wait until no sync of this process's file is under way (the lock held): its
        leader uses the descriptor without the lock. Whether it had to wait (then
        another writer may have started a new file meanwhile)."""
        waited = False
        while (syncs := self._syncs) is not None and syncs.syncing and syncs.pid == os.getpid():
            self._synced.wait()
            waited = True
        return waited

    def _drop(self) -> None:
        """Close this process's file (the lock held, no sync under way: see
        :meth:`_quiesce`). With *fsync*, its lines written and not yet synced are
        synced first."""
        syncs, self._syncs = self._syncs, None
        if syncs is not None and syncs.pid == os.getpid():
            if syncs.error is None and syncs.synced < syncs.written:
                try:
                    os.fdatasync(syncs.fd)
                    syncs.synced = syncs.written
                except OSError as exc:
                    syncs.error = exc
                self.syncs += 1
                self._synced.notify_all()
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)  # releases its flock: the file is finished
            except OSError:
                pass
        self._name = ""

    def close(self) -> None:
        with self._lock:
            self._quiesce()
            self._drop()

    def __del__(self) -> None:
        # Dropped without close(): let go of the file (and its lock) all the same. No
        # writer can be waiting on it any more: nobody holds it.
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

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
            self.log.debug("the report spool %s cannot be read by this user", self.folder)
            return []

    def scan(self, names: Iterable[str]) -> tuple[dict[str, int], list[str]]:
        """The length of each of *names* that is a regular file, and the names of those
        that are something else (never made by :meth:`append`: see :meth:`set_aside`).
        Names gone meanwhile are in neither."""
        sizes, strays = {}, []
        for name in names:
            try:
                st = os.lstat(self.folder / name)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                sizes[name] = st.st_size
            else:
                strays.append(name)
        return sizes, strays

    def sizes(self, names: Iterable[str]) -> dict[str, int]:
        return self.scan(names)[0]

    def set_aside(self, name: str) -> Path:
        """Move the entry *name* into ``unreadable/`` (under another name if that one
        is taken); the folder it went to.

        :raises OSError: it cannot be moved (the spool folder is read-only).
        """
        aside = self.folder / UNREADABLE
        aside.mkdir(mode=0o700, exist_ok=True)
        target = aside / name
        if os.path.lexists(target):
            target = aside / f"{name}.{secrets.token_hex(4)}"
        os.rename(self.folder / name, target)
        return aside

    def decode_lines(self, name: str, lines: Iterable[bytes]) -> list[Item]:
        """The reports of *lines* of file *name*; a line that is not one is skipped, and
        said so."""
        reports = []
        for line in lines:
            try:
                reports.append(decode(line.decode()))
            except (ValueError, TypeError):
                # Not written by append(): skipped rather than stopping the spool.
                self.log.error("%s: a line that is not a spooled report is skipped", name)
        return reports

    def read_lines(self, name: str, offset: int) -> tuple[list[bytes], int, int]:
        """The complete lines of *name* from *offset*, as they are in the file (without
        their newline; :meth:`decode_lines` gives their reports), the offset after the
        last of them (a line still being written, or cut short, stays) and the file's
        length as read.

        :raises OSError: it cannot be read, or is no longer a regular file (never
            waits: no symbolic link is followed, a FIFO is not waited on).
        """
        try:
            fd = os.open(
                self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except FileNotFoundError:
            return [], offset, offset
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(self.folder / name))
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        return data[:end].split(b"\n")[:-1], offset + end, offset + len(data)

    def backlog(self, marks: Mapping[str, int]) -> tuple[int, int, datetime | None]:
        """What waits in the spool past *marks* (the backend's ``spool_marks()``): the
        complete lines, the bytes (lines being written included: what ``max_bytes``
        bounds), and when the oldest waiting report was received (``None``: nothing
        waits). Reads only what is not yet applied, a block at a time; a file that
        cannot be read counts as nothing."""
        lines = size = 0
        oldest: datetime | None = None
        sizes, _ = self.scan(self.names())
        for name, length in sizes.items():
            start = marks.get(name, 0)
            if length <= start:
                continue
            size += length - start
            try:
                fd = os.open(
                    self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                )
            except OSError:
                continue
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                f.seek(start)
                first = f.readline(_FIRST_LINE)
                if not first.endswith(b"\n"):
                    continue  # being written (or cut short): no complete line yet
                lines += 1
                try:
                    received = decode(first.decode())[1]
                except (ValueError, TypeError):
                    received = None  # not a spooled report: the applier skips it too
                if received is not None and (oldest is None or received < oldest):
                    oldest = received
                while block := f.read(_BLOCK):
                    lines += block.count(b"\n")
        return lines, size, oldest

    def finished(self, name: str) -> bool:
        """Nobody writes to *name* any more (its writer closed it or is gone)."""
        if name == self.own:
            return False
        try:
            fd = os.open(
                self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except FileNotFoundError:
            return True
        except OSError:
            return False  # not ours to judge: it stays
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


#: The end of a line as :func:`encode_report` writes it: the time received (as
#: :func:`~pushreport_core.format_time` writes it, fixed width: text order is time
#: order), closing the array.
_LINE_END = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"\]')


def line_time(line: bytes) -> bytes | None:
    """The time a spool line (without its newline) says its report was received, as
    text, read off its end without decoding it; ``None`` when it does not end so."""
    return line[-29:-2] if _LINE_END.fullmatch(line, len(line) - 30) else None


def lines_in_time_order(
    files: Iterable[tuple[str, list[bytes]]],
) -> list[tuple[str, bytes]] | None:
    """The lines of every file (its name, its lines), merged by the time received as
    :func:`in_time_order` merges the decoded reports, each with its file's name; ``None``
    when a line's time cannot be read off its end (it is decoded then)."""
    keyed = []
    for name, lines in files:
        times = [line_time(line) for line in lines]
        if None in times:
            return None
        keyed.append(list(zip(times, [name] * len(lines), lines)))
    return [(name, line) for _, name, line in heapq.merge(*keyed, key=_first)]


_first = operator.itemgetter(0)


class DecodedLines(Sequence[Item]):
    """The reports of spool lines (``(file name, line)``), decoded when first asked
    for: a backend that applies the lines themselves never pays for it."""

    def __init__(self, files: SpoolFiles, lines: Sequence[tuple[str, bytes]]) -> None:
        self._files = files
        self._lines = lines
        self._items: list[Item] | None = None

    def _decoded(self) -> list[Item]:
        if self._items is None:
            items: list[Item] = []
            for name, line in self._lines:
                items.extend(self._files.decode_lines(name, (line,)))
            self._items = items
        return self._items

    def __len__(self) -> int:
        return len(self._decoded())

    def __getitem__(self, index: Any) -> Any:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._decoded())


def in_time_order(batches: Iterable[list[Item]]) -> Iterator[Item]:
    """The reports of every file, merged by the time they were received; each file's
    own order kept (its writer appended them in that order)."""
    return heapq.merge(*batches, key=operator.itemgetter(1))
