"""``pushreport list --limit`` on a real SQLite file (issue 14, item 18)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pushreport._cli import main
from pushreport_core import Report
from pushreport_sqlite import SQLiteStorage


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "x.sqlite3"
    storage = SQLiteStorage(path)
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    storage.upsert_many([(Report(selector=f"{i:040X}:01", username="u"), now) for i in range(7)])
    storage.close()
    return path


def test_limit_prints_the_first_n_and_says_how_many_more(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--db", str(db), "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("SELECTOR") and len(lines) == 5 and err == ""
    assert [line.split()[0] for line in lines[1:4]] == [f"{i:040X}:01" for i in range(3)]
    assert lines[4] == "… 4 more registrations (--limit 3)"


def test_limit_with_json_keeps_stdout_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", str(db), "--limit", "6", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [r["selector"] for r in json.loads(out)] == [f"{i:040X}:01" for i in range(6)]
    assert err == "pushreport: list: not shown: 1 more registration (--limit 6)\n"


def test_limit_with_a_username_and_when_all_fit(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--db", str(db), "--username", "u", "--limit", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 2 and "5 more registrations" in err
    assert main(["list", "--db", str(db), "--limit", "7"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 8 and "more" not in out and err == ""


def test_limit_must_be_positive(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["list", "--db", str(db), "--limit", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "pushreport: list: argument --limit: must be a whole number of at least 1, not '0' "
        "(see pushreport list --help)\n"
    )
