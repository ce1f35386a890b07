"""Which reports the ASGI adapter receives inline on the event loop (``Receiver.quick``):
only those whose storage work is an append to a report spool that does not fsync. A
``full`` append, a removal (it applies the spool first), or anything that may wait on
the network or a shared state goes to the service threads, and the answers and what is
stored are the same either way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from pushreport import AuthConfig, Config, LimitsConfig, Receiver
from pushreport_asgi import create_app

from ..wsgi.conftest import SELECTOR, SPEC_GET, make_config
from .conftest import Raw, call_asgi


def _synchronous(config: Config, value: str) -> Config:
    return config.with_storage_option("sqlite", "synchronous", value)


def test_a_report_is_quick_only_once_the_spool_is_reached(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    receiver = app.receiver
    try:
        # The first report opens the backend: it is not quick.
        assert not receiver.quick("GET", "/token/")
        assert call_asgi(app, Raw("GET", SPEC_GET)).status == 200
        assert app._pool is not None  # it went to a service thread
        assert receiver.quick("GET", "/token/")
        # A removal applies the spool before it removes: never inline.
        assert not receiver.quick("GET", "/removal/")
        assert not receiver.quick("DELETE", "/token/")
        assert not receiver.quick("GET", "/elsewhere")
    finally:
        app.close()


def test_an_inline_report_is_in_the_spool_when_answered(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    try:
        assert call_asgi(app, Raw("GET", SPEC_GET)).status == 200
        app._stop_threads()  # from here on, a hop to a thread would start them again
        second = SPEC_GET.replace("token_msgs=QVBB", "token_msgs=ZZZZ")
        assert call_asgi(app, Raw("GET", second)).status == 200
        assert app._pool is None  # received on the loop
        spooled = b"".join(p.read_bytes() for p in (tmp_path / "db.sqlite3.spool").rglob("*"))
        assert b"ZZZZ" in spooled
    finally:
        app.close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        rows = conn.execute("SELECT token_msgs FROM registrations WHERE selector = ?", (SELECTOR,))
        assert [r[0][:4] for r in rows] == ["ZZZZ"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: _synchronous(c, "full"), id="synchronous-full"),
        pytest.param(
            lambda c: attrs.evolve(
                c,
                auth=AuthConfig(methods=("secret",), secret="12345678", secret_field="pushSecret"),
            ),
            id="authentication",
        ),
        pytest.param(
            lambda c: attrs.evolve(c, reporter=attrs.evolve(c.reporter, token_owner="newest")),
            id="token-owner-newest",
        ),
        pytest.param(
            lambda c: attrs.evolve(c, limits=LimitsConfig(per_client="600/minute")),
            id="rate-limit-state",
        ),
    ],
)
def test_not_quick(tmp_path: Path, change: object) -> None:
    config = change(make_config(tmp_path))  # type: ignore[operator]
    receiver = Receiver.from_config(config)
    app = create_app(receiver=receiver)
    try:
        # (The secret rides along; without authentication it is an extra field.)
        assert call_asgi(app, Raw("GET", SPEC_GET + "&pushSecret=12345678")).status == 200
        assert not receiver.quick("GET", "/token/")
    finally:
        app.close()
