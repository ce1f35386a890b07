"""``[auth] methods = ["http"]`` on a real ``pushreport serve``: its workers ask a
provider on loopback (a real HTTP server in this process) and answer the app 200, 403 or
503 + Retry-After; the password is in no line of the server's log and no metric."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from ..wsgi.test_auth_http import PASSWORD, Provider
from .conftest import Server, pushreport_list

pytestmark = pytest.mark.e2e

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"


def target(username: str, password: str = PASSWORD) -> str:
    return (
        f"/token/?selector={SELECTOR}&username={username}&token_msgs={TOKEN}"
        f"&appid_msgs=com.cloudsoftphone.app&password={quote(password, safe='')}"
    )


def status(base: str, path: str) -> tuple[int, str | None]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as resp:
            return resp.status, None
    except urllib.error.HTTPError as e:
        e.close()
        return e.code, e.headers.get("Retry-After")


def test_serve_authenticates_by_http_callout(tmp_path: Path) -> None:
    provider = Provider()
    config = tmp_path / "pushreport.toml"
    config.write_text(
        "[server]\naccess_log = true\n[metrics]\nenabled = true\n"
        f'[auth]\nmethods = ["http"]\nhttp_url = "{provider.url}"\nhttp_timeout = 1\n'
    )
    server = Server(tmp_path, "--config", str(config), workers=2)
    try:
        base = f"http://127.0.0.1:{server.port}"
        for _ in range(4):  # on either worker; each asks at most once, then caches
            assert status(base, target("alice")) == (200, None)
        assert status(base, target("alice", "guess")) == (403, None)
        assert status(base, target("forbidden")) == (403, None)
        for username in ("broken", "moved", "slow", "closed"):
            assert status(base, target(username)) == (503, "5"), username
        with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:
            scraped = resp.read().decode()
    finally:
        server.stop()
        provider.close()
    [reg] = pushreport_list(server.db)
    assert reg["username"] == "alice" and reg["reports"] == 4
    alice = [c for c in provider.calls if c["form"]["username"] == "alice"]
    assert 2 <= len(alice) <= 3  # the right password once per worker, the wrong one once
    assert not provider.redirect_followed
    output = (tmp_path / "server.log").read_text("utf-8", "replace")
    assert "pushreport: authentication: http" in output
    host = provider.url.split("/check")[0]
    assert f"authentication provider {host} failed: HTTP 500" in output
    assert f"authentication provider {host} failed: timed out" in output
    assert '"GET /token/' in output and " 503 " in output
    for text in (output, scraped):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text
