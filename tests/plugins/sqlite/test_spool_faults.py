"""The spool when something in its way is not as it should be: an entry the applier
cannot read, another process holding the writers' turn, a backlog past its bound.

The rule each test holds: no report is acknowledged that nothing will apply, every
wait has a deadline, and a repeated failure is logged once per interval.
Real files, real locks; the tests run as root, so "cannot be read" is made with what
root cannot read either (a directory, a FIFO, a dangling symlink) or, for a regular
file, by a process that has dropped root's capability to ignore file modes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import pushreport.spool as spool_module
from pushreport.storage import StorageContext
from pushreport_core import ConfigurationError, Report, StorageUnavailable
from pushreport_sqlite import SQLiteStorage

from .conftest import spooled

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

#: A bound on a call that must not hang: far above any deadline used here. (Not a
#: timing assertion: it only tells a hang from an answer.)
HANG = 10.0


def report(i: int) -> Report:
    return Report(
        selector=f"{i:040X}:7C3A0D14",
        username=f"user{i}",
        token_msgs=f"QVBBOTFiRzlhcVd2{i:08d}",
        appid_msgs="com.cloudsoftphone.app",
    )


def line(i: int) -> bytes:
    """What append() writes for report(i)."""
    r = report(i)
    return spool_module.encode(
        (
            r.selector,
            r.username,
            None,
            None,
            r.token_msgs,
            r.appid_msgs,
            "{}",
            None,
            "2024-05-01T12:00:00.000000Z",
        )
    )


def within(call: Callable[[], Any], seconds: float = HANG) -> Any:
    """*call*'s result, or its exception raised here; fails when it does not return
    within *seconds* (a hang), leaving it to finish on its own thread."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append((True, call()))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result.append((False, e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"{getattr(call, '__name__', call)} did not return within {seconds} s"
    ok, value = result[0]
    if not ok:
        raise value
    return value


def spool_log_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pushreport.sqlite" and text in r.getMessage()]


# -- item 9: an entry the applier cannot read ------------------------------------------


def _directory(path: Path) -> Callable[[], None]:
    path.mkdir()
    (path / "inside").write_bytes(line(9))
    return lambda: None


def _fifo(path: Path) -> Callable[[], None]:
    os.mkfifo(path)

    def unblock() -> None:
        # A reader stuck opening the FIFO (the bug) is let go by a writer opening it;
        # gone, it stops the next one (close() applies the spool) from getting stuck.
        for where in (path, path.parent / "unreadable" / path.name):
            try:
                os.close(os.open(where, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        path.unlink(missing_ok=True)

    return unblock


def _dangling_symlink(path: Path) -> Callable[[], None]:
    path.symlink_to(path.parent / "gone.jsonl")
    return lambda: None


@pytest.mark.parametrize(
    "make", [_directory, _fifo, _dangling_symlink], ids=["dir", "fifo", "symlink"]
)
def test_an_entry_that_is_no_spool_file_is_moved_aside_and_logged_once(
    db_path: Path, make: Callable[[Path], Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    folder = Path(f"{db_path}.spool")
    folder.mkdir()
    stray = folder / "4242-0badf00d.jsonl"
    unblock = make(stray)
    storage = spooled(db_path, busy_timeout=0.2, interval=10)
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        for _ in range(3):
            within(storage.apply_round)
        storage.upsert(report(2), now=T0, read_back=False)  # still accepted
        assert within(storage.count) == 2
        assert not os.path.lexists(stray)
        assert os.path.lexists(folder / "unreadable" / stray.name)
        (logged,) = spool_log_lines(caplog, "4242-0badf00d.jsonl")
        assert logged.levelno == logging.ERROR
        assert logged.getMessage() == (
            f"the report spool entry 4242-0badf00d.jsonl is not a file it wrote; "
            f"moved to {folder / 'unreadable'}"
        )
    finally:
        unblock()
        storage.close()


def test_list_reads_a_spool_that_holds_a_directory(db_path: Path) -> None:
    storage = spooled(db_path, interval=10)
    storage.upsert(report(1), now=T0, read_back=False)
    (Path(f"{db_path}.spool") / "4242-0badf00d.jsonl").mkdir()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pushreport._cli", "list", "--db", str(db_path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert [r["selector"] for r in json.loads(out.stdout)] == [report(1).selector]
    finally:
        storage.close()


def _without_dac() -> list[str]:
    """The command prefix that runs a process as root without the capabilities that let
    root read and write any file regardless of its mode (as any other user runs)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("needs root and setpriv to make a file root cannot read")
        pytest.skip("needs root and setpriv to make a file root cannot read")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_a_spool_file_that_cannot_be_read_refuses_reports_until_it_can(
    db_path: Path, tmp_path: Path
) -> None:
    """Another user's file (0600) in the spool: it may hold reports answered 200, so
    nothing is moved; every report is refused and ping fails until it can be read,
    and then everything in it is applied."""
    folder = Path(f"{db_path}.spool")
    folder.mkdir(mode=0o700)
    foreign = folder / "4242-0badf00d.jsonl"
    foreign.write_bytes(line(7))
    os.chown(foreign, 65534, 65534)
    foreign.chmod(0o600)
    script = tmp_path / "applier.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from datetime import datetime, timezone
            from pushreport.storage import StorageContext
            from pushreport_core import Report, StorageUnavailable
            from pushreport_sqlite import SQLiteStorage

            def report(i):
                return Report(selector=f"{{i:040X}}:7C3A0D14", username=f"user{{i}}",
                              token_msgs=f"QVBBOTFiRzlhcVd2{{i:08d}}",
                              appid_msgs="com.cloudsoftphone.app")

            def attempt(what, call):
                try:
                    call()
                    print(what, "ok", flush=True)
                except StorageUnavailable as e:
                    print(what, "refused:", e, flush=True)

            now = datetime(2024, 5, 1, tzinfo=timezone.utc)
            s = SQLiteStorage.from_options(
                {{"path": {str(db_path)!r}, "busy_timeout": 0.2, "spool_interval": 10}},
                StorageContext(),
            )
            attempt("first", lambda: s.upsert(report(1), now=now, read_back=False))
            print("round", sum(s.apply_round() for _ in range(20)), flush=True)
            attempt("report", lambda: s.upsert(report(2), now=now, read_back=False))
            attempt("ping", s.ping)
            sys.stdin.readline()  # the test makes the file readable
            print("round", s.apply_round(), flush=True)
            attempt("report", lambda: s.upsert(report(3), now=now, read_back=False))
            attempt("ping", s.ping)
            print("count", s.count(), flush=True)
            s.close()
            """
        )
    )
    proc = subprocess.Popen(
        [*_without_dac(), sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        before = [proc.stdout.readline().strip() for _ in range(4)]
        os.chown(foreign, 0, 0)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert before == [
        "first ok",
        "round 0",
        "report refused: sqlite report spool cannot be read",
        "ping refused: sqlite report spool cannot be read",
    ], err
    assert out.split("\n")[:4] == ["round 2", "report ok", "ping ok", "count 3"], err
    # Logged once over 20 failed rounds, naming the file, with no traceback.
    assert err.count("4242-0badf00d.jsonl") == 1, err
    assert "Traceback" not in err


def test_a_new_spool_file_is_never_deleted_under_its_writer(db_path: Path) -> None:
    """An applier that lists the spool while a writer starts a file must see it held:
    a file each report, and another applier running all along, loses none."""
    writer = spooled(db_path, interval=10, rotate_bytes=1)
    applier = spooled(db_path, interval=10)
    stop = threading.Event()

    def apply() -> None:
        while not stop.is_set():
            applier.apply_spool()

    thread = threading.Thread(target=apply)
    thread.start()
    try:
        for i in range(1, 3001):
            writer.upsert(report(i), now=T0, read_back=False)
    finally:
        stop.set()
        thread.join()
        writer.close()
    try:
        assert applier.count() == 3000
        left = [n for n in os.listdir(f"{db_path}.spool") if n.endswith((".jsonl", ".new"))]
        assert left == []  # every file applied and deleted, none half-made
    finally:
        applier.close()


# -- item 10: every wait has a deadline; the spool has a bound -----------------------


class Turn:
    """Another process's hold on ``<db>.writers`` (flock locks belong to the open file,
    so another descriptor of this process stands for another process)."""

    def __init__(self, db_path: Path) -> None:
        self.path = f"{db_path}.writers"
        self.fd: int | None = None

    def hold(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Let go (again: a no-op), so that a test's cleanup never waits on it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def turn(db_path: Path) -> Iterator[Turn]:
    turn = Turn(db_path)
    yield turn
    turn.release()


def test_a_held_writers_turn_refuses_reports_and_reads_within_the_deadline(
    db_path: Path, turn: Turn
) -> None:
    storage = spooled(db_path, busy_timeout=0.2, interval=10)
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        assert within(storage.count) == 1
        turn.hold()
        storage.upsert(report(2), now=T0, read_back=False)  # spooled: nobody knows of the hold yet
        assert within(storage.apply_round) == 0
        for call in (
            lambda: storage.upsert(report(3), now=T0, read_back=False),
            storage.ping,
            storage.count,
            lambda: storage.remove(report(1).selector),
            lambda: list(storage),
        ):
            with pytest.raises(StorageUnavailable) as e:
                within(call)
            assert (str(e.value), e.value.retry_after) == ("sqlite database is locked", 1)
        turn.release()
        assert within(storage.apply_round) == 1
        storage.upsert(report(3), now=T0, read_back=False)
        within(storage.ping)
        assert within(storage.count) == 3  # everything acknowledged is stored
    finally:
        turn.release()
        storage.close()


def test_without_the_spool_a_held_turn_refuses_the_report(db_path: Path, turn: Turn) -> None:
    storage = SQLiteStorage(path=db_path, busy_timeout=0.2)  # no spool in front
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        turn.hold()
        with pytest.raises(StorageUnavailable, match="^sqlite database is locked$"):
            within(lambda: storage.upsert(report(2), now=T0, read_back=False))
        turn.release()
        storage.upsert(report(2), now=T0, read_back=False)
        assert storage.count() == 2
    finally:
        turn.release()
        storage.close()


def test_a_spool_past_its_bound_refuses_reports_until_applied(db_path: Path) -> None:
    bound = 20 * len(line(1))
    storage = spooled(db_path, interval=10, max_bytes=bound)
    accepted = []
    try:
        with pytest.raises(StorageUnavailable) as e:
            for i in range(1, 100):
                storage.upsert(report(i), now=T0, read_back=False)
                accepted.append(i)
        assert str(e.value) == "sqlite report spool is full"
        assert 19 <= len(accepted) <= 21
        with pytest.raises(StorageUnavailable, match="^sqlite report spool is full$"):
            storage.ping()
        assert storage.apply_round() == len(accepted)
        storage.upsert(report(100), now=T0, read_back=False)
        storage.ping()
        assert storage.count() == len(accepted) + 1
    finally:
        storage.close()


def test_a_backlog_other_processes_left_past_the_bound_refuses_reports(
    db_path: Path, turn: Turn
) -> None:
    """The bound counts every process's files, as the round under way found them."""
    folder = Path(f"{db_path}.spool")
    folder.mkdir()
    (folder / "4242-0badf00d.jsonl").write_bytes(b"".join(line(i) for i in range(1, 31)))
    storage = spooled(db_path, interval=10, max_bytes=20 * len(line(1)), busy_timeout=5)
    try:
        storage.upsert(report(31), now=T0, read_back=False)
        turn.hold()  # the round below waits for its turn, its backlog measured
        result: list[int] = []
        waiting = threading.Thread(target=lambda: result.append(storage.apply_round()))
        waiting.start()
        accepted = 0
        try:
            with pytest.raises(StorageUnavailable, match="^sqlite report spool is full$"):
                deadline = datetime.now().timestamp() + HANG
                while datetime.now().timestamp() < deadline:
                    storage.upsert(report(32), now=T0, read_back=False)  # accepted until measured
                    accepted += 1
                    threading.Event().wait(0.01)
        finally:
            turn.release()
            waiting.join(HANG)
        assert result and result[0] >= 31
        storage.upsert(report(33), now=T0, read_back=False)
        assert storage.count() == 32 + (accepted > 0)
        stored = storage.get(report(32).selector)
        assert (stored.reports if stored else 0) == accepted
    finally:
        turn.release()
        storage.close()


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"spool_max_bytes": 0},
            "storage.sqlite.spool_max_bytes: must be a number of bytes from 1024 to "
            "1099511627776, not 0",
        ),
        (
            {"spool_max_bytes": 1.5e6},
            "storage.sqlite.spool_max_bytes: must be a number of bytes from 1024 to "
            "1099511627776, not 1500000.0",
        ),
    ],
)
def test_the_spool_bound_is_checked(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        SQLiteStorage.from_options(options, StorageContext(base_dir=tmp_path))
    assert str(e.value) == message
    with pytest.raises(ValueError):
        spooled(tmp_path / "x.sqlite3", max_bytes=0)


# -- item 9/11: an unexpected failure of a round, logged once per interval ----------


def test_a_failing_round_is_logged_once_per_interval_with_a_count(
    db_path: Path, turn: Turn, caplog: pytest.LogCaptureFixture
) -> None:
    storage = spooled(db_path, busy_timeout=0.01, interval=10)
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        turn.hold()
        for _ in range(50):
            within(storage.apply_round)
        turn.release()
        within(storage.apply_round)
        refused = spool_log_lines(caplog, "cannot be applied")
        assert [r.getMessage() for r in refused] == [
            "the report spool cannot be applied: sqlite database is locked; refusing reports"
        ]
        (again,) = spool_log_lines(caplog, "applied again")
        assert again.getMessage() == (
            "the report spool is applied again after 50 failed rounds; accepting reports"
        )
    finally:
        turn.release()
        storage.close()


def test_a_lock_met_in_either_place_is_one_line_a_minute(
    db_path: Path, turn: Turn, caplog: pytest.LogCaptureFixture
) -> None:
    """The writers' turn not had in time and SQLite's own lock both say "sqlite database
    is locked" (one with no cause, one from sqlite3's error): one line, not one each."""
    storage = spooled(db_path, busy_timeout=0.01, interval=10)
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        for _ in range(3):
            turn.hold()
            assert within(storage.apply_round) == 0
            turn.release()
            locker.execute("BEGIN EXCLUSIVE")
            assert within(storage.apply_round) == 0
            locker.execute("ROLLBACK")
        refused = spool_log_lines(caplog, "cannot be applied")
        assert [r.getMessage() for r in refused] == [
            "the report spool cannot be applied: sqlite database is locked; refusing reports"
        ]
        assert within(storage.apply_round) == 1
    finally:
        turn.release()
        locker.close()
        storage.close()


def test_an_unexpected_error_in_a_round_refuses_reports_until_a_round_goes_through(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a failure the applier knows (here: its own bookkeeping table edited by hand,
    an offset that is no number): it counts as a failing database all the same."""
    storage = spooled(db_path, busy_timeout=0.2, interval=10)
    try:
        storage.upsert(report(1), now=T0, read_back=False)
        assert storage.apply_round() == 1
        storage.upsert(report(2), now=T0, read_back=False)
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE pushreport_spool SET offset = 'x'")
        assert [storage.apply_round(probe=True) for _ in range(20)] == [0] * 20
        for call in (lambda: storage.upsert(report(3), now=T0, read_back=False), storage.ping):
            with pytest.raises(
                StorageUnavailable, match="^sqlite report spool cannot be applied$"
            ):
                call()
        (logged,) = spool_log_lines(caplog, "cannot be applied")
        assert logged.levelno == logging.ERROR and logged.exc_info is not None
        assert logged.getMessage().startswith("the report spool cannot be applied: TypeError: ")
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE pushreport_spool SET offset = 0")  # repaired
        storage.apply_round()
        storage.upsert(report(3), now=T0, read_back=False)
        assert storage.count() == 3
    finally:
        storage.close()
