"""A real webhook receiver on loopback, in a thread, that can be told to fail, hang or
succeed; and the verification recipes of docs/webhook.md, taken from the document:
Standard Webhooks' (the ``standardwebhooks`` library) and pushreport's own."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest

#: A Standard Webhooks secret (``signature = "standard"``, the default).
SECRET = "whsec_" + base64.b64encode(b"pushreport webhook test key 4f1a").decode()
#: A secret of the ``signature = "pushreport"`` scheme: any string.
PUSHREPORT_SECRET = "pushreport-test-4f1a9c"
DOC = Path(__file__).resolve().parents[3] / "docs" / "webhook.md"


def recipe() -> dict[str, Any]:
    """The namespace of the Python blocks under "## Verifying a request" in
    docs/webhook.md (``verify_webhook``: Standard Webhooks; ``verify_pushreport_webhook``:
    pushreport's): the recipes are tested as written."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Verifying a request", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "docs/webhook.md has not both Python recipes"
    namespace: dict[str, Any] = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


@attrs.define
class Delivery:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int | None  # what it answered; None: it hung up without answering
    verified: bool
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """``mode``: "ok" (200, after *delay* seconds), "fail" (500), "hang" (no answer for
    *hang* seconds, then 200: a late success after the sender gave up), "drop" (close
    without answering) or "redirect" (302 to the same URL).

    Every request is checked with the recipe of *signature*'s scheme (``verified``).
    """

    def __init__(self, secret: str | None = None, *, signature: str = "standard") -> None:
        if secret is None:
            secret = SECRET if signature == "standard" else PUSHREPORT_SECRET
        self.signature = signature
        self.secret = secret
        self.mode = "ok"
        self.hang = 2.0
        self.delay = 0.0
        self.lock = threading.RLock()
        self.deliveries: list[Delivery] = []
        self.arrived = threading.Condition(self.lock)
        recipes = recipe()
        if signature == "standard":
            self.verify: Callable[..., Any] = recipes["verify_webhook"]
            self.key: str | bytes = secret
        else:
            self.verify = recipes["verify_pushreport_webhook"]
            self.key = secret.encode()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                try:
                    receiver.verify(receiver.key, headers, body)
                    verified = True
                except ValueError:
                    verified = False
                mode = receiver.mode
                status: int | None = {"ok": 200, "fail": 500, "hang": 200, "redirect": 302}.get(
                    mode
                )
                # Recorded on arrival, before the answer: the order in which a receiver
                # would apply the events (answering 200 and then recording could let a
                # later event be recorded first).
                with receiver.arrived:
                    receiver.deliveries.append(
                        Delivery(headers, body, status, verified, time.monotonic())
                    )
                    receiver.arrived.notify_all()
                if mode == "hang":
                    time.sleep(receiver.hang)
                elif mode == "ok" and receiver.delay:
                    time.sleep(receiver.delay)
                if mode == "drop":
                    self.close_connection = True
                if status is not None:
                    try:
                        self.send_response(status)
                        self.send_header("Content-Length", "2")
                        if status == 302:
                            self.send_header("Location", receiver.url)
                        self.end_headers()
                        self.wfile.write(b"{}")
                    except OSError:  # the sender gave up (hang): applied all the same
                        pass
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pushreport"

    def accepted(self) -> list[Delivery]:
        """The requests it answered 2xx, in the order it got them."""
        with self.lock:
            return [d for d in self.deliveries if d.status == 200]

    def unique_events(self) -> list[dict[str, Any]]:
        """The accepted events deduped by id, first arrival kept (the recipe's rule)."""
        seen: set[int] = set()
        events = []
        for delivery in self.accepted():
            event = delivery.event
            if event["id"] not in seen:
                seen.add(event["id"])
                events.append(event)
        return events

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: condition not met in {timeout} s; got "
                        f"{[(d.status, d.body[:80]) for d in self.deliveries]}"
                    )
                self.arrived.wait(min(left, 0.1))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver of Standard Webhooks requests (``signature = "standard"``)."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def pushreport_receiver() -> Iterator[Receiver]:
    """A receiver of ``signature = "pushreport"`` requests."""
    r = Receiver(signature="pushreport")
    try:
        yield r
    finally:
        r.close()
