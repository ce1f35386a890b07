"""Only what serves requests reads the secrets named by ``*_env`` (issue 14, item 15).

``pushreport list`` and ``account-xml`` authenticate nothing: an ``*_env`` naming a
variable that is not set must not stop them. ``serve`` (and ``create_app``) still fail
at start-up with the error naming the key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pushreport._cli import main
from pushreport_core import ConfigurationError, Report
from pushreport_sqlite import SQLiteStorage
from pushreport_wsgi import create_app, load_config

from .conftest import SELECTOR, TOKEN_MSGS

UNSET = "PUSHREPORT_TEST_SURELY_UNSET_VARIABLE"

# (the TOML of the configuration, the error serving it gives)
CASES = [
    (
        '[auth]\nmethods = ["secret"]\nsecret_env = "{v}"\nsecret_field = "pushsecret"\n',
        f"auth.secret_env: environment variable '{UNSET}' is not set",
    ),
    (
        '[auth]\nmethods = ["digest"]\ndigest_username = "app"\ndigest_password_env = "{v}"\n',
        f"auth.digest_password_env: environment variable '{UNSET}' is not set",
    ),
    (
        '[auth]\nmethods = ["digest"]\ndigest_username = "app"\ndigest_password = "pw"\n'
        'nonce_key_env = "{v}"\n',
        f"auth.nonce_key_env: environment variable '{UNSET}' is not set",
    ),
    (
        '[lookup]\nenabled = true\ntoken_env = "{v}"\n',
        f"lookup.token_env: environment variable '{UNSET}' is not set",
    ),
    (
        '[admin]\nenabled = true\ntoken_env = "{v}"\n',
        f"admin.token_env: environment variable '{UNSET}' is not set",
    ),
]
IDS = ["secret", "digest_password", "nonce_key", "lookup_token", "admin_token"]


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)


def write_config(tmp_path: Path, toml: str) -> Path:
    db = tmp_path / "db.sqlite3"
    p = tmp_path / "pushreport.toml"
    p.write_text(toml.format(v=UNSET) + f'[storage.sqlite]\npath = "{db}"\n')
    storage = SQLiteStorage(db)
    try:
        storage.upsert(
            Report(selector=SELECTOR, username="alice", token_msgs=TOKEN_MSGS),
            now=datetime(2024, 5, 1, tzinfo=timezone.utc),
        )
    finally:
        storage.close()
    return p


@pytest.mark.parametrize("toml, message", CASES, ids=IDS)
def test_list_and_account_xml_do_not_need_the_variable(
    tmp_path, unset, capsys, toml, message
) -> None:
    path = write_config(tmp_path, toml)
    load_config(path)  # loading resolves nothing
    assert main(["list", "--config", str(path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["selector"], row["username"]) == (SELECTOR, "alice")
    base = "https://push.example.com"  # without it, a warning on stderr (a loopback URL)
    assert main(["account-xml", "--config", str(path), "--base-url", base]) == 0
    out, err = capsys.readouterr()
    assert "pushTokenReporterUrl" in out and err == ""
    # The other commands that only read or change storage need it no more.
    assert main(["stats", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["registrations"] == 1
    prune = ["prune", "--config", str(path), "--older-than", "1d", "--dry-run", "--verbose"]
    assert main(prune) == 0
    assert SELECTOR in capsys.readouterr().out


def test_a_receiver_built_not_to_serve_refuses_requests(tmp_path, unset) -> None:
    from pushreport_core import Request
    from pushreport_wsgi import Receiver

    path = write_config(tmp_path, CASES[0][0])
    receiver = Receiver.from_config(load_config(path), serving=False)
    try:
        target = f"/token/?selector={SELECTOR}&token_msgs={TOKEN_MSGS}&pushsecret=x"
        with pytest.raises(RuntimeError, match="^this Receiver was built with serving=False$"):
            receiver.handle(Request(method="GET", target=target))
        assert receiver.storage.get(SELECTOR).username == "alice"  # unchanged
    finally:
        receiver.close()


@pytest.mark.parametrize("toml, message", CASES, ids=IDS)
def test_create_app_still_fails_naming_the_key(tmp_path, unset, toml, message) -> None:
    with pytest.raises(ConfigurationError) as e:
        create_app(load_config(write_config(tmp_path, toml)))
    assert str(e.value) == message


@pytest.mark.parametrize("toml, message", CASES[:1] + CASES[3:], ids=IDS[:1] + IDS[3:])
def test_serve_still_fails_at_start_up_with_one_line(tmp_path, unset, toml, message) -> None:
    path = write_config(tmp_path, toml)
    done = subprocess.run(
        [sys.executable, "-m", "pushreport._cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == f"pushreport: configuration error: {message}\n"


def test_a_short_lookup_token_from_the_environment_fails_when_served(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv(UNSET, "short")
    config = load_config(write_config(tmp_path, CASES[3][0]))
    with pytest.raises(ConfigurationError) as e:
        create_app(config)
    assert str(e.value) == "lookup.token_env: the token must be at least 16 characters"
