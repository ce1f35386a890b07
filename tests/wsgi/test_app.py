"""The WSGI adapter against a real SQLite file: statuses, bodies, pass-through."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import attrs
import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from pushreport_core import InvalidReport
from pushreport_wsgi import (
    PushReportMiddleware,
    Receiver,
    create_app,
    hookimpl,
    make_plugin_manager,
)

from .conftest import SELECTOR, SPEC_GET, TOKEN_CALLS, TOKEN_MSGS, make_config


def portal(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"portal:" + environ["PATH_INFO"].encode()]


def stored(app: PushReportMiddleware):
    return list(app.receiver.storage)


def test_spec_get_example_is_stored_and_answered_simplest_success(config):
    app = create_app(config)
    resp = Client(app).get(SPEC_GET, headers={"User-Agent": "CloudSoftphone/1.5.6"})
    assert resp.status_code == 200
    assert resp.data == b""
    assert "Content-Type" not in resp.headers
    [reg] = stored(app)
    assert (reg.selector, reg.username, reg.token_msgs, reg.token_calls) == (
        SELECTOR,
        "johndow",
        TOKEN_MSGS,
        TOKEN_CALLS,
    )
    assert reg.appid_calls == "com.cloudsoftphone.app.pushkit"
    assert reg.user_agent == "CloudSoftphone/1.5.6"


def test_spec_json_example(config):
    app = create_app(config)
    body = (
        b'{\n "token_msgs" : "' + TOKEN_MSGS.encode() + b'",\n "appid_msgs" : '
        b'"com.cloudsoftphone.app",\n "token_calls" : "'
        + TOKEN_CALLS.encode()
        + b'",\n "appid_calls" : "com.cloudsoftphone.app.pushkit",\n "selector" : "'
        + SELECTOR.encode()
        + b'"\n}'
    )
    resp = Client(app).post(
        "/token/johndow/", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 200, resp.data
    [reg] = stored(app)
    assert reg.username == "johndow" and reg.token_calls == TOKEN_CALLS


def test_ios_delay_keeps_the_known_token(config):
    app = create_app(config)
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    later = SPEC_GET.replace(f"token_msgs={TOKEN_MSGS}", "token_msgs=")
    assert c.get(later).status_code == 200
    [reg] = stored(app)
    assert reg.token_msgs == TOKEN_MSGS and reg.reports == 2


def test_invalid_report_is_400_one_plain_line_and_stores_nothing(config):
    app = create_app(config)
    resp = Client(app).get("/token/?selector=nothex&token_msgs=" + TOKEN_MSGS)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.data == b"selector is not valid: expected 40 hex digits, ':' and a hex suffix\n"
    assert stored(app) == []


def test_method_not_configured_is_405_with_allow(tmp_path):
    app = create_app(
        make_config(tmp_path, url="https://example.com/token/?s=%selector%&t=%pushToken%")
    )
    resp = Client(app).post("/token/?s=" + SELECTOR)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, HEAD"


def test_body_over_the_limit_is_413(tmp_path):
    app = create_app(make_config(tmp_path, max_body=1024))
    resp = Client(app).post(
        "/token/",
        data=b"selector=" + b"a" * 2000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 413
    assert stored(app) == []


@pytest.mark.parametrize("spool", [False, True])
def test_locked_database_is_503_with_retry_after_then_the_retry_is_stored(tmp_path, spool):
    app = create_app(make_config(tmp_path, spool=spool))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200  # creates the schema
    storage = app.receiver.storage
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        if spool:
            # The spool's background thread finds the database locked (its next round,
            # taken now): reports are refused from then on instead of piling up.
            storage.apply_round(probe=True)
        resp = c.get(SPEC_GET.replace("johndow", "janedoe"))
        assert resp.status_code == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.data == b"sqlite database is locked\n"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    if spool:
        storage.apply_round()  # the next round can: reports are taken again
    assert c.get(SPEC_GET.replace("johndow", "janedoe")).status_code == 200
    [reg] = stored(app)
    assert reg.username == "janedoe" and reg.reports == 2


def test_middleware_passes_everything_else_through_untouched(config):
    seen = {}

    def inner(environ, start_response):
        seen.update(environ)
        return portal(environ, start_response)

    app = PushReportMiddleware(inner, config)
    c = Client(app)
    resp = c.get("/account/settings?x=1")
    assert resp.status_code == 200 and resp.data == b"portal:/account/settings"
    assert not any(k.startswith("pushreport.") for k in seen)
    assert c.get(SPEC_GET).status_code == 200
    assert c.get("/tokens/").data == b"portal:/tokens/"


def test_encoded_slash_in_a_path_segment_survives(tmp_path):
    app = create_app(
        make_config(
            tmp_path,
            url="https://example.com/pushToken/%account[username]%/%selector%/"
            "%pushToken%&appid=%pushappid%",
        )
    )
    token = "Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
    resp = Client(app).get(f"/pushToken/johndow/{SELECTOR}/{token}&appid=com.example.app")
    assert resp.status_code == 200, resp.data
    [reg] = stored(app)
    assert reg.token_msgs == TOKEN_CALLS and reg.appid_msgs == "com.example.app"


def test_mounted_under_a_prefix(config):
    app = DispatcherMiddleware(portal, {"/push": create_app(config)})
    c = Client(app)
    assert c.get("/push" + SPEC_GET).status_code == 200
    assert c.get("/other").data == b"portal:/other"


class Refuser:
    @hookimpl
    def pushreport_authenticate(self, report, password):
        return password is not None and password.matches("right")


def test_authentication_refused_is_403_and_stores_nothing(config):
    pm = make_plugin_manager(plugins=[Refuser()])
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 403  # password=12345678
    assert stored(app) == []
    assert c.get(SPEC_GET.replace("12345678", "right")).status_code == 200


class Transformer:
    def __init__(self):
        self.stored = []

    @hookimpl
    def pushreport_transform_report(self, report):
        if report.username == "blocked":
            raise InvalidReport("username is blocked")
        return attrs.evolve(report, username=report.username.lower())

    @hookimpl
    def pushreport_report_stored(self, registration):
        self.stored.append(registration.selector)


def test_transform_and_stored_hooks(config):
    plugin = Transformer()
    pm = make_plugin_manager(plugins=[plugin])
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    c = Client(app)
    assert c.get(SPEC_GET.replace("johndow", "JohnDow")).status_code == 200
    assert stored(app)[0].username == "johndow"
    assert plugin.stored == [SELECTOR]
    resp = c.get(SPEC_GET.replace("johndow", "blocked"))
    assert (resp.status_code, resp.data) == (400, b"username is blocked\n")


class Broken:
    @hookimpl
    def pushreport_transform_report(self, report):
        raise RuntimeError("bug in a plugin")


def test_unexpected_error_is_500_without_traceback_and_logged(config, caplog):
    pm = make_plugin_manager(plugins=[Broken()])
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    with caplog.at_level(logging.ERROR, logger="pushreport"):
        resp = Client(app).get(SPEC_GET)
    assert resp.status_code == 500
    assert resp.data == b"internal error\n"
    assert "bug in a plugin" in caplog.text
    assert stored(app) == []


def test_access_log_never_contains_the_password(config, caplog):
    app = create_app(config)
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        Client(app).get(SPEC_GET)
        Client(app).get(SPEC_GET.replace("selector=", "selector=bad"))
    assert "12345678" not in caplog.text
    assert "password=***" in caplog.text
    assert TOKEN_MSGS not in caplog.text  # tokens are shortened
    assert '"GET /token/?' in caplog.text and " 200 " in caplog.text and " 400 " in caplog.text


def test_password_never_reaches_the_database(config, tmp_path):
    app = create_app(config)
    assert Client(app).get(SPEC_GET).status_code == 200
    assert any(tmp_path.glob("db.sqlite3.spool/*.jsonl"))  # spooled, not applied yet
    for closed in (False, True):
        if closed:
            app.close()  # applies the spool
        for f in tmp_path.rglob("*"):
            if f.is_file():
                assert b"12345678" not in f.read_bytes(), f


def test_standalone_answers_404_elsewhere(config):
    resp = Client(create_app(config)).get("/")
    assert resp.status_code == 404


def test_config_can_be_a_path(tmp_path: Path):
    (tmp_path / "pushreport.toml").write_text(
        '[reporter]\nurl = "https://e.com/r/?s=%selector%&amp;t=%pushToken%"\n'
        '[storage.sqlite]\npath = "data.sqlite3"\n'
    )
    app = create_app(tmp_path / "pushreport.toml")
    resp = Client(app).get(f"/r/?s={SELECTOR}&t={TOKEN_MSGS}")
    assert resp.status_code == 200, resp.data
    assert (tmp_path / "data.sqlite3").exists()


def test_template_password_and_shared_secret_are_masked_in_the_access_log(tmp_path, caplog):
    app = create_app(
        make_config(
            tmp_path,
            url="https://e.com/r/%account[password]%/?s=%selector%&amp;key=s3cret"
            "&amp;pw=x%account[password]%&amp;t=%pushToken%",
        )
    )
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        resp = Client(app).get(f"/r/hunter2/?s={SELECTOR}&key=s3cret&pw=xhunter2&t=tok12345")
    assert resp.status_code == 200
    assert "hunter2" not in caplog.text and "s3cret" not in caplog.text
    assert f'"GET /r/***/?s={SELECTOR}&key=***&pw=***&t=tok12345" 200' in caplog.text


@pytest.mark.parametrize(
    "target, line",
    [
        ("/token/?selector=bad", "400 Bad Request"),
        ("/", "404 Not Found"),
    ],
)
def test_status_line_has_the_standard_reason_phrase(config, target, line):
    resp = Client(create_app(config)).get(target)
    assert resp.status == line
