"""``[limits]``: rate limits with 429 + Retry-After, the lock-out, length limits, and
memory that stays bounded whatever the clients do. The clock is injected."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from pushreport._config import LimitsConfig
from pushreport._limits import PURGE_INTERVAL, Rate, client_address
from pushreport_core import ConfigurationError
from pushreport_wsgi import Config, create_app

from .test_auth import (
    ACCOUNT_PASSWORD,
    PASSWORD_URL,
    Clock,
    authorization,
    digest_app,
    query,
    receiver,
)


def app_with(tmp_path: Path, clock: Clock, url: str = "", **limits: Any) -> Any:
    return create_app(receiver=receiver(tmp_path, url, clock=clock, limits=LimitsConfig(**limits)))


def get(app: Any, target: str, client: str = "192.0.2.1", **headers: str) -> Any:
    return Client(app).get(target, headers=headers, environ_base={"REMOTE_ADDR": client})


@pytest.mark.parametrize(
    "text, rate",
    [
        ("60/minute", Rate(60, 60.0)),
        ("10/second", Rate(10, 1.0)),
        ("1000/hour", Rate(1000, 3600.0)),
        ("5/10s", Rate(5, 10.0)),
        (" 2 / minutes ", Rate(2, 60.0)),
        ("100/day", Rate(100, 86400.0)),
        ("", None),
    ],
)
def test_rate_parse(text, rate):
    assert Rate.parse(text, key="limits.per_client") == rate


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "60",
            'limits.per_client: must be a rate such as "60/minute" (units: second, minute, '
            "hour, day), not '60'",
        ),
        (
            "60/fortnight",
            'limits.per_client: must be a rate such as "60/minute" (units: '
            "second, minute, hour, day), not '60/fortnight'",
        ),
        ("0/minute", "limits.per_client: must allow at least one request, not '0/minute'"),
    ],
)
def test_rate_errors_are_configuration_errors(text, message):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"limits": {"per_client": text}})
    assert str(e.value) == message


def test_per_client_limit_answers_429_with_retry_after_then_recovers(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, per_client="3/minute")
    for _ in range(3):
        assert get(app, query()).status_code == 200
    resp = get(app, query())
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "20"  # one token every 20 s
    assert resp.data == b"too many requests from this client\n"
    assert get(app, query(), client="192.0.2.2").status_code == 200  # another client
    clock.advance(20)
    assert get(app, query()).status_code == 200
    assert get(app, query()).status_code == 429


def test_per_client_counts_refused_requests_too(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, per_client="2/minute")
    assert get(app, "/token/?selector=bad").status_code == 400
    assert get(app, "/token/?selector=bad").status_code == 400
    assert get(app, query()).status_code == 429


def test_client_header_names_the_address_a_proxy_appended(tmp_path):
    clock = Clock()
    app = app_with(
        tmp_path,
        clock,
        per_client="1/minute",
        client_header="X-Forwarded-For",
        trusted_proxies=("10.0.0.1",),
    )
    proxy = "10.0.0.1"
    assert (
        get(app, query(), proxy, **{"X-Forwarded-For": "spoofed, 203.0.113.5"}).status_code == 200
    )
    assert get(app, query(), proxy, **{"X-Forwarded-For": "other, 203.0.113.5"}).status_code == 429
    assert get(app, query(), proxy, **{"X-Forwarded-For": "203.0.113.6"}).status_code == 200
    assert client_address("10.0.0.1") == "10.0.0.1"


def test_per_username_limit_counts_only_admitted_reports(tmp_path):
    clock = Clock()
    app = create_app(
        receiver=receiver(tmp_path, "", clock=clock, limits=LimitsConfig(per_username="2/minute"))
    )
    assert get(app, query(username="alice")).status_code == 200
    assert get(app, query(username="alice"), client="192.0.2.9").status_code == 200
    resp = get(app, query(username="alice"))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "30"
    assert resp.data == b"too many reports for this username\n"
    [reg] = list(app.receiver.storage)
    assert reg.reports == 2  # the refused one stored nothing
    assert get(app, query(username="bob")).status_code == 200


def test_digest_challenges_do_not_use_up_the_username_rate(tmp_path):
    clock = Clock()
    app = digest_app(tmp_path, clock=clock, limits=LimitsConfig(per_username="2/minute"))
    c = Client(app)
    target = query()
    for _ in range(2):
        challenge = c.get(target).headers["WWW-Authenticate"]  # 401, not counted
        assert (
            c.get(
                target, headers={"Authorization": authorization(challenge, "GET", target)}
            ).status_code
            == 200
        )


@pytest.fixture
def users(monkeypatch):
    module = types.ModuleType("pushreport_test_limits_users")
    module.check = lambda u, p: p == ACCOUNT_PASSWORD  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pushreport_test_limits_users", module)


def lockout_app(tmp_path: Path, clock: Clock) -> Any:
    return create_app(
        receiver=receiver(
            tmp_path,
            PASSWORD_URL,
            clock=clock,
            methods=("callable",),
            callable="pushreport_test_limits_users:check",
            cache_size=0,
            limits=LimitsConfig(auth_failures=3, lockout=120),
        )
    )


def test_lockout_after_failed_authentications(tmp_path, users):
    clock = Clock()
    app = lockout_app(tmp_path, clock)
    for _ in range(3):
        assert get(app, query(password="guess")).status_code == 403
    # Locked out: even the right password is not checked.
    resp = get(app, query(password=ACCOUNT_PASSWORD))
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "120"
    assert resp.data == b"too many failed authentications; try again later\n"
    assert get(app, query(username="bob", password="guess")).status_code == 403  # others
    clock.advance(60)
    assert get(app, query(password=ACCOUNT_PASSWORD)).headers["Retry-After"] == "60"
    clock.advance(60)
    assert get(app, query(password=ACCOUNT_PASSWORD)).status_code == 200
    assert [r.username for r in app.receiver.storage] == ["alice"]


def test_a_success_resets_the_failure_count(tmp_path, users):
    clock = Clock()
    app = lockout_app(tmp_path, clock)
    for _ in range(5):
        assert get(app, query(password="guess")).status_code == 403
        assert get(app, query(password="guess")).status_code == 403
        assert get(app, query(password=ACCOUNT_PASSWORD)).status_code == 200


def test_failures_outside_the_window_are_forgotten(tmp_path, users):
    clock = Clock()
    app = lockout_app(tmp_path, clock)
    for _ in range(6):
        assert get(app, query(password="guess")).status_code == 403
        # The window starts at the first failure: at most two ever fall in one.
        clock.advance(70)


def test_wrong_digest_credentials_count_towards_the_lockout(tmp_path):
    clock = Clock()
    app = digest_app(tmp_path, clock=clock, limits=LimitsConfig(auth_failures=2))
    c = Client(app)
    target = query()
    for _ in range(5):  # challenges without credentials are not failures
        assert c.get(target).status_code == 401
    for _ in range(2):
        challenge = c.get(target).headers["WWW-Authenticate"]
        assert (
            c.get(
                target,
                headers={
                    "Authorization": authorization(challenge, "GET", target, password="guess")
                },
            ).status_code
            == 401
        )
    assert c.get(target).status_code == 429


def test_memory_stays_bounded_through_the_app(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, per_client="1/minute", max_tracked=100)
    for i in range(300):
        client = f"198.51.100.{i % 256}-{i}"
        assert get(app, "/token/?selector=x", client=client).status_code == 400
    state = app.receiver.limiter.state
    assert state.count() == 300
    clock.advance(PURGE_INTERVAL)  # the next request purges: at most max_tracked stay
    assert get(app, "/token/?selector=x").status_code == 400
    assert state.count() == 101  # the purge kept 100, then this request's own bucket


def test_too_long_target_is_414(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, max_url=200)
    resp = get(app, query(extra="x" * 200))
    assert resp.status_code == 414
    assert resp.data.startswith(b"request target is too long (")
    assert resp.data.endswith(b" > 200 characters)\n")


def test_too_long_field_is_413(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, max_field=64)
    resp = get(app, query(username="u" * 65))
    assert resp.status_code == 413
    assert resp.data == b"username is too long (65 > 64 characters)\n"
    resp = get(app, query(password="p" * 65))
    assert resp.data == b"password is too long (> 64 characters)\n"
    assert list(app.receiver.storage) == []


def test_too_long_header_is_431(tmp_path):
    clock = Clock()
    app = app_with(tmp_path, clock, max_header=256)
    resp = get(app, query(), Authorization="Digest " + "x" * 300)
    assert resp.status_code == 431
    assert resp.data == b"header Authorization is too long (> 256 bytes)\n"
