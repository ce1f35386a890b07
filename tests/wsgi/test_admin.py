"""The support page ([admin]) in process: a real SQLite file, werkzeug's test client,
a fake gateway on loopback. The browser test is tests/e2e/test_admin_browser.py."""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from pushreport import (
    AdminConfig,
    AdminPage,
    AdminRequest,
    LimitsConfig,
    LookupConfig,
    PruneConfig,
    PushConfig,
    StorageConfig,
)
from pushreport_core import ConfigurationError, Secret
from pushreport_wsgi import AdminApp, Receiver, create_app, hookimpl, make_plugin_manager

from ..fake_gateway import GONE, FakeGateway, running_gateway
from .conftest import make_config
from .test_push import PUSHKIT, REMOTE, SEL_A, SEL_B, SEL_C, report

TOKEN = "support-page-token-0123456789"
BASE = "/pushreport/admin"
HOSTILE_USER = "<script>alert(1)</script>"
HOSTILE_UA = '"><img src=x onerror=alert(2)>'
SEL_H = "E" * 40 + ":8"


class Recorder:
    def __init__(self) -> None:
        self.removed: list[Any] = []

    @hookimpl
    def pushreport_registration_removed(self, registration, removal):
        self.removed.append((registration, removal))


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


def admin_config(tmp_path, gateway_url: str = "http://127.0.0.1:9/pnm2/send", **admin: Any):
    return attrs.evolve(
        make_config(tmp_path),
        admin=AdminConfig(enabled=True, token=TOKEN, **admin),
        push=PushConfig(gateway_url=gateway_url, timeout=2.0, attempts=1),
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(tmp_path, gateway, recorder):
    pm = make_plugin_manager(plugins=[recorder])
    receiver = Receiver.from_config(admin_config(tmp_path, gateway.url), plugin_manager=pm)
    application = create_app(receiver=receiver)
    report(
        application, "alice", SEL_A, calls="CALLTOKEN-A-0123456789", msgs="MSGTOKEN-A-0123456789"
    )
    report(application, "alice", SEL_B, calls="CALLTOKEN-B-0123456789")
    report(application, "bob", SEL_C, calls="CALLTOKEN-C-0123456789", msgs="MSGTOKEN-C-0123456789")
    yield application
    application.close()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return html.unescape(found.group(1))


def login(c: Client, token: str = TOKEN, **kwargs: Any):
    form = c.get(BASE + "/login", **kwargs)
    assert form.status_code == 200
    return c.post(BASE + "/login", data={"csrf": csrf_of(form.text), "token": token}, **kwargs)


def logged_in(app) -> Client:
    c = Client(app)
    assert login(c).status_code == 303
    return c


def stored(app) -> list[str]:
    return sorted(r.selector for r in app.receiver.storage.find())


# --- configuration ------------------------------------------------------------------------


def test_off_by_default(tmp_path):
    app = create_app(make_config(tmp_path))
    assert Client(app).get(BASE + "/").status_code == 404
    app.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "admin.token: the support page needs token or token_env"),
        ({"token": "short"}, "admin.token: the token must be at least 16 characters"),
        ({"token": TOKEN, "token_env": "X"}, "admin.token: set token or token_env, not both"),
        ({"token": TOKEN, "path": "/admin/"}, "admin.path: must start with / and not end with /"),
        ({"token": TOKEN, "session": "forever"}, "admin.session: 'forever' is not a duration"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(settings, message):
    with pytest.raises(ConfigurationError) as e:
        AdminConfig(enabled=True, **settings)
    assert str(e.value).startswith(message)


def test_token_env_is_read_and_checked_at_start(tmp_path, monkeypatch):
    config = attrs.evolve(
        make_config(tmp_path), admin=AdminConfig(enabled=True, token_env="PR_ADMIN_TOKEN")
    )
    with pytest.raises(ConfigurationError, match="environment variable 'PR_ADMIN_TOKEN' is not"):
        Receiver.from_config(config)
    monkeypatch.setenv("PR_ADMIN_TOKEN", "too-short")
    with pytest.raises(ConfigurationError, match=r"admin\.token_env: the token must be at least"):
        Receiver.from_config(config)
    monkeypatch.setenv("PR_ADMIN_TOKEN", TOKEN)
    app = create_app(config)
    assert login(Client(app)).status_code == 303
    app.close()


def test_the_page_and_the_lookup_cannot_share_a_path(tmp_path):
    with pytest.raises(ConfigurationError, match="admin.path: /pushreport/lookup/x overlaps"):
        attrs.evolve(
            admin_config(tmp_path, path="/pushreport/lookup/x"),
            lookup=LookupConfig(enabled=True, token=TOKEN),
        )


def test_a_report_path_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="admin.path: /token is a report path"):
        create_app(admin_config(tmp_path, path="/token"))


# --- logging in ------------------------------------------------------------------------


def test_without_a_session_pages_send_to_the_login_and_actions_are_refused(app):
    c = Client(app)
    resp = c.get(BASE + "/?q=alice")
    assert resp.status_code == 303 and resp.headers["Location"] == "login"
    resp = c.post(BASE + "/forget", data={"selector": SEL_A, "confirm": "yes", "csrf": "x"})
    assert resp.status_code == 401 and "log in first" in resp.text
    assert c.post(BASE + "/push", data={"selector": SEL_A, "purpose": "call"}).status_code == 401
    assert SEL_A in stored(app)


def test_a_wrong_token_is_refused_and_not_logged(app, caplog):
    c = Client(app)
    with caplog.at_level(logging.DEBUG):
        resp = login(c, token="not-the-token-at-all")
    assert resp.status_code == 401 and "wrong token" in resp.text
    assert "Set-Cookie" not in resp.headers or "pushreport_admin=" not in str(
        resp.headers.getlist("Set-Cookie")
    )
    assert c.get(BASE + "/").status_code == 303
    assert "not-the-token-at-all" not in caplog.text and TOKEN not in caplog.text
    assert "a failed login" in caplog.text


def test_the_session_cookie_is_signed_httponly_strict_and_scoped(app):
    c = Client(app)
    resp = login(c)
    assert resp.status_code == 303 and resp.headers["Location"] == "./"
    [cookie] = [v for v in resp.headers.getlist("Set-Cookie") if v.startswith("pushreport_admin=")]
    flags = [f.strip() for f in cookie.split(";")]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and f"Path={BASE}" in flags
    assert "Secure" not in flags  # plain http: a Secure cookie would never come back
    assert TOKEN not in cookie
    assert c.get(BASE + "/").status_code == 200
    # A forged or altered cookie is no session.
    value = cookie.split(";")[0].split("=", 1)[1]
    sid, expires, signature = value.split(".")
    for forged in (f"{sid}.{int(expires) + 9999}.{signature}", f"x{sid}.{expires}.{signature}"):
        other = Client(app)
        other.set_cookie("pushreport_admin", forged, path=BASE)
        assert other.get(BASE + "/").status_code == 303


def test_over_https_the_cookie_is_secure(app):
    c = Client(app)
    resp = login(c, base_url="https://localhost")
    [cookie] = [v for v in resp.headers.getlist("Set-Cookie") if v.startswith("pushreport_admin=")]
    assert "Secure" in [f.strip() for f in cookie.split(";")]


def test_a_login_needs_the_forms_csrf_token(app):
    c = Client(app)
    c.get(BASE + "/login")
    resp = c.post(BASE + "/login", data={"csrf": "forged", "token": TOKEN})
    assert resp.status_code == 403 and "CSRF" in resp.text
    assert c.get(BASE + "/").status_code == 303


def test_a_session_ends_when_it_expires_and_at_logout(tmp_path, gateway):
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    receiver = Receiver.from_config(admin_config(tmp_path, gateway.url, session="1h"))
    page = AdminPage.from_config(receiver)
    page.clock = lambda: now[0]
    c = Client(AdminApp(page))
    assert login(c).status_code == 303
    assert c.get(BASE + "/").status_code == 200
    now[0] += timedelta(minutes=61)
    assert c.get(BASE + "/").status_code == 303
    now[0] -= timedelta(minutes=61)
    resp = c.post(BASE + "/logout", data={"csrf": csrf_of(c.get(BASE + "/").text)})
    assert resp.status_code == 303 and "Max-Age=0" in resp.headers["Set-Cookie"]
    assert c.get(BASE + "/").status_code == 303
    receiver.close()


def test_the_bearer_token_works_without_a_login(app):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = Client(app).get(BASE + "/?q=bob", headers=auth)
    assert resp.status_code == 200 and SEL_C in resp.text
    resp = Client(app).get(BASE + "/?q=bob", headers={"Authorization": "Bearer wrong-token-xxxx"})
    assert resp.status_code == 401 and SEL_C not in resp.text


def test_failed_logins_lock_the_client_out(tmp_path, gateway):
    config = attrs.evolve(
        admin_config(tmp_path, gateway.url), limits=LimitsConfig(auth_failures=2, lockout=60)
    )
    app = create_app(config)
    c = Client(app)
    assert login(c, token="wrong-token-number-1").status_code == 401
    assert login(c, token="wrong-token-number-2").status_code == 401
    resp = login(c)  # the right token, too late
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert c.get(BASE + "/").status_code == 303
    app.close()


# --- the page ------------------------------------------------------------------------------


def test_every_answer_forbids_scripts_frames_caching_and_referrers(app):
    c = logged_in(app)
    for resp in (c.get(BASE + "/?q=alice"), Client(app).get(BASE + "/login"), c.get(BASE + "/x")):
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "form-action 'self'" in csp and "script-src" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "<script" not in resp.text
    # The one inline style is the one the policy's hash allows.
    page = c.get(BASE + "/").text
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in resp.headers["Content-Security-Policy"]
    assert 'name="viewport"' in page


def test_search_by_username_shows_that_accounts_registrations(app):
    page = logged_in(app).get(BASE + "/?q=alice").text
    assert SEL_A in page and SEL_B in page and SEL_C not in page
    # Tokens shortened: enough to tell apart, not to push with.
    assert "CALLTOKEN-A-…" in page and "CALLTOKEN-A-0123456789" not in page
    assert PUSHKIT in page and REMOTE in page and "CloudSoftphone" not in page
    assert "<dt>Reports</dt><dd>1</dd>" in page


def test_search_by_selector(app):
    page = logged_in(app).get(BASE + "/", query_string={"q": SEL_C}).text
    assert SEL_C in page and "bob" in page and SEL_A not in page


def test_nothing_found_says_so(app):
    page = logged_in(app).get(BASE + "/?q=nobody").text
    assert "no registration of username or selector" in page


def test_hostile_values_are_escaped(app):
    report(app, HOSTILE_USER, SEL_H, msgs="MSGTOKEN-H-0123456789")
    c = logged_in(app)
    page = c.get(BASE + "/", query_string={"q": HOSTILE_USER}).text
    assert SEL_H in page
    assert HOSTILE_USER not in page and html.escape(HOSTILE_USER) in page
    echoed = c.get(BASE + "/", query_string={"q": HOSTILE_UA}).text
    assert HOSTILE_UA not in echoed and html.escape(HOSTILE_UA, quote=True) in echoed


def test_a_hostile_user_agent_is_escaped(app):
    resp = Client(app).get(
        f"/token/?selector={SEL_H}&username=eve&token_msgs=MSGTOKEN-E-0123456789"
        f"&appid_msgs={REMOTE}",
        headers={"User-Agent": HOSTILE_UA},
    )
    assert resp.status_code == 200
    page = logged_in(app).get(BASE + "/?q=eve").text
    assert HOSTILE_UA not in page and html.escape(HOSTILE_UA, quote=True) in page


def test_registrations_past_the_prune_age_are_marked_stale(tmp_path, gateway):
    config = attrs.evolve(admin_config(tmp_path, gateway.url), prune=PruneConfig(older_than="30d"))
    app = create_app(config)
    report(app, "carol", SEL_A, msgs="MSGTOKEN-A-0123456789")
    page = AdminPage.from_config(app.receiver)
    c = Client(AdminApp(page))
    login(c)
    assert 'class="stale"' not in c.get(BASE + "/?q=carol").text
    later = datetime.now(timezone.utc) + timedelta(days=31)
    page.clock = lambda: later
    c = Client(AdminApp(page))
    login(c)
    assert '<span class="stale">stale</span>' in c.get(BASE + "/?q=carol").text
    app.close()


# --- actions: CSRF, test push, forget --------------------------------------------------------


def test_actions_need_the_sessions_csrf_token(app):
    c = logged_in(app)
    form = {"selector": SEL_A, "confirm": "yes", "q": "alice"}
    for csrf in (None, "", "0" * 64):
        data = dict(form, **({} if csrf is None else {"csrf": csrf}))
        resp = c.post(BASE + "/forget", data=data)
        assert resp.status_code == 403 and "CSRF" in resp.text
    # Another session's token is no good either.
    other = logged_in(app)
    theirs = csrf_of(other.get(BASE + "/?q=alice").text)
    assert c.post(BASE + "/forget", data=dict(form, csrf=theirs)).status_code == 403
    assert SEL_A in stored(app)
    # A GET never acts.
    assert c.get(BASE + "/forget", query_string=form).status_code == 405
    assert SEL_A in stored(app)


def test_forget_asks_first_then_removes_and_notifies(app, recorder):
    c = logged_in(app)
    page = c.get(BASE + "/?q=alice").text
    before = app.receiver.storage.get(SEL_A)
    data = {"csrf": csrf_of(page), "selector": SEL_A, "q": "alice"}
    confirm = c.post(BASE + "/forget", data=data)
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in confirm.text
    assert SEL_A in stored(app) and recorder.removed == []
    done = c.post(BASE + "/forget", data=dict(data, confirm="yes"))
    assert done.status_code == 200 and f"forgot the registration {SEL_A}" in done.text
    assert stored(app) == [SEL_B, SEL_C]
    assert f'data-selector="{SEL_A}"' not in done.text and f'data-selector="{SEL_B}"' in done.text
    [(registration, removal)] = recorder.removed
    assert registration == before and removal.selector == SEL_A and removal.shape == "admin"
    again = c.post(BASE + "/forget", data=dict(data, confirm="yes"))
    assert again.status_code == 404 and recorder.removed == [(registration, removal)]


def test_a_test_push_shows_the_gateways_answer_per_device(app, gateway):
    c = logged_in(app)
    csrf = csrf_of(c.get(BASE + "/?q=alice").text)
    resp = c.post(
        BASE + "/push", data={"csrf": csrf, "selector": SEL_A, "purpose": "call", "q": "alice"}
    )
    assert resp.status_code == 200
    [request] = gateway.bodies()
    assert request["DeviceToken"] == "CALLTOKEN-A-0123456789" and request["AppId"] == PUSHKIT
    results = re.search(r'<div class="note" role="status" id="push-results">.*?</div>', resp.text)
    assert results and "delivered" in results.group(0) and "HTTP 200, code 200" in results.group(0)
    assert SEL_A in resp.text and SEL_B in resp.text  # the search is shown again


def test_a_gateway_refusal_is_shown_and_the_token_forgotten(app, gateway):
    gateway.plan("MSGTOKEN-C-0123456789", [GONE])
    c = logged_in(app)
    csrf = csrf_of(c.get(BASE + "/?q=bob").text)
    resp = c.post(BASE + "/push", data={"csrf": csrf, "selector": SEL_C, "purpose": "message"})
    assert "token-removed" in resp.text and "HTTP 404, code 404" in resp.text
    assert app.receiver.storage.get(SEL_C).token_msgs is None


def test_a_push_without_a_token_for_it_says_so(app, gateway):
    c = logged_in(app)
    csrf = csrf_of(c.get(BASE + "/?q=alice").text)
    resp = c.post(BASE + "/push", data={"csrf": csrf, "selector": SEL_B, "purpose": "message"})
    assert "this registration has no token for messages" in resp.text
    assert gateway.requests == []
    resp = c.post(BASE + "/push", data={"csrf": csrf, "selector": SEL_B, "purpose": "sms"})
    assert resp.status_code == 400 and gateway.requests == []


def test_a_form_too_large_is_refused(app):
    c = logged_in(app)
    resp = c.post(BASE + "/forget", data={"csrf": "x", "selector": "A" * 100_000})
    assert resp.status_code == 413
    assert SEL_A in stored(app)


def test_the_page_needs_a_long_token_however_it_is_built(tmp_path):
    receiver = Receiver.from_config(make_config(tmp_path))
    with pytest.raises(ConfigurationError, match="at least 16"):
        AdminPage(receiver, token=Secret("short"), path=BASE)
    receiver.close()


def test_the_token_and_the_session_never_reach_a_log_line_a_page_or_a_repr(app, caplog):
    pages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        c = Client(app)
        resp = login(c)
        [cookie] = [v for v in resp.headers.getlist("Set-Cookie") if "pushreport_admin=" in v]
        session = cookie.split(";")[0].split("=", 1)[1]
        page = c.get(BASE + "/?q=alice").text
        csrf = csrf_of(page)
        data = {"csrf": csrf, "selector": SEL_A, "q": "alice"}
        pages += [
            page,
            c.post(BASE + "/push", data=dict(data, purpose="message")).text,
            c.post(BASE + "/forget", data=dict(data, confirm="yes")).text,
            Client(app).get(BASE + "/", headers={"Authorization": f"Bearer {TOKEN}"}).text,
        ]
    assert "a login from" in caplog.text and f"forgot the registration of {SEL_A}" in caplog.text
    page_repr = repr(AdminPage.from_config(app.receiver).__dict__)
    for text in (caplog.text, *pages, repr(app.receiver.config), page_repr):
        assert TOKEN not in text and session not in text
    assert "MSGTOKEN-A-0123456789" not in caplog.text


def test_wrong_methods_name_the_allowed_ones(app):
    c = logged_in(app)
    assert c.post(BASE + "/", data={}).headers["Allow"] == "GET, HEAD"
    assert c.get(BASE + "/push").headers["Allow"] == "POST"
    assert Client(app).put(BASE + "/login").headers["Allow"] == "GET, HEAD, POST"
    assert c.head(BASE + "/?q=alice").status_code == 200


def test_a_nul_in_a_search_is_a_clear_refusal(app):
    resp = logged_in(app).get(BASE + "/", query_string={"q": "al\x00ice"})
    assert resp.status_code == 400 and "q contains a NUL character" in resp.text


# Any method, route, cookie and form: an answer, never an exception, and nothing changes
# without the session and its CSRF token.
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.text(
    max_size=40
)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    route=st.sampled_from(["", "/", "/login", "/logout", "/push", "/forget", "/x", "//"]),
    cookie=_text
    | st.builds("{}.{}.{}".format, _text, st.integers(0, 2**40), _text)
    | st.builds("{}.{}.{}".format, _text, _text, _text),
    form=st.dictionaries(
        st.sampled_from(["csrf", "selector", "purpose", "confirm", "q", "token"]),
        st.lists(_text, min_size=1, max_size=2),
    ),
    authorization=st.sampled_from(["", "Bearer ", "Bearer x", "Basic abc", "Bearer é\udcff"]),
)
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100, deadline=None
)
def test_any_request_gets_an_answer_and_forges_nothing(
    page_and_recorder, method, route, cookie, form, authorization
):
    page, recorder = page_and_recorder
    answer = page.answer(
        AdminRequest(
            method=method,
            path=BASE + route,
            query={"q": form.get("q", [""])[:1]},
            form=form,
            cookies={"pushreport_admin": cookie, "pushreport_admin_login": cookie},
            authorization=authorization,
            client="192.0.2.1",
        )
    )
    assert answer.status in (200, 303, 400, 401, 403, 404, 405)
    assert "Content-Security-Policy" in dict(answer.headers)
    assert not any(
        k == "Set-Cookie" and v.startswith("pushreport_admin=") and "Max-Age=0" not in v
        for k, v in answer.headers
    )
    assert recorder.removed == [] and page.receiver.storage.get(SEL_A) is not None


@pytest.fixture(scope="module")
def page_and_recorder(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("admin")
    recorder = Recorder()
    config = attrs.evolve(admin_config(tmp_path), limits=LimitsConfig(auth_failures=0))
    receiver = Receiver.from_config(config, plugin_manager=make_plugin_manager(plugins=[recorder]))
    app = create_app(receiver=receiver)
    report(app, "alice", SEL_A, msgs="MSGTOKEN-A-0123456789")
    yield AdminPage.from_config(receiver), recorder
    app.close()


@pytest.mark.parametrize(
    "cookie", ["s.99999999999.é", "s.99999999999.\udcff", "é.1².x", "\udcff.1.x", "..", "a.b.c"]
)
def test_a_garbled_cookie_is_no_session(page_and_recorder, cookie):
    page, _ = page_and_recorder
    for route, method in (("/", "GET"), ("/forget", "POST"), ("/login", "POST")):
        answer = page.answer(
            AdminRequest(
                method=method,
                path=BASE + route,
                form={"csrf": [cookie], "selector": [SEL_A], "confirm": ["yes"]},
                cookies={"pushreport_admin": cookie, "pushreport_admin_login": cookie},
            )
        )
        assert answer.status in (303, 401, 403)
    assert page.receiver.storage.get(SEL_A) is not None


def test_on_postgresql_two_hosts_share_sessions_lockouts_and_forgetting(
    tmp_path, pg_dsn, pg_table, recorder
):
    """Two apps on one PostgreSQL database, as two hosts: a session from one is good on
    the other (same token, same key), failed logins lock the client out of both (the
    limit table), and forgetting on one is gone for both."""
    config = attrs.evolve(
        admin_config(tmp_path),
        storage=StorageConfig(
            backends=("postgresql",),
            options={"postgresql": {"dsn": pg_dsn, "table": pg_table, "timeout": 2.0}},
        ),
        limits=LimitsConfig(auth_failures=2, lockout=60),
    )
    one = create_app(
        receiver=Receiver.from_config(
            config, plugin_manager=make_plugin_manager(plugins=[recorder])
        )
    )
    two = create_app(config)
    try:
        report(one, "alice", SEL_A, msgs="MSGTOKEN-A-0123456789")
        c = logged_in(one)
        cookie = c.get_cookie("pushreport_admin", path=BASE)
        other = Client(two)
        other.set_cookie("pushreport_admin", cookie.value, path=BASE)
        page = other.get(BASE + "/?q=alice").text
        assert SEL_A in page
        data = {"csrf": csrf_of(page), "selector": SEL_A, "confirm": "yes"}
        assert c.post(BASE + "/forget", data=data).status_code == 200  # same session
        assert two.receiver.storage.get(SEL_A) is None
        assert [r.selector for r, _ in recorder.removed] == [SEL_A]
        assert login(Client(one), token="wrong-token-number-1").status_code == 401
        assert login(Client(two), token="wrong-token-number-2").status_code == 401
        assert login(Client(one)).status_code == 429
    finally:
        one.close()
        two.close()


def test_mounted_under_a_prefix_links_and_the_cookie_follow_it(app):
    """Inside another app at /support (WSGI's SCRIPT_NAME): the page's links are
    relative, and the cookie's path is the full one, so the browser sends it back."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    outer = DispatcherMiddleware(lambda e, s: [], {"/support": app})
    c = Client(outer)
    resp = c.get("/support" + BASE)
    assert resp.status_code == 303 and resp.headers["Location"] == "admin/"
    form = c.get("/support" + BASE + "/login")
    assert 'action="login"' in form.text
    resp = c.post("/support" + BASE + "/login", data={"csrf": csrf_of(form.text), "token": TOKEN})
    [cookie] = [v for v in resp.headers.getlist("Set-Cookie") if "pushreport_admin=" in v]
    assert f"Path=/support{BASE};" in cookie
    page = c.get("/support" + BASE + "/?q=alice").text
    assert SEL_A in page and 'action="forget"' in page and 'action="push"' in page


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("enabled = true\n", "admin.token: the support page needs token or token_env"),
        ('enabled = true\ntoken = "short"\n', "admin.token: the token must be at least 16"),
    ],
)
def test_serve_refuses_to_start_in_one_line(tmp_path, toml, message):
    config = tmp_path / "pushreport.toml"
    config.write_text("[admin]\n" + toml)
    done = subprocess.run(
        [sys.executable, "-m", "pushreport._cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"pushreport: configuration error: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
