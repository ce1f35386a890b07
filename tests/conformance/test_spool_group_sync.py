"""Group commit of the report spool (``synchronous = "full"``): appends of concurrent
threads share one ``fdatasync``; each returns only once a sync that began after its
write has returned, and a failed sync fails every writer it did not cover and poisons
its file (never synced again). Real files in tmp_path; the sync itself is the real
``os.fdatasync``, wrapped to record what it covered (and to fail, for the faults)."""

from __future__ import annotations

import errno
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from pushreport._spool import SpoolFiles
from pushreport.spool import SpooledStorage
from pushreport.testing import MemoryStorage, MemoryStore
from pushreport_core import Report, StorageUnavailable

THREADS = 16
PER_THREAD = 25


class Recorder:
    """``os.fdatasync`` wrapped: each call's file and the file's length when it began,
    recorded once it returned (``done``) or failed (``failed``). *hold* runs inside
    each call before the real sync (to let writers pile up, or to fail)."""

    def __init__(self, hold: Callable[[int], None] = lambda n: None) -> None:
        self.real = os.fdatasync
        self.hold = hold
        self.lock = threading.Lock()
        self.calls = 0
        self.done: list[tuple[str, int]] = []
        self.failed: list[tuple[str, int]] = []
        self.after_failure: list[str] = []

    def __call__(self, fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        size = os.fstat(fd).st_size
        with self.lock:
            self.calls += 1
            n = self.calls
            if self.failed:
                self.after_failure.append(name)
        try:
            self.hold(n)
            self.real(fd)
        except OSError:
            with self.lock:
                self.failed.append((name, size))
            raise
        with self.lock:
            self.done.append((name, size))

    def covered(self) -> dict[str, int]:
        """How far each file is on disk: the longest length a sync that returned began at."""
        with self.lock:
            out: dict[str, int] = {}
            for name, size in self.done:
                out[name] = max(out.get(name, 0), size)
            return out


def _where(folder: Path, line: bytes) -> tuple[str, int]:
    """The spool file holding *line*, and the offset just after it."""
    for path in folder.glob("*.jsonl"):
        data = path.read_bytes()
        at = data.find(line)
        if at >= 0:
            return path.name, at + len(line)
    raise AssertionError(f"{line!r} is in no spool file")


def _line(t: int, i: int) -> bytes:
    return f'["thread {t}","line {i}","{"x" * 40}"]\n'.encode()


def _hammer(
    files: SpoolFiles, recorder: Recorder, threads: int = THREADS, per_thread: int = PER_THREAD
) -> tuple[list[str], list[bytes]]:
    """Append from *threads* threads at once. Right after each append returns, check
    that a sync which began once the line was written has returned. The problems
    found, and the lines whose append failed."""
    problems: list[str] = []
    failed: list[bytes] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            line = _line(t, i)
            try:
                files.append(line)
            except OSError:
                failed.append(line)
                continue
            covered = recorder.covered()  # taken before looking where the line is
            name, end = _where(files.folder, line)
            if covered.get(name, 0) < end:
                problems.append(f"{line!r} returned before a sync covered it")

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return problems, failed


@pytest.mark.parametrize("rotate_bytes", [1 << 20, 2000], ids=["one file", "rotating"])
def test_concurrent_appends_share_syncs_each_after_its_own_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rotate_bytes: int
) -> None:
    # Each sync takes a little longer than the real one on tmpfs, so that the writers
    # of 16 threads pile up behind it as they do behind a disk.
    recorder = Recorder(hold=lambda n: threading.Event().wait(0.005))
    monkeypatch.setattr(os, "fdatasync", recorder)
    files = SpoolFiles(tmp_path / "spool", fsync=True, rotate_bytes=rotate_bytes)
    problems, failed = _hammer(files, recorder)
    files.close()
    assert problems == [] and failed == []
    appends = THREADS * PER_THREAD
    held = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*.jsonl"))
    assert sorted(held.splitlines(keepends=True)) == sorted(
        _line(t, i) for t in range(THREADS) for i in range(PER_THREAD)
    )
    assert files.syncs == recorder.calls
    # Shared: far fewer syncs than appends (one each without group commit).
    assert recorder.calls <= appends // 2, f"{recorder.calls} syncs for {appends} appends"


def test_one_thread_syncs_each_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(os, "fdatasync", recorder)
    files = SpoolFiles(tmp_path / "spool", fsync=True)
    problems, failed = _hammer(files, recorder, threads=1, per_thread=10)
    assert problems == [] and failed == []
    assert recorder.calls == 10


def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(os, "fdatasync", recorder)
    files = SpoolFiles(tmp_path / "spool", fsync=False)
    for i in range(5):
        files.append(_line(0, i))
    files.close()
    assert recorder.calls == 0


def test_a_failed_sync_fails_every_writer_it_did_not_cover_and_poisons_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 4th sync fails with EIO after the writers have piled up behind it: each of
    them fails; the file is never synced again (a second fdatasync after an EIO may
    succeed with the lines lost); the appends after it go to a new file, and every
    append that returned is covered by a sync that returned."""

    def hold(n: int) -> None:
        threading.Event().wait(0.003)
        if n == 4:
            threading.Event().wait(0.03)
            raise OSError(errno.EIO, "Input/output error")

    recorder = Recorder(hold=hold)
    monkeypatch.setattr(os, "fdatasync", recorder)
    files = SpoolFiles(tmp_path / "spool", fsync=True)
    problems, failed = _hammer(files, recorder)
    files.close()
    assert problems == []
    assert len(recorder.failed) == 1
    poisoned, failed_at = recorder.failed[0]
    assert poisoned not in recorder.after_failure, "a poisoned file was synced again"
    # Every line written to the poisoned file beyond what a good sync covered: failed.
    good = max((size for name, size in recorder.done if name == poisoned), default=0)
    data = (tmp_path / "spool" / poisoned).read_bytes()
    uncovered = data[good:].splitlines(keepends=True)
    assert uncovered, "nobody was waiting for the failed sync"
    assert set(uncovered) <= set(failed)
    assert len(failed) >= 2, "the writers did not pile up behind the failed sync"
    # And the spool goes on, in other files.
    assert any(name != poisoned for name, _ in recorder.done)


def test_a_failed_sync_is_a_503_of_the_spooled_storage_and_the_next_report_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fdatasync
    fail = [True]

    def fdatasync(fd: int) -> None:
        if fail[0]:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    store = MemoryStore()
    storage = SpooledStorage(
        MemoryStorage(store), folder=tmp_path / "spool", fsync=True, interval=10
    )
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    try:
        first = Report(selector="a" * 40 + ":c0f", token_msgs="T1")
        with pytest.raises(StorageUnavailable, match="report spool cannot be written"):
            storage.upsert(first, now=now, read_back=False)
        fail[0] = False
        second = Report(selector="b" * 40 + ":c0f", token_msgs="T2")
        storage.upsert(second, now=now, read_back=False)
        assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 2
        stored = storage.get(second.selector)
        assert stored is not None and stored.token_msgs == "T2"
    finally:
        storage.close()


def test_after_a_fork_the_child_syncs_a_file_of_its_own(tmp_path: Path) -> None:
    files = SpoolFiles(tmp_path / "spool", fsync=True)
    files.append(_line(0, 0))
    parent_name = files.own
    pid = os.fork()
    if pid == 0:  # the child: never waits on the parent's syncs, never closes its file
        try:
            files.append(_line(1, 0))
            files.append(_line(1, 1))
            os._exit(0 if files.own and files.own != parent_name else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    files.append(_line(0, 1))
    files.close()
    assert os.waitstatus_to_exitcode(status) == 0
    held = {p.name: p.read_bytes() for p in (tmp_path / "spool").glob("*.jsonl")}
    assert sorted(held.values()) == sorted([_line(0, 0) + _line(0, 1), _line(1, 0) + _line(1, 1)])
