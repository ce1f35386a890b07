"""[reporter] token_owner: a token reported under another username stays on both
accounts ("shared", the default) or moves to the one that reported it last ("newest")."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import attrs
import pytest
from werkzeug.test import Client

from pushreport._config import ReporterConfig, StorageConfig
from pushreport.storage import Capability
from pushreport.testing import MemoryStorage
from pushreport_core import ConfigurationError, Request
from pushreport_wsgi import Config, Receiver, create_app, hookimpl, make_plugin_manager

from .conftest import make_config

S1 = "1" * 40 + ":A"
S2 = "2" * 40 + ":B"
S3 = "3" * 40 + ":C"
PHONE = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"  # one device
VOIP = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
OTHER_VOIP = "b3RoZXJ2b2lwdG9rZW4="


def report(
    client: Client,
    selector: str,
    username: str,
    *,
    msgs: str | None = PHONE,
    calls: str | None = None,
) -> None:
    fields = {"username": username, "selector": selector}
    if msgs:
        fields |= {"token_msgs": msgs, "appid_msgs": "com.cloudsoftphone.app"}
    if calls:
        fields |= {"token_calls": calls, "appid_calls": "com.cloudsoftphone.app.pushkit"}
    answer = client.get("/token/?" + urlencode(fields))
    assert answer.status_code == 200, answer.get_data(as_text=True)


def tokens(app: object, selector: str, backend: int = 0) -> tuple[str | None, str | None]:
    stored = app.receiver.backends[backend].storage.get(selector)  # type: ignore[attr-defined]
    assert stored is not None
    return stored.token_msgs, stored.token_calls


def app_for(config: Config, owner: str) -> object:
    return create_app(attrs.evolve(config, reporter=ReporterConfig(token_owner=owner)))


def test_shared_is_the_default_and_keeps_it_on_both(tmp_path: Path) -> None:
    assert Config().reporter.token_owner == "shared"
    app = create_app(make_config(tmp_path))
    try:
        client = Client(app)
        report(client, S1, "alice", calls=VOIP)
        report(client, S2, "bob")
        assert tokens(app, S1) == (PHONE, VOIP)
        assert tokens(app, S2) == (PHONE, None)
    finally:
        app.close()


def test_newest_moves_it_to_the_latest_owner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_for(make_config(tmp_path), "newest")
    try:
        client = Client(app)
        report(client, S1, "alice", calls=VOIP)
        with caplog.at_level(logging.INFO, logger="pushreport"):
            report(client, S2, "bob", calls=OTHER_VOIP)  # the phone changed user
        # alice's registration loses the shared token; its other pair is untouched.
        assert tokens(app, S1) == (None, VOIP)
        assert tokens(app, S2) == (PHONE, OTHER_VOIP)
        stored = app.receiver.storage.get(S1)
        assert stored.appid_msgs == "com.cloudsoftphone.app" and stored.reports == 1
        assert f"token QVBBOTFi… moved to {S2}: forgotten in {S1}" in caplog.messages
        # bob's app starts again with the same token: nothing changes.
        report(client, S2, "bob")
        assert tokens(app, S2) == (PHONE, OTHER_VOIP)
        # The phone goes back to alice: the token follows.
        report(client, S1, "alice")
        assert tokens(app, S1) == (PHONE, VOIP)
        assert tokens(app, S2) == (None, OTHER_VOIP)
    finally:
        app.close()


def test_newest_keeps_it_on_the_same_username(tmp_path: Path) -> None:
    app = app_for(make_config(tmp_path), "newest")
    try:
        client = Client(app)
        report(client, S1, "alice")
        report(client, S3, "carol")
        # One app, two accounts of one user (say, on two domains): both keep it.
        report(client, S2, "carol")
        assert tokens(app, S3) == (PHONE, None)
        assert tokens(app, S2) == (PHONE, None)
        assert tokens(app, S1) == (None, None)
    finally:
        app.close()


def test_newest_as_a_call_token_too(tmp_path: Path) -> None:
    # The same token may come as the PushKit token of one and the other of another.
    app = app_for(make_config(tmp_path), "newest")
    try:
        client = Client(app)
        report(client, S1, "alice", msgs=None, calls=PHONE)
        report(client, S2, "bob")
        assert tokens(app, S1) == (None, None)
        assert app.receiver.storage.get(S1).appid_calls == "com.cloudsoftphone.app.pushkit"
    finally:
        app.close()


def test_newest_in_every_backend(tmp_path: Path) -> None:
    config = Config(
        storage=StorageConfig(
            backends=("sqlite", "files"),
            options={
                "sqlite": {"path": str(tmp_path / "db.sqlite3")},
                "files": {"path": str(tmp_path / "files")},
            },
        ),
        base_dir=tmp_path,
    )
    app = app_for(config, "newest")
    try:
        client = Client(app)
        report(client, S1, "alice")
        report(client, S2, "bob")
        for backend in (0, 1):
            assert tokens(app, S1, backend) == (None, None)
            assert tokens(app, S2, backend) == (PHONE, None)
    finally:
        app.close()


class NoForget:
    """A third-party backend from before forget_token."""

    name = "old"

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    def upsert(self, report, *, now):  # type: ignore[no-untyped-def]
        return self.inner.upsert(report, now=now)

    def close(self) -> None:
        self.inner.close()


class OldPlugin:
    @hookimpl
    def pushreport_register_storage(self, register):  # type: ignore[no-untyped-def]
        register("old", lambda options, context: NoForget())


def test_newest_needs_forget_token(tmp_path: Path) -> None:
    pm = make_plugin_manager(plugins=[OldPlugin()])
    config = Config(
        reporter=ReporterConfig(token_owner="newest"),
        storage=StorageConfig(backends=("old",)),
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigurationError) as e:
        Receiver.from_config(config, plugin_manager=pm)
    assert str(e.value) == (
        "reporter.token_owner: \"newest\" needs forget_token, which storage backend 'old' lacks"
    )
    shared = Receiver.from_config(
        attrs.evolve(config, reporter=ReporterConfig()), plugin_manager=pm
    )
    shared.close()


class NoFindToken:
    """A backend that can forget a token but not look one up."""

    name = "nofind"
    capabilities = MemoryStorage.capabilities - {Capability.FIND_TOKEN}

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    def __getattr__(self, name: str) -> object:
        if name == "find_token":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.inner)


class NoFindTokenPlugin:
    @hookimpl
    def pushreport_register_storage(self, register):  # type: ignore[no-untyped-def]
        register("nofind", lambda options, context: NoFindToken())


def test_newest_without_find_token_looks_through_every_registration(tmp_path: Path) -> None:
    pm = make_plugin_manager(plugins=[NoFindTokenPlugin()])
    config = Config(
        reporter=ReporterConfig(token_owner="newest"),
        storage=StorageConfig(backends=("nofind",)),
        base_dir=tmp_path,
    )
    receiver = Receiver.from_config(config, plugin_manager=pm)
    try:
        assert not hasattr(receiver.storage, "find_token")

        def send(selector: str, username: str, token: str) -> None:
            query = urlencode({"selector": selector, "username": username, "token_msgs": token})
            receiver.handle(Request(method="GET", target=f"/token/?{query}"))

        send(S1, "alice", PHONE)
        send(S3, "carol", OTHER_VOIP)  # another phone: left alone
        send(S2, "bob", PHONE)
        stored = {r.selector: r.token_msgs for r in receiver.storage}
        assert stored == {S1: None, S2: PHONE, S3: OTHER_VOIP}
    finally:
        receiver.close()
