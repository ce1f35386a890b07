"""``pushreport outbox``: pending and dead events, as text and JSON, and their replay."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pushreport._cli import main
from pushreport_core import Report
from pushreport_webhook import WebhookStorage
from pushreport_webhook._outbox import failed, pending_events

from .conftest import SECRET

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SEL_A = "a" * 40 + ":7c3a0d14"
SEL_B = "b" * 40 + ":7c3a0d14"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose secret comes from a variable this process does not set:
    the command needs neither the URL nor the secret."""
    path = tmp_path / "pushreport.toml"
    path.write_text(
        '[storage]\nbackends = ["sqlite", "webhook"]\n[storage.webhook]\n'
        'url = "http://127.0.0.1:9/hook"\nsecret_env = "PR_UNSET_IN_TESTS"\n'
        'outbox = "box.sqlite3"\nrequired = true\n'
    )
    return path


@pytest.fixture
def box(tmp_path: Path, config: Path) -> WebhookStorage:
    """Three events: #1 (A) dead after 5 attempts, #2 (B) failed twice, #3 (A) new."""
    s = WebhookStorage(tmp_path / "box.sqlite3", deliver=False)
    try:
        s.upsert(Report(selector=SEL_A, token_msgs="dG9rMQ=="), now=T0)
        s.upsert(Report(selector=SEL_B, token_msgs="dG9rMg=="), now=T0)
        s.upsert(Report(selector=SEL_A, token_msgs="dG9rMw=="), now=T0)
        s._transaction(
            lambda c: [
                c.execute("UPDATE outbox SET attempts = 4 WHERE id = 1"),
                failed(c, 1, "HTTP 503", now=1714564800.0, max_attempts=5, delay=0),
                failed(c, 2, "timed out", now=1714564800.0, max_attempts=5, delay=0),
                failed(c, 2, "connection refused", now=1714564800.0, max_attempts=5, delay=30.5),
            ]
        )
    finally:
        s.close()
    return s


def run(capsys: Any, *args: str) -> tuple[int, str, str]:
    status = main(["outbox", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_outbox_lists_counts_pending_and_dead(
    box: WebhookStorage, config: Path, capsys: Any
) -> None:
    status, out, err = run(capsys, "--config", str(config))
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"outbox {box.path}: 2 pending, 1 dead",
        "pending:",
        "  ID  EVENT                 SELECTOR                                           "
        "ATTEMPTS  NEXT ATTEMPT         LAST ERROR",
        f"  2   registration.updated  {SEL_B}  2         2024-05-01 12:00:30  connection refused",
        f"  3   registration.updated  {SEL_A}  0         now                  -",
        "dead:",
        "  ID  EVENT                 SELECTOR                                           "
        "ATTEMPTS  FAILED AT            LAST ERROR",
        f"  1   registration.updated  {SEL_A}  5         2024-05-01 12:00:00  HTTP 503",
    ]


def test_outbox_json(box: WebhookStorage, config: Path, capsys: Any) -> None:
    status, out, _ = run(capsys, "--config", str(config), "--json")
    data = json.loads(out)
    assert status == 0 and data["outbox"] == str(box.path)
    assert [
        (e["id"], e["attempts"], e["last_error"], e["next_attempt_at"]) for e in data["pending"]
    ] == [(2, 2, "connection refused", "2024-05-01T12:00:30.500000Z"), (3, 0, None, None)]
    [dead] = data["dead"]
    assert dead == {
        "id": 1,
        "event": "registration.updated",
        "selector": SEL_A,
        "occurred_at": "2024-05-01T12:00:00.000000Z",
        "attempts": 5,
        "failed_at": "2024-05-01T12:00:00.000000Z",
        "last_error": "HTTP 503",
        "registration": dead["registration"],
    }
    assert dead["registration"]["token_msgs"] == "dG9rMQ=="


def test_replay_one_then_all(box: WebhookStorage, config: Path, capsys: Any) -> None:
    assert run(capsys, "--config", str(config), "--replay-dead", "--id", "7") == (
        1,
        "",
        "pushreport: outbox: no dead event with id 7\n",
    )
    assert run(capsys, "--config", str(config), "--replay-dead", "--id", "1") == (
        0,
        "replayed 1 dead event\n",
        "",
    )
    assert run(capsys, "--config", str(config), "--replay-dead") == (
        0,
        "replayed 0 dead events\n",
        "",
    )
    reopened = WebhookStorage(box.path, deliver=False)
    try:
        events = reopened._read(pending_events)
    finally:
        reopened.close()
    # Back under its own id, first of its selector again, no attempts counted.
    assert [(e.id, e.attempts) for e in events] == [(1, 0), (2, 2), (3, 0)]
    status, out, _ = run(capsys, "--config", str(config))
    assert out.splitlines()[0] == f"outbox {box.path}: 3 pending, 0 dead"


def test_outbox_errors(tmp_path: Path, config: Path, capsys: Any) -> None:
    assert run(capsys, "--config", str(config)) == (
        2,
        "",
        f"pushreport: outbox: sqlite database {tmp_path / 'box.sqlite3'} does not exist "
        "(pushreport serve creates it)\n",
    )
    assert run(capsys, "--config", str(config), "--id", "3") == (
        2,
        "",
        "pushreport: outbox: --id needs --replay-dead\n",
    )
    plain = tmp_path / "plain.toml"
    plain.write_text('[storage]\nbackends = ["sqlite"]\n')
    assert run(capsys, "--config", str(plain)) == (
        2,
        "",
        "pushreport: outbox: no webhook backend in storage.backends\n",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[storage]\nbackends = ["webhook"]\n[storage.webhook]\noutbox = 3\n')
    assert run(capsys, "--config", str(bad)) == (
        2,
        "",
        "pushreport: configuration error: storage.webhook.outbox: must be a file "
        "path (a non-empty string), not 3\n",
    )


def test_outbox_of_an_empty_outbox(tmp_path: Path, config: Path, capsys: Any) -> None:
    empty = WebhookStorage(
        tmp_path / "box.sqlite3", url="http://127.0.0.1:9/", secret=SECRET, deliver=False
    )
    empty.ping()
    empty.close()
    assert run(capsys, "--config", str(config)) == (
        0,
        f"outbox {tmp_path / 'box.sqlite3'}: 0 pending, 0 dead\n",
        "",
    )
