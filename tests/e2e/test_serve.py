"""`pushreport serve` as a real process: the spec's examples byte for byte, read back
with `pushreport list --json`. (kill -9 under load: tests/faults/test_kill.py.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pushreport_core import to_http_bytes
from pushreport_core.testing import SPEC_REQUESTS

from .conftest import PUSHREPORT, Server, pushreport_list

pytestmark = pytest.mark.e2e

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="

# The spec's examples as the app sends them, byte for byte (tests/conformance/
# test_app_model.py checks these bytes against the specification's own text).
SPEC_GET = to_http_bytes(SPEC_REQUESTS["GET"], "example.com")
SPEC_JSON_BODY = SPEC_REQUESTS["POST JSON"].body


def spec_post(body: bytes) -> bytes:
    return (
        b"POST /token/johndow/ HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Connection: close\r\n"
        b"Cache-Control: max-age=0\r\n"
        b"User-Agent: CloudSoftphone/1.5.6\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_spec_get_example(server: Server):
    answer = server.send(SPEC_GET)
    assert status_of(answer) == 200, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b""
    assert b"content-type" not in head.lower()
    [reg] = pushreport_list(server.db)
    assert set(reg) == {
        "selector",
        "username",
        "token_calls",
        "appid_calls",
        "token_msgs",
        "appid_msgs",
        "extra",
        "user_agent",
        "first_seen",
        "last_seen",
        "reports",
    }
    assert reg["selector"] == SELECTOR
    assert reg["username"] == "johndow"
    assert reg["token_calls"] == TOKEN_CALLS
    assert reg["token_msgs"] == TOKEN_MSGS
    assert reg["appid_calls"] == "com.cloudsoftphone.app.pushkit"
    assert reg["appid_msgs"] == "com.cloudsoftphone.app"
    assert reg["user_agent"] == "CloudSoftphone/1.5.6"
    assert reg["reports"] == 1
    assert reg["first_seen"].endswith("Z")
    # The password travelled in the URL: it is in no stored byte and no log line.
    for f in server.db.parent.rglob("*"):  # the WAL and the report spool's files too
        if f.is_file() and f.suffix != ".toml":
            assert b"12345678" not in f.read_bytes(), f
    assert "12345678" not in server.output()


def test_spec_json_example_then_ios_delay(server: Server):
    assert status_of(server.send(spec_post(SPEC_JSON_BODY))) == 200
    delayed = SPEC_JSON_BODY.replace(TOKEN_MSGS.encode(), b"")
    assert status_of(server.send(spec_post(delayed))) == 200
    [reg] = pushreport_list(server.db, "--username", "johndow")
    assert reg["token_msgs"] == TOKEN_MSGS and reg["reports"] == 2
    assert pushreport_list(server.db, "--selector", SELECTOR)[0]["username"] == "johndow"
    assert pushreport_list(server.db, "--username", "nobody") == []


def test_spec_path_example(server: Server):
    raw = (
        b"GET /pushToken/johndow/"
        + SELECTOR.encode()
        + b"/Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D&appid=com.cloudsoftphone.app"
        b" HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    )
    assert status_of(server.send(raw)) == 200
    [reg] = pushreport_list(server.db)
    assert reg["token_msgs"] == TOKEN_CALLS  # the %2F survived the server
    assert reg["appid_msgs"] == "com.cloudsoftphone.app"


def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(server: Server):
    bad = [
        b"GET /token/?selector=xyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        spec_post(b"[" * 10000),
        spec_post(b"\xff\xfe not utf-8"),
        spec_post(b'{"selector": "' + SELECTOR.encode() + b'", "selector": "x"}'),
        b"GET /token/?selector=%ZZ%FF HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    for raw in bad:
        answer = server.send(raw)
        assert 400 <= status_of(answer) < 500, answer
        assert b"text/plain" in answer.partition(b"\r\n\r\n")[0]
    assert pushreport_list(server.db) == []
    assert status_of(server.send(SPEC_GET)) == 200


def test_serve_logs_where_it_listens_and_what_it_accepts(server: Server):
    out = server.output()
    assert f"listening on http://127.0.0.1:{server.port}" in out
    assert "accepting the default shapes" in out
    assert "storage backend 'sqlite'" in out


def test_account_xml_command(tmp_path: Path):
    out = subprocess.run(
        [*PUSHREPORT, "account-xml", "--base-url", "https://push.example.com"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.startswith(
        "<pushTokenReporterUrl>https://push.example.com/token/?username="
        "%account[username]%&amp;selector=%selector%&amp;"
    )


def test_bad_configuration_fails_at_start_up(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[reporter]\nurl = "https://x/%selector%%pushToken%"\n')
    proc = subprocess.run(
        [*PUSHREPORT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "pushTokenReporterUrl: %selector% and %pushToken% have no literal text" in proc.stderr


def test_access_log_masks_the_password_and_shortens_tokens(tmp_path: Path):
    server = Server(tmp_path, "--access-log")
    try:
        assert status_of(server.send(SPEC_GET)) == 200
        deadline = time.monotonic() + 10
        while "pushreport.access" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = server.output()
    finally:
        server.stop()
    assert "password=***" in out and " 200 " in out
    assert "12345678" not in out
    assert TOKEN_MSGS not in out and "token_msgs=QVBBOTFi…" in out


def test_list_into_a_closed_pipe_is_not_an_error(tmp_path: Path):
    from datetime import datetime, timezone

    from pushreport_core import Report
    from pushreport_sqlite import SQLiteStorage

    db = tmp_path / "many.sqlite3"
    storage = SQLiteStorage(db)
    storage.upsert_many(
        [(Report(selector=f"{i:040X}:01"), datetime.now(timezone.utc)) for i in range(3000)]
    )
    storage.close()
    proc = subprocess.run(
        f"{' '.join(PUSHREPORT)} list --db {db} --json | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout == "[\n  {\n    "
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
