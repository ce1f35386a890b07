"""Which reports the ASGI adapter receives inline on the event loop (``Receiver.quick``):
only those whose storage work is an append to a report spool. A ``full`` spool's
fdatasync is awaited off the loop, shared by the reports written meanwhile (group
commit). A removal (it applies the spool first), or anything that may wait on the
network or a shared state goes to the service threads, and the answers and what is
stored are the same either way."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

from pushreport import AuthConfig, Config, LimitsConfig, Receiver
from pushreport_asgi import create_app

from ..wsgi.conftest import SELECTOR, SPEC_GET, make_config
from .conftest import Raw, call_asgi

SPEC_QUERY = SPEC_GET.partition("?")[2]


def _scope(query: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/token/",
        "raw_path": b"/token/",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def _at_once(app: Any, queries: list[str]) -> list[int]:
    """Every query's report sent to *app* concurrently, on one loop: their statuses."""
    statuses: dict[int, int] = {}

    async def one(i: int, query: str) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[i] = message["status"]

        await app(_scope(query), receive, send)

    await asyncio.gather(*(one(i, q) for i, q in enumerate(queries)))
    return [statuses[i] for i in range(len(queries))]


def _queries(n: int) -> list[str]:
    """*n* reports of the spec's shape, each its own selector."""
    return [SPEC_QUERY.replace(SELECTOR, f"{i:040X}:{i:08X}") for i in range(n)]


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


def _spool_files(app: Any) -> Any:
    return app.receiver.backends[0].storage._files


def test_full_reports_share_their_fdatasync_and_are_on_disk_when_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(_synchronous(make_config(tmp_path), "full"))
    receiver = app.receiver
    files = _spool_files(app)
    written_at_sync: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        written_at_sync.append(files._syncs.written)
        real(fd)

    try:
        assert call_asgi(app, Raw("GET", SPEC_GET)).status == 200  # opens the backend
        assert receiver.quick("GET", "/token/")  # a full spool too, now that it is reached
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        before = files.syncs
        statuses = asyncio.run(_at_once(app, _queries(200)))
        assert statuses == [200] * 200
        syncs = files.syncs - before
        # One sync covers every report written before it began: far fewer than 200.
        assert 1 <= syncs < 50, syncs
        # And every answered report was covered by a sync that returned.
        assert files._syncs.synced == files._syncs.written == written_at_sync[-1]
    finally:
        app.close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM registrations").fetchone()[0] == 201


def test_a_failed_group_sync_answers_503_to_every_report_it_did_not_cover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(_synchronous(make_config(tmp_path), "full"))
    try:
        assert call_asgi(app, Raw("GET", SPEC_GET)).status == 200

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "fdatasync", broken)
        statuses = asyncio.run(_at_once(app, _queries(20)))
        assert statuses == [503] * 20
        monkeypatch.undo()
        # The poisoned file is dropped: the next report starts a new one, and is stored.
        assert call_asgi(app, Raw("GET", SPEC_GET.replace("QVBB", "ZZZZ"))).status == 200
    finally:
        app.close()


def test_a_slow_sync_does_not_hold_up_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a ``full`` report waits for a sync that takes 0.5 s, the loop answers
    ``/healthz`` at once, and the report is answered only after the sync returned."""
    import time

    app = create_app(_synchronous(make_config(tmp_path), "full"))
    real = os.fdatasync
    synced_at: list[float] = []

    def slow(fd: int) -> None:
        time.sleep(0.5)
        real(fd)
        synced_at.append(time.monotonic())

    async def scenario() -> tuple[float, float, list[int]]:
        report = asyncio.ensure_future(_at_once(app, _queries(1)))
        await asyncio.sleep(0.05)  # the report is written and waits for its sync
        health = _scope("")
        health["path"] = "/healthz"
        health["raw_path"] = b"/healthz"
        sent: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])

        await app(health, receive, send)
        health_at = time.monotonic()
        statuses = await report
        return health_at, time.monotonic(), [*sent, *statuses]

    try:
        assert call_asgi(app, Raw("GET", SPEC_GET)).status == 200  # opens the backend
        monkeypatch.setattr(os, "fdatasync", slow)
        health_at, report_at, statuses = asyncio.run(scenario())
        assert statuses == [200, 200]
        assert synced_at and health_at < synced_at[0] <= report_at
    finally:
        monkeypatch.undo()
        app.close()
