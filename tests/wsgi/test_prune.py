"""pushreport prune and the prune schedule, on real SQLite files, with a frozen clock."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pushreport._cli import main
from pushreport._prune import PruneSchedule, prune_lock_path, run_prune
from pushreport_core import ConfigurationError, Registration, Report, format_time
from pushreport_sqlite import SQLiteStorage
from pushreport_wsgi import Config, Receiver, load_config

from .conftest import make_config

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
OLD = "0" * 39 + "1:1"
EDGE = "0" * 39 + "2:1"
FRESH = "0" * 39 + "3:1"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"


def fill(config: Config) -> dict[str, Registration]:
    """OLD last seen 100 days ago, EDGE exactly 90, FRESH an hour ago."""
    receiver = Receiver.from_config(config)
    try:
        for backend in receiver.backends[1:]:
            put(backend.storage)
        return put(receiver.storage)
    finally:
        receiver.close()


def put(storage: Any) -> dict[str, Registration]:
    return {
        OLD: storage.upsert(
            Report(selector=OLD, username="olduser", token_msgs=TOKEN, appid_msgs="com.app"),
            now=NOW - timedelta(days=100),
        ),
        EDGE: storage.upsert(Report(selector=EDGE, username="edge"), now=NOW - timedelta(days=90)),
        FRESH: storage.upsert(
            Report(
                selector=FRESH, username="fresh", token_calls=TOKEN, appid_calls="com.app.voip"
            ),
            now=NOW - timedelta(hours=1),
        ),
    }


def selectors(config: Config) -> list[str]:
    receiver = Receiver.from_config(config)
    try:
        return [r.selector for r in receiver.storage]
    finally:
        receiver.close()


def test_dry_run_then_prune(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    fill(config)
    out = io.StringIO()
    assert run_prune(config, "90d", dry_run=True, verbose=True, out=out, now=NOW) == 0
    assert out.getvalue() == (
        "SELECTOR                                    USERNAME  TOKEN_MSGS     TOKEN_CALLS  "
        "LAST_SEEN\n"
        f"{OLD}  olduser   QVBBOTFiRzlh…  -            2025-02-21T12:00:00.000000Z\n"
        "would prune 1 registration last seen before 2025-03-03T12:00:00.000000Z "
        "(older than 90d)\n"
    )
    assert selectors(config) == [OLD, EDGE, FRESH], "a dry run deleted"
    out = io.StringIO()
    assert run_prune(config, "90d", out=out, now=NOW) == 0
    assert out.getvalue() == (
        "pruned 1 registration last seen before 2025-03-03T12:00:00.000000Z (older than 90d)\n"
    )
    assert selectors(config) == [EDGE, FRESH]
    out = io.StringIO()
    run_prune(config, "2160h", verbose=True, out=out, now=NOW + timedelta(seconds=1))
    assert out.getvalue() == (
        "SELECTOR                                    USERNAME  "
        "TOKEN_MSGS  TOKEN_CALLS  LAST_SEEN\n"
        f"{EDGE}  edge      -           -            "
        "2025-03-03T12:00:00.000000Z\n"
        "pruned 1 registration last seen before "
        "2025-03-03T12:00:01.000000Z (older than 90d)\n"
    )
    out = io.StringIO()
    run_prune(config, "1d", out=out, now=NOW)
    assert out.getvalue() == (
        "pruned 0 registrations last seen before 2025-05-31T12:00:00.000000Z (older than 1d)\n"
    )
    assert selectors(config) == [FRESH]


def test_json(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    stored = fill(config)
    out = io.StringIO()
    run_prune(config, "30d", dry_run=True, as_json=True, out=out, now=NOW)
    data = json.loads(out.getvalue())
    assert data == {
        "before": "2025-05-02T12:00:00.000000Z",
        "dry_run": True,
        "count": 2,
        "registrations": [stored[OLD].to_json(), stored[EDGE].to_json()],
    }


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x.sqlite3"
    storage = SQLiteStorage(db)
    storage.upsert(Report(selector=OLD), now=datetime(2000, 1, 1, tzinfo=timezone.utc))
    storage.close()
    assert main(["prune", "--db", str(db), "--older-than", "90x"]) == 2
    assert capsys.readouterr().err == (
        "pushreport: configuration error: --older-than: '90x' is not a duration: write a "
        "whole number and a unit, s, m, h, d or w (e.g. 90d)\n"
    )
    assert main(["prune", "--db", str(db), "--older-than", "90d", "--dry-run"]) == 0
    assert "would prune 1 registration last seen before " in capsys.readouterr().out
    assert main(["prune", "--db", str(db), "--older-than", "90d", "--verbose"]) == 0
    assert "\npruned 1 registration last seen before " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prune", "--db", str(db)])  # --older-than is required


def test_a_summary_by_default_the_list_with_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14, item 18: a prune of 200,000 is one line, not 200,001."""
    db = tmp_path / "x.sqlite3"
    storage = SQLiteStorage(db)
    old = datetime(2000, 1, 1, tzinfo=timezone.utc)
    storage.upsert_many([(Report(selector=f"{i:040X}:01"), old) for i in range(500)])
    storage.close()
    args = ["prune", "--db", str(db), "--older-than", "90d"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("would prune 500 registrations last seen before ") and out.count("\n") == 1
    )
    assert main([*args, "--dry-run", "--verbose"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 502 and out[0].startswith("SELECTOR ") and out[1].startswith("0" * 40)
    assert out[-1].startswith("would prune 500 registrations")
    assert main([*args, "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 500 and len(data["registrations"]) == 500
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("pruned 500 registrations last seen before ") and out.count("\n") == 1


def test_every_backend_is_pruned(tmp_path: Path) -> None:
    from pushreport._config import StorageConfig

    config = Config(
        storage=StorageConfig(
            backends=("sqlite", "files"),
            options={
                "sqlite": {"path": str(tmp_path / "db.sqlite3")},
                "files": {"path": str(tmp_path / "files")},
            },
        ),
        base_dir=tmp_path,
    )
    fill(config)
    run_prune(config, "90d", out=io.StringIO(), now=NOW)
    receiver = Receiver.from_config(config)
    try:
        for backend in receiver.backends:
            assert [r.selector for r in backend.storage] == [EDGE, FRESH], backend.name
    finally:
        receiver.close()


# -- the configuration ----------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_prune_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[prune]\nolder_than = "90d"\ninterval = "6h"\n'))
    assert config.prune.older_than_delta() == timedelta(days=90)
    assert config.prune.interval_delta() == timedelta(hours=6)
    default = load_config(write(tmp_path, ""))
    assert default.prune.older_than_delta() is None
    assert default.prune.interval_delta() == timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[prune]\nolder_than = "90"\n',
            "prune.older_than: '90' is not a duration: write a "
            "whole number and a unit, s, m, h, d or w (e.g. 90d)",
        ),
        (
            '[prune]\ninterval = "0s"\n',
            "prune.interval: '0s' is not a duration: it must be more than zero",
        ),
        ("[prune]\nolder_than = 90\n", "prune.older_than: must be a string, not int"),
        (
            '[prune]\nevery = "1d"\n',
            "prune.every: unknown key (expected one of: interval, older_than)",
        ),
        (
            '[reporter]\ntoken_owner = "last"\n',
            'reporter.token_owner: must be "shared" or "newest", not \'last\'',
        ),
    ],
)
def test_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        load_config(write(tmp_path, text))
    assert str(e.value) == message


# -- the schedule, with a frozen clock -------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def schedule(config: Config, clock: Clock) -> tuple[Receiver, PruneSchedule]:
    receiver = Receiver.from_config(config, clock=clock)
    pruner = PruneSchedule(
        storages=[(b.name, b.storage) for b in receiver.backends],
        older_than=timedelta(days=90),
        interval=timedelta(days=1),
        lock_path=tmp_lock(config),
        clock=clock,
    )
    return receiver, pruner


def tmp_lock(config: Config) -> Path:
    return config.base_dir / "db.sqlite3.prune-lock"


def test_the_schedule_prunes_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    fill(config)
    clock = Clock(NOW)
    receiver, pruner = schedule(config, clock)
    try:
        with caplog.at_level(logging.INFO, logger="pushreport"):
            assert pruner.run_due() == 1
        assert caplog.messages[-1] == (
            "pruned 1 registration last seen before 2025-03-03T12:00:00.000000Z (older than 90d)"
        )
        assert tmp_lock(config).read_text() == format_time(NOW) + "\n"
        clock.now = NOW + timedelta(hours=23)
        assert pruner.run_due() is None, "ran twice within the interval"
        assert selectors(config) == [EDGE, FRESH]
        clock.now = NOW + timedelta(days=1)
        assert pruner.run_due() == 1  # EDGE is 91 days old now
        assert selectors(config) == [FRESH]
        clock.now = NOW + timedelta(days=2)
        assert pruner.run_due() == 0
    finally:
        receiver.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    fill(config)
    clock = Clock(NOW)
    receiver, pruner = schedule(config, clock)
    other_receiver, other = schedule(config, clock)
    try:
        # Another process holds the lock (an flock on its own open file description).
        fd = os.open(tmp_lock(config), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            assert pruner.run_due() is None
            assert selectors(config) == [OLD, EDGE, FRESH]
        finally:
            os.close(fd)
        assert pruner.run_due() == 1
        # The other worker sees the last run in the file: not due.
        assert other.run_due() is None
        clock.now = NOW + timedelta(days=1)
        assert other.run_due() == 1
        assert pruner.run_due() is None
    finally:
        receiver.close()
        other_receiver.close()


def test_a_failed_prune_is_not_a_run(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    fill(config)
    receiver, pruner = schedule(config, Clock(NOW))
    try:
        import sqlite3

        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            from pushreport_core import StorageUnavailable

            with pytest.raises(StorageUnavailable):
                pruner.run_due()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert tmp_lock(config).read_text() == ""
        assert pruner.run_due() == 1, "a failure postponed the next run by an interval"
    finally:
        receiver.close()


def test_start_pruning_runs_on_a_thread_until_close(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    fill(config)
    off = Receiver.from_config(config)
    try:
        assert off.start_pruning() is False and off.pruner is None
    finally:
        off.close()
    import attrs

    from pushreport._config import PruneConfig

    config = attrs.evolve(config, prune=PruneConfig(older_than="90d", interval="1s"))
    clock = Clock(NOW)
    receiver = Receiver.from_config(config, clock=clock)
    try:
        assert receiver.start_pruning() is True
        assert prune_lock_path(config, receiver.backends[0].capabilities.path) == tmp_lock(config)
        deadline = time.monotonic() + 10
        while selectors(config) != [EDGE, FRESH] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert selectors(config) == [EDGE, FRESH]
        clock.now = NOW + timedelta(days=1)  # a second later, EDGE is old enough too
        deadline = time.monotonic() + 10
        while selectors(config) != [FRESH] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert selectors(config) == [FRESH]
        thread = receiver.pruner._thread
    finally:
        receiver.close()
    assert receiver.pruner is None and not thread.is_alive()
