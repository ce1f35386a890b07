"""The lookup API and its HTTP endpoint, over a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from werkzeug.test import Client

from pushreport_core import ConfigurationError
from pushreport_wsgi import Lookup, LookupConfig, PushReportMiddleware, create_app, load_config

from .conftest import make_config
from .test_push import PUSHKIT, REMOTE, SEL_A, SEL_B, SEL_C, report

TOKEN = "s3cret-bearer-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def lookup_config(tmp_path: Path, **lookup: object):
    settings = {"enabled": True, "token": TOKEN, **lookup}
    section = LookupConfig(**settings)  # type: ignore[arg-type]
    return attrs.evolve(make_config(tmp_path), lookup=section)


@pytest.fixture
def app(tmp_path):
    application = create_app(lookup_config(tmp_path))
    report(application, "alice", SEL_A, calls="CALLTOKEN-A", msgs="MSGTOKEN-A+/=")
    report(application, "alice", SEL_B, calls="CALLTOKEN-B")
    report(application, "bob", SEL_C, calls="CALLTOKEN-C", msgs="MSGTOKEN-C")
    report(application, "alice+x", "D" * 40 + ":4", msgs="MSGTOKEN-D")
    yield application
    application.close()


def get(app, url: str, headers=AUTH):
    return Client(app).get(url, headers=headers)


def test_registrations_by_username_are_that_account_only(app):
    resp = get(app, "/pushreport/lookup/registrations?username=alice")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    regs = resp.json["registrations"]
    assert [r["selector"] for r in regs] == [SEL_A, SEL_B]
    assert {r["username"] for r in regs} == {"alice"}
    assert regs[0]["token_msgs"] == "MSGTOKEN-A+/=" and regs[0]["appid_calls"] == PUSHKIT
    assert "CALLTOKEN-C" not in resp.text and "MSGTOKEN-D" not in resp.text


def test_registrations_by_selector(app):
    resp = get(app, f"/pushreport/lookup/registrations?selector={SEL_C}")
    [reg] = resp.json["registrations"]
    assert (reg["selector"], reg["username"], reg["token_calls"]) == (SEL_C, "bob", "CALLTOKEN-C")


def test_a_selector_of_another_account_is_not_handed_out(app):
    resp = get(app, f"/pushreport/lookup/registrations?selector={SEL_C}&username=alice")
    assert resp.json == {"registrations": []}
    assert "CALLTOKEN-C" not in resp.text


def test_a_plus_in_a_username_is_exact(app):
    resp = get(app, "/pushreport/lookup/registrations?username=alice%2Bx")
    assert [r["token_msgs"] for r in resp.json["registrations"]] == ["MSGTOKEN-D"]
    # Form decoding makes a bare "+" a space: that is another (unknown) account.
    assert get(app, "/pushreport/lookup/registrations?username=alice+x").json == {
        "registrations": []
    }


def test_targets_per_purpose(app):
    calls = get(app, "/pushreport/lookup/targets?username=alice&purpose=call").json
    assert calls == {
        "username": "alice",
        "purpose": "call",
        "targets": [
            {"AppId": PUSHKIT, "DeviceToken": "CALLTOKEN-A", "Selector": SEL_A},
            {"AppId": PUSHKIT, "DeviceToken": "CALLTOKEN-B", "Selector": SEL_B},
        ],
    }
    msgs = get(app, "/pushreport/lookup/targets?username=alice&purpose=message").json
    assert msgs["targets"] == [
        {"AppId": REMOTE, "DeviceToken": "MSGTOKEN-A+/=", "Selector": SEL_A}
    ]
    bob = get(app, "/pushreport/lookup/targets?username=bob&purpose=message").json
    assert [t["DeviceToken"] for t in bob["targets"]] == ["MSGTOKEN-C"]
    assert (
        get(app, "/pushreport/lookup/targets?username=nobody&purpose=call").json["targets"] == []
    )


@pytest.mark.parametrize(
    "headers, challenge",
    [
        ({}, 'Bearer realm="pushreport"'),
        (
            {"Authorization": "Bearer wrong-token-wrong-token"},
            'Bearer realm="pushreport", error="invalid_token"',
        ),
        ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="pushreport", error="invalid_token"'),
        (
            {"Authorization": f"Bearer {TOKEN}x"},
            'Bearer realm="pushreport", error="invalid_token"',
        ),
        ({"Authorization": "Bearer"}, 'Bearer realm="pushreport", error="invalid_token"'),
    ],
)
def test_refused_without_the_bearer_token(app, headers, challenge):
    for url in (
        "/pushreport/lookup/registrations?username=alice",
        "/pushreport/lookup/targets?username=alice&purpose=call",
        "/pushreport/lookup/anything",
        "/pushreport/lookup",
    ):
        resp = get(app, url, headers=headers)
        assert resp.status_code == 401, url
        assert resp.headers["WWW-Authenticate"] == challenge
        assert resp.json == {"error": "a valid bearer token is required"}
        assert "CALLTOKEN" not in resp.text and "alice" not in resp.text


def test_the_bearer_is_compared_over_digests_so_its_length_does_not_leak(app, monkeypatch):
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    url = "/pushreport/lookup/registrations?username=bob"
    for given in ("x", TOKEN[:-1], TOKEN + "-and-more", "Basic " + TOKEN):
        assert get(app, url, headers={"Authorization": f"Bearer {given}"}).status_code == 401
    assert get(app, url).status_code == 200
    # Only same-length digests are compared, never the texts: a wrong length takes
    # as long as a wrong byte.
    assert len(compared) >= 5
    assert all(len(a) == len(b) == 32 for a, b in compared)
    assert all(TOKEN.encode() not in a + b for a, b in compared)


def test_a_short_token_is_refused_when_the_app_is_built_in_python(tmp_path):
    from pushreport_core import Secret
    from pushreport_wsgi import LookupApp

    with pytest.raises(ConfigurationError) as e:
        LookupApp(Lookup(None), token=Secret("x"), path="/lookup")  # type: ignore[arg-type]
    assert str(e.value) == "lookup.token: the token must be at least 16 characters"


def test_the_scheme_is_case_insensitive(app):
    resp = get(
        app,
        "/pushreport/lookup/registrations?username=bob",
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "url, status, error",
    [
        ("/pushreport/lookup/registrations", 400, "give username or selector"),
        ("/pushreport/lookup/registrations?username=", 400, "give username or selector"),
        (
            "/pushreport/lookup/registrations?username=alice&username=bob",
            400,
            "give username once",
        ),
        ("/pushreport/lookup/targets?purpose=call", 400, "give username"),
        ("/pushreport/lookup/targets?username=alice", 400, "purpose must be call or message"),
        (
            "/pushreport/lookup/targets?username=alice&purpose=sms",
            400,
            "purpose must be call or message",
        ),
        ("/pushreport/lookup/everything", 404, "not found"),
        ("/pushreport/lookup", 404, "not found"),
    ],
)
def test_never_list_everything(app, url, status, error):
    resp = get(app, url)
    assert (resp.status_code, resp.json) == (status, {"error": error})


def test_only_get(app):
    resp = Client(app).post("/pushreport/lookup/registrations?username=alice", headers=AUTH)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD"


def test_reports_still_work_and_other_paths_pass_through(tmp_path):
    def portal(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"portal"]

    app = PushReportMiddleware(portal, lookup_config(tmp_path))
    report(app, "erin", SEL_A, msgs="MSGTOKEN-E")
    assert Client(app).get("/pushreport/lookupx").data == b"portal"
    assert Client(app).get("/pushreport").data == b"portal"
    assert (
        get(app, "/pushreport/lookup/targets?username=erin&purpose=message").json["targets"][0][
            "DeviceToken"
        ]
        == "MSGTOKEN-E"
    )
    app.close()


def test_off_by_default(tmp_path):
    app = create_app(make_config(tmp_path))
    resp = get(app, "/pushreport/lookup/registrations?username=alice")
    assert resp.status_code == 404 and resp.data == b"not found\n"
    app.close()


def test_another_path_and_a_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHREPORT_TEST_LOOKUP_TOKEN", "from-the-environment-123")
    app = create_app(
        lookup_config(
            tmp_path, token="", path="/internal/tokens", token_env="PUSHREPORT_TEST_LOOKUP_TOKEN"
        )
    )
    report(app, "alice", SEL_A, msgs="MSGTOKEN-A1")
    ok = get(
        app,
        "/internal/tokens/registrations?username=alice",
        headers={"Authorization": "Bearer from-the-environment-123"},
    )
    assert ok.status_code == 200 and len(ok.json["registrations"]) == 1
    assert get(app, "/internal/tokens/registrations?username=alice").status_code == 401
    app.close()


def test_the_token_is_not_in_the_config_repr(tmp_path):
    assert TOKEN not in repr(lookup_config(tmp_path))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[lookup]\nenabled = true\n",
            "lookup.token: the lookup endpoint needs token or token_env",
        ),
        (
            "[lookup]\nenabled = true\ntoken = 'short'\n",
            "lookup.token: the token must be at least 16 characters",
        ),
        (
            "[lookup]\nenabled = true\ntoken = 'x' \ntoken_env = 'Y'\n",
            "lookup.token: set token or token_env, not both",
        ),
        # An unset token_env is an error of serving, not of loading: see
        # tests/wsgi/test_serving_secrets.py.
        ("[lookup]\npath = 'lookup'\n", "lookup.path: must start with / and not end with /"),
        ("[lookup]\npath = '/lookup/'\n", "lookup.path: must start with / and not end with /"),
        ("[lookup]\nenabled = 'yes'\n", "lookup.enabled: must be true or false"),
        ("[push]\ngateway_url = 'ftp://x'\n", "push.gateway_url: must be an http or https URL"),
        ("[push]\nattempts = 0\n", "push.attempts: must be between 1 and 20, not 0"),
        ("[push]\ntimeout = 'slow'\n", "push.timeout: must be a number, not str"),
        (
            "[push]\nurl = 'x'\n",
            "push.url: unknown key (expected one of: attempts, backoff, "
            "gateway_url, max_delay, timeout)",
        ),
    ],
)
def test_configuration_errors(tmp_path, monkeypatch, text, message):
    monkeypatch.delenv("PUSHREPORT_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigurationError) as e:
        load_config(write(tmp_path, text))
    assert str(e.value) == message


def test_configuration_loads(tmp_path):
    c = load_config(
        write(
            tmp_path,
            "[lookup]\nenabled = true\ntoken = '" + TOKEN + "'\n"
            "[push]\ngateway_url = 'http://127.0.0.1:9/send'\nattempts = 5\n"
            "backoff = 1\ntimeout = 2.5\n",
        )
    )
    assert c.lookup.enabled and c.lookup.bearer_token().reveal() == TOKEN
    assert (c.push.gateway_url, c.push.attempts, c.push.backoff, c.push.timeout) == (
        "http://127.0.0.1:9/send",
        5,
        1,
        2.5,
    )
    assert (
        load_config(write(tmp_path, "")).push.gateway_url
        == "https://pnm.cloudsoftphone.com/pnm2/send"
    )


def test_lookup_api(app):
    lookup = Lookup(app.receiver.storage)
    assert [r.selector for r in lookup.registrations(username="alice")] == [SEL_A, SEL_B]
    assert [r.selector for r in lookup.registrations(selector=SEL_C)] == [SEL_C]
    assert lookup.registrations(selector=SEL_C, username="alice") == []
    assert [t.device_token for t in lookup.push_targets("alice", "call")] == [
        "CALLTOKEN-A",
        "CALLTOKEN-B",
    ]
    with pytest.raises(ValueError, match="give a username or a selector"):
        lookup.registrations()
    with pytest.raises(ValueError, match="give a username"):
        lookup.push_targets("", "call")
