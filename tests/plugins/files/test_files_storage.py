"""The files backend's own promises: torn lines, kill -9, compaction, interleaving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pushreport.storage import StorageContext
from pushreport_core import ConfigurationError, Report, StorageUnavailable, merge
from pushreport_files import FilesStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def selector(i: int) -> str:
    return f"{i:040x}:1"


def report(i: int) -> Report:
    return Report(
        selector=selector(i),
        username=f"user{i}",
        token_msgs=f"msg{i}AAAA",
        appid_msgs="com.example.app",
        extra={"n": str(i)},
    )


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_options_and_unknown_option(tmp_path: Path) -> None:
    s = FilesStorage.from_options(
        {"path": "data", "compact_after": 5, "fsync": False}, StorageContext(base_dir=tmp_path)
    )
    assert (s.path, s.compact_after, s.fsync) == (tmp_path / "data", 5, False)
    s.close()
    with pytest.raises(ConfigurationError) as info:
        FilesStorage.from_options({"folder": "x"}, StorageContext(base_dir=tmp_path))
    assert info.value.key == "storage.files.folder"
    with pytest.raises(ConfigurationError) as info:
        FilesStorage.from_options({"fsync": "yes"}, StorageContext(base_dir=tmp_path))
    assert info.value.key == "storage.files.fsync"


def test_the_password_is_never_written(tmp_path: Path) -> None:
    from pushreport_core import Secret

    s = FilesStorage(tmp_path / "d")
    s.upsert(Report(selector=selector(1), password=Secret("hunter2-secret")), now=T0)
    s.close()
    assert all(b"hunter2-secret" not in p.read_bytes() for p in (tmp_path / "d").iterdir())


def test_torn_last_line_is_ignored_and_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    s = FilesStorage(folder)
    acknowledged = [s.upsert(report(i), now=T0) for i in range(3)]
    s.close()
    good_size = (folder / "log.jsonl").stat().st_size
    with open(folder / "log.jsonl", "ab") as f:
        f.write(b'{"op":"report","selector":"' + selector(9).encode())  # a crash mid-write
    s = FilesStorage(folder)
    try:
        assert list(s) == acknowledged
        stored = s.upsert(report(4), now=T0)
        assert s.get(selector(9)) is None
        assert [r["selector"] for r in lines(folder)[1:]] == [selector(i) for i in (0, 1, 2, 4)]
        assert (folder / "log.jsonl").stat().st_size > good_size
    finally:
        s.close()
    reopened = FilesStorage(folder)
    assert list(reopened) == [*acknowledged, stored]
    reopened.close()


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    s = FilesStorage(folder)
    for i in range(3):
        s.upsert(report(i), now=T0)
    s.close()
    text = (folder / "log.jsonl").read_text().splitlines(keepends=True)
    text[2] = "not json\n"
    (folder / "log.jsonl").write_text("".join(text))
    s = FilesStorage(folder)
    with pytest.raises(StorageUnavailable, match="corrupt"):
        s.get(selector(0))
    s.close()


def test_compaction_keeps_the_state(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    s = FilesStorage(folder, compact_after=5)
    other = FilesStorage(folder, compact_after=5)  # another handle, caught up under the lock
    model = {}
    for i in range(23):
        model[selector(i % 7)] = merge(
            model.get(selector(i % 7)), report(i % 7), now=T0 + timedelta(seconds=i)
        )
        assert s.upsert(report(i % 7), now=T0 + timedelta(seconds=i)) == model[selector(i % 7)]
    assert s.remove(selector(3)) is True
    del model[selector(3)]
    snapshot = json.loads((folder / "snapshot.json").read_text())
    assert snapshot["generation"] == 4 and len(lines(folder)) <= 5
    assert lines(folder)[0]["generation"] == snapshot["generation"]
    assert {r.selector: r for r in other} == model
    assert other.upsert(report(0), now=T0).reports == model[selector(0)].reports + 1
    s.close()
    other.close()
    reopened = FilesStorage(folder)
    assert reopened.get(selector(0)).reports == model[selector(0)].reports + 1
    reopened.close()


def test_crash_between_snapshot_and_new_log(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    s = FilesStorage(folder)
    for i in range(3):
        s.upsert(report(i), now=T0)
    expected = list(s)
    s.close()
    # The snapshot of generation 1 was renamed in; the crash came before the new log.
    (folder / "snapshot.json").write_text(
        json.dumps(
            {"format": 1, "generation": 1, "registrations": [r.to_json() for r in expected]}
        )
    )
    s = FilesStorage(folder)
    try:
        assert list(s) == expected  # the old log is not counted twice
        assert s.upsert(report(0), now=T0).reports == 2
        assert lines(folder)[0]["generation"] == 1
    finally:
        s.close()


def test_unwritable_folder_is_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "log.jsonl").mkdir()  # an OSError (IsADirectoryError) on every open
    s = FilesStorage(folder)
    with pytest.raises(StorageUnavailable):
        s.upsert(report(1), now=T0)
    s.close()


_WORKER = """
import sys
from datetime import datetime, timezone
from pushreport_core import Report
from pushreport_files import FilesStorage
folder, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = FilesStorage(folder, lock_timeout=30, compact_after=int(sys.argv[4]))
now = datetime(2024, 5, 1, tzinfo=timezone.utc)
print("ready", flush=True)
for i in range(count):
    sel = f"{worker}{i:039x}:1"
    s.upsert(Report(selector=sel, token_msgs="x" * (i % 300 + 1), extra={"i": str(i)}),
             now=now)
    print(sel, flush=True)
"""


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(folder), "a", "100000", "200"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "ready\n"
    printed = []
    deadline = time.monotonic() + 30
    while len(printed) < 300 and time.monotonic() < deadline:
        printed.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    printed += [line.strip() for line in proc.stdout.read().splitlines()]
    printed = [p for p in printed if p]
    assert len(printed) >= 300
    s = FilesStorage(folder)
    try:
        stored = {r.selector for r in s}
        assert set(printed) <= stored
        s.upsert(report(1), now=T0)  # the next write works, whatever the tail was
    finally:
        s.close()


def test_two_processes_never_interleave_lines(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    count = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(folder), w, str(count), "1000000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in ("b", "c")
    ]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    records = lines(folder)  # every line parses
    assert len(records) == 1 + 2 * count
    assert sum(len(o.splitlines()) for o in outputs) == 2 + 2 * count
    s = FilesStorage(folder)
    assert len(list(s)) == 2 * count
    s.close()
