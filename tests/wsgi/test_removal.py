"""The Account Removal Reporter through the WSGI adapter, on real SQLite files: report
then remove, idempotence, stale removals, routing next to the reporter, pass-through,
authentication, hooks, storage failures."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from pushreport._config import ReporterConfig, StorageConfig
from pushreport_core import ConfigurationError
from pushreport_wsgi import (
    Config,
    PushReportMiddleware,
    Receiver,
    RemovalConfig,
    create_app,
    hookimpl,
    load_config,
    make_plugin_manager,
)

from .conftest import SELECTOR, SPEC_GET, TOKEN_CALLS, TOKEN_MSGS

OTHER_TOKEN = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
SEL_2 = "AB" * 20 + ":01"
REMOVE = f"/removal/?selector={SELECTOR}"


def make(
    tmp_path: Path,
    *,
    reporter: dict[str, Any] | None = None,
    removal: dict[str, Any] | None = None,
    backends: tuple[str, ...] = ("sqlite",),
    files_required: bool = True,
) -> Config:
    return Config(
        reporter=ReporterConfig(**(reporter or {})),
        removal=RemovalConfig(**(removal or {})),
        storage=StorageConfig(
            backends=backends,
            options={
                "sqlite": {"path": str(tmp_path / "db.sqlite3"), "busy_timeout": 0.3},
                "files": {
                    "path": str(tmp_path / "files"),
                    "lock_timeout": 0.3,
                    "required": files_required,
                },
            },
        ),
        base_dir=tmp_path,
    )


def selectors(app: PushReportMiddleware) -> list[str]:
    return [r.selector for r in app.receiver.storage]


def portal(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"portal:" + environ["REQUEST_METHOD"].encode() + b" " + environ["PATH_INFO"].encode()]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    a = create_app(make(tmp_path))
    yield a
    a.close()


def test_report_then_remove_answers_like_the_reporter(app):
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert selectors(app) == [SELECTOR]
    resp = c.get(REMOVE, headers={"User-Agent": "CloudSoftphone/1.5.6"})
    assert resp.status_code == 200
    assert resp.data == b"" and "Content-Type" not in resp.headers
    assert selectors(app) == []


def test_removing_what_is_gone_is_a_success(app):
    c = Client(app)
    assert c.get(REMOVE).status_code == 200  # never reported
    assert c.get(SPEC_GET).status_code == 200
    assert c.get(REMOVE).status_code == 200
    assert c.get(REMOVE).status_code == 200  # the app retried
    assert selectors(app) == []


def test_only_the_selector_named_goes(app):
    c = Client(app)
    c.get(SPEC_GET)
    c.get(SPEC_GET.replace(SELECTOR, SEL_2))
    assert c.get(f"/removal/?selector={SEL_2}").status_code == 200
    assert selectors(app) == [SELECTOR]


def test_a_stale_removal_keeps_the_newer_registration(app, caplog):
    """The app was reinstalled and reported a new token under the same selector before
    the old install's removal arrived: that removal must not erase it."""
    c = Client(app)
    c.get(SPEC_GET.replace(TOKEN_MSGS, OTHER_TOKEN))
    with caplog.at_level(logging.INFO, logger="pushreport"):
        resp = c.get(f"{REMOVE}&token_msgs={TOKEN_MSGS}")
    assert resp.status_code == 200  # answered: the app need not retry
    [reg] = app.receiver.storage
    assert reg.token_msgs == OTHER_TOKEN
    assert f"removal of {SELECTOR} kept a newer registration (its token differs)" in caplog.text
    # The removal naming the tokens stored does remove it.
    tokens = f"&token_msgs={OTHER_TOKEN.replace('=', '%3D')}&token_calls=" + TOKEN_CALLS.replace(
        "/", "%2F"
    ).replace("=", "%3D")
    assert c.get(REMOVE + tokens).status_code == 200
    assert selectors(app) == []


@pytest.mark.parametrize(
    ("method", "target", "body", "content_type"),
    [
        (
            "POST",
            "/removal/",
            f"selector={SELECTOR}&token_msgs={TOKEN_MSGS}",
            "application/x-www-form-urlencoded",
        ),
        ("POST", "/removal/johndow/", f'{{"selector": "{SELECTOR}"}}', "application/json"),
        ("DELETE", "/removal/", f'{{"Selector": "{SELECTOR}"}}', "application/json"),
        ("PUT", "/removal/", f"selector={SELECTOR}", None),
        ("DELETE", f"/token/?selector={SELECTOR}", "", None),
        (
            "DELETE",
            "/token/johndow/",
            f'{{"selector": "{SELECTOR}", "token_msgs": "{TOKEN_MSGS}"}}',
            "application/json",
        ),
        ("DELETE", f"/pushToken/johndow/{SELECTOR}/{TOKEN_MSGS}", "", None),
    ],
)
def test_default_removal_shapes(app, method, target, body, content_type):
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    headers = {"Content-Type": content_type} if content_type else {}
    resp = c.open(target, method=method, data=body.encode(), headers=headers)
    assert resp.status_code == 200, resp.data
    assert selectors(app) == []


@pytest.mark.parametrize(
    ("method", "target", "status", "reason"),
    [
        (
            "GET",
            "/removal/?selector=nothex",
            400,
            b"selector is not valid: expected 40 hex digits, ':' and a hex suffix\n",
        ),
        ("GET", "/removal/?username=johndow", 400, b"selector is missing\n"),
        ("DELETE", "/token/", 400, b"selector is missing\n"),
        ("PATCH", REMOVE, 405, b"method PATCH is not allowed here\n"),
    ],
)
def test_invalid_removals_are_refused_and_delete_nothing(app, method, target, status, reason):
    c = Client(app)
    c.get(SPEC_GET)
    resp = c.open(target, method=method)
    assert (resp.status_code, resp.data) == (status, reason)
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    if status == 405:
        assert resp.headers["Allow"] == "GET, HEAD, POST, PUT, DELETE"
    assert selectors(app) == [SELECTOR]


def test_portal_routes_pass_through(tmp_path):
    app = PushReportMiddleware(portal, make(tmp_path))
    c = Client(app)
    for method, path in [
        ("GET", "/token/list"),
        ("DELETE", "/something/else"),
        ("GET", "/removal/help"),
        ("DELETE", "/tokens/"),
        ("GET", "/account/removal/"),
    ]:
        resp = c.open(path, method=method)
        assert resp.data == f"portal:{method} {path}".encode(), (method, path)
    # ... while the reporter's and the removal's own paths are answered here.
    assert c.get(SPEC_GET).data == b""
    assert c.delete(f"/token/?selector={SELECTOR}").data == b""
    assert selectors(app) == []
    app.close()


def test_disabled_removals_are_not_claimed(tmp_path):
    app = PushReportMiddleware(portal, make(tmp_path, removal={"enabled": False}))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert c.get(REMOVE).data == f"portal:GET {REMOVE.partition('?')[0]}".encode()
    resp = c.delete(f"/token/?selector={SELECTOR}")
    assert resp.status_code == 405  # the reporter's path, a method it does not take
    assert resp.headers["Allow"] == "GET, HEAD, POST, PUT"
    assert selectors(app) == [SELECTOR]
    app.close()


def test_templates_on_one_path_are_told_apart_by_method(tmp_path):
    app = create_app(
        make(
            tmp_path,
            reporter={
                "url": "https://e.com/api/push?s=%selector%&t=%pushToken%",
                "method": "POST",
            },
            removal={"url": "https://e.com/api/push?s=%selector%", "method": "DELETE"},
        )
    )
    c = Client(app)
    assert c.post(f"/api/push?s={SELECTOR}&t={TOKEN_MSGS}").status_code == 200
    assert selectors(app) == [SELECTOR]
    resp = c.get(f"/api/push?s={SELECTOR}")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert c.delete(f"/api/push?s={SELECTOR}").status_code == 200
    assert selectors(app) == []
    app.close()


def test_a_configured_removal_template_replaces_the_default_shapes(tmp_path):
    app = PushReportMiddleware(
        portal,
        make(
            tmp_path,
            removal={"url": "https://e.com/logout/%selector%/?key=s3cret", "method": "POST"},
        ),
    )
    c = Client(app)
    c.get(SPEC_GET)
    assert c.get(REMOVE).data.startswith(b"portal:")  # the default removal shapes are off
    assert c.delete(f"/token/?selector={SELECTOR}").status_code == 405
    resp = c.post(f"/logout/{SELECTOR}/?key=wrong")
    assert (resp.status_code, resp.data) == (
        400,
        b"query parameter 'key' does not match the configured template\n",
    )
    assert c.post(f"/logout/{SELECTOR}/?key=s3cret").status_code == 200
    assert selectors(app) == []
    app.close()


def test_mounted_under_a_prefix(tmp_path):
    inner = create_app(make(tmp_path))
    c = Client(DispatcherMiddleware(portal, {"/push": inner}))
    assert c.get("/push" + SPEC_GET).status_code == 200
    assert c.get("/push" + REMOVE).status_code == 200
    assert selectors(inner) == []
    inner.close()


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[removal]\nurl = "https://e.com/bye/?u=%account[username]%"\n',
            "accountRemovalReporterUrl: the template carries no %selector%: registrations are "
            "removed by selector",
        ),
        (
            '[removal]\npost_data = "s=%selector%"\n',
            "removal.url: post_data, content_type and method need a url",
        ),
        ('[removal]\nenabled = "yes"\n', "removal.enabled: must be true or false"),
        (
            '[removal]\nurl = "https://e.com/token/?s=%selector%"\n',
            "removal.url: the removal shapes would take the reporter's GET /token/: give the "
            "removal another path or method (or enabled = false)",
        ),
        (
            '[reporter]\nurl = "https://e.com/removal/?s=%selector%&t=%pushToken%"\n',
            "removal.enabled: the removal shapes would take the reporter's GET /removal/: give "
            "the removal another path or method (or enabled = false)",
        ),
        (
            "[removal]\nlogout = 1\n",
            "removal.logout: unknown key (expected one of: content_type, enabled, method, "
            "post_data, url)",
        ),
    ],
)
def test_configuration_errors(tmp_path, toml, message):
    (tmp_path / "p.toml").write_text(toml)
    with pytest.raises(ConfigurationError) as info:
        load_config(tmp_path / "p.toml")
    assert str(info.value).split("\n")[0] == message


def test_reporter_on_the_removal_path_loads_with_removals_disabled(tmp_path):
    (tmp_path / "p.toml").write_text(
        '[reporter]\nurl = "https://e.com/removal/?s=%selector%&t=%pushToken%"\n'
        "[removal]\nenabled = false\n"
    )
    assert load_config(tmp_path / "p.toml").removal.shapes() is None


# -- authentication and hooks ------------------------------------------------------------------


class RemovalGuard:
    """Refuses removals without the right password; reports pass."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    @hookimpl
    def pushreport_authenticate(self, report, username, password, kind):
        self.seen.append((kind, report.selector, username))
        if kind != "removal":
            return None
        return password is not None and password.matches("right")


def test_authentication_sees_the_removal_and_can_refuse_it(tmp_path):
    guard = RemovalGuard()
    pm = make_plugin_manager(plugins=[guard])
    app = create_app(receiver=Receiver.from_config(make(tmp_path), plugin_manager=pm))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    resp = c.get(f"{REMOVE}&username=johndow&password=wrong")
    assert (resp.status_code, resp.data) == (403, b"authentication refused\n")
    assert selectors(app) == [SELECTOR]
    assert c.get(f"{REMOVE}&username=johndow&password=right").status_code == 200
    assert selectors(app) == []
    assert guard.seen == [
        ("report", SELECTOR, "johndow"),
        ("removal", SELECTOR, "johndow"),
        ("removal", SELECTOR, "johndow"),
    ]
    app.close()


class PasswordCheck:
    """An authentication plugin written before removals existed: no kind argument."""

    @hookimpl
    def pushreport_authenticate(self, password):
        return password is not None and password.matches("12345678")


def test_a_plugin_without_kind_guards_removals_too(tmp_path):
    pm = make_plugin_manager(plugins=[PasswordCheck()])
    app = create_app(receiver=Receiver.from_config(make(tmp_path), plugin_manager=pm))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert c.get(REMOVE).status_code == 403
    assert c.get(REMOVE + "&password=12345678").status_code == 200
    assert selectors(app) == []
    app.close()


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.removed: list[Any] = []
        self.fail = fail

    @hookimpl
    def pushreport_registration_removed(self, registration, removal):
        self.removed.append((registration, removal))
        if self.fail:
            raise RuntimeError("bug in a plugin")


def test_registration_removed_hook(tmp_path):
    recorder = Recorder()
    pm = make_plugin_manager(plugins=[recorder])
    app = create_app(receiver=Receiver.from_config(make(tmp_path), plugin_manager=pm))
    c = Client(app)
    c.get(SPEC_GET)
    before = app.receiver.storage.get(SELECTOR)
    assert c.get(REMOVE + "&password=pw").status_code == 200
    [(registration, removal)] = recorder.removed
    assert registration == before
    assert removal.selector == SELECTOR and removal.password.matches("pw")
    # Nothing deleted, no notification: unknown selector, or a newer registration kept.
    assert c.get(REMOVE).status_code == 200
    c.get(SPEC_GET)
    assert c.get(f"{REMOVE}&token_msgs={OTHER_TOKEN}").status_code == 200
    assert len(recorder.removed) == 1
    app.close()


def test_a_failing_hook_does_not_change_the_answer(tmp_path, caplog):
    pm = make_plugin_manager(plugins=[Recorder(fail=True)])
    app = create_app(receiver=Receiver.from_config(make(tmp_path), plugin_manager=pm))
    c = Client(app)
    c.get(SPEC_GET)
    with caplog.at_level(logging.ERROR, logger="pushreport"):
        assert c.get(REMOVE).status_code == 200
    assert "a pushreport_registration_removed hook failed" in caplog.text
    assert selectors(app) == []
    app.close()


def test_the_password_is_not_logged(app, caplog):
    c = Client(app)
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        c.get(REMOVE + "&password=hunter22")
    assert "hunter22" not in caplog.text and "password=***" in caplog.text
    assert '"GET /removal/?' in caplog.text and " 200 " in caplog.text


def test_a_template_secret_is_masked_in_the_access_log(tmp_path, caplog):
    app = create_app(
        make(
            tmp_path,
            removal={"url": "https://e.com/bye/?s=%selector%&token=s3cret", "method": "DELETE"},
        )
    )
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        assert Client(app).delete(f"/bye/?s={SELECTOR}&token=s3cret").status_code == 200
    assert "s3cret" not in caplog.text
    assert f'"DELETE /bye/?s={SELECTOR}&token=***" 200' in caplog.text
    app.close()


# -- storage -----------------------------------------------------------------------------------


def test_locked_database_is_503_then_the_retry_removes(app, tmp_path):
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        resp = c.get(REMOVE)
        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert selectors(app) == [SELECTOR]
    assert c.get(REMOVE).status_code == 200
    assert selectors(app) == []


def test_every_backend_forgets_it(tmp_path):
    app = create_app(make(tmp_path, backends=("sqlite", "files")))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert all(list(b.storage) for b in app.receiver.backends)
    assert c.get(REMOVE).status_code == 200
    assert all(list(b.storage) == [] for b in app.receiver.backends)
    app.close()


def test_a_failing_best_effort_backend_is_counted_not_shown(tmp_path, caplog):
    app = create_app(make(tmp_path, backends=("sqlite", "files"), files_required=False))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    files = app.receiver.backends[1].storage
    files.close()  # closed: every call raises StorageUnavailable
    with caplog.at_level(logging.WARNING, logger="pushreport"):
        assert c.get(REMOVE).status_code == 200
    assert app.receiver.failures == {"files": 1}
    assert "best-effort storage backend 'files' failed" in caplog.text
    assert selectors(app) == []
    app.close()
