"""The outbox: every committed change has exactly one event, written by the same
transaction; and the options of ``[storage.webhook]``."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport.storage import StorageContext
from pushreport_core import (
    ConfigurationError,
    Registration,
    Report,
    Secret,
    StorageUnavailable,
    backoff,
    format_time,
    merge,
)
from pushreport_webhook import REMOVED, UPDATED, WebhookStorage, backoff_delay, event_body
from pushreport_webhook._outbox import dead_events, delivered, failed, pending_events, replay_dead

from .conftest import SECRET

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
OTHER = "fedcba9876543210fedcba9876543210fedcba98:c0f"
PASSWORD = "pw-Never-Stored-31337"
FULL = Report(
    selector=SELECTOR,
    username="johndow",
    password=Secret(PASSWORD),
    token_calls="Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    appid_calls="com.cloudsoftphone.app.pushkit",
    token_msgs="QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",
    appid_msgs="com.cloudsoftphone.app",
    extra={"installid": "i-1"},
    user_agent="CloudSoftphone/1.5.6",
)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[WebhookStorage]:
    s = WebhookStorage(tmp_path / "outbox.sqlite3", deliver=False, busy_timeout=0.2)
    yield s
    s.close()


def pending(storage: WebhookStorage) -> list[Any]:
    return storage._read(pending_events)


# -- one event per change, in the same transaction ---------------------------------------


def test_upsert_commits_one_event_with_the_registration_as_stored(storage: WebhookStorage) -> None:
    first = storage.upsert(FULL, now=T0)
    late = storage.upsert(
        attrs.evolve(FULL, token_msgs=None, password=None), now=T0 + timedelta(seconds=5)
    )
    events = pending(storage)
    assert [(e.event, e.selector) for e in events] == [(UPDATED, SELECTOR)] * 2
    assert events[0].id < events[1].id
    assert [e.registration for e in events] == [first.to_json(), late.to_json()]
    assert events[1].registration["token_msgs"] == FULL.token_msgs  # the merge rule
    assert [e.occurred_at for e in events] == [
        format_time(T0),
        format_time(T0 + timedelta(seconds=5)),
    ]
    assert (events[0].attempts, events[0].next_attempt_at, events[0].last_error) == (0, 0.0, None)


def test_the_body_is_the_documented_json_and_never_holds_the_password(
    storage: WebhookStorage,
) -> None:
    registration = storage.upsert(FULL, now=T0)
    [event] = pending(storage)
    body = event_body(event)
    assert json.loads(body) == {
        "event": "registration.updated",
        "id": event.id,
        "selector": SELECTOR,
        "registration": registration.to_json(),
        "occurred_at": "2024-05-01T12:00:00.000000Z",
    }
    assert body.startswith(b'{"event":"registration.updated","id":')
    assert PASSWORD.encode() not in body
    for f in storage.path.parent.glob("outbox.sqlite3*"):
        assert PASSWORD.encode() not in f.read_bytes()


def test_remove_adds_an_event_with_the_registration_as_it_was(storage: WebhookStorage) -> None:
    stored = storage.upsert(FULL, now=T0)
    assert storage.remove(OTHER) is False
    assert storage.remove(SELECTOR) is True
    assert storage.get(SELECTOR) is None
    events = pending(storage)
    assert [e.event for e in events] == [UPDATED, REMOVED], "a no-op remove made an event"
    assert events[1].registration == stored.to_json()
    assert events[1].selector == SELECTOR


def test_forget_token_adds_an_event_per_registration_changed(storage: WebhookStorage) -> None:
    storage.upsert(FULL, now=T0)
    other = storage.upsert(attrs.evolve(FULL, selector=OTHER, username="bob"), now=T0)
    assert storage.forget_token(FULL.token_msgs, keep=OTHER) == [SELECTOR]  # type: ignore[arg-type]
    assert storage.forget_token("bm90aGVyZQ==") == []
    events = pending(storage)
    assert [(e.event, e.selector) for e in events] == [
        (UPDATED, SELECTOR),
        (UPDATED, OTHER),
        (UPDATED, SELECTOR),
    ], "no-op made an event"
    assert events[2].registration == storage.get(SELECTOR).to_json()  # type: ignore[union-attr]
    assert events[2].registration["token_msgs"] is None
    assert storage.get(OTHER) == other


def test_prune_adds_a_removed_event_per_registration_and_dry_run_none(
    storage: WebhookStorage,
) -> None:
    old = storage.upsert(FULL, now=T0)
    storage.upsert(attrs.evolve(FULL, selector=OTHER), now=T0 + timedelta(days=100))
    cutoff = T0 + timedelta(days=10)
    assert storage.prune(cutoff, dry_run=True) == [old]
    assert len(pending(storage)) == 2, "a dry run made an event"
    assert storage.prune(cutoff) == [old]
    events = pending(storage)
    assert [(e.event, e.selector) for e in events[2:]] == [(REMOVED, SELECTOR)]
    assert events[2].registration == old.to_json()
    assert storage.get(SELECTOR) is None and storage.get(OTHER) is not None


def test_upsert_many_commits_one_event_per_report_in_order(storage: WebhookStorage) -> None:
    other = Report(selector=OTHER, token_msgs="b3RoZXJ0b2tlbg==")
    items = [
        (FULL, T0),
        (other, T0 + timedelta(seconds=1)),
        (Report(selector=SELECTOR), T0 + timedelta(seconds=2)),
    ]
    returned = storage.upsert_many(items)
    events = pending(storage)
    assert [e.registration for e in events] == [r.to_json() for r in returned]
    assert [e.selector for e in events] == [SELECTOR, OTHER, SELECTOR]
    assert [e.occurred_at for e in events] == [format_time(now) for _, now in items]
    assert returned[2].reports == 2


def test_put_many_commits_an_event_per_registration(storage: WebhookStorage) -> None:
    copied = attrs.evolve(merge(None, FULL, now=T0), reports=17)
    storage.put_many([copied])
    storage.put_many([])
    [event] = pending(storage)
    assert (event.event, event.registration) == (UPDATED, copied.to_json())


def test_no_event_without_its_commit_and_no_commit_without_its_event(
    storage: WebhookStorage,
) -> None:
    storage.upsert(FULL, now=T0)
    # The event cannot be written: the registration must not be stored either.
    with sqlite3.connect(storage.path) as other:
        other.execute("ALTER TABLE outbox RENAME TO outbox_away")
    with pytest.raises(StorageUnavailable, match="^sqlite database failed$"):
        storage.upsert(attrs.evolve(FULL, selector=OTHER), now=T0)
    with pytest.raises(StorageUnavailable):
        storage.remove(SELECTOR)
    assert storage.get(OTHER) is None, "the registration was committed without its event"
    assert storage.get(SELECTOR) is not None, "the removal was committed without its event"
    with sqlite3.connect(storage.path) as other:
        other.execute("ALTER TABLE outbox_away RENAME TO outbox")
    assert len(pending(storage)) == 1


def test_a_locked_outbox_answers_unavailable_and_stores_nothing(storage: WebhookStorage) -> None:
    storage.upsert(FULL, now=T0)
    other = sqlite3.connect(storage.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageUnavailable, match="^sqlite database is locked$"):
            storage.upsert(attrs.evolve(FULL, selector=OTHER), now=T0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [e.selector for e in pending(storage)] == [SELECTOR]


def test_ids_are_never_reused_and_replay_keeps_them(storage: WebhookStorage) -> None:
    storage.upsert(FULL, now=T0)
    [first] = pending(storage)
    storage._transaction(lambda conn: delivered(conn, first.id))
    storage.upsert(FULL, now=T0)
    [second] = pending(storage)
    assert second.id > first.id, "a delivered event's id was given again"
    dead = storage._transaction(
        lambda conn: failed(conn, second.id, "HTTP 500", now=100.0, max_attempts=1, delay=0)
    )
    assert dead is True and pending(storage) == []
    [letter] = storage._read(dead_events)
    assert (letter.id, letter.attempts, letter.last_error, letter.failed_at) == (
        second.id,
        1,
        "HTTP 500",
        100.0,
    )
    assert storage._transaction(lambda conn: replay_dead(conn, 999)) == 0
    assert storage._transaction(lambda conn: replay_dead(conn)) == 1
    [back] = pending(storage)
    assert (back.id, back.attempts, back.next_attempt_at) == (second.id, 0, 0.0)
    assert storage._read(dead_events) == []


def test_a_failure_before_max_attempts_schedules_a_retry(storage: WebhookStorage) -> None:
    storage.upsert(FULL, now=T0)
    [event] = pending(storage)
    assert (
        storage._transaction(
            lambda conn: failed(conn, event.id, "timed out", now=50.0, max_attempts=3, delay=2.5)
        )
        is False
    )
    [retry] = pending(storage)
    assert (retry.attempts, retry.next_attempt_at, retry.last_error) == (1, 52.5, "timed out")


def test_the_outbox_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = WebhookStorage(path, deliver=False)
    first.upsert(FULL, now=T0)
    first.close()
    second = WebhookStorage(path, deliver=False)
    try:
        assert [e.selector for e in pending(second)] == [SELECTOR]
        assert second.get(SELECTOR) == merge(None, FULL, now=T0)
    finally:
        second.close()


# -- back-off ------------------------------------------------------------------------------


@given(
    attempts=st.integers(1, 200),
    base=st.floats(0.001, 10),
    maximum=st.floats(0.001, 100),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_full_jitter_below_the_capped_exponential(
    attempts: int, base: float, maximum: float, seed: int
) -> None:
    delay = backoff_delay(attempts, base=base, maximum=maximum, rng=random.Random(seed))
    assert 0 <= delay <= min(maximum, base * 2.0 ** min(attempts - 1, 62))


def test_deliveries_back_off_with_the_cores_formula_at_full_jitter() -> None:
    for n in range(1, 12):
        expected = backoff(n, base=1.0, cap=60.0, rng=random.Random(n), jitter=1.0)
        assert backoff_delay(n, base=1.0, maximum=60.0, rng=random.Random(n)) == expected


def test_backoff_grows_and_spreads() -> None:
    rng = random.Random(7)
    draws = [
        [backoff_delay(n, base=1, maximum=60, rng=rng) for _ in range(200)] for n in (1, 4, 12)
    ]
    assert max(draws[0]) <= 1 and max(draws[1]) <= 8 and max(draws[2]) <= 60
    assert max(draws[2]) > 30 and min(draws[2]) < 10, "no jitter"
    assert sum(draws[1]) / 200 > sum(draws[0]) / 200 * 3


# -- options -------------------------------------------------------------------------------

CTX = StorageContext(base_dir=Path("/srv/pushreport"))
GOOD = {"url": "https://portal.example.com/hooks/pr?k=x", "secret": SECRET, "deliver": False}


def test_options_with_defaults_and_the_outbox_relative_to_the_config(tmp_path: Path) -> None:
    storage = WebhookStorage.from_options(dict(GOOD), StorageContext(base_dir=tmp_path))
    try:
        assert storage.path == tmp_path / "pushreport-outbox.sqlite3"
        assert (
            storage.timeout,
            storage.max_attempts,
            storage.backoff_base,
            storage.backoff_max,
            storage.poll_interval,
            storage.concurrency,
        ) == (10.0, 24, 1.0, 3600.0, 0.5, 4)
        assert storage.name == "webhook" and storage.deliverer is None
        assert SECRET not in repr(storage)
    finally:
        storage.close()


def test_secret_env_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PR_HOOK_SECRET", SECRET)
    options = {
        "url": "http://127.0.0.1:9/x",
        "secret_env": "PR_HOOK_SECRET",
        "deliver": False,
        "outbox": "o.db",
        "timeout": 2,
        "max_attempts": 5,
    }
    storage = WebhookStorage.from_options(options, StorageContext(base_dir=tmp_path))
    try:
        assert storage.secret == Secret(SECRET)
        assert storage.signature == "standard"
        assert (storage.path, storage.timeout, storage.max_attempts) == (tmp_path / "o.db", 2.0, 5)
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"secret": SECRET},
            "storage.webhook.url: is required: the webhook's http:// or https:// URL",
        ),
        (
            {**GOOD, "url": "ftp://user:hunter2@example.com/"},
            "storage.webhook.url: must be an http:// or https:// URL",
        ),
        (
            {**GOOD, "url": "https://example.com:99999/"},
            "storage.webhook.url: must be an http:// or https:// URL",
        ),
        ({**GOOD, "url": 7}, "storage.webhook.url: must be an http:// or https:// URL"),
        # Credentials in the URL: refused, never sent (nor quoted: the password).
        (
            {**GOOD, "url": "https://user:hunter2@portal.example.com/hook"},
            "storage.webhook.url: must not carry a user name or password (user:password@): "
            "pushreport signs its requests with secret instead",
        ),
        (
            {**GOOD, "url": "http://hunter2@127.0.0.1:8080/hook"},
            "storage.webhook.url: must not carry a user name or password (user:password@): "
            "pushreport signs its requests with secret instead",
        ),
        (
            {**GOOD, "url": "http://@127.0.0.1:8080/hook"},
            "storage.webhook.url: must not carry a user name or password (user:password@): "
            "pushreport signs its requests with secret instead",
        ),
        (
            {"url": GOOD["url"]},
            "storage.webhook.secret: the webhook backend (its signing key) needs secret or "
            "secret_env",
        ),
        (
            {**GOOD, "secret_env": "X"},
            "storage.webhook.secret: set secret or secret_env, not both",
        ),
        ({**GOOD, "secret": ""}, "storage.webhook.secret: must be a non-empty string"),
        (
            {"url": GOOD["url"], "secret_env": "PR_SURELY_UNSET_VARIABLE"},
            "storage.webhook.secret_env: environment variable 'PR_SURELY_UNSET_VARIABLE' is not "
            "set",
        ),
        (
            {**GOOD, "timeout": 0},
            "storage.webhook.timeout: must be a number of seconds from 0.1 to 300, not 0",
        ),
        (
            {**GOOD, "max_attempts": 0},
            "storage.webhook.max_attempts: must be a whole number from 1 to 1000, not 0",
        ),
        ({**GOOD, "deliver": "yes"}, "storage.webhook.deliver: must be true or false, not 'yes'"),
        (
            {**GOOD, "retries": 3},
            "storage.webhook.retries: unknown option; the options are url, "
            "signature, secret, secret_env, outbox, timeout, max_attempts, "
            "backoff_base, backoff_max, deliver, poll_interval, "
            "concurrency, synchronous, busy_timeout",
        ),
    ],
)
def test_option_errors_name_the_key_and_never_quote_the_url_or_secret(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        WebhookStorage.from_options(options, CTX)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value) and SECRET not in str(caught.value)


def test_a_url_with_credentials_is_refused_when_built_in_python_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^deliver needs an http:// or https:// url$"):
        WebhookStorage(
            tmp_path / "o.sqlite3", url="https://user:hunter2@portal.example.com/hook", secret="k"
        )


def test_a_url_with_credentials_stops_the_start(tmp_path: Path) -> None:
    from pushreport._config import Config
    from pushreport._service import Receiver

    config = Config.from_dict(
        {
            "storage": {
                "backends": ["webhook"],
                "webhook": {"url": "https://user:hunter2@portal.example.com/h", "secret": "k"},
            }
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigurationError) as caught:
        Receiver.from_config(config)
    assert str(caught.value).startswith("storage.webhook.url: must not carry a user name")
    assert "hunter2" not in str(caught.value)


def test_the_backend_is_picked_by_name_from_a_configuration(tmp_path: Path, caplog: Any) -> None:
    from pushreport._config import load_config
    from pushreport._server import describe
    from pushreport._service import Receiver

    (tmp_path / "pushreport.toml").write_text(
        '[storage]\nbackends = ["webhook"]\n[storage.webhook]\n'
        f'url = "https://portal.example.com/hook?token=hunter2"\nsecret = "{SECRET}"\n'
        'outbox = "box.sqlite3"\n'
    )
    caplog.set_level(logging.DEBUG)
    receiver = Receiver.from_config(load_config(tmp_path / "pushreport.toml"))
    try:
        assert isinstance(receiver.storage, WebhookStorage)
        assert describe(receiver)[-1] == (
            f"storage backend 'webhook' (required) at {tmp_path / 'box.sqlite3'}"
        )
    finally:
        receiver.close()
    assert "hunter2" not in caplog.text and SECRET not in caplog.text


def test_registration_json_round_trips_through_the_event(storage: WebhookStorage) -> None:
    stored = storage.upsert(FULL, now=T0)
    [event] = pending(storage)
    assert Registration.from_json(json.loads(event_body(event))["registration"]) == stored


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:hunter2@portal.example.com/hook?token=hunter2",
            "https://portal.example.com",
        ),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
    ],
)
def test_logs_show_the_scheme_and_host_only(url: str, shown: str) -> None:
    from pushreport.outbound import where

    assert where(url) == shown


#: WebhookStorage's public methods by what they do to the registrations. A method added
#: without a place here fails the next test: a write must prove it adds its events.
WRITES = {
    "upsert",
    "upsert_many",
    "upsert_if",
    "put_many",
    "remove",
    "remove_if",
    "forget_token",
    "prune",
}
READS = {"get", "find", "count", "find_token", "metrics", "ping", "open", "deliverer"}
LIFECYCLE = {"from_options", "close"}


def replay(events: list[Any]) -> dict[str, Any]:
    """The registrations a receiver that applies every event in order holds."""
    held: dict[str, Any] = {}
    for event in events:
        if event.event == UPDATED:
            held[event.selector] = event.registration
        else:
            held.pop(event.selector, None)
    return held


def test_every_write_adds_the_events_that_replay_to_the_stored_registrations(
    storage: WebhookStorage,
) -> None:
    """Every change of a registration has its event: replaying the outbox gives exactly
    what is stored, after every kind of write (and a refused one changes nothing)."""
    public = {n for n in dir(WebhookStorage) if not n.startswith("_")}
    public -= {"name", "capabilities"} | {f.name for f in attrs.fields(WebhookStorage)}
    assert public == WRITES | READS | LIFECYCLE, (
        f"unclassified methods {sorted(public - WRITES - READS - LIFECYCLE)}: a write "
        "must be exercised below"
    )
    done = set()

    def check(method: str) -> None:
        done.add(method)
        assert replay(pending(storage)) == {r.selector: r.to_json() for r in storage}, method

    storage.upsert(FULL, now=T0)
    check("upsert")
    storage.upsert_many([(attrs.evolve(FULL, selector=OTHER, username="bob"), T0)] * 2)
    check("upsert_many")
    assert storage.upsert_if(BARE_OTHER, now=T0, allowed=lambda stored: False) is None
    storage.upsert_if(attrs.evolve(FULL, token_calls=None), now=T0, allowed=lambda s: True)
    check("upsert_if")
    storage.put_many([attrs.evolve(merge(None, FULL, now=T0), selector=THIRD, reports=9)])
    check("put_many")
    assert storage.forget_token(FULL.token_msgs, keep=THIRD) == sorted([OTHER, SELECTOR])  # type: ignore[arg-type]
    check("forget_token")
    assert storage.remove(OTHER) is True and storage.remove(OTHER) is False
    check("remove")
    assert storage.remove_if(THIRD, lambda stored: False) is None
    assert storage.remove_if(THIRD, lambda stored: True) is not None
    check("remove_if")
    storage.upsert(BARE_OTHER, now=T0 + timedelta(days=30))
    assert [r.selector for r in storage.prune(T0 + timedelta(days=1))] == [SELECTOR]
    check("prune")
    assert done == WRITES
    assert [r.selector for r in storage] == [OTHER]


BARE_OTHER = Report(selector=OTHER)
THIRD = "89abcdef0123456789abcdef0123456789abcdef:c0f"


def test_the_plugin_stands_alone() -> None:
    """The webhook backend is no other backend's subclass: its guarantee (a change and
    its event in one transaction) is its own file's."""
    assert [c.__module__.split(".")[0] for c in WebhookStorage.__mro__[:-1]] == [
        "pushreport_webhook"
    ]


def test_the_registered_factory_documents_every_option() -> None:
    from pushreport._plugins import collect_storage_factories, make_plugin_manager
    from pushreport_webhook import OPTIONS, webhook_storage

    factory = collect_storage_factories(make_plugin_manager())["webhook"]
    assert factory is webhook_storage
    docs = factory.options_doc
    assert tuple(docs) == OPTIONS and all(text.strip() for text in docs.values())
