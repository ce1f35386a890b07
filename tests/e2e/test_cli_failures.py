"""Every subcommand, as a new user meets it, against a database or a configuration it
cannot use: one ``pushreport: …`` line naming what and why, a non-zero exit, never a
traceback, and nothing created (issue 14, items 12, 13 and 14).

The tests run as root, which file modes do not stop: "unreadable" is a folder where the
file should be, or a path under a regular file.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from .conftest import free_port, run_pushreport

pytestmark = pytest.mark.e2e


def missing_folder(tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / "pushreport.sqlite3"


def missing_file(tmp_path: Path) -> Path:
    return tmp_path / "pushreport.sqlite3"


def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(random.Random(14).randbytes(8192))
    return path


def folder_at_the_path(tmp_path: Path) -> Path:
    path = tmp_path / "folder.sqlite3"
    path.mkdir()
    return path


def under_a_regular_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder\n")
    return tmp_path / "a-file" / "pushreport.sqlite3"


BROKEN: dict[str, Callable[[Path], Path]] = {
    "missing-folder": missing_folder,
    "missing-file": missing_file,
    "corrupt": corrupt,
    "folder-at-the-path": folder_at_the_path,
    "under-a-regular-file": under_a_regular_file,
}

#: Why each one fails, as the line says it.
REASONS = {
    "missing-folder": "does not exist",
    "missing-file": "does not exist",
    "corrupt": "not a SQLite database",
    "folder-at-the-path": "is a folder",
    "under-a-regular-file": "is not a folder",
}


def run(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return run_pushreport(tmp_path, *args, timeout=timeout)


def storage_commands(tmp_path: Path, db: Path) -> dict[str, list[str]]:
    """Each subcommand that opens storage, pointed at *db*."""
    outbox = tmp_path / "outbox.toml"
    outbox.write_text(
        '[storage]\nbackends = ["webhook"]\n[storage.webhook]\n'
        'url = "http://127.0.0.1:1/hook"\n'
        'secret = "whsec_c2VjcmV0LWtleS0yNC1ieXRlcy1sb25nISE="\n'
        f'outbox = "{db}"\n'
    )
    return {
        "serve": ["serve", "--db", str(db), "--port", str(free_port()), "--workers", "1"],
        "list": ["list", "--db", str(db)],
        "stats": ["stats", "--db", str(db)],
        "push": [
            "push",
            "--db",
            str(db),
            "--username",
            "alice",
            "--gateway-url",
            "http://127.0.0.1:1/send",
        ],
        "prune": ["prune", "--db", str(db), "--older-than", "90d"],
        "migrate": ["migrate", "--from", f"sqlite:{db}", "--to", f"sqlite:{tmp_path}/to.sqlite3"],
        "outbox": ["outbox", "--config", str(outbox)],
    }


def assert_one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pushreport: "), proc.stderr
    return lines[0]


STORAGE_COMMANDS = ["serve", "list", "stats", "push", "prune", "migrate", "outbox"]


@pytest.mark.parametrize(
    ("command", "broken"),
    [
        (command, broken)
        for command in STORAGE_COMMANDS
        for broken in BROKEN
        # (serve creates a missing database in an existing folder: that is its job.)
        if (command, broken) != ("serve", "missing-file")
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_naming_it(
    tmp_path: Path, command: str, broken: str
) -> None:
    db = BROKEN[broken](tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run(tmp_path, *storage_commands(tmp_path, db)[command])
    line = assert_one_line(proc)
    assert str(db) in line, line
    assert REASONS[broken] in line, line
    assert "listening on" not in proc.stdout + proc.stderr
    # Nothing created: no database, no spool, no lock beside it, no target.
    after = sorted(p.name for p in tmp_path.iterdir() if p.name != "outbox.toml")
    assert after == before, after


@pytest.mark.parametrize("command", ["list", "stats", "push", "prune", "migrate", "outbox"])
def test_read_commands_never_create_a_database(tmp_path: Path, command: str) -> None:
    db = tmp_path / "pushreport.sqlite3"
    proc = run(tmp_path, *storage_commands(tmp_path, db)[command])
    line = assert_one_line(proc)
    assert line.endswith(f"{db} does not exist (pushreport serve creates it)"), line
    assert not db.exists()
    assert not list(tmp_path.glob("pushreport.sqlite3*")) and not list(tmp_path.glob("to.*"))


def test_list_without_db_in_the_wrong_folder_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = run(tmp_path, "list")
    line = assert_one_line(proc)
    assert line == (
        f"pushreport: sqlite database {tmp_path}/pushreport.sqlite3 does not exist "
        "(pushreport serve creates it)"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_sqlite_file_without_pushreport_data_is_named(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE something_else (x)")
    conn.close()
    line = assert_one_line(run(tmp_path, "list", "--db", str(db)))
    assert line == f"pushreport: no pushreport data in sqlite database {db}"
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert tables == ["something_else"], "a read command created the schema"


def config_commands(tmp_path: Path, config: Path) -> dict[str, list[str]]:
    port = str(free_port())
    return {
        "serve": ["serve", "--config", str(config), "--port", port, "--workers", "1"],
        "list": ["list", "--config", str(config)],
        "stats": ["stats", "--config", str(config)],
        "account-xml": ["account-xml", "--config", str(config)],
        "check": ["check", f"http://127.0.0.1:{port}", "--config", str(config)],
        "migrate": [
            "migrate",
            "--config",
            str(config),
            "--from",
            "sqlite",
            "--to",
            f"files:{tmp_path}/f",
        ],
        "push": ["push", "--config", str(config), "--username", "alice"],
        "prune": ["prune", "--config", str(config), "--older-than", "1d"],
        "outbox": ["outbox", "--config", str(config)],
    }


CONFIGS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda t: t / "nope.toml", "does not exist"),
    "corrupt": (
        lambda t: (t / "bad.toml", (t / "bad.toml").write_bytes(random.Random(1).randbytes(300)))[
            0
        ],
        "not valid TOML",
    ),
    "a-folder": (lambda t: (t / "dir.toml", (t / "dir.toml").mkdir())[0], "is a folder"),
}


@pytest.mark.parametrize("broken", CONFIGS)
@pytest.mark.parametrize(
    "command",
    ["serve", "list", "stats", "account-xml", "check", "migrate", "push", "prune", "outbox"],
)
def test_a_configuration_that_cannot_be_read_is_one_line(
    tmp_path: Path, command: str, broken: str
) -> None:
    make, reason = CONFIGS[broken]
    config = make(tmp_path)
    proc = run(tmp_path, *config_commands(tmp_path, config)[command])
    line = assert_one_line(proc)
    assert str(config) in line and reason in line, line
    assert proc.returncode == 2


def test_migrate_into_a_backend_without_put_many_names_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timezone

    from pushreport import _migrate
    from pushreport._cli import main
    from pushreport.testing import MemoryStorage
    from pushreport_core import Report
    from pushreport_sqlite import SQLiteStorage

    source = tmp_path / "a.sqlite3"
    storage = SQLiteStorage(source)
    storage.upsert(Report(selector="0" * 40 + ":01"), now=datetime.now(timezone.utc))
    storage.close()

    from pushreport._plugins import RegisteredBackend

    real = _migrate.collect_storage_backends

    def backends(pm):  # type: ignore[no-untyped-def]
        found = dict(real(pm))
        # MemoryStorage does not declare put_many.
        found["memory"] = RegisteredBackend("memory", lambda options, context: MemoryStorage())
        return found

    monkeypatch.setattr(_migrate, "collect_storage_backends", backends)
    assert main(["migrate", "--from", f"sqlite:{source}", "--to", "memory"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "pushreport: configuration error: storage backend 'memory' has no put_many: "
        "pushreport migrate cannot copy into it\n"
    )
