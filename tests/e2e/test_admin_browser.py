"""The support page in a real browser: Playwright driving Debian's chromium against a
live ``pushreport serve`` and a fake gateway on loopback. Screenshots go to
``test-artifacts/`` at the repository's root.

Skips, saying why, when playwright or /usr/bin/chromium is missing, except under
``CI=true`` (``.ci/run`` installs both), where that is a failure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..fake_gateway import FakeGateway, running_gateway
from .conftest import Server, pushreport_list
from .test_push_e2e import PHONE, PUSHKIT, REMOTE, TABLET, report

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
TOKEN = "e2e-support-page-token-0123"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BASE = "/pushreport/admin"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


@pytest.fixture
def server(tmp_path: Path, gateway: FakeGateway) -> Iterator[Server]:
    config = tmp_path / "pushreport.toml"
    config.write_text(
        f'[admin]\nenabled = true\ntoken = "{TOKEN}"\n\n'
        f'[push]\ngateway_url = "{gateway.url}"\nattempts = 1\ntimeout = 5\n'
    )
    s = Server(tmp_path, "--config", str(config), workers=1)
    try:
        report(s, "alice", PHONE, "PHONE-CALLS-token-0123", "PHONE-MSGS-token-0123")
        report(s, "alice", TABLET, "TABLET-CALLS-token-0123", "TABLET-MSGS-token-0123")
        yield s
    finally:
        s.stop()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def csp_errors(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m]


def test_log_in_search_push_forget(browser, server, gateway):
    url = f"http://127.0.0.1:{server.port}{BASE}"
    # No JavaScript at all: the page is forms and links.
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))

    page.goto(url + "/")
    assert page.url == url + "/login"
    shot(page, "1-login")
    page.fill("#token", "not-the-token-at-all")
    page.click("text=Log in")
    assert "wrong token" in page.content()
    page.fill("#token", TOKEN)
    page.click("text=Log in")
    assert page.url == url + "/"
    [cookie] = [c for c in context.cookies() if c["name"] == "pushreport_admin"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == BASE

    page.fill("#q", "alice")
    page.click("text=Search")
    phone = page.locator(f'section[data-selector="{PHONE}"]')
    assert phone.count() == 1 and page.locator("section.reg").count() == 2
    text = phone.inner_text()
    assert "PHONE-CALLS-" in text and PUSHKIT in text and REMOTE in text
    assert "PHONE-CALLS-token-0123" not in page.content()  # shortened
    shot(page, "2-search")

    phone.locator("text=Test push: message").click()
    results = page.locator("#push-results")
    assert "delivered" in results.inner_text() and "HTTP 200, code 200" in results.inner_text()
    [sent] = gateway.bodies()
    assert sent["DeviceToken"] == "PHONE-MSGS-token-0123" and sent["Selector"] == PHONE
    shot(page, "3-push")

    page.locator(f'section[data-selector="{PHONE}"]').locator("text=Forget…").click()
    assert "Forget the registration" in page.content()
    shot(page, "4-confirm")
    page.click("text=Forget it")
    assert f"forgot the registration {PHONE}" in page.inner_text("main")
    assert page.locator(f'section[data-selector="{PHONE}"]').count() == 0
    assert page.locator(f'section[data-selector="{TABLET}"]').count() == 1
    shot(page, "5-forgotten")
    assert [r["selector"] for r in pushreport_list(server.db)] == [TABLET]
    assert csp_errors(console) == []

    # Refused: an action with a wrong CSRF token (the session cookie is sent) ...
    resp = context.request.post(
        url + "/forget", form={"csrf": "0" * 64, "selector": TABLET, "confirm": "yes"}
    )
    assert resp.status == 403 and "CSRF" in resp.text()
    # ... and one without the session or the token.
    anonymous = browser.new_context()
    resp = anonymous.request.post(
        url + "/forget", form={"selector": TABLET, "confirm": "yes"}, max_redirects=0
    )
    assert resp.status == 401
    resp = anonymous.request.get(url + "/?q=alice", max_redirects=0)
    assert resp.status == 303 and TABLET not in resp.text()
    assert [r["selector"] for r in pushreport_list(server.db)] == [TABLET]
    anonymous.close()
    context.close()


def test_readable_on_a_phone(browser, server):
    url = f"http://127.0.0.1:{server.port}{BASE}"
    context = browser.new_context(
        viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True
    )
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(url + "/login")
    page.fill("#token", TOKEN)
    page.click("text=Log in")
    page.goto(url + "/?q=alice")
    assert page.locator("section.reg").count() == 2
    # Nothing wider than the screen, and the stylesheet applied (the CSP allows it).
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    padding = page.evaluate("getComputedStyle(document.querySelector('section.reg')).paddingTop")
    assert re.fullmatch(r"\d+(\.\d+)?px", padding) and padding != "0px"
    assert csp_errors(console) == []
    shot(page, "6-phone")
    context.close()


def test_behind_a_local_tls_proxy_the_cookie_is_secure(server):
    """gunicorn believes ``X-Forwarded-Proto`` from a proxy on the same host (its
    ``forwarded_allow_ips`` default): the cookie is then ``Secure``; without the
    header, it is not."""

    def login_form(headers: str) -> bytes:
        return server.send(
            f"GET {BASE}/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
        )

    proxied = login_form("X-Forwarded-Proto: https\r\n")
    plain = login_form("")
    [cookie] = re.findall(rb"(?im)^set-cookie: (pushreport_admin_login=.*)$", proxied)
    assert b"; Secure" in cookie and b"HttpOnly" in cookie and b"SameSite=Strict" in cookie
    [cookie] = re.findall(rb"(?im)^set-cookie: (pushreport_admin_login=.*)$", plain)
    assert b"Secure" not in cookie
    assert f"support page at {BASE}/" in server.output()  # said at start-up
