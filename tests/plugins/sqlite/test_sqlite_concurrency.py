"""Processes that upsert the same selectors while racing to create a new file's schema.

Every upsert returns the registration as stored, whose ``reports`` is its place in the
commit order of its selector; folding :func:`pushreport_core.merge` over the reports in
that order must give every returned registration and the final row
(:func:`pushreport.testing.check_linearizable`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pushreport.testing import (
    CONCURRENT_SELECTORS,
    check_linearizable,
    concurrent_now,
    concurrent_report,
)
from pushreport_core import Registration
from pushreport_sqlite import SQLiteStorage

# Threads and processes on an existing file are StorageConformance's concurrency tests,
# which this backend runs in test_sqlite_conformance.py, with the same reports.

_WORKER = """
import json, sys, time
from pathlib import Path
from pushreport_sqlite import SQLiteStorage
from pushreport.testing import concurrent_now as make_now
from pushreport.testing import concurrent_report as make_report

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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(w), str(per_proc)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n_procs)
    ]
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
            upserts.append(
                (
                    concurrent_report(worker, i),
                    concurrent_now(worker, i),
                    Registration.from_json(stored),
                )
            )
    storage = SQLiteStorage(path=path)
    try:
        check_linearizable(upserts, {s: storage.get(s) for s in CONCURRENT_SELECTORS})
        assert sum(r.reports for r in storage) == n_procs * per_proc
    finally:
        storage.close()
