"""The push gateway, sans-IO: targets per purpose, the JSON body, the answer, back-off."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    DEFAULT_GATEWAY_URL,
    InvalidPush,
    PushReportError,
    PushTarget,
    Registration,
    backoff,
    build_push,
    default_verb,
    judge_push_answer,
    parse_retry_after,
    push_targets,
    retry_delay,
)
from pushreport_core.testing import strategies as prs

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def reg(
    selector: str,
    username: str | None = "alice",
    *,
    calls: str | None = None,
    msgs: str | None = None,
    appid_calls: str | None = "com.example.app.pushkit",
    appid_msgs: str | None = "com.example.app",
    seen: int = 0,
) -> Registration:
    return Registration(
        selector=selector,
        username=username,
        token_calls=calls,
        appid_calls=appid_calls,
        token_msgs=msgs,
        appid_msgs=appid_msgs,
        first_seen=T0,
        last_seen=T0 + timedelta(seconds=seen),
    )


def test_default_url_is_the_public_json_gateway():
    assert DEFAULT_GATEWAY_URL == "https://pnm.cloudsoftphone.com/pnm2/send"


def test_calls_use_the_pushkit_pair_messages_the_other():
    r = reg("A:1", calls="CALLTOKEN", msgs="MSGTOKEN")
    [call] = push_targets([r], "call")
    [msg] = push_targets([r], "message")
    assert (call.app_id, call.device_token, call.selector) == (
        "com.example.app.pushkit",
        "CALLTOKEN",
        "A:1",
    )
    assert (msg.app_id, msg.device_token, msg.selector) == ("com.example.app", "MSGTOKEN", "A:1")
    assert call.to_json() == {
        "AppId": "com.example.app.pushkit",
        "DeviceToken": "CALLTOKEN",
        "Selector": "A:1",
    }


def test_registrations_without_the_needed_token_or_app_id_are_skipped():
    rs = [reg("A:1", msgs="M1"), reg("B:2", calls="C2"), reg("C:3", msgs="M3", appid_msgs=None)]
    assert [t.selector for t in push_targets(rs, "message")] == ["A:1"]
    assert [t.selector for t in push_targets(rs, "call")] == ["B:2"]


def test_other_usernames_are_skipped_when_a_username_is_given():
    rs = [
        reg("A:1", "alice", msgs="M1"),
        reg("B:2", "bob", msgs="M2"),
        reg("C:3", None, msgs="M3"),
    ]
    assert [t.selector for t in push_targets(rs, "message", username="alice")] == ["A:1"]
    assert len(push_targets(rs, "message")) == 3


def test_one_device_twice_is_one_target_the_newest_registration():
    rs = [
        reg("A:1", msgs="SAME", seen=5),
        reg("B:2", msgs="SAME", seen=9),
        reg("C:3", msgs="SAME", seen=1),
    ]
    [t] = push_targets(rs, "message")
    assert t.selector == "B:2" and t.also == ("A:1", "C:3")
    assert t.selectors == ("B:2", "A:1", "C:3")


def test_unknown_purpose_is_refused():
    with pytest.raises(ValueError, match="purpose must be 'call' or 'message', not 'sms'"):
        push_targets([], "sms")  # type: ignore[arg-type]


# Small pools, so that registrations share tokens, app ids and usernames often (one
# device reported under two selectors, a token of one pair equal to the other's).
_TOKENS = st.none() | st.sampled_from(["T1", "T2", "T3", "Udl99X2JFP1b/wGe+E1h="])
_APP_IDS = st.none() | st.sampled_from(["com.example.app", "com.example.app.pushkit"])
_USERS = st.none() | st.sampled_from(["alice", "bob", "Alice"])


@st.composite
def _registrations(draw, max_size: int = 8) -> list[Registration]:
    selectors = draw(st.lists(prs.selectors, max_size=max_size, unique=True))
    return [
        Registration(
            selector=s,
            username=draw(_USERS),
            token_calls=draw(_TOKENS),
            appid_calls=draw(_APP_IDS),
            token_msgs=draw(_TOKENS),
            appid_msgs=draw(_APP_IDS),
            first_seen=T0,
            last_seen=T0 + timedelta(seconds=draw(st.integers(0, 3))),
        )
        for s in selectors
    ]


@given(_registrations(), st.sampled_from(["call", "message"]))
def test_targets_never_lack_a_token_never_mix_pairs_never_repeat(registrations, purpose):
    targets = push_targets(registrations, purpose)
    by_selector = {r.selector: r for r in registrations}
    for t in targets:
        assert t.device_token and t.app_id
        for selector in t.selectors:
            pair = by_selector[selector].pair(purpose)
            # Exactly this registration's pair for the purpose: never the other pair's
            # token with this pair's app id.
            assert pair is not None and (pair.token, pair.app_id) == (t.device_token, t.app_id)
    pairs = [(t.app_id, t.device_token) for t in targets]
    assert len(pairs) == len(set(pairs))
    # Every registration that has the pair is pushed, once.
    covered = [s for t in targets for s in t.selectors]
    assert sorted(covered) == sorted(r.selector for r in registrations if r.pair(purpose))


@given(_registrations(), st.sampled_from(["alice", "bob", "Alice", "carol"]))
def test_a_username_filter_never_leaks_another_account(registrations, username):
    for purpose in ("call", "message"):
        targets = push_targets(registrations, purpose, username=username)
        mine = {r.selector for r in registrations if r.username == username}
        for t in targets:
            assert t.username == username and set(t.selectors) <= mine
        assert {s for t in targets for s in t.selectors} == {
            r.selector for r in registrations if r.selector in mine and r.pair(purpose)
        }


TARGET = PushTarget(
    app_id="com.example.app", device_token="TOK+/=", selector="A:1", username="alice"
)


def test_build_push_generic_text():
    assert build_push(TARGET, "NotifyGenericTextMessage", message="Hello") == {
        "verb": "NotifyGenericTextMessage",
        "AppId": "com.example.app",
        "DeviceToken": "TOK+/=",
        "Selector": "A:1",
        "Message": "Hello",
    }


def test_build_push_optional_fields_by_their_gateway_names():
    body = build_push(
        TARGET,
        "NotifyTextMessage",
        badge=3,
        sound="ring.caf",
        user_name="bob",
        user_display_name="Bob",
        content_type="text/plain",
        id="m-1",
        thread_id="t-1",
        message=None,
    )
    assert body == {
        "verb": "NotifyTextMessage",
        "AppId": "com.example.app",
        "DeviceToken": "TOK+/=",
        "Selector": "A:1",
        "Badge": 3,
        "Sound": "ring.caf",
        "UserName": "bob",
        "UserDisplayName": "Bob",
        "ContentType": "text/plain",
        "Id": "m-1",
        "ThreadId": "t-1",
    }
    json.dumps(body)


@pytest.mark.parametrize(
    "target, verb, message, error",
    [
        (
            attrs.evolve(TARGET, device_token=""),
            "NotifyTextMessage",
            None,
            "a push needs a DeviceToken",
        ),
        (attrs.evolve(TARGET, app_id=""), "NotifyTextMessage", None, "a push needs an AppId"),
        (
            attrs.evolve(TARGET, selector=""),
            "NotifyTextMessage",
            None,
            "NotifyTextMessage needs a Selector",
        ),
        (TARGET, "NotifyGenericTextMessage", "", "NotifyGenericTextMessage needs a message"),
        (
            TARGET,
            "NotifyIncomingCall",
            None,
            "unknown verb 'NotifyIncomingCall' (expected one "
            "of: NotifyTextMessage, NotifyGenericTextMessage)",
        ),
    ],
)
def test_build_push_refuses(target, verb, message, error):
    with pytest.raises(InvalidPush) as e:
        build_push(target, verb, message=message)
    assert str(e.value) == error
    assert isinstance(e.value, PushReportError) and e.value.error_status_hint == 400


def test_build_push_unknown_keyword():
    with pytest.raises(TypeError, match="'colour'"):
        build_push(TARGET, "NotifyTextMessage", colour="red")


def test_default_verbs():
    assert default_verb("call", "Alice calling") == "NotifyTextMessage"
    assert default_verb("message", "Hello") == "NotifyGenericTextMessage"
    assert default_verb("message", None) == "NotifyTextMessage"


@pytest.mark.parametrize(
    "status, body, kind, code",
    [
        (200, b'{"code": 200, "message": "OK"}', "delivered", 200),
        (200, b'{"code": "200"}', "delivered", 200),
        (200, b'{"code": 404, "message": "invalid token"}', "token_invalid", 404),
        (404, b"", "token_invalid", None),
        (404, b"<html>gone</html>", "token_invalid", None),
        (503, b"", "retry", None),
        (500, b'{"code": 500}', "retry", 500),
        (429, b"", "retry", None),
        (200, b'{"code": 503}', "retry", 503),
        (200, b"", "retry", None),
        (200, b"not json", "retry", None),
        (200, b"[1]", "retry", None),
        (200, b'{"code": true}', "retry", None),
        (200, b"\xff\xfe", "retry", None),
        (400, b'{"code": 400}', "failed", 400),
        (401, b"", "failed", None),
        (302, b"", "failed", None),
        (200, b'{"code": 400, "message": "missing AppId"}', "failed", 400),
    ],
)
def test_judge_push_answer(status, body, kind, code):
    outcome = judge_push_answer(status, body)
    assert (outcome.kind, outcome.status, outcome.code) == (kind, status, code)
    assert outcome.ok == (kind == "delivered")


def test_no_answer_is_retried_with_the_reason():
    outcome = judge_push_answer(None, error="timed out")
    assert (outcome.kind, outcome.reason) == ("retry", "no answer: timed out")


@given(st.one_of(st.none(), st.integers(100, 599)), st.binary(max_size=64))
def test_judge_is_total(status, body):
    outcome = judge_push_answer(status, body)
    assert outcome.kind in ("delivered", "token_invalid", "retry", "failed")
    if outcome.kind == "delivered":
        assert status is not None and 200 <= status < 300


@given(
    st.integers(1, 80),
    st.floats(0.01, 10),
    st.floats(0.01, 600),
    st.integers(0, 2**32),
    st.one_of(st.none(), st.floats(0, 10_000)),
)
def test_retry_delay_is_bounded(attempt, base, cap, seed, retry_after):
    delay = retry_delay(
        attempt, base=base, cap=cap, rng=random.Random(seed), retry_after=retry_after
    )
    assert 0 <= delay <= cap
    step = min(cap, base * 2 ** (attempt - 1))
    assert delay >= step / 2 - 1e-9
    if retry_after is not None:
        assert delay >= min(retry_after, cap) - 1e-9


def test_retry_delay_grows_and_is_jittered_reproducibly():
    rng = random.Random(7)
    delays = [retry_delay(n, base=1.0, cap=100.0, rng=rng) for n in range(1, 6)]
    for n, d in enumerate(delays):
        assert 2**n / 2 <= d <= 2**n
    again = random.Random(7)
    assert delays == [retry_delay(n, base=1.0, cap=100.0, rng=again) for n in range(1, 6)]
    assert len(set(delays)) == 5


@given(
    st.integers(1, 200),
    st.floats(0.001, 10),
    st.floats(0.001, 600),
    st.integers(0, 2**32),
    st.sampled_from((0.0, 0.25, 0.5, 1.0)),
)
def test_backoff_drops_at_most_its_jitter_of_the_capped_step(failures, base, cap, seed, jitter):
    step = min(cap, base * 2.0 ** min(failures - 1, 62))
    delay = backoff(failures, base=base, cap=cap, rng=random.Random(seed), jitter=jitter)
    assert step * (1 - jitter) - 1e-9 <= delay <= step + 1e-9


def test_pushes_retry_with_the_one_backoff_formula():
    for n in range(1, 12):
        expected = backoff(n, base=0.5, cap=30.0, rng=random.Random(n))
        assert retry_delay(n, base=0.5, cap=30.0, rng=random.Random(n)) == expected


def test_retry_after_wins_when_longer_but_stays_bounded():
    rng = random.Random(1)
    assert retry_delay(1, base=0.1, cap=30, rng=rng, retry_after=7) == 7
    assert retry_delay(1, base=0.1, cap=30, rng=rng, retry_after=3600) == 30
    with pytest.raises(ValueError, match="attempt counts from 1, not 0"):
        retry_delay(0, base=1, cap=1, rng=rng)


def test_parse_retry_after():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT") is None
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("garbage date", now=now) is None
