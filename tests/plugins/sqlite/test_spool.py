"""The report spool (pushreport.spool.SpooledStorage) in front of the SQLite backend: a
report answered is in a file of its process's at once and in the database once applied,
exactly once, in the order received, whoever applies it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import pushreport.spool as spool_module
from pushreport.spool import SpooledStorage
from pushreport.storage import StorageContext
from pushreport_core import Report, StorageUnavailable
from pushreport_sqlite import SQLiteStorage

from .conftest import spooled

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"


def report(i: int = 0, **fields: str) -> Report:
    values = {
        "selector": f"{i:040X}:7C3A0D14" if i else SELECTOR,
        "username": f"user{i}",
        "token_msgs": f"QVBBOTFiRzlhcVd2{i:08d}",
        "appid_msgs": "com.cloudsoftphone.app",
    }
    values.update(fields)
    return Report(**values)  # type: ignore[arg-type]


def rows_in_file(path: Path) -> dict[str, tuple[object, ...]]:
    """The table as a reader that opens the file itself sees it (no spool applied)."""
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute("SELECT selector, token_msgs, reports FROM registrations")
            return {row[0]: row for row in rows}
        except sqlite3.OperationalError:  # no table yet
            return {}


def spool_files(path: Path) -> list[str]:
    folder = Path(f"{path}.spool")
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
def slow(db_path: Path) -> SpooledStorage:
    """A storage whose background thread does not apply the spool during a test."""
    return spooled(db_path, busy_timeout=0.3, interval=10)


def test_a_report_is_spooled_at_once_and_applied_later(
    slow: SpooledStorage, db_path: Path
) -> None:
    try:
        slow.upsert(report(), now=T0, read_back=False)
        (name,) = spool_files(db_path)
        line = Path(f"{db_path}.spool", name).read_bytes()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert json.loads(line)[0] == SELECTOR
        assert SELECTOR not in rows_in_file(db_path)  # not applied yet
        assert slow.apply_spool() == 1
        assert rows_in_file(db_path)[SELECTOR][2] == 1
        assert slow.apply_spool() == 0  # exactly once
    finally:
        slow.close()


def test_every_read_applies_the_spool_first(slow: SpooledStorage) -> None:
    try:
        slow.upsert(report(), now=T0, read_back=False)
        slow.upsert(
            report(token_msgs="bmV3ZXJUb2tlbjAw"), now=T0 + timedelta(seconds=1), read_back=False
        )
        stored = slow.get(SELECTOR)
        assert stored is not None
        assert (stored.reports, stored.token_msgs) == (2, "bmV3ZXJUb2tlbjAw")
        assert stored.last_seen == T0 + timedelta(seconds=1)
        slow.upsert(report(1), now=T0, read_back=False)
        assert slow.count() == 2
        assert [r.selector for r in slow.find(username="user1")] == [report(1).selector]
    finally:
        slow.close()


def test_a_removal_after_a_spooled_report_wins(slow: SpooledStorage) -> None:
    try:
        slow.upsert(report(), now=T0, read_back=False)
        assert slow.remove(SELECTOR) is True
        assert slow.apply_spool() == 0
        assert slow.get(SELECTOR) is None
    finally:
        slow.close()


def test_the_background_thread_applies_the_spool(db_path: Path) -> None:
    storage = spooled(db_path, interval=0.01)
    try:
        storage.upsert(report(), now=T0, read_back=False)
        deadline = datetime.now() + timedelta(seconds=5)
        while SELECTOR not in rows_in_file(db_path) and datetime.now() < deadline:
            threading.Event().wait(0.01)
        assert rows_in_file(db_path)[SELECTOR][2] == 1
    finally:
        storage.close()


def test_close_applies_the_spool_and_deletes_its_file(slow: SpooledStorage, db_path: Path) -> None:
    slow.upsert(report(), now=T0, read_back=False)
    assert len(spool_files(db_path)) == 1
    slow.close()
    assert rows_in_file(db_path)[SELECTOR][2] == 1
    assert spool_files(db_path) == []


def test_reports_of_two_writers_are_applied_in_the_order_received(db_path: Path) -> None:
    a = spooled(db_path, interval=10)
    b = spooled(db_path, interval=10)
    try:
        # Interleaved in time across the two files; the newest token must win.
        a.upsert(report(token_msgs="Zmlyc3RUb2tlbjAw"), now=T0, read_back=False)
        b.upsert(
            report(token_msgs="c2Vjb25kVG9rZW4w"), now=T0 + timedelta(seconds=1), read_back=False
        )
        a.upsert(
            report(token_msgs="dGhpcmRUb2tlbjAw"), now=T0 + timedelta(seconds=2), read_back=False
        )
        b.upsert(
            report(token_msgs="Zm91cnRoVG9rZW4w"), now=T0 + timedelta(seconds=3), read_back=False
        )
        assert len(spool_files(db_path)) == 2
        assert b.apply_spool() == 4  # one applier takes every process's file
        stored = a.get(SELECTOR)
        assert stored is not None
        assert (stored.token_msgs, stored.reports) == ("Zm91cnRoVG9rZW4w", 4)
        assert stored.first_seen == T0 and stored.last_seen == T0 + timedelta(seconds=3)
        # Neither file is deleted while its writer holds it.
        assert len(spool_files(db_path)) == 2
    finally:
        a.close()
        b.close()
    assert spool_files(db_path) == []


def test_concurrent_appliers_apply_each_report_once(db_path: Path) -> None:
    writers = [spooled(db_path, busy_timeout=5, interval=10) for _ in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def apply(storage: SpooledStorage) -> None:
        while not stop.is_set():
            try:
                storage.apply_spool()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    appliers = [threading.Thread(target=apply, args=(w,)) for w in writers]
    for t in appliers:
        t.start()
    try:
        for i in range(300):
            writers[i % 3].upsert(report(), now=T0 + timedelta(microseconds=i), read_back=False)
    finally:
        stop.set()
        for t in appliers:
            t.join()
    assert errors == []
    stored = writers[0].get(SELECTOR)
    assert stored is not None and stored.reports == 300
    for w in writers:
        w.close()
    assert spool_files(db_path) == []


def test_a_line_cut_short_is_never_applied_and_its_file_goes(
    slow: SpooledStorage, db_path: Path
) -> None:
    slow.upsert(report(), now=T0, read_back=False)
    slow.close()
    folder = Path(f"{db_path}.spool")
    folder.mkdir(exist_ok=True)
    # A writer that died in the middle of a line (no newline: never answered 200).
    (folder / "999999-deadbeef.jsonl").write_bytes(
        spool_module.encode(
            (
                report(1).selector,
                "user1",
                None,
                None,
                "QVBBOTFiRzlhcVd2",
                None,
                "{}",
                None,
                "2024-05-01T12:00:00.000000Z",
            )
        )
        + b'["0000000000000000000000000000000000000002:7C3A0D14","us'
    )
    again = spooled(db_path, interval=10)
    try:
        assert again.apply_spool() == 1  # the complete line only
        assert again.count() == 2
        assert again.get(report(1).selector) is not None
        assert spool_files(db_path) == []
    finally:
        again.close()


def test_a_killed_writer_loses_nothing_it_answered(db_path: Path, tmp_path: Path) -> None:
    """A process that spooled reports and was killed with SIGKILL before applying
    them: every report it returned from is applied by the next process."""
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from datetime import datetime, timedelta, timezone
            from pushreport.storage import StorageContext
            from pushreport_core import Report
            from pushreport_sqlite import SQLiteStorage
            s = SQLiteStorage.from_options(
                {{"path": {str(db_path)!r}, "spool_interval": 10}}, StorageContext()
            )
            t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
            for i in range(1, 501):
                s.upsert(Report(selector=f"{{i:040X}}:7C3A0D14", username="u",
                                      token_msgs=f"QVBBOTFiRzlhcVd2{{i:08d}}",
                                      appid_msgs="com.cloudsoftphone.app"),
                               now=t0 + timedelta(microseconds=i), read_back=False)
            print("answered", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "answered"
    assert len(spool_files(db_path)) == 1
    assert rows_in_file(db_path) == {}
    reader = spooled(db_path)
    try:
        assert reader.count() == 500
        assert spool_files(db_path) == []  # its writer is gone: applied, then deleted
    finally:
        reader.close()


def test_a_database_that_cannot_be_written_refuses_reports_until_it_can(
    db_path: Path,
) -> None:
    storage = spooled(db_path, busy_timeout=0.05, interval=0.01)
    storage.upsert(report(), now=T0, read_back=False)
    storage.get(SELECTOR)  # the spool table exists, the file is in WAL mode
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        storage.upsert(report(1), now=T0, read_back=False)  # spooled before anyone knows
        with pytest.raises(StorageUnavailable, match="locked"):
            deadline = datetime.now() + timedelta(seconds=5)
            while datetime.now() < deadline:
                storage.upsert(report(2), now=T0, read_back=False)
                threading.Event().wait(0.01)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = datetime.now() + timedelta(seconds=5)
    while datetime.now() < deadline:
        try:
            storage.upsert(report(3), now=T0, read_back=False)
            break
        except StorageUnavailable:
            threading.Event().wait(0.01)
    else:
        pytest.fail("reports still refused after the lock was released")
    try:
        # Nothing answered was lost while the database was locked.
        assert storage.get(report(1).selector) is not None
        assert storage.get(report(3).selector) is not None
    finally:
        storage.close()


def test_writers_start_a_new_file_past_the_rotation_size(db_path: Path) -> None:
    storage = spooled(db_path, interval=10, rotate_bytes=600)
    try:
        for i in range(1, 21):
            storage.upsert(report(i), now=T0, read_back=False)
        assert len(spool_files(db_path)) > 3
        assert storage.apply_spool() == 20
        # The finished files are gone once applied; the current one stays.
        assert len(spool_files(db_path)) == 1
        assert storage.count() == 20
    finally:
        storage.close()


def test_synchronous_full_syncs_each_report(db_path: Path) -> None:
    def built(**options: object) -> SpooledStorage:
        storage = SQLiteStorage.from_options({"path": str(db_path), **options}, StorageContext())
        assert isinstance(storage, SpooledStorage)
        return storage

    assert built(synchronous="full").fsync is True
    assert built().fsync is False
    assert built(synchronous="normal").fsync is False


def test_from_options_builds_what_spooled_builds(db_path: Path) -> None:
    """The tests' ``spooled()`` is the configuration's spool: the same folder, the same
    settings and defaults."""
    built = SQLiteStorage.from_options(
        {"path": str(db_path), "busy_timeout": 0.3, "spool_interval": 10, "spool_max_bytes": 4096},
        StorageContext(),
    )
    assert isinstance(built, SpooledStorage) and isinstance(built.storage, SQLiteStorage)
    made = spooled(db_path, busy_timeout=0.3, interval=10, max_bytes=4096)
    assert (built.folder, built.fsync, built.interval, built.max_bytes) == (
        made.folder,
        made.fsync,
        made.interval,
        made.max_bytes,
    )
    assert built.folder == Path(f"{db_path}.spool")
    assert built.storage.busy_timeout == made.storage.busy_timeout == 0.3
    default = SQLiteStorage.from_options({"path": str(db_path)}, StorageContext())
    assert isinstance(default, SpooledStorage)
    assert (default.interval, default.max_bytes) == (
        spooled(db_path).interval,
        spooled(db_path).max_bytes,
    )


def test_without_the_spool_each_report_is_committed_at_once(db_path: Path) -> None:
    storage = SQLiteStorage.from_options({"path": str(db_path), "spool": False}, StorageContext())
    assert type(storage) is SQLiteStorage  # a plain WAL backend: nothing in front
    try:
        storage.upsert(report(), now=T0, read_back=False)
        assert rows_in_file(db_path)[SELECTOR][2] == 1
        assert not Path(f"{db_path}.spool").exists()
    finally:
        storage.close()


def test_the_spool_declares_spools_and_its_backend_is_its_target(db_path: Path) -> None:
    """``spools`` (what tells the receiver not to batch quiet upserts) is the wrapper's;
    the SQLite backend is a spool's target; a backend whose upsert adds to the write
    (the webhook's event) is none, and cannot be wrapped."""
    from pushreport.storage import Capabilities, Capability, SpoolTarget
    from pushreport_webhook import WebhookStorage

    plain = SQLiteStorage(db_path)
    wrapped = spooled(db_path.with_name("spooled.sqlite3"))
    hook = WebhookStorage(path=db_path.with_name("hook.sqlite3"), deliver=False)
    try:
        assert Capability.SPOOL_TARGET in Capabilities.of(plain).declared
        assert Capability.SPOOLS not in Capabilities.of(plain).declared
        declared = Capabilities.of(wrapped).declared
        assert {Capability.SPOOLS, Capability.QUIET_UPSERT} <= declared
        assert Capability.SPOOL_TARGET not in declared
        assert not isinstance(hook, SpoolTarget)
        with pytest.raises(TypeError, match="^storage backend 'webhook' cannot be spooled: "):
            SpooledStorage(hook, folder=Path(f"{db_path}.spool"))  # type: ignore[arg-type]
    finally:
        for s in (plain, wrapped, hook):
            s.close()


def test_a_line_that_cannot_be_applied_is_dropped_and_the_spool_moves_on(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = Path(f"{db_path}.spool")
    folder.mkdir()
    good = (report(1).selector, "user1", None, None, "QVBBOTFiRzlhcVd2", None, "{}", None)
    (folder / "999999-0badf00d.jsonl").write_bytes(
        spool_module.encode((*good, "2024-05-01T12:00:00.000000Z"))
        # Not what append() writes: a value SQLite cannot bind, and a line that is no JSON.
        + spool_module.encode((SELECTOR, ["a", "list"], *good[2:], "2024-05-01T12:00:01.000000Z"))
        + b"{not json\n"
        + spool_module.encode((report(2).selector, *good[1:], "2024-05-01T12:00:02.000000Z"))
    )
    storage = spooled(db_path, interval=10)
    try:
        assert storage.apply_spool() == 2
        assert storage.get(SELECTOR) is None
        assert storage.get(report(1).selector) is not None
        assert storage.get(report(2).selector) is not None
        assert spool_files(db_path) == []
        assert "cannot be applied and is dropped" in caplog.text
        assert "not a spooled report is skipped" in caplog.text
    finally:
        storage.close()


def test_a_reader_who_cannot_read_the_spool_reads_what_is_applied(
    slow: SpooledStorage, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow.upsert(report(), now=T0, read_back=False)
    slow.apply_spool()
    slow.upsert(report(1), now=T0, read_back=False)
    folder = Path(f"{db_path}.spool")
    listdir = os.listdir

    def as_another_user(path: object) -> list[str]:
        # The folder is 0700: another user (root ignores modes, so the error is made
        # here) gets EACCES listing it.
        if Path(str(path)) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "listdir", as_another_user)
    reader = spooled(db_path)
    try:
        assert reader.count() == 1  # the applied report; the spooled one it cannot see
    finally:
        reader.close()
        monkeypatch.undo()
        slow.close()
    assert spooled(db_path).count() == 2


def test_an_idle_applier_sleeps_longer_and_an_append_wakes_it(db_path: Path) -> None:
    import time

    storage = spooled(db_path, interval=0.001, idle_wait=60.0)
    try:
        storage.upsert(report(), now=T0, read_back=False)
        # Idle rounds double the wait from 1 ms: 2.5 s later the thread is inside a
        # wait of about 2 s, which ends about 1.6 s from now.
        time.sleep(2.5)
        assert storage.applier_idle
        storage.upsert(report(1), now=T0, read_back=False)
        started = time.monotonic()
        while report(1).selector not in rows_in_file(db_path):
            assert time.monotonic() - started < 1.0, "the append did not wake the applier"
            time.sleep(0.01)
    finally:
        storage.close()


def test_a_round_skips_when_another_process_just_went_through_but_never_when_failing(
    db_path: Path,
) -> None:
    # Two storages on one file stand for two worker processes; a long interval keeps
    # their own threads out of the way, and the test runs the rounds itself.
    a = spooled(db_path, busy_timeout=0.05, interval=10)
    b = spooled(db_path, busy_timeout=0.05, interval=10)
    try:
        a.upsert(report(), now=T0, read_back=False)
        assert b.apply_round() == 1  # b's round went through every file ...
        a.upsert(report(1), now=T0, read_back=False)
        assert a.apply_round() == 0  # ... so a's skips, within the interval
        assert report(1).selector not in rows_in_file(db_path)
        assert a.get(report(1).selector) is not None  # a read never skips

        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            a.upsert(report(2), now=T0, read_back=False)
            assert b.apply_round(probe=True) == 0  # finds the database locked
            with pytest.raises(StorageUnavailable):
                b.upsert(report(3), now=T0, read_back=False)
            # a does not skip now, although b's last good round was just before: it
            # finds the fault itself and refuses reports too.
            assert a.apply_round() == 0
            with pytest.raises(StorageUnavailable, match="locked"):
                a.upsert(report(3), now=T0, read_back=False)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert a.apply_round() == 1  # report(2), spooled before the fault was known
        a.upsert(report(3), now=T0, read_back=False)
        b.apply_round()
        b.upsert(report(4), now=T0, read_back=False)
        assert a.count() == 5
    finally:
        a.close()
        b.close()


def test_a_round_that_close_cuts_short_logs_nothing(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The applier thread may be inside a round when close() closes the database: that
    round fails, and is no fault to report (close() applied what was waiting)."""
    storage = spooled(db_path, interval=10)
    storage.upsert(report(), now=T0, read_back=False)
    storage.close()
    assert rows_in_file(db_path)[SELECTOR][2] == 1
    Path(f"{db_path}.spool").mkdir(exist_ok=True)
    (Path(f"{db_path}.spool") / "999999-0badf00d.jsonl").write_bytes(
        spool_module.encode(
            (
                report(1).selector,
                "user1",
                None,
                None,
                "QVBBOTFiRzlhcVd2",
                None,
                "{}",
                None,
                "2024-05-01T12:00:00.000000Z",
            )
        )
    )
    assert storage.apply_round() == 0  # the database is closed: it cannot apply
    assert "cannot be applied" not in caplog.text
    with pytest.raises(StorageUnavailable, match="^sqlite storage is closed$"):
        storage.upsert(report(2), now=T0, read_back=False)
