"""Concurrent upserts of the same selectors: threads and processes, on one file.

Every upsert returns the registration as stored, whose ``reports`` is its place in the
commit order of its selector. Folding :func:`pushreport_core.merge` over the reports in
that order must give every returned registration and the final row: no lost update, no
lost token, nothing counted twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pushreport_core import Registration, Report, merge
from pushreport_sqlite import SQLiteStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTORS = ["0123456789abcdef0123456789abcdef01234567:1",
             "0123456789abcdef0123456789abcdef01234567:2",
             "fedcba9876543210fedcba9876543210fedcba98:1"]

Upsert = tuple[Report, datetime, Registration]


def make_report(worker: int, i: int) -> Report:
    """Worker *worker*'s *i*-th report: each knows only some of the tokens."""
    k = i // len(SELECTORS)  # the how-manyth report of this worker for this selector
    return Report(
        selector=SELECTORS[i % len(SELECTORS)],
        username=f"user{worker}" if k % 4 == 0 else None,
        token_calls=f"call-{worker}-{i}" if k % 2 == 0 else None,
        appid_calls="com.example.app.voip" if k % 2 == 0 else None,
        token_msgs=f"msg-{worker}-{i}" if k % 3 != 1 else None,
        appid_msgs="com.example.app" if k % 3 != 1 else None,
        extra={f"w{worker}": str(i)},
    )


def make_now(worker: int, i: int) -> datetime:
    return T0 + timedelta(microseconds=i * 1000 + worker)


def check_linearizable(upserts: list[Upsert], storage: SQLiteStorage) -> None:
    by_selector: dict[str, list[Upsert]] = defaultdict(list)
    for upsert in upserts:
        by_selector[upsert[0].selector].append(upsert)
    assert set(by_selector) == set(SELECTORS)
    for selector, group in by_selector.items():
        group.sort(key=lambda u: u[2].reports)
        # Each upsert got its own place: 1..n, none lost, none twice.
        assert [u[2].reports for u in group] == list(range(1, len(group) + 1))
        expected = None
        for report, now, returned in group:
            expected = merge(expected, report, now=now)
            assert returned == expected
        assert storage.get(selector) == expected
        known_msgs = {u[0].token_msgs for u in group} - {None}
        assert known_msgs and expected.token_msgs in known_msgs


def test_threads_upserting_the_same_selectors(tmp_path: Path) -> None:
    storage = SQLiteStorage(path=tmp_path / "p.sqlite3", busy_timeout=10)
    n_threads, per_thread = 8, 40
    results: list[list[Upsert]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                report, now = make_report(worker, i), make_now(worker, i)
                results[worker].append((report, now, storage.upsert(report, now=now)))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        upserts = [u for r in results for u in r]
        assert len(upserts) == n_threads * per_thread
        check_linearizable(upserts, storage)
        assert sum(r.reports for r in storage) == n_threads * per_thread
    finally:
        storage.close()


_WORKER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from pushreport_sqlite import SQLiteStorage
from test_sqlite_concurrency import make_now, make_report

path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
go = Path(path + ".go")
storage = SQLiteStorage(path=path, busy_timeout=10)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
for i in range(count):
    report, now = make_report(worker, i), make_now(worker, i)
    print(json.dumps([i, storage.upsert(report, now=now).to_json()]), flush=True)
storage.close()
"""


def test_processes_upserting_the_same_selectors(tmp_path: Path) -> None:
    # The file does not exist yet: the workers also race to create the schema.
    path = tmp_path / "p.sqlite3"
    n_procs, per_proc = 3, 60
    here = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), str(w),
                               str(per_proc), here],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(n_procs)]
    try:
        for p in procs:
            assert p.stdout.readline() == "ready\n"
        Path(str(path) + ".go").touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n_procs, [err for _, err in outputs]
    upserts = []
    for worker, (out, _) in enumerate(outputs):
        lines = out.splitlines()
        assert len(lines) == per_proc
        for line in lines:
            i, stored = json.loads(line)
            upserts.append((make_report(worker, i), make_now(worker, i),
                            Registration.from_json(stored)))
    storage = SQLiteStorage(path=path)
    try:
        check_linearizable(upserts, storage)
        assert sum(r.reports for r in storage) == n_procs * per_proc
    finally:
        storage.close()
