"""Secrets never leak: the account password, the shared secret, the digest password, the
nonce key and the full push tokens appear in no stored byte, no log line (access log at
INFO included), no answer and no repr."""

from __future__ import annotations

import logging
import sys
import types

import attrs
import pytest
from werkzeug.test import Client

from pushreport._config import AuthConfig, LimitsConfig
from pushreport_core import ConfigurationError
from pushreport_wsgi import Receiver, create_app, load_config, make_plugin_manager

from .conftest import SELECTOR, TOKEN_CALLS, TOKEN_MSGS, make_config
from .test_auth import Clock, authorization

SECRET = "Sh4red-S3cret-Value"
DIGEST_PASSWORD = "Dig3st-Pa55word-Value"
ACCOUNT_PASSWORD = "Acc0unt-Pa55word-Value"
NONCE_KEY = "N0nce-Key-Value-0123456789"

URL = (
    "https://push.example.com/token/?selector=%selector%&username=%account[username]%"
    "&password=%account[password]%&token_calls=%pushTokenIncomingCall%"
    "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
    "&appid_msgs=%pushappid_other%&k=%account[pushSecret]%"
)
SECRETS = (SECRET, DIGEST_PASSWORD, ACCOUNT_PASSWORD, NONCE_KEY)


@pytest.fixture
def users(monkeypatch):
    def check(username: str, password: str) -> bool:
        if username == "boom":
            raise ValueError(f"cannot check {password}")
        return password == ACCOUNT_PASSWORD

    module = types.ModuleType("pushreport_test_secret_users")
    module.check = check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pushreport_test_secret_users", module)


def target(username: str = "alice", password: str = ACCOUNT_PASSWORD, secret: str = SECRET) -> str:
    return (
        f"/token/?selector={SELECTOR}&username={username}&password={password}"
        f"&token_calls={TOKEN_CALLS.replace('/', '%2F').replace('=', '%3D')}"
        f"&appid_calls=com.cloudsoftphone.app.pushkit&token_msgs={TOKEN_MSGS}"
        f"&appid_msgs=com.cloudsoftphone.app&k={secret}"
    )


def test_no_secret_reaches_a_row_a_log_line_an_answer_or_a_repr(tmp_path, users, caplog):
    config = attrs.evolve(
        make_config(tmp_path, url=URL),
        auth=AuthConfig(
            methods=("secret", "digest", "callable"),
            secret=SECRET,
            secret_field="account[pushSecret]",
            digest_username="app",
            digest_password=DIGEST_PASSWORD,
            nonce_key=NONCE_KEY,
            callable="pushreport_test_secret_users:check",
        ),
        limits=LimitsConfig(auth_failures=3),
    )
    receiver = Receiver.from_config(config, plugin_manager=make_plugin_manager(), clock=Clock())
    app = create_app(receiver=receiver)
    c = Client(app)
    answers: list[bytes] = []

    def send(t: str, password: str = DIGEST_PASSWORD) -> int:
        first = c.get(t)
        challenge = first.headers.get("WWW-Authenticate")
        if challenge is None:  # refused before authentication (a limit)
            answers.append(first.data)
            return first.status_code
        resp = c.get(
            t, headers={"Authorization": authorization(challenge, "GET", t, password=password)}
        )
        answers.append(resp.data)
        answers.append(str(resp.headers).encode())
        return resp.status_code

    with caplog.at_level(logging.DEBUG):
        assert send(target()) == 200
        assert send(target(password="wrong-" + ACCOUNT_PASSWORD)) == 403
        assert send(target(secret="wrong-" + SECRET)) == 403
        assert send(target(), password="wrong-" + DIGEST_PASSWORD) == 401
        assert send(target(username="boom")) == 503
        assert send(target(password="x" * 5000)) in (413, 414)
        for _ in range(3):
            send(target(username="bob", password="guess"))
        assert send(target(username="bob")) == 429
    [registration] = list(receiver.storage)
    assert registration.token_msgs == TOKEN_MSGS and registration.extra == {}

    texts = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        repr(receiver),
        repr(config),
        repr(registration),
        repr(receiver.plugin_manager.get_plugins()),
        *(a.decode() for a in answers),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    access = [r.getMessage() for r in caplog.records if r.name == "pushreport.access"]
    assert len(access) == 18  # every request was logged
    for line in access:
        assert TOKEN_MSGS not in line and TOKEN_CALLS.replace("/", "%2F")[:20] not in line
    assert f"token_msgs={TOKEN_MSGS[:8]}…" in access[0]
    assert "password=***" in access[0] and "k=***" in access[0]

    # The database, its WAL and the report spool's files.
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("db.sqlite3*") if p.is_file())
    assert TOKEN_MSGS.encode() in db_bytes  # what must be stored is there
    for secret in SECRETS:
        assert secret.encode() not in db_bytes
    receiver.close()


def test_access_log_masks_the_secret_variable_wherever_it_sits(tmp_path, caplog):
    url = (
        "https://push.example.com/pushToken/%account[username]%/%selector%/%pushToken%"
        "&appid=%pushappid%?auth_value=%account[pushSecret]%"
    )
    config = attrs.evolve(
        make_config(tmp_path, url=url),
        auth=AuthConfig(methods=("secret",), secret=SECRET, secret_field="account[pushSecret]"),
    )
    app = create_app(config)
    path = f"/pushToken/alice/{SELECTOR}/{TOKEN_MSGS}&appid=com.cloudsoftphone.app"
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        assert Client(app).get(f"{path}?auth_value={SECRET}").status_code == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "pushreport.access"]
    assert SECRET not in line and TOKEN_MSGS not in line
    assert f"/{TOKEN_MSGS[:8]}…&appid=com.cloudsoftphone.app?auth_value=***" in line
    app.close()


def test_default_path_shape_token_is_shortened_in_the_access_log(tmp_path, caplog):
    app = create_app(make_config(tmp_path))
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        resp = Client(app).get(f"/pushToken/alice/{SELECTOR}/{TOKEN_MSGS}&appid=com.x.app")
    assert resp.status_code == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "pushreport.access"]
    assert TOKEN_MSGS not in line
    assert f"/pushToken/alice/{SELECTOR}/{TOKEN_MSGS[:8]}…&appid=com.x.app" in line
    app.close()


def test_config_file_secrets_stay_out_of_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nmethods = ["digest"]\ndigest_password = "{DIGEST_PASSWORD}"\n')
    with pytest.raises(ConfigurationError) as e:
        load_config(path)
    assert str(e.value) == "auth.digest_username: the digest method needs a username"
    path.write_text(f'[auth]\nsecret = ["{SECRET}"]\n')
    with pytest.raises(ConfigurationError) as e:
        load_config(path)
    assert str(e.value) == "auth.secret: must be a string, not list"
