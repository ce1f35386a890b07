"""The real ``pushreport prune`` command, and pruning while ``pushreport serve`` runs."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pushreport_core import Registration
from pushreport_sqlite import SQLiteStorage

from .conftest import PUSHREPORT, Server, pushreport_list

OLD = "A" * 40 + ":00000001"
RECENT = "B" * 40 + ":00000002"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"


def seed(db: Path) -> None:
    """OLD last reported 200 days ago, RECENT a minute ago (put_many: as given)."""
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=200)
    storage = SQLiteStorage(db)
    try:
        storage.put_many(
            [
                Registration(
                    selector=OLD,
                    username="gone",
                    token_msgs=TOKEN,
                    appid_msgs="com.cloudsoftphone.app",
                    first_seen=old,
                    last_seen=old,
                    reports=4,
                ),
                Registration(
                    selector=RECENT,
                    username="here",
                    first_seen=now,
                    last_seen=now - timedelta(minutes=1),
                ),
            ]
        )
    finally:
        storage.close()


def prune(db: Path, *args: str) -> str:
    done = subprocess.run(
        [*PUSHREPORT, "prune", "--db", str(db), "--older-than", "90d", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_dry_run_then_prune(tmp_path: Path) -> None:
    db = tmp_path / "pushreport.sqlite3"
    seed(db)
    assert prune(db, "--dry-run").startswith("would prune 1 registration last seen before ")
    out = prune(db, "--dry-run", "--verbose")
    lines = out.splitlines()
    assert lines[0].split() == ["SELECTOR", "USERNAME", "TOKEN_MSGS", "TOKEN_CALLS", "LAST_SEEN"]
    assert lines[1].split()[:4] == [OLD, "gone", "QVBBOTFiRzlh…", "-"]
    assert lines[2].startswith("would prune 1 registration last seen before ")
    assert lines[2].endswith(" (older than 90d)") and len(lines) == 3
    assert TOKEN not in out, "a whole token was printed"
    assert [r["selector"] for r in pushreport_list(db)] == [OLD, RECENT]
    out = prune(db, "--verbose")
    assert out.splitlines()[1].split()[0] == OLD
    assert out.splitlines()[-1].startswith("pruned 1 registration last seen before ")
    assert [r["selector"] for r in pushreport_list(db)] == [RECENT]
    assert prune(db).startswith("pruned 0 registrations last seen before ")


def test_serve_prunes_once_on_its_schedule(tmp_path: Path) -> None:
    db = tmp_path / "pushreport.sqlite3"
    seed(db)
    config = tmp_path / "pushreport.toml"
    config.write_text('[prune]\nolder_than = "90d"\ninterval = "1h"\n')
    server = Server(tmp_path, "--config", str(config), workers=2)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if [r["selector"] for r in pushreport_list(db)] == [RECENT]:
                break
            time.sleep(0.2)
        assert [r["selector"] for r in pushreport_list(db)] == [RECENT], server.output()
        answer = server.send(
            b"GET /token/?selector="
            + OLD.encode()
            + b"&username=back HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        time.sleep(0.5)  # both workers have looked at the schedule by now
        output = server.output()
    finally:
        server.stop()
    assert "pruning registrations last seen more than 90d ago, every 1h" in output
    runs = [line for line in output.splitlines() if "pushreport: pruned " in line]
    assert len(runs) == 1, output  # two workers, one prune per interval
    assert "pruned 1 registration last seen before " in runs[0]
    assert (db.parent / "pushreport.sqlite3.prune-lock").read_text().endswith("Z\n")
    assert [r["selector"] for r in pushreport_list(db)] == [OLD, RECENT]
