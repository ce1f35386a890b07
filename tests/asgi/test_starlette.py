"""pushreport mounted in a real Starlette portal, served by uvicorn over real HTTP on
loopback: reports stored (``%2F`` in a token kept), the portal's own routes, methods and
404 untouched, the spool applied at shutdown, and ``pushreport check`` passing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ..e2e.conftest import PUSHREPORT, free_port, log_text, pushreport_list, spawn_listening
from ..wsgi.conftest import SELECTOR, SPEC_GET

pytest.importorskip("starlette", reason="Starlette is in the test extras")
pytest.importorskip("uvicorn", reason="uvicorn is in the asgi extra (and the test extras)")

ROOT = Path(__file__).resolve().parents[2]


class Portal:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "portal.sqlite3"
        config = tmp_path / "pushreport.toml"
        config.write_text(f'[storage.sqlite]\npath = "{self.db}"\n')
        self.port = free_port()
        self.log = (tmp_path / "portal.log").open("w+b")
        self.stopped = False
        self.proc = spawn_listening(
            [sys.executable, "-m", "tests.asgi.portal", str(config), str(self.port)],
            cwd=ROOT,
            log=self.log,
            port=self.port,
            name="portal",
        )

    def output(self) -> str:
        return log_text(self.log)

    def request(
        self, method: str, target: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> bool:
        """SIGTERM, and whether the lifespan shutdown completed (uvicorn ends by
        re-raising the signal: the exit status does not say)."""
        if self.log.closed:
            return self.stopped
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.stopped = "Application shutdown complete" in self.output()
        self.log.close()
        return self.stopped


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    p = Portal(tmp_path)
    try:
        yield p
    finally:
        p.stop()


@pytest.mark.e2e
def test_reports_stored_and_the_portal_routes_still_answer(portal: Portal) -> None:
    assert portal.request("GET", SPEC_GET) == (200, b"")
    assert portal.request("GET", "/") == (200, b"portal home")
    status, body = portal.request("GET", "/token/list")
    assert (status, json.loads(body)) == (200, ["not", "a", "report"])
    assert portal.request("POST", "/api/echo", b"body kept") == (200, b"body kept")
    assert portal.request("GET", "/api/echo")[0] == 405  # Starlette's, not ours
    assert portal.request("GET", "/missing")[0] == 404  # Starlette's own 404
    status, body = portal.request("GET", "/files/a%2Fb")
    assert json.loads(body) == {"raw_path": "/files/a%2Fb"}
    status, body = portal.request("GET", "/token/?selector=nope")
    assert (status, body.startswith(b"selector is not valid")) == (400, True)
    assert portal.request("GET", "/healthz") == (200, b"ok\n")
    assert portal.stop()  # SIGTERM: lifespan shutdown applies the spool
    [reg] = pushreport_list(portal.db)
    assert reg["selector"] == SELECTOR
    # token_calls was sent as ...Ej0wxkrY%3D with a %2F inside: the "/" survived.
    assert reg["token_calls"] == "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="


@pytest.mark.e2e
def test_pushreport_check_passes_against_the_portal(portal: Portal) -> None:
    out = subprocess.run(
        [*PUSHREPORT, "check", f"http://127.0.0.1:{portal.port}", "--sessions", "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    checks = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert len(checks) == 6 + 8 + 6 and all(line.startswith("PASS  ") for line in checks)
    assert portal.stop()
    assert SELECTOR in {r["selector"] for r in pushreport_list(portal.db)}
