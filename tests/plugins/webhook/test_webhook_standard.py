"""Standard Webhooks signatures (``[storage.webhook] signature = "standard"``, the
default): real deliveries to a loopback receiver, verified with the ``standardwebhooks``
library as a receiver would; retries keep their ``webhook-id``; a tampered request is
refused by the library; ``signature = "pushreport"`` still passes its documented recipe;
and a secret of the wrong form refuses to start, in one line that never quotes it."""

from __future__ import annotations

import base64
import logging
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from pushreport.storage import StorageContext
from pushreport_core import ConfigurationError, Report, Secret
from pushreport_webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliverySettings,
    StandardSigner,
    WebhookStorage,
    make_signer,
    secret_problem,
    standard_signature,
)
from pushreport_webhook._outbox import dead_events, pending_events
from tests.e2e.conftest import free_port, run_pushreport

from .conftest import DOC, PUSHREPORT_SECRET, SECRET, Receiver, recipe

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
FAST = dict(poll_interval=0.02, backoff_base=0.01, backoff_max=0.04, timeout=1.0)
SELECTOR = "ab" * 20 + ":7c3a0d14"
URL = "http://127.0.0.1:9/hook"
CTX = StorageContext(base_dir=Path("/nonexistent-pushreport-dir"), create=False)
UPGRADE = (
    "storage.webhook.secret: is not a Standard Webhooks secret (whsec_...), and signature = "
    '"standard" is the default: set signature = "pushreport" to keep the '
    "X-Pushreport-Signature headers, or use a whsec_ secret (docs/webhook.md, upgrading)"
)
FORM = (
    'must be "whsec_" followed by the base64 of at least 24 random bytes for '
    'signature = "standard"'
)


def whsec(n: int, *, pad: bool = True) -> str:
    encoded = base64.b64encode(bytes(range(1, n + 1))).decode()
    return "whsec_" + (encoded if pad else encoded.rstrip("="))


def report(n: int) -> Report:
    return Report(selector=SELECTOR, username="alice", token_msgs=f"tok{n}AAAA", appid_msgs="a.b")


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def open_storage(tmp_path: Path) -> Iterator[Any]:
    opened: list[WebhookStorage] = []

    def open_(url: str, **options: Any) -> WebhookStorage:
        storage = WebhookStorage(tmp_path / "outbox.sqlite3", url=url, **{**FAST, **options})
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


def outbox(storage: WebhookStorage) -> tuple[list[Any], list[Any]]:
    return storage._read(lambda c: (pending_events(c), dead_events(c)))


# -- real deliveries, verified by the library ---------------------------------------------


def test_deliveries_carry_the_standard_headers_and_the_library_verifies_them(
    receiver: Receiver, open_storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pushreport")
    storage = open_storage(receiver.url, secret=SECRET)  # signature: the default
    assert storage.signature == "standard"
    stored = [storage.upsert(report(n), now=T0) for n in range(3)]
    receiver.wait_for(lambda r: len(r.accepted()) == 3)
    library = Webhook(SECRET)
    for delivery, registration in zip(receiver.accepted(), stored):
        assert delivery.verified  # the documented recipe: the library, on arrival
        headers = lower(delivery.headers)
        event = library.verify(delivery.body, delivery.headers)
        assert event["registration"] == registration.to_json()
        assert headers["webhook-id"] == f"msg_{event['id']}"
        assert headers[EVENT_ID_HEADER.lower()] == str(event["id"])
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
        # Only the standard's signature: not pushreport's beside it.
        assert SIGNATURE_HEADER.lower() not in headers
        assert TIMESTAMP_HEADER.lower() not in headers
    ids = [lower(d.headers)["webhook-id"] for d in receiver.accepted()]
    assert len(set(ids)) == 3
    assert "delivers to http://127.0.0.1:" in caplog.text  # the log was captured
    assert SECRET.removeprefix("whsec_") not in caplog.text


def test_a_retried_delivery_keeps_its_webhook_id_and_every_attempt_verifies(
    receiver: Receiver, open_storage: Any
) -> None:
    receiver.mode = "fail"
    storage = open_storage(receiver.url, secret=SECRET)
    storage.upsert(report(1), now=T0)
    receiver.wait_for(lambda r: len(r.deliveries) >= 3)
    receiver.mode = "ok"
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    attempts = list(receiver.deliveries)
    assert len(attempts) >= 4 and [d.status for d in attempts][:3] == [500, 500, 500]
    assert {lower(d.headers)["webhook-id"] for d in attempts} == {f"msg_{attempts[0].event['id']}"}
    assert all(d.verified for d in attempts), "each attempt is signed anew, and verifies"
    assert {d.body for d in attempts} == {attempts[0].body}


def test_the_library_refuses_a_tampered_body_another_secret_or_a_replayed_id(
    receiver: Receiver, open_storage: Any
) -> None:
    storage = open_storage(receiver.url, secret=SECRET)
    storage.upsert(report(1), now=T0)
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    [d] = receiver.accepted()
    library = Webhook(SECRET)
    assert library.verify(d.body, d.headers) == d.event
    tampered = d.body.replace(b"tok1AAAA", b"tok2AAAA")
    assert tampered != d.body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        library.verify(tampered, d.headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(whsec(32)).verify(d.body, d.headers)
    # The id is signed: the same body and signature under another id is refused.
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        library.verify(d.body, {**lower(d.headers), "webhook-id": "msg_999999"})
    # A signature made 10 minutes ago (a captured request) is too old.
    old = int(time.time()) - 600
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    replayed = {
        "webhook-id": lower(d.headers)["webhook-id"],
        "webhook-timestamp": str(old),
        "webhook-signature": standard_signature(key, lower(d.headers)["webhook-id"], old, d.body),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        library.verify(d.body, replayed)
    # The documented recipe turns each refusal into a ValueError.
    verify_webhook = recipe()["verify_webhook"]
    assert verify_webhook(SECRET, d.headers, d.body) == d.event
    with pytest.raises(ValueError, match="^No matching signature found$"):
        verify_webhook(SECRET, d.headers, tampered)


def test_the_documented_example_signature_is_what_the_library_computes() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("```http\n", 1)[1].split("```", 1)[0]
    head, body = example.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    found = re.search(r"signed with the example secret `(whsec_[^`]+)`", text)
    assert found is not None
    secret = found.group(1)
    ts = int(headers["Webhook-Timestamp"])
    when = datetime.fromtimestamp(ts, timezone.utc)
    signed = Webhook(secret).sign(headers["Webhook-Id"], when, body.strip().encode())
    assert headers["Webhook-Signature"] == signed
    ours = StandardSigner(Secret(secret)).headers(body.strip().encode(), timestamp=ts, event_id=42)
    assert ours == {
        "webhook-id": headers["Webhook-Id"],
        "webhook-timestamp": str(ts),
        "webhook-signature": signed,
    }


def test_signature_pushreport_is_verified_by_its_documented_recipe_not_the_standard(
    pushreport_receiver: Receiver, open_storage: Any
) -> None:
    receiver = pushreport_receiver
    storage = open_storage(receiver.url, secret=PUSHREPORT_SECRET, signature="pushreport")
    storage.upsert(report(1), now=T0)
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    [d] = receiver.accepted()
    assert d.verified  # verify_pushreport_webhook, as docs/webhook.md has it
    assert recipe()["verify_pushreport_webhook"](PUSHREPORT_SECRET.encode(), d.headers, d.body)
    assert not any(name.lower().startswith("webhook-") for name in d.headers)
    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        Webhook(whsec(32)).verify(d.body, d.headers)


# -- the secret's form, checked at start ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secret": "s3cret-Of-Old"}, UPGRADE),
        ({"secret": "s3cret-Of-Old", "signature": "standard"}, f"storage.webhook.secret: {FORM}"),
        ({"secret": whsec(23)}, f"storage.webhook.secret: {FORM}"),
        ({"secret": "whsec_not*base64*at-all!!!!!!!!!!!!!"}, f"storage.webhook.secret: {FORM}"),
        ({"secret": "whsec_" + whsec(32)[7:] + "x"}, f"storage.webhook.secret: {FORM}"),
        (
            {"secret": whsec(32), "signature": "svix"},
            'storage.webhook.signature: must be "standard" or "pushreport", not \'svix\'',
        ),
        (
            {"secret_env": "PR_STANDARD_TEST_SECRET"},
            "storage.webhook.secret_env: the value of environment variable "
            "'PR_STANDARD_TEST_SECRET' " + UPGRADE.split(": ", 1)[1],
        ),
    ],
)
def test_a_secret_the_signature_cannot_use_refuses_to_start_without_quoting_it(
    options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PR_STANDARD_TEST_SECRET", "env-s3cret-Of-Old")
    with pytest.raises(ConfigurationError) as caught:
        WebhookStorage.from_options({"url": URL, "deliver": False, **options}, CTX)
    assert str(caught.value) == message
    for value in (options.get("secret"), "env-s3cret-Of-Old"):
        if value:
            assert value.removeprefix("whsec_") not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "signature"),
    [
        ({"secret": whsec(24)}, "standard"),
        ({"secret": whsec(32, pad=False)}, "standard"),  # unpadded, as the libraries take it
        ({"secret": whsec(64), "signature": "STANDARD"}, "standard"),
        ({"secret": "s3cret-Of-Old", "signature": "pushreport"}, "pushreport"),
        ({"secret": whsec(32), "signature": "pushreport"}, "pushreport"),
    ],
)
def test_secrets_of_the_right_form_are_taken(
    tmp_path: Path, options: dict[str, Any], signature: str
) -> None:
    context = StorageContext(base_dir=tmp_path)
    storage = WebhookStorage.from_options({"url": URL, "deliver": False, **options}, context)
    try:
        assert storage.signature == signature
    finally:
        storage.close()


@given(
    st.one_of(
        st.text(max_size=80),
        st.text(max_size=80).map(lambda t: "whsec_" + t),
        st.binary(max_size=70).map(lambda b: "whsec_" + base64.b64encode(b).decode()),
    )
)
def test_the_secret_check_and_the_signer_agree_on_any_string(secret: str) -> None:
    """secret_problem says None exactly when a signer can be made, never raises, and the
    reason never quotes the secret."""
    problem = secret_problem("standard", secret, scheme_given=False)
    try:
        make_signer("standard", Secret(secret))
        made = True
    except ValueError as e:
        made = False
        assert secret not in str(e) or len(secret) < 7
    assert made == (problem is None)
    if problem is not None and len(secret) > 6:
        assert secret not in problem


def test_an_unpadded_secret_signs_as_the_library_verifies() -> None:
    secret = whsec(32, pad=False)
    assert not secret.endswith("=")
    headers = make_signer("standard", Secret(secret)).headers(
        b"{}", timestamp=int(time.time()), event_id=7
    )
    assert Webhook(secret).verify(b"{}", headers) == {}


def test_the_constructor_checks_the_secret_too_and_no_repr_shows_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        WebhookStorage(tmp_path / "o.sqlite3", url=URL, secret="s3cret-Of-Old")
    assert "s3cret-Of-Old" not in str(caught.value)
    assert str(caught.value).startswith('secret must be "whsec_"')
    signer = make_signer("standard", Secret(SECRET))
    settings = DeliverySettings(
        url=URL,
        signer=signer,
        timeout=1,
        max_attempts=1,
        backoff_base=1,
        backoff_max=1,
        poll_interval=1,
        concurrency=1,
    )
    key = SECRET.removeprefix("whsec_")
    for shown in (repr(signer), repr(settings), repr(make_signer("pushreport", Secret(key)))):
        assert key not in shown


def test_serve_with_an_old_secret_fails_in_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "pushreport.toml"
    config.write_text(
        '[storage]\nbackends = ["webhook"]\n[storage.webhook]\n'
        f'url = "{URL}"\nsecret = "s3cret-Of-Old"\n'
    )
    port = str(free_port())
    proc = run_pushreport(tmp_path, "serve", "--config", str(config), "--port", port)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert UPGRADE in line
    # docs/webhook.md's upgrade note quotes the line as it is.
    assert f"\n{line}\n" in DOC.read_text(encoding="utf-8")
    assert "s3cret-Of-Old" not in proc.stderr + proc.stdout


def test_the_documented_command_makes_a_secret_the_backend_and_the_library_take() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"```sh\npython3 -c '([^']+)'\n```", text)
    assert found is not None, "docs/webhook.md shows no command that makes a secret"
    made = subprocess.run(
        [sys.executable, "-c", found.group(1)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert made.startswith("whsec_")
    signer = make_signer("standard", Secret(made))
    headers = signer.headers(b"{}", timestamp=int(time.time()), event_id=1)
    assert Webhook(made).verify(b"{}", headers) == {}
