"""Report, look up, push: a real `pushreport serve`, its lookup endpoint over HTTP, and
`pushreport push` as a process against a fake gateway on loopback."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest

from ..fake_gateway import BUSY, GONE, FakeGateway, running_gateway
from .conftest import PUSHREPORT, Server, pushreport_list

pytestmark = pytest.mark.e2e

TOKEN = "e2e-lookup-bearer-token-42"
PUSHKIT = "com.example.app.pushkit"
REMOTE = "com.example.app"
PHONE = "1" * 40 + ":A1"
TABLET = "2" * 40 + ":B2"
BOBS = "3" * 40 + ":C3"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


def report(server: Server, username: str, selector: str, calls: str, msgs: str) -> None:
    query = urlencode(
        {
            "username": username,
            "selector": selector,
            "token_calls": calls,
            "appid_calls": PUSHKIT,
            "token_msgs": msgs,
            "appid_msgs": REMOTE,
        }
    )
    answer = server.send(
        f"GET /token/?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"User-Agent: CloudSoftphone/1.5.6\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def lookup(server: Server, url: str, token: str | None = TOKEN) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", url, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.headers, json.loads(resp.read())  # names in any case
    finally:
        conn.close()


def pushreport_push(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PUSHREPORT, "push", "--config", str(config), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def setup(tmp_path: Path, gateway: FakeGateway):
    config = tmp_path / "pushreport.toml"
    config.write_text(
        f'[lookup]\nenabled = true\ntoken = "{TOKEN}"\n\n'
        f'[push]\ngateway_url = "{gateway.url}"\nbackoff = 0.05\n'
        "attempts = 3\ntimeout = 5\n"
    )
    server = Server(tmp_path, "--config", str(config), workers=1)
    try:
        report(server, "alice", PHONE, "PHONE-CALLS-token", "PHONE-MSGS-token+/=")
        report(server, "alice", TABLET, "TABLET-CALLS-token", "TABLET-MSGS-token")
        report(server, "bob", BOBS, "BOB-CALLS-token", "BOB-MSGS-token")
        yield server, config, gateway
    finally:
        server.stop()


def test_report_look_up_push(setup):
    server, config, gateway = setup

    # The lookup endpoint refuses without the bearer token, and with a wrong one.
    status, headers, body = lookup(
        server, "/pushreport/lookup/targets?username=alice&purpose=message", token=None
    )
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "PHONE" not in json.dumps(body)
    assert (
        lookup(
            server, "/pushreport/lookup/registrations?username=alice", token="not-the-token-at-all"
        )[0]
        == 401
    )

    # With it: alice's devices, never bob's.
    status, _, regs = lookup(server, "/pushreport/lookup/registrations?username=alice")
    assert status == 200
    assert [r["selector"] for r in regs["registrations"]] == [PHONE, TABLET]
    assert "BOB" not in json.dumps(regs)
    status, _, targets = lookup(server, "/pushreport/lookup/targets?username=alice&purpose=call")
    assert targets["targets"] == [
        {"AppId": PUSHKIT, "DeviceToken": "PHONE-CALLS-token", "Selector": PHONE},
        {"AppId": PUSHKIT, "DeviceToken": "TABLET-CALLS-token", "Selector": TABLET},
    ]

    # A message: the phone's gateway is busy once (503, retried), the tablet's token is
    # gone (404, removed); one failure makes the exit status 1.
    gateway.plan("PHONE-MSGS-token+/=", [BUSY, (200, b'{"code":200}')])
    gateway.plan("TABLET-MSGS-token", [GONE])
    run = pushreport_push(config, server.db, "--username", "alice", "--message", "Hello")
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [
        f"{PHONE}  PHONE-MSGS-t…  delivered  2 attempts",
        f"{TABLET}  TABLET-MSGS-…  token-removed  1 attempt  token is no longer valid",
    ]
    bodies = gateway.bodies()
    assert bodies == [
        {
            "verb": "NotifyGenericTextMessage",
            "AppId": REMOTE,
            "DeviceToken": "PHONE-MSGS-token+/=",
            "Selector": PHONE,
            "Message": "Hello",
        },
        {
            "verb": "NotifyGenericTextMessage",
            "AppId": REMOTE,
            "DeviceToken": "PHONE-MSGS-token+/=",
            "Selector": PHONE,
            "Message": "Hello",
        },
        {
            "verb": "NotifyGenericTextMessage",
            "AppId": REMOTE,
            "DeviceToken": "TABLET-MSGS-token",
            "Selector": TABLET,
            "Message": "Hello",
        },
    ]

    # The 404 removed that token from storage (its PushKit pair stays), as the
    # endpoint and `pushreport list` see it.
    [tablet] = pushreport_list(server.db, "--selector", TABLET)
    assert tablet["token_msgs"] is None and tablet["token_calls"] == "TABLET-CALLS-token"
    _, _, targets = lookup(server, "/pushreport/lookup/targets?username=alice&purpose=message")
    assert [t["DeviceToken"] for t in targets["targets"]] == ["PHONE-MSGS-token+/="]

    # A call: the PushKit pair of each device; all delivered, exit 0.
    del gateway.requests[:]
    run = pushreport_push(config, server.db, "--username", "alice", "--call")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2
    assert sorted((b["verb"], b["AppId"], b["DeviceToken"]) for b in gateway.bodies()) == [
        ("NotifyTextMessage", PUSHKIT, "PHONE-CALLS-token"),
        ("NotifyTextMessage", PUSHKIT, "TABLET-CALLS-token"),
    ]
    # bob was never pushed.
    assert not [b for b in gateway.bodies() if b["DeviceToken"].startswith("BOB")]


def test_push_without_a_device_and_with_the_gateway_down(setup, tmp_path):
    server, config, gateway = setup
    run = pushreport_push(config, server.db, "--username", "carol", "--message", "x")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "pushreport: no device to push: no registration of 'carol' has a "
        "message token and app id\n"
    )
    assert gateway.requests == []

    gateway.plan("BOB-MSGS-token", [BUSY])
    run = pushreport_push(config, server.db, "--username", "bob", "--message", "x")
    assert run.returncode == 1
    assert run.stdout == f"{BOBS}  BOB-MSGS-tok…  gave-up  3 attempts  HTTP 503\n"
    assert len(gateway.requests) == 3
    [bob] = pushreport_list(server.db, "--username", "bob")
    assert bob["token_msgs"] == "BOB-MSGS-token"

    # --gateway-url wins over [push] gateway_url; an invalid one is a configuration error.
    run = pushreport_push(
        config, server.db, "--username", "bob", "--message", "x", "--gateway-url", "ftp://nowhere"
    )
    assert (run.returncode, run.stderr) == (
        2,
        "pushreport: configuration error: push.gateway_url: must be an http or https URL\n",
    )
    run = pushreport_push(
        config, server.db, "--username", "bob", "--verb", "NotifyGenericTextMessage"
    )
    assert (run.returncode, run.stderr) == (
        2,
        "pushreport: NotifyGenericTextMessage needs a message\n",
    )
    assert len(gateway.requests) == 3
