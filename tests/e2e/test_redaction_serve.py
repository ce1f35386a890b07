"""A real ``pushreport serve`` writes neither the password nor the shared secret to its
log, in text or JSON: not in the access log (issue 14, item 1's reproductions), not in
gunicorn's lines about requests it refuses."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from .conftest import ENGINE, Server

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
PASSWORD = "Hunter2PW"
SECRET = "Sc3tN8vQe1mYw6Rj"

#: The line each engine logs for a request it refuses before pushreport sees it
#: (gunicorn's quotes the request, cut by the redaction filter; uvicorn's does not).
REFUSED_LINE = (
    "Invalid HTTP request received."
    if ENGINE == "uvicorn"
    else "Invalid request from ip=127.0.0.1: Invalid HTTP"
)


def request(line: str, *headers: str) -> bytes:
    head = "\r\n".join((line, "Host: x", *headers, "Connection: close"))
    return f"{head}\r\n\r\n".encode("latin-1")


ACCEPTED = [
    request(
        f"GET /pushToken/alice/{SELECTOR}/{TOKEN}&appid=com.x&password={PASSWORD}"
        f"&pushsecret={SECRET} HTTP/1.1"
    ),
    request(
        f"GET /token/?username=alice&selector={SELECTOR}&token_msgs={TOKEN}"
        f"&appid_msgs=com.x&push%73ecret={SECRET}&pass%77ord={PASSWORD} HTTP/1.1"
    ),
]
# Requests gunicorn refuses before the app sees them, and logs.
REFUSED = [
    request(f"GET\t/token/?password={PASSWORD}&pushsecret={SECRET} HTTP/1.1"),
    request(f"GET /token/?pass%77ord={PASSWORD} pushsecret={SECRET} HTTP/1.1"),
    request("GET /token/ HTTP/1.1", f"X-{SECRET}\x01: {PASSWORD}"),
    request("GET /token/ HTTP/1.1", f"Authorization: Basic {PASSWORD}\x01{SECRET}"),
]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_logs_neither_the_password_nor_the_secret(tmp_path: Path, log_format: str) -> None:
    config = tmp_path / "pushreport.toml"
    config.write_text(
        f'[server]\naccess_log = true\nlog_format = "{log_format}"\n'
        f'[auth]\nmethods = ["secret"]\nsecret = "{SECRET}"\nsecret_field = "pushsecret"\n'
    )
    server = Server(tmp_path, "--config", str(config), workers=1)
    try:
        for raw in ACCEPTED:
            assert server.send(raw).startswith(b"HTTP/1.1 200 ")
        for raw in REFUSED:
            assert server.send(raw).startswith(b"HTTP/1.1 400 ")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = server.output()
            if out.count("pushreport.access") >= 2 and out.count(REFUSED_LINE) >= 4:
                break
            time.sleep(0.05)
    finally:
        server.stop()
    assert out.count(REFUSED_LINE) == 4, out
    assert "password=***&pushsecret=***" in out and "push%73ecret=***&pass%77ord=***" in out
    for value in (PASSWORD, SECRET):
        assert value not in out and value not in unquote(out), value
