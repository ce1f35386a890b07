"""forget_token and prune in the files backend: one record each in the log, replayed by
another handle, kept by compaction, all or nothing when torn."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pushreport_core import Report, without_token
from pushreport_files import FilesStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
TOKEN = "c2hhcmVkdG9rZW4="


def selector(i: int) -> str:
    return f"{i:040x}:1"


def fill(storage: FilesStorage) -> None:
    for i in range(4):
        storage.upsert(
            Report(
                selector=selector(i),
                username=f"user{i}",
                token_msgs=TOKEN,
                appid_msgs="com.example.app",
            ),
            now=T0 + timedelta(days=i),
        )


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()][1:]


def test_one_record_each_replayed_by_a_new_handle(tmp_path: Path) -> None:
    a = FilesStorage(tmp_path)
    fill(a)
    assert a.forget_token(TOKEN, keep=selector(3)) == [selector(i) for i in range(3)]
    assert [r.selector for r in a.prune(T0 + timedelta(days=2))] == [selector(0), selector(1)]
    assert a.prune(T0) == [] and a.forget_token(TOKEN, keep=selector(3)) == []
    expected = list(a)
    a.close()
    assert records(tmp_path)[4:] == [
        {"op": "forget", "token": TOKEN, "selectors": [selector(i) for i in range(3)]},
        {"op": "prune", "before": "2024-05-03T12:00:00.000000Z"},
    ], "one record per call, none for a call that changed nothing"
    b = FilesStorage(tmp_path)
    try:
        assert list(b) == expected
        assert [r.token_msgs for r in b] == [None, TOKEN]
    finally:
        b.close()


def test_compaction_keeps_them(tmp_path: Path) -> None:
    a = FilesStorage(tmp_path, compact_after=5)
    fill(a)
    a.forget_token(TOKEN, selector=selector(1))  # the 5th record: compaction follows
    a.prune(T0 + timedelta(hours=1))
    expected = list(a)
    a.close()
    snapshot = json.loads((tmp_path / "snapshot.json").read_text())
    assert [r["selector"] for r in snapshot["registrations"]] == [selector(i) for i in range(4)]
    assert snapshot["registrations"][1]["token_msgs"] is None
    assert records(tmp_path) == [{"op": "prune", "before": "2024-05-01T13:00:00.000000Z"}]
    b = FilesStorage(tmp_path)
    try:
        assert list(b) == expected and len(expected) == 3
    finally:
        b.close()


def test_a_torn_prune_record_prunes_nothing(tmp_path: Path) -> None:
    a = FilesStorage(tmp_path)
    fill(a)
    before = list(a)
    a.prune(T0 + timedelta(days=3))
    a.close()
    log = tmp_path / "log.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[:-5])  # a crash in the middle of the append
    b = FilesStorage(tmp_path)
    try:
        assert list(b) == before, "a torn prune record was applied"
        forgotten = b.forget_token(TOKEN, selector=selector(2))
        assert forgotten == [selector(2)]
        assert b.get(selector(2)) == without_token(before[2], TOKEN)
    finally:
        b.close()
    c = FilesStorage(tmp_path)
    try:
        assert c.get(selector(2)) == without_token(before[2], TOKEN)
        assert len(list(c)) == 4
    finally:
        c.close()
