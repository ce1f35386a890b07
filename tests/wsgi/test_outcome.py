"""The receiver answers with an :class:`~pushreport.Outcome` value, and the WSGI adapter
builds its response and access-log line from that value alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from werkzeug.test import Client

from pushreport import Outcome, Receiver
from pushreport_core import (
    AuthenticationRequired,
    InvalidReport,
    MethodNotAllowed,
    Request,
    StorageUnavailable,
    TooManyRequests,
)
from pushreport_wsgi import ReportMiddleware, create_app, hookimpl, make_plugin_manager

from .conftest import SELECTOR, SPEC_GET, make_config

REMOVE = f"/removal/?selector={SELECTOR}"


def get(target: str) -> Request:
    return Request(method="GET", target=target)


class Refusing:
    @hookimpl
    def pushreport_authenticate(self, report: Any, request: Any) -> bool:
        return False


class Broken:
    @hookimpl
    def pushreport_transform_report(self, report: Any) -> Any:
        raise RuntimeError("bug in a plugin")


def receiver(tmp_path: Path, *plugins: object) -> Receiver:
    pm = make_plugin_manager(plugins=list(plugins))
    return Receiver.from_config(make_config(tmp_path), plugin_manager=pm)


def test_a_stored_report(tmp_path: Path) -> None:
    r = receiver(tmp_path)
    outcome = r.receive(get(SPEC_GET))
    assert outcome == Outcome(happened="stored", shape="default-query", selector=SELECTOR)
    assert (outcome.status, outcome.reason) == (200, "")
    r.close()


def test_a_refusal_after_parsing_keeps_the_shape_and_selector(tmp_path: Path) -> None:
    r = receiver(tmp_path, Refusing())
    outcome = r.receive(get(SPEC_GET))
    assert (outcome.happened, outcome.shape, outcome.selector) == (
        "refused",
        "default-query",
        SELECTOR,
    )
    assert (outcome.status, outcome.reason) == (403, "authentication refused")
    assert r.storage.get(SELECTOR) is None
    r.close()


def test_a_refusal_before_parsing_has_no_selector(tmp_path: Path) -> None:
    r = receiver(tmp_path)
    outcome = r.receive(get(SPEC_GET.replace("selector=", "selector=bad")))
    assert (outcome.happened, outcome.shape, outcome.selector) == ("refused", None, None)
    assert isinstance(outcome.error, InvalidReport) and outcome.status == 400
    r.close()


def test_a_bug_is_an_outcome_too_never_raised(tmp_path: Path, caplog: Any) -> None:
    r = receiver(tmp_path, Broken())
    with caplog.at_level(logging.ERROR, logger="pushreport"):
        outcome = r.receive(get(SPEC_GET))
    assert isinstance(outcome.error, RuntimeError)
    assert (outcome.status, outcome.reason, outcome.selector) == (500, "internal error", SELECTOR)
    assert "internal error while handling a report" in caplog.text
    with pytest.raises(RuntimeError):  # the Python API raises, as it always did
        r.handle(get(SPEC_GET))
    r.close()


def test_removals_say_what_happened(tmp_path: Path) -> None:
    r = receiver(tmp_path)
    assert r.receive(get(REMOVE)).happened == "gone"
    r.receive(get(SPEC_GET))
    outcome = r.receive(get(REMOVE))
    assert (outcome.happened, outcome.shape, outcome.selector) == ("removed", "removal", SELECTOR)
    assert outcome.removal is not None and outcome.removal.removed is not None
    r.receive(get(SPEC_GET))
    stale = r.receive(get(REMOVE + "&token_msgs=" + "A" * 40))
    assert (stale.happened, stale.status) == ("kept", 200)
    r.close()


def test_an_outcome_is_a_value(tmp_path: Path) -> None:
    outcome = Outcome(happened="stored", selector=SELECTOR)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        outcome.selector = "x"  # type: ignore[misc]
    assert outcome == Outcome(happened="stored", selector=SELECTOR)


# --- the adapter maps the value; it decides nothing -------------------------------------


class Canned:
    """A receiver stand-in for the adapter: whatever the request, *outcome*."""

    def __init__(self, real: Receiver, outcome: Outcome) -> None:
        self.real, self.outcome, self.requests = real, outcome, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def receive(self, request: Request) -> Outcome:
        self.requests.append(request)
        return self.outcome


@pytest.mark.parametrize(
    "error, status, headers",
    [
        (TooManyRequests("slow down", retry_after=7), 429, {"Retry-After": "7"}),
        (StorageUnavailable("disk full", retry_after=3), 503, {"Retry-After": "3"}),
        (MethodNotAllowed("no", allowed=("GET", "POST")), 405, {"Allow": "GET, POST"}),
        (AuthenticationRequired("who?", challenges=('Digest a="1"',)), 401, {}),
        (InvalidReport("first line\nsecond line"), 400, {}),
    ],
)
def test_the_response_is_the_outcome_mapped(
    tmp_path: Path, error: Exception, status: int, headers: dict[str, str]
) -> None:
    real = receiver(tmp_path)
    canned = Canned(real, Outcome(happened="refused", shape="x", selector=SELECTOR, error=error))
    resp = Client(ReportMiddleware(lambda e, s: [], canned)).get(SPEC_GET)  # type: ignore[arg-type]
    assert resp.status_code == status
    assert resp.data == str(error).split(": ", 1)[-1].splitlines()[0].encode() + b"\n"
    for name, value in headers.items():
        assert resp.headers[name] == value
    if isinstance(error, AuthenticationRequired):
        assert resp.headers.getlist("WWW-Authenticate") == list(error.challenges)
    assert [r.target for r in canned.requests] == [SPEC_GET]
    real.close()


def test_the_environ_and_access_log_carry_the_outcome(tmp_path: Path, caplog: Any) -> None:
    seen: dict[str, Any] = {}

    def outer(environ: Any, start_response: Any) -> Any:
        result = app(environ, start_response)
        seen.update({k: v for k, v in environ.items() if k.startswith("pushreport.")})
        return result

    app = create_app(make_config(tmp_path))
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        assert Client(outer).get(SPEC_GET).status_code == 200
    assert seen["pushreport.outcome"].happened == "stored"
    assert seen["pushreport.selector"] == SELECTOR
    [record] = [r for r in caplog.records if r.name == "pushreport.access"]
    assert (record.shape, record.status) == ("default-query", 200)  # type: ignore[attr-defined]
    assert record.selector == SELECTOR[:12] + "…"  # type: ignore[attr-defined]
    app.close()
