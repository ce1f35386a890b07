"""The support page (``[admin]``) through the ASGI adapter answers as through the WSGI
one: the same statuses, headers (the random cookie and nonce values aside) and pages."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import attrs

from pushreport import AdminConfig, Config
from pushreport_asgi import create_app as create_asgi_app
from pushreport_wsgi import create_app as create_wsgi_app

from ..wsgi.conftest import SPEC_GET, make_config
from .conftest import Raw, Sent, call_asgi, call_wsgi

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TOKEN = "support-page-token-0123456789"
BASE = "/pushreport/admin"
FORM = ("Content-Type", "application/x-www-form-urlencoded")
BEARER = ("Authorization", "Bearer " + TOKEN)


def configured(tmp_path: Path) -> Config:
    return attrs.evolve(
        make_config(tmp_path, spool=False), admin=AdminConfig(enabled=True, token=TOKEN)
    )


def _random_free(sent: Sent) -> tuple[int, list[tuple[str, str]], bytes]:
    """*sent* with the values that are random per answer (tokens, nonces) masked."""
    mask = re.compile(r"[A-Za-z0-9_\-]{20,}")
    headers = [(k, mask.sub("*", v)) for k, v in sent.headers]
    return sent.status, headers, mask.sub("*", sent.body.decode()).encode()


CASES = [
    Raw("GET", BASE + "/login"),
    Raw("GET", BASE + "/"),
    Raw("GET", BASE + "/?q=johndow", (BEARER,)),
    Raw("GET", BASE + "/nowhere", (BEARER,)),
    Raw("POST", BASE + "/login", (FORM, ("Content-Length", "10")), b"token=nope"),
    Raw("POST", BASE + "/login", (FORM, ("Content-Length", "70000")), b"x" * 70000),
]


def test_the_support_page_answers_alike(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "a").mkdir()
    wsgi = create_wsgi_app(configured(tmp_path / "w"))
    asgi = create_asgi_app(configured(tmp_path / "a"))
    wsgi.receiver.clock = asgi.receiver.clock = lambda: NOW  # the page shows times
    try:
        assert call_wsgi(wsgi, Raw("GET", SPEC_GET)).status == 200
        assert call_asgi(asgi, Raw("GET", SPEC_GET)).status == 200
        got = [(call_wsgi(wsgi, raw), call_asgi(asgi, raw)) for raw in CASES]
    finally:
        wsgi.close()
        asgi.close()
    for raw, (w, a) in zip(CASES, got):
        assert _random_free(w) == _random_free(a), raw
    assert [w.status for w, _ in got] == [200, 303, 200, 404, 403, 413]
    assert b"johndow" in got[2][1].body
