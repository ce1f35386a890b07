"""bench/floor_asgi.py, the floor of bench/load.py, driven as an ASGI app without a
server: it answers, writes what it says it writes and applies it to its SQLite file."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    """bench/<name>.py, imported once under its own name (as bench/load.py does)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


floor_asgi = bench_module("floor_asgi")
loadgen = bench_module("loadgen")


class Lifespan:
    """The lifespan protocol as a server runs it: one long-lived call to the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get, self.outbox.put)
        )

    async def say(self, event: str) -> dict[str, Any]:
        await self.inbox.put({"type": f"lifespan.{event}"})
        return await asyncio.wait_for(self.outbox.get(), timeout=10)


async def get(app: Any, target: str, user_agent: bytes = b"CloudSoftphone/1.5.6") -> list[Any]:
    """GET *target* from *app*; the messages it sent."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": query.encode("ascii"),
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"connection", b"close"),
            (b"user-agent", user_agent),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def answer(sent: list[Any]) -> tuple[int, list[Any], bytes]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    return sent[0]["status"], sent[0]["headers"], sent[1]["body"]


def files(directory: Path) -> tuple[Path, Path]:
    lines = list(directory.glob("floor-*.jsonl"))
    dbs = list(directory.glob("floor-*.sqlite3"))
    assert len(lines) == 1 and len(dbs) == 1, list(directory.iterdir())
    return lines[0], dbs[0]


def test_a_report_is_answered_appended_and_applied(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(floor_asgi.DIR_VARIABLE, str(tmp_path))
    target = loadgen.report_target(7)
    query = dict(parse_qsl(urlsplit(target).query))
    bad = target.replace(query["selector"], "not-a-selector")

    async def scenario() -> tuple[list[Any], list[Any], list[str], dict[str, Any]]:
        app = floor_asgi.FloorApp()
        lifespan = Lifespan(app)
        assert await lifespan.say("startup") == {"type": "lifespan.startup.complete"}
        lines, _ = files(tmp_path)
        ok = await get(app, target)
        written = lines.read_text("ascii").splitlines()
        refused = await get(app, bad)
        assert lines.read_text("ascii").splitlines() == written  # the 400 wrote nothing
        shut = await lifespan.say("shutdown")
        await asyncio.wait_for(lifespan.task, timeout=10)
        return ok, refused, written, shut

    ok, refused, written, shut = asyncio.run(scenario())
    assert answer(ok) == (200, [(b"content-length", b"0")], b"")
    assert answer(refused) == (400, [(b"content-length", b"0")], b"")
    assert shut == {"type": "lifespan.shutdown.complete"}

    assert len(written) == 1
    row = json.loads(written[0])
    fields = ("selector", "username", "token_calls", "appid_calls", "token_msgs", "appid_msgs")
    assert row[:6] == [query[name] for name in fields]
    assert row[6] == "CloudSoftphone/1.5.6"
    assert row[7].endswith("Z") and row[7][:4].isdigit()

    _, db = files(tmp_path)
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT selector, username, token_calls, appid_calls, token_msgs, appid_msgs,"
            " user_agent, first_seen, last_seen, reports FROM registration"
        ).fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert stored == [(*row, row[7], 1)]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda q: {**q, "selector": q["selector"][:39] + q["selector"][40:]}, id="39hex"
        ),
        pytest.param(lambda q: {k: v for k, v in q.items() if k != "selector"}, id="no-selector"),
        pytest.param(lambda q: {**q, "token_calls": "short"}, id="token"),
        pytest.param(lambda q: {**q, "appid_msgs": "com.app<script>"}, id="appid"),
    ],
)
def test_a_bad_report_is_refused_and_nothing_is_written(tmp_path: Path, monkeypatch, change):
    monkeypatch.setenv(floor_asgi.DIR_VARIABLE, str(tmp_path))

    query = dict(parse_qsl(urlsplit(loadgen.report_target(3)).query))
    target = "/token/?" + urlencode(change(query))

    async def scenario() -> list[Any]:
        app = floor_asgi.FloorApp()
        lifespan = Lifespan(app)
        assert await lifespan.say("startup") == {"type": "lifespan.startup.complete"}
        sent = await get(app, target)
        assert await lifespan.say("shutdown") == {"type": "lifespan.shutdown.complete"}
        return sent

    assert answer(asyncio.run(scenario()))[0] == 400
    lines, db = files(tmp_path)
    assert lines.read_bytes() == b""
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM registration").fetchone() == (0,)


def test_startup_fails_clearly_without_the_directory(monkeypatch):
    monkeypatch.delenv(floor_asgi.DIR_VARIABLE, raising=False)

    async def scenario() -> dict[str, Any]:
        lifespan = Lifespan(floor_asgi.FloorApp())
        said = await lifespan.say("startup")
        await asyncio.wait_for(lifespan.task, timeout=10)
        return said

    said = asyncio.run(scenario())
    assert said["type"] == "lifespan.startup.failed"
    assert floor_asgi.DIR_VARIABLE in said["message"]
