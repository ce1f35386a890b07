"""Delivery to a real HTTP receiver on loopback that fails, hangs, hangs up and recovers:
signed, in order per selector, retried, dead-lettered, resumed after reopening."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from pushreport_core import Report, Secret
from pushreport_webhook import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookStorage,
    signature,
    verify,
)
from pushreport_webhook._outbox import dead_events, pending_events

from .conftest import PUSHREPORT_SECRET, SECRET, Receiver, recipe

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
PASSWORD = "pw-Never-Sent-31337"
FAST = dict(poll_interval=0.02, backoff_base=0.01, backoff_max=0.04, timeout=1.0)


def selector(i: int) -> str:
    return f"{i:x}" * 40 + ":7c3a0d14"


def report(sel: str, n: int) -> Report:
    return Report(
        selector=sel,
        username="alice",
        token_msgs=f"tok{n}AAAA",
        appid_msgs="com.example.app",
        password=Secret(PASSWORD),
    )


@pytest.fixture
def open_storage(tmp_path: Path, receiver: Receiver) -> Iterator[Any]:
    opened: list[WebhookStorage] = []

    def open_(**options: Any) -> WebhookStorage:
        s = WebhookStorage(
            tmp_path / "outbox.sqlite3",
            url=options.pop("url", receiver.url),
            secret=options.pop("secret", SECRET),
            **{**FAST, **options},
        )
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


def outbox(storage: WebhookStorage) -> tuple[list[Any], list[Any]]:
    return storage._read(lambda c: (pending_events(c), dead_events(c)))


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- signing (signature = "pushreport"; "standard": test_webhook_standard.py) ---------------


def test_every_delivery_is_signed_and_passes_the_documented_recipe(
    pushreport_receiver: Receiver, open_storage: Any, caplog: Any
) -> None:
    receiver = pushreport_receiver
    caplog.set_level(logging.INFO, "pushreport.webhook")
    storage = open_storage(
        url=receiver.url + "?token=hunter2", signature="pushreport", secret=PUSHREPORT_SECRET
    )
    stored = [storage.upsert(report(selector(1), n), now=T0) for n in range(3)]
    receiver.wait_for(lambda r: len(r.accepted()) == 3)
    deliveries = receiver.accepted()
    assert all(d.verified for d in deliveries)
    for d, registration in zip(deliveries, stored):
        event = d.event
        assert event["registration"] == registration.to_json()
        assert d.headers[EVENT_ID_HEADER] == str(event["id"])
        assert d.headers[EVENT_HEADER] == "registration.updated"
        assert d.headers["Content-Type"] == "application/json"
        assert d.headers["User-Agent"] == "pushreport-webhook/1"
        ts = int(d.headers[TIMESTAMP_HEADER])
        assert abs(ts - time.time()) < 30
        assert d.headers[SIGNATURE_HEADER] == signature(PUSHREPORT_SECRET.encode(), ts, d.body)
        assert not any(name.lower().startswith("webhook-") for name in d.headers)
        assert re.fullmatch(r"sha256=[0-9a-f]{64}", d.headers[SIGNATURE_HEADER])
        assert PASSWORD.encode() not in d.body
    assert [d.event["id"] for d in deliveries] == sorted(d.event["id"] for d in deliveries)
    wait_until(lambda: outbox(storage) == ([], []))
    # The log names the host only: a path or a query may hold a credential.
    port = receiver.server.server_address[1]
    assert f"delivers to http://127.0.0.1:{port}\n" in caplog.text + "\n"
    assert "hunter2" not in caplog.text and "/hooks" not in caplog.text


def test_the_recipe_refuses_a_forgery_a_tampered_body_and_an_old_timestamp(
    pushreport_receiver: Receiver, open_storage: Any
) -> None:
    receiver = pushreport_receiver
    verify_webhook = recipe()["verify_pushreport_webhook"]
    storage = open_storage(url=receiver.url, signature="pushreport", secret=PUSHREPORT_SECRET)
    storage.upsert(report(selector(1), 1), now=T0)
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    [d] = receiver.accepted()
    assert d.verified
    ts = int(d.headers[TIMESTAMP_HEADER])
    key = PUSHREPORT_SECRET.encode()
    assert verify_webhook(key, d.headers, d.body, now=ts + 299) == d.event
    with pytest.raises(ValueError, match="^signature does not match$"):
        verify_webhook(key, d.headers, d.body.replace(b"tok1", b"tok2"))
    with pytest.raises(ValueError, match="^signature does not match$"):
        verify_webhook(b"another secret", d.headers, d.body)
    with pytest.raises(ValueError, match="^timestamp outside the tolerance"):
        verify_webhook(key, d.headers, d.body, now=ts + 301)
    with pytest.raises(ValueError, match="^missing or malformed X-Pushreport-Timestamp$"):
        verify_webhook(key, {**d.headers, TIMESTAMP_HEADER: "-1"}, d.body)
    # The library's own check agrees with the recipe.
    assert verify(
        key, timestamp=str(ts), signature_header=d.headers[SIGNATURE_HEADER], body=d.body, now=ts
    )
    assert not verify(
        key,
        timestamp=str(ts + 1),
        signature_header=d.headers[SIGNATURE_HEADER],
        body=d.body,
        now=ts,
    )


# -- failures and recovery ----------------------------------------------------------------


def test_500_is_retried_with_back_off_until_it_succeeds(
    receiver: Receiver, open_storage: Any
) -> None:
    receiver.mode = "fail"
    storage = open_storage()
    storage.upsert(report(selector(1), 1), now=T0)
    receiver.wait_for(lambda r: len(r.deliveries) >= 3)
    [event], [] = outbox(storage)
    assert event.attempts >= 2 and event.last_error == "HTTP 500"
    receiver.mode = "ok"
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    wait_until(lambda: outbox(storage) == ([], []))
    ids = {d.event["id"] for d in receiver.deliveries}
    assert ids == {event.id}, "retries must carry the same event id"


def test_a_receiver_that_hangs_past_the_timeout_is_a_failure(
    receiver: Receiver, open_storage: Any
) -> None:
    receiver.mode, receiver.hang = "hang", 0.6
    storage = open_storage(timeout=0.2)
    storage.upsert(report(selector(1), 1), now=T0)
    wait_until(lambda: any(e.last_error == "timed out" for e in outbox(storage)[0]))
    receiver.mode = "ok"
    wait_until(lambda: outbox(storage) == ([], []))
    # The hung requests were answered late (after the sender gave up): at-least-once,
    # one event id however often it came.
    receiver.wait_for(lambda r: r.accepted() != [])
    assert len(receiver.unique_events()) == 1


@pytest.mark.parametrize(
    ("mode", "error"), [("drop", "connection closed without an answer"), ("redirect", "HTTP 302")]
)
def test_no_answer_or_a_redirect_is_a_failure(
    receiver: Receiver, open_storage: Any, mode: str, error: str
) -> None:
    receiver.mode = mode
    storage = open_storage()
    storage.upsert(report(selector(1), 1), now=T0)
    wait_until(lambda: any(e.last_error == error for e in outbox(storage)[0]))
    assert receiver.accepted() == []


def test_connection_refused_is_a_failure(open_storage: Any) -> None:
    from tests.e2e.conftest import free_port

    storage = open_storage(url=f"http://127.0.0.1:{free_port()}/hook")
    storage.upsert(report(selector(1), 1), now=T0)
    wait_until(lambda: any(e.last_error == "connection refused" for e in outbox(storage)[0]))


def test_an_event_that_keeps_failing_is_dead_lettered_and_the_next_one_goes_on(
    receiver: Receiver, open_storage: Any
) -> None:
    receiver.mode = "fail"
    storage = open_storage(max_attempts=3)
    first = storage.upsert(report(selector(1), 1), now=T0)
    storage.upsert(report(selector(1), 2), now=T0 + timedelta(seconds=1))
    wait_until(lambda: len(outbox(storage)[1]) == 2)
    pending, dead = outbox(storage)
    assert pending == []
    assert [(d.attempts, d.last_error) for d in dead] == [(3, "HTTP 500")] * 2
    assert dead[0].registration == first.to_json()
    # Per selector, in order: every attempt at the first event came before any at the
    # second.
    sent = [d.event["id"] for d in receiver.deliveries]
    assert sent == [dead[0].id] * 3 + [dead[1].id] * 3
    assert storage.deliverer is not None and storage.deliverer.dead == 2


def test_order_per_selector_holds_while_the_receiver_flaps(
    receiver: Receiver, open_storage: Any
) -> None:
    storage = open_storage(concurrency=4, max_attempts=1000)
    stop = threading.Event()

    def flap() -> None:
        modes = ["fail", "ok", "drop", "ok", "fail", "fail", "ok"]
        i = 0
        while not stop.wait(0.015):
            receiver.mode = modes[i % len(modes)]
            i += 1

    flapper = threading.Thread(target=flap)
    flapper.start()
    committed: dict[str, list[int]] = {}
    try:
        for n in range(60):
            sel = selector(1 + n % 5)
            storage.upsert(report(sel, n), now=T0 + timedelta(seconds=n))
            committed.setdefault(sel, []).append(n)
            time.sleep(0.003)
    finally:
        stop.set()
        flapper.join()
    receiver.mode = "ok"
    wait_until(lambda: outbox(storage) == ([], []), timeout=20)
    assert any(d.status != 200 for d in receiver.deliveries), "the receiver never failed"
    events = receiver.unique_events()
    assert len(events) == 60
    for sel, numbers in committed.items():
        got = [e for e in events if e["selector"] == sel]
        assert [e["registration"]["token_msgs"] for e in got] == [
            f"tok{n}AAAA" for n in numbers
        ], f"{sel}: out of order"
        assert [e["registration"]["reports"] for e in got] == list(range(1, 13))
        ids = [e["id"] for e in got]
        assert ids == sorted(ids)


# -- processes, restarts ------------------------------------------------------------------


def test_delivery_resumes_after_reopening(receiver: Receiver, open_storage: Any) -> None:
    writer = open_storage(deliver=False)
    for n in range(4):
        writer.upsert(report(selector(1 + n % 2), n), now=T0)
    writer.close()
    assert receiver.deliveries == []
    open_storage()
    receiver.wait_for(lambda r: len(r.accepted()) == 4)
    events = receiver.unique_events()
    for first in (0, 1):  # in order per selector; selectors may interleave
        assert [
            e["registration"]["token_msgs"] for e in events if e["selector"] == selector(1 + first)
        ] == [f"tok{n}AAAA" for n in range(first, 4, 2)]


def test_a_handle_closed_at_once_never_delivers(receiver: Receiver, open_storage: Any) -> None:
    # gunicorn's master opens the backends to check the configuration, and closes them.
    writer = open_storage(deliver=False)
    writer.upsert(report(selector(1), 1), now=T0)
    brief = open_storage(poll_interval=0.5)
    brief.close()
    time.sleep(0.2)
    assert receiver.deliveries == []
    assert len(outbox(writer)[0]) == 1


def test_one_handle_delivers_and_another_takes_over_when_it_closes(
    receiver: Receiver, open_storage: Any
) -> None:
    # Two handles on one outbox stand for two gunicorn workers: the lock lets one send.
    first, second = open_storage(), open_storage()
    wait_until(lambda: first.deliverer.holds_lock.is_set() or second.deliverer.holds_lock.is_set())
    time.sleep(0.1)
    holders = [s for s in (first, second) if s.deliverer.holds_lock.is_set()]
    assert len(holders) == 1
    holder = holders[0]
    other = second if holder is first else first
    for n in range(6):  # written through both: the holder sends them all
        (first if n % 2 else second).upsert(report(selector(1), n), now=T0)
    receiver.wait_for(lambda r: len(r.accepted()) == 6)
    wait_until(lambda: holder.deliverer.delivered == 6)
    assert other.deliverer.delivered == 0 and outbox(holder) == ([], [])
    holder.close()
    wait_until(lambda: other.deliverer.holds_lock.is_set(), timeout=5)
    other.upsert(report(selector(1), 6), now=T0)
    receiver.wait_for(lambda r: len(r.accepted()) == 7)
    assert [e["registration"]["token_msgs"] for e in receiver.unique_events()] == [
        f"tok{n}AAAA" for n in range(7)
    ]
    assert len(receiver.accepted()) == 7, "an event was delivered twice without a failure"
