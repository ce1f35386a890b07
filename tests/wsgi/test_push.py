"""The push client against a real HTTP gateway on loopback and a real SQLite file."""

from __future__ import annotations

import random
import socket
from typing import Iterator
from urllib.parse import urlencode

import attrs
import pytest
from werkzeug.test import Client

from pushreport_core import InvalidPush, PushTarget
from pushreport_wsgi import PushClient, Receiver, create_app, push

from ..fake_gateway import BUSY, GONE, OK, FakeGateway, running_gateway
from .conftest import make_config

SEL_A = "A" * 40 + ":1"
SEL_B = "B" * 40 + ":2"
SEL_C = "C" * 40 + ":3"
PUSHKIT = "com.example.app.pushkit"
REMOTE = "com.example.app"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


def report(
    app, username: str, selector: str, *, calls: str | None = None, msgs: str | None = None
) -> None:
    fields = {"username": username, "selector": selector}
    if calls:
        fields.update(token_calls=calls, appid_calls=PUSHKIT)
    if msgs:
        fields.update(token_msgs=msgs, appid_msgs=REMOTE)
    resp = Client(app).get("/token/?" + urlencode(fields))
    assert resp.status_code == 200, resp.data


@pytest.fixture
def app(tmp_path):
    application = create_app(make_config(tmp_path))
    report(application, "alice", SEL_A, calls="CALLTOKEN-A", msgs="MSGTOKEN-A+/=")
    report(application, "alice", SEL_B, calls="CALLTOKEN-B")  # no message token yet
    report(application, "bob", SEL_C, calls="CALLTOKEN-C", msgs="MSGTOKEN-C")
    yield application
    application.close()


def client(gateway: FakeGateway, receiver: Receiver | None = None, **kwargs) -> PushClient:
    sleeps: list[float] = []
    defaults = dict(
        gateway_url=gateway.url,
        timeout=2.0,
        attempts=3,
        backoff=0.01,
        rng=random.Random(0),
        sleep=sleeps.append,
        storages=[receiver.storage] if receiver else [],
    )
    defaults.update(kwargs)
    return PushClient(**defaults)


def slept(c: PushClient) -> list[float]:
    """The waits the client asked for (its ``sleep`` is a list's ``append``)."""
    return c.sleep.__self__  # type: ignore[attr-defined, no-any-return]


def test_a_message_goes_to_the_remote_notification_pair_only(app, gateway):
    results = push(
        app.receiver, username="alice", purpose="message", message="Hello", client=client(gateway)
    )
    assert [(r.target.selector, r.status, r.attempts) for r in results] == [
        (SEL_A, "delivered", 1)
    ]
    [request] = gateway.requests
    assert request["path"] == "/pnm2/send"
    assert request["content_type"] == "application/json"
    assert request["json"] == {
        "verb": "NotifyGenericTextMessage",
        "AppId": REMOTE,
        "DeviceToken": "MSGTOKEN-A+/=",
        "Selector": SEL_A,
        "Message": "Hello",
    }


def test_a_call_goes_to_the_pushkit_pair_of_every_device(app, gateway):
    results = push(app.receiver, username="alice", purpose="call", client=client(gateway))
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert sorted(
        (b["verb"], b["AppId"], b["DeviceToken"], b["Selector"]) for b in gateway.bodies()
    ) == [
        ("NotifyTextMessage", PUSHKIT, "CALLTOKEN-A", SEL_A),
        ("NotifyTextMessage", PUSHKIT, "CALLTOKEN-B", SEL_B),
    ]


def test_another_account_is_never_pushed(app, gateway):
    push(app.receiver, username="alice", purpose="call", client=client(gateway))
    push(app.receiver, username="bob", purpose="message", message="hi", client=client(gateway))
    tokens = [b["DeviceToken"] for b in gateway.bodies()]
    assert tokens == ["CALLTOKEN-A", "CALLTOKEN-B", "MSGTOKEN-C"]
    assert push(app.receiver, username="carol", client=client(gateway)) == []
    assert len(gateway.requests) == 3


def test_a_404_forgets_that_token_only(app, gateway):
    gateway.plan("CALLTOKEN-A", [GONE])
    c = client(gateway, app.receiver)
    results = {
        r.target.selector: r
        for r in push(app.receiver, username="alice", purpose="call", client=c)
    }
    gone = results[SEL_A]
    assert (gone.status, gone.attempts, gone.forgotten) == ("token-removed", 1, (SEL_A,))
    assert not gone.ok and results[SEL_B].ok
    stored = app.receiver.storage.get(SEL_A)
    # The PushKit token is gone, its app id and the other pair stay.
    assert (stored.token_calls, stored.appid_calls) == (None, PUSHKIT)
    assert stored.token_msgs == "MSGTOKEN-A+/="
    assert app.receiver.storage.get(SEL_B).token_calls == "CALLTOKEN-B"
    # The next push no longer offers it.
    again = push(app.receiver, username="alice", purpose="call", client=c)
    assert [r.target.device_token for r in again] == ["CALLTOKEN-B"]


def test_a_404_in_the_json_code_forgets_the_token_too(app, gateway):
    gateway.plan("MSGTOKEN-C", [(200, b'{"code": 404, "message": "invalid token"}')])
    [result] = push(
        app.receiver, username="bob", message="x", client=client(gateway, app.receiver)
    )
    assert result.status == "token-removed" and result.forgotten == (SEL_C,)
    assert app.receiver.storage.get(SEL_C).token_msgs is None


def test_a_503_is_retried_after_the_back_off_then_delivered(app, gateway):
    gateway.plan("MSGTOKEN-C", [BUSY, (503, b"", {"Retry-After": "2"}), OK])
    c = client(gateway)
    [result] = push(app.receiver, username="bob", message="x", client=c)
    assert (result.status, result.attempts) == ("delivered", 3)
    assert len(gateway.requests) == 3
    first, second = slept(c)
    assert 0.005 <= first <= 0.01  # the jittered first step of 0.01 s
    assert second == 2.0  # Retry-After, longer than the back-off, honoured


def test_retry_after_is_bounded_by_max_delay(app, gateway):
    gateway.plan("MSGTOKEN-C", [(503, b"", {"Retry-After": "86400"}), OK])
    c = client(gateway, max_delay=1.5)
    [result] = push(app.receiver, username="bob", message="x", client=c)
    assert result.ok and slept(c) == [1.5]


def test_a_gateway_that_stays_down_is_given_up_after_the_attempts(app, gateway):
    gateway.plan("MSGTOKEN-C", [BUSY])
    [result] = push(app.receiver, username="bob", message="x", client=client(gateway, attempts=4))
    assert (result.status, result.attempts, result.outcome.reason) == ("gave-up", 4, "HTTP 503")
    assert len(gateway.requests) == 4
    assert app.receiver.storage.get(SEL_C).token_msgs == "MSGTOKEN-C"


def test_a_refusal_is_not_retried_and_keeps_the_token(app, gateway):
    gateway.plan("MSGTOKEN-C", [(400, b'{"code": 400, "message": "bad AppId"}')])
    [result] = push(
        app.receiver, username="bob", message="x", client=client(gateway, app.receiver)
    )
    assert (result.status, result.attempts, result.outcome.code) == ("failed", 1, 400)
    assert app.receiver.storage.get(SEL_C).token_msgs == "MSGTOKEN-C"


def test_a_redirect_is_not_followed(app, gateway):
    gateway.plan("MSGTOKEN-C", [(302, b"", {"Location": "/elsewhere"})])
    [result] = push(app.receiver, username="bob", message="x", client=client(gateway))
    assert (result.status, result.outcome.status) == ("failed", 302)
    assert [r["path"] for r in gateway.requests] == ["/pnm2/send"]


def test_a_timeout_is_retried(app, gateway):
    gateway.plan("MSGTOKEN-C", ["hang", OK])
    [result] = push(app.receiver, username="bob", message="x", client=client(gateway, timeout=0.3))
    assert (result.status, result.attempts) == ("delivered", 2)


@pytest.mark.parametrize("broken", ["drop", "short"])
def test_a_broken_answer_is_retried(app, gateway, broken):
    gateway.plan("MSGTOKEN-C", [broken, OK])
    [result] = push(app.receiver, username="bob", message="x", client=client(gateway))
    assert (result.status, result.attempts) == ("delivered", 2)
    assert len(gateway.requests) == 2


def test_no_answer_at_all_gives_up_with_the_reason(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = PushClient(
        gateway_url=f"http://127.0.0.1:{port}/pnm2/send",
        timeout=1,
        attempts=2,
        backoff=0,
        sleep=lambda _: None,
    )
    [result] = push(app.receiver, username="bob", message="x", client=c)
    assert (result.status, result.attempts) == ("gave-up", 2)
    assert result.outcome.reason.startswith("no answer: ")
    assert "refused" in result.outcome.reason.lower()


def test_never_a_request_without_a_device_token(gateway):
    target = PushTarget(app_id=REMOTE, device_token="", selector=SEL_A)
    with pytest.raises(InvalidPush, match="a push needs a DeviceToken"):
        client(gateway).send(target, message="x")
    with pytest.raises(InvalidPush, match="NotifyGenericTextMessage needs a message"):
        client(gateway).send(
            attrs.evolve(target, device_token="T"), verb="NotifyGenericTextMessage"
        )
    assert gateway.requests == []


def test_result_lines(app, gateway):
    gateway.plan("CALLTOKEN-A", [GONE])
    lines = [
        r.line()
        for r in push(
            app.receiver, username="alice", purpose="call", client=client(gateway, app.receiver)
        )
    ]
    assert lines == [
        f"{SEL_A}  CALLTOKEN-A  token-removed  1 attempt  token is no longer valid",
        f"{SEL_B}  CALLTOKEN-B  delivered  1 attempt",
    ]


def test_push_from_a_config_uses_the_push_section(tmp_path, gateway):
    from pushreport_wsgi import PushConfig

    config = attrs.evolve(
        make_config(tmp_path), push=PushConfig(gateway_url=gateway.url, attempts=2, backoff=0)
    )
    application = create_app(config)
    report(application, "dave", SEL_A, msgs="MSGTOKEN-D")
    application.close()
    gateway.plan("MSGTOKEN-D", [BUSY])
    [result] = push(config, username="dave", message="x")
    assert (result.status, result.attempts) == ("gave-up", 2)


def test_a_storage_that_cannot_forget_keeps_the_token_and_says_so(app, gateway, caplog):
    class Plain:  # a third-party backend without the optional forget_token
        name = "plain"

    gateway.plan("MSGTOKEN-C", [GONE])
    [result] = push(
        app.receiver, username="bob", message="x", client=client(gateway, storages=[Plain()])
    )
    assert (result.status, result.forgotten) == ("token-invalid", ())
    assert "storage 'plain' cannot forget tokens" in caplog.text
    assert app.receiver.storage.get(SEL_C).token_msgs == "MSGTOKEN-C"
