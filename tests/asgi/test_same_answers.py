"""The WSGI and the ASGI adapter give the same answers, byte for byte: status, headers in
order and body, for the same raw requests in the same order (each over its own SQLite
file), and store the same."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from pushreport import Config, HealthConfig, LookupConfig, MetricsConfig, ReporterConfig
from pushreport_asgi import create_app as create_asgi_app
from pushreport_wsgi import create_app as create_wsgi_app

from ..wsgi.conftest import SELECTOR, SPEC_GET, TOKEN_MSGS, make_config
from .conftest import Raw, Sent, call_asgi, call_wsgi

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
BEARER = "s3cret-bearer-token-0123456789"
FORM = (
    f"selector={SELECTOR}&token_msgs=abcdefgh%2Fijkl&appid_msgs=com.example.app"
    "&token_calls=Zm9v%2F%2Bbarbaz%3D&appid_calls=com.example.app.pushkit"
)
FORM_TYPE = ("Content-Type", "application/x-www-form-urlencoded")


def configured(tmp_path: Path) -> Config:
    config = make_config(tmp_path, spool=False)
    return attrs.evolve(
        config,
        reporter=ReporterConfig(max_body=4096),
        health=HealthConfig(readyz="/readyz"),
        lookup=LookupConfig(enabled=True, token=BEARER),
        metrics=MetricsConfig(enabled=False),
    )


def post(body: bytes, *headers: tuple[str, str], **kw: Any) -> Raw:
    length = ("Content-Length", str(kw.pop("length", len(body))))
    return Raw("POST", "/token/", (FORM_TYPE, length, *headers), body, **kw)


CASES: list[tuple[str, Raw]] = [
    ("spec GET", Raw("GET", SPEC_GET)),
    ("form POST, %2F in tokens", post(FORM.encode())),
    ("absolute-form target", Raw("GET", "http://example.com" + SPEC_GET)),
    ("no selector", Raw("GET", "/token/?token_msgs=abc")),
    ("bad selector", Raw("GET", "/token/?selector=nope&token_msgs=abc")),
    ("wrong method", Raw("PATCH", "/token/?selector=" + SELECTOR)),
    ("body over max_body (declared)", post(b"x" * 10, length=5000)),
    ("body over max_body (sent)", post(FORM.encode() + b"&x=" + b"y" * 5000)),
    ("body cut short", post(FORM.encode()[:40], length=len(FORM), complete=False)),
    ("not a form", post(b"\xff\xfe garbage")),
    ("lookup, no token", Raw("GET", "/pushreport/lookup/registrations?selector=" + SELECTOR)),
    (
        "lookup",
        Raw(
            "GET",
            "/pushreport/lookup/registrations?selector=" + SELECTOR,
            (("Authorization", "Bearer " + BEARER),),
        ),
    ),
    (
        "lookup, bad request",
        Raw(
            "GET",
            "/pushreport/lookup/targets?username=a&purpose=x",
            (("Authorization", "Bearer " + BEARER),),
        ),
    ),
    (
        "lookup, HEAD",
        Raw("HEAD", "/pushreport/lookup/nowhere", (("Authorization", "Bearer " + BEARER),)),
    ),
    ("removal", Raw("GET", f"/removal/?selector={SELECTOR}")),
    ("removal again: gone", Raw("GET", f"/removal/?selector={SELECTOR}")),
    ("healthz", Raw("GET", "/healthz")),
    ("healthz, HEAD", Raw("HEAD", "/healthz")),
    ("healthz, POST", Raw("POST", "/healthz")),
    ("readyz", Raw("GET", "/readyz")),
    ("not ours", Raw("GET", "/portal/page?x=1")),
]


def stored(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT selector, token_msgs, token_calls FROM registrations ORDER BY selector"
        ).fetchall()


def test_the_same_requests_get_the_same_answers(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "a").mkdir()
    wsgi = create_wsgi_app(configured(tmp_path / "w"))
    asgi = create_asgi_app(configured(tmp_path / "a"))
    # One clock for both: the lookup's answers carry first_seen and last_seen.
    wsgi.receiver.clock = asgi.receiver.clock = lambda: NOW
    answers: dict[str, tuple[Sent, Sent]] = {}
    try:
        for name, raw in CASES:
            answers[name] = (call_wsgi(wsgi, raw), call_asgi(asgi, raw))
            if name == "form POST, %2F in tokens":
                # Before the removals: both stored the tokens with their "/" kept.
                rows = stored(tmp_path / "w" / "db.sqlite3")
                assert rows == [(SELECTOR, "abcdefgh/ijkl", "Zm9v/+barbaz=")], answers[name]
    finally:
        wsgi.close()
        asgi.close()
    for name, (w, a) in answers.items():
        assert w == a, name
    statuses = {name: w.status for name, (w, _) in answers.items()}
    assert statuses == {
        "spec GET": 200,
        "form POST, %2F in tokens": 200,
        "absolute-form target": 200,
        "no selector": 400,
        "bad selector": 400,
        "wrong method": 405,
        "body over max_body (declared)": 413,
        "body over max_body (sent)": 413,
        "body cut short": 400,
        "not a form": 400,
        "lookup, no token": 401,
        "lookup": 200,
        "lookup, bad request": 400,
        "lookup, HEAD": 404,
        "removal": 200,
        "removal again: gone": 200,
        "healthz": 200,
        "healthz, HEAD": 200,
        "healthz, POST": 405,
        "readyz": 200,
        "not ours": 404,
    }
    assert answers["healthz, HEAD"][1].body == b""
    assert stored(tmp_path / "w" / "db.sqlite3") == stored(tmp_path / "a" / "db.sqlite3") == []


@pytest.mark.parametrize("name", ["body cut short", "body over max_body (sent)"])
def test_nothing_is_stored_from_a_refused_body(tmp_path: Path, name: str) -> None:
    raw = dict(CASES)[name]
    asgi = create_asgi_app(configured(tmp_path))
    try:
        assert call_asgi(asgi, raw).status in (400, 413)
        assert call_asgi(asgi, Raw("GET", SPEC_GET)).status == 200
    finally:
        asgi.close()
    # Only the valid report's tokens: the refused body's "abcdefgh/ijkl" is not there.
    rows = stored(tmp_path / "db.sqlite3")
    assert [r[1] for r in rows] == [TOKEN_MSGS]
