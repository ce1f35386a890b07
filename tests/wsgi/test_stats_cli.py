"""``pushreport stats`` over a real SQLite file, in the terminal and as JSON."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pushreport._cli import main
from pushreport._config import Config
from pushreport._stats import collect_stats, render_stats, run_stats
from pushreport_core import Registration
from pushreport_sqlite import SQLiteStorage

APNS = "a3f1" * 16
FCM = "cXyZ0123:APA91bH" + "x-Y_z0" * 25


def fill(db: Path, now: datetime) -> None:
    storage = SQLiteStorage(path=db)
    rows = []
    for i in range(40):
        ios = i % 4 != 0
        rows.append(
            Registration(
                selector=f"{i:040X}:7C3A0D14",
                username=f"user{i}",
                token_calls=APNS if ios else FCM,
                token_msgs=APNS if ios else FCM,
                appid_calls="com.cloudsoftphone.app.pushkit" if ios else "com.cloudsoftphone.app",
                appid_msgs="com.cloudsoftphone.app",
                user_agent=(
                    f"Cloud Softphone/2.{i % 3}.0 (iPhone; iOS 17.1)"
                    if ios
                    else "Cloud Softphone/2.0.0 (Android 14)"
                ),
                first_seen=now - timedelta(days=200),
                last_seen=now - timedelta(hours=12 + 24 * 5 * i),
            )
        )
    storage.put_many(rows)
    storage.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite3"
    fill(path, datetime.now(timezone.utc))
    return path


def test_stats_json_is_one_object(db, capsys):
    assert main(["stats", "--db", str(db), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["registrations"] == 40
    # last_seen: 0.5, 5.5, 10.5 ... days ago.
    assert data["last_report_age"] == {"<1d": 1, "<7d": 1, "<30d": 4, "<90d": 12, "older": 22}
    assert data["platforms"] == {"apns": 30, "fcm": 10, "mixed": 0, "unknown": 0, "none": 0}
    assert data["app_ids"] == {
        "calls": {"com.cloudsoftphone.app.pushkit": 30, "com.cloudsoftphone.app": 10},
        "msgs": {"com.cloudsoftphone.app": 40},
    }
    assert data["app_versions"] == {
        "Cloud Softphone/2.0.0": 20,
        "Cloud Softphone/2.1.0": 10,
        "Cloud Softphone/2.2.0": 10,
    }


def test_stats_draws_bars_in_the_terminal(db):
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    now = datetime.now(timezone.utc)
    assert (
        run_stats(
            Config().with_storage_option("sqlite", "path", str(db)),
            as_json=False,
            out=out,
            clock=lambda: now,
        )
        == 0
    )
    out.flush()
    text = raw.getvalue().decode("utf-8")
    lines = text.splitlines()
    assert lines[0] == "registrations: 40"
    assert "  older  ██████████████████████████████  22   55.0%" in lines
    assert "  <90d   ████████████████▍               12   30.0%" in lines
    assert "  apns  ██████████████████████████████  30   75.0%" in lines
    assert "  fcm   ██████████                      10   25.0%" in lines
    assert "  mixed" not in text  # empty platforms are left out
    assert "app version (from the user agent)" in text
    assert "  Cloud Softphone/2.0.0  ██████████████████████████████  20   50.0%" in lines


def test_stats_without_unicode_draws_hashes_and_lists_what_it_hides():
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    regs = [
        Registration(
            selector=f"{i:040X}:7C3A0D14", appid_calls=f"app{i}", first_seen=now, last_seen=now
        )
        for i in range(12)
    ]
    text = render_stats(collect_stats(iter(regs), now=now), unicode=False)
    assert "  app0   ##############################  1    8.3%" in text
    assert "  … 2 more (2 registrations)" in text
    assert "█" not in text


def test_stats_of_an_empty_store(tmp_path, capsys):
    storage = SQLiteStorage(path=tmp_path / "empty.sqlite3")
    storage.ping()  # created, as serve creates it
    storage.close()
    assert main(["stats", "--db", str(tmp_path / "empty.sqlite3")]) == 0
    assert capsys.readouterr().out == "registrations: 0\n"


def test_stats_is_a_command_with_a_config(tmp_path, db):
    (tmp_path / "p.toml").write_text(f'[storage.sqlite]\npath = "{db.name}"\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pushreport._cli",
            "stats",
            "--config",
            str(tmp_path / "p.toml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out)["registrations"] == 40
