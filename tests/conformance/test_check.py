"""`pushreport check URL` over real HTTP: passes against our own `pushreport serve`, and
reports receivers that do not behave as the app needs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from pushreport._check import Target, parse_target, run_checks
from pushreport._cli import main
from pushreport._config import ReporterConfig, StorageConfig
from pushreport_core import Template
from pushreport_core.testing import ROUNDTRIP_TEMPLATES, SPEC_SELECTOR
from pushreport_wsgi import Config, create_app
from tests.e2e.conftest import PUSHREPORT, Server, free_port, pushreport_list


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def serve_wsgi() -> Iterator[Callable[[Any], str]]:
    """Serve a WSGI app on a loopback port in a thread; returns its URL."""
    servers: list[tuple[WSGIServer, threading.Thread]] = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def answering(
    status: str,
    headers: list[tuple[str, str]],
    body: bytes,
    seen: list[dict[str, Any]] | None = None,
) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if seen is not None:
            seen.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(status, headers)
        return [body]

    return app


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out.splitlines()


# -- against our own receiver -------------------------------------------------------------


@pytest.mark.e2e
def test_check_passes_against_pushreport_serve(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=1)
    try:
        out = subprocess.run(
            [
                *PUSHREPORT,
                "check",
                f"http://127.0.0.1:{server.port}",
                "--sessions",
                "12",
                "--seed",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    checks = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert checks and all(line.startswith("PASS  ") for line in checks)
    assert len(checks) == 6 + 8 + 12  # spec examples, refusals, sessions
    assert "26 checks: 26 passed, 0 failed" in lines
    stored = pushreport_list(server.db)
    assert SPEC_SELECTOR in {r["selector"] for r in stored}
    assert any(r["username"] and r["username"].startswith("pushreport-check-") for r in stored)


@pytest.mark.e2e
def test_check_with_the_configured_template(tmp_path: Path) -> None:
    xml = ROUNDTRIP_TEMPLATES["nested-json"]
    config = tmp_path / "pushreport.toml"
    config.write_text(
        "[reporter]\n"
        f"url = '{xml['url']}'\npost_data = '{xml['post_data']}'\n"
        f"content_type = '{xml['content_type']}'\nmethod = '{xml['method']}'\n"
    )
    server = Server(tmp_path, "--config", str(config), workers=1)
    try:
        out = subprocess.run(
            [
                *PUSHREPORT,
                "check",
                f"http://127.0.0.1:{server.port}",
                "--config",
                str(config),
                "--sessions",
                "6",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # The same receiver checked with the default shapes' examples: it does not
        # accept them, and the check says so.
        wrong = subprocess.run(
            [*PUSHREPORT, "check", f"http://127.0.0.1:{server.port}", "--sessions", "1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS  the spec's values through the configured template" in out.stdout
    assert "9 checks: 9 passed, 0 failed" in out.stdout
    assert wrong.returncode == 1
    assert "FAIL  spec request example: GET: status 404 is not 2xx" in wrong.stdout


# -- against receivers that do not conform ------------------------------------------------


def test_json_content_type_with_an_empty_body_is_reported(
    capsys: pytest.CaptureFixture[str], serve_wsgi: Callable[[Any], str]
) -> None:
    seen: list[dict[str, Any]] = []
    url = serve_wsgi(answering("200 OK", [("Content-Type", "application/json")], b"", seen))
    code, lines = run(capsys, url, "--sessions", "3", "--seed", "1")
    assert code == 1
    assert (
        "FAIL  spec request example: GET: Content-Type application/json needs a JSON "
        "body (at least {}); the body is empty"
    ) in lines
    # Every valid report "succeeds" with a body the app cannot accept, every invalid one
    # is answered 200: nothing conforms.
    assert [line[:4] for line in lines if line.startswith(("PASS", "FAIL"))] == ["FAIL"] * 17
    assert (
        "FAIL  session 1 [query, ios]: next exchange fails, start, stop, next exchange "
        "fails, start, wait 1s, pushTokenOther arrives, wait 5s, retry: step 9 (retry): "
        "Content-Type application/json needs a JSON body (at least {}); the body is "
        "empty"
    ) in lines
    assert "17 checks: 0 passed, 17 failed (rerun with --seed 1)" in lines
    # The app's headers went over the wire (wsgiref even answers the request lines of
    # the connections dropped mid-request, without headers: those are left out).
    complete = [h for h in seen if "HTTP_HOST" in h]
    assert len(complete) >= 17
    assert all(
        h["HTTP_CONNECTION"] == "close"
        and h["HTTP_CACHE_CONTROL"] == "max-age=0"
        and h["HTTP_USER_AGENT"] == "CloudSoftphone/1.5.6"
        for h in complete
    )


def test_a_receiver_that_accepts_anything_is_reported(
    capsys: pytest.CaptureFixture[str], serve_wsgi: Callable[[Any], str]
) -> None:
    url = serve_wsgi(answering("200 OK", [], b""))
    code, lines = run(capsys, url, "--sessions", "2", "--seed", "1")
    assert code == 1
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails and all(line.startswith("FAIL  refuses a report with") for line in fails)
    assert (
        "FAIL  refuses a report with no selector (query string): answered 200: an "
        "invalid report must be refused with a non-2xx status, or nothing tells the "
        "provider its Account XML is broken"
    ) in lines
    assert len(fails) == 8


def test_a_receiver_that_always_fails_is_reported(
    capsys: pytest.CaptureFixture[str], serve_wsgi: Callable[[Any], str]
) -> None:
    url = serve_wsgi(answering("503 Service Unavailable", [("Retry-After", "5")], b""))
    code, lines = run(capsys, url, "--sessions", "2", "--seed", "3")
    assert code == 1
    assert "FAIL  spec Account XML example: JSON body: status 503 is not 2xx" in lines
    sessions = [line for line in lines if line.startswith(("PASS  session", "FAIL  session"))]
    assert len(sessions) == 2 and all(line.startswith("FAIL") for line in sessions)


def test_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, lines = run(capsys, f"http://127.0.0.1:{port}", "--timeout", "2")
    assert code == 1
    assert lines[1].startswith(f"FAIL  cannot connect to 127.0.0.1:{port}: ")
    assert lines[-1] == "0 checks passed, 1 failed"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com", "pushreport: 'ftp://example.com' is not an http:// or https:// URL"),
        (
            "http://example.com/?a=1",
            "pushreport: 'http://example.com/?a=1': give the receiver's base URL, without a query",
        ),
    ],
)
def test_unusable_url(capsys: pytest.CaptureFixture[str], url: str, message: str) -> None:
    code, lines = run(capsys, url)
    assert (code, lines) == (2, [message])


def test_parse_target() -> None:
    assert parse_target("http://127.0.0.1:8080") == Target(
        scheme="http", host="127.0.0.1", port=8080
    )
    t = parse_target("https://push.example.com/portal/")
    assert (t.port, t.prefix, t.host_header) == (443, "/portal", "push.example.com")
    assert parse_target("http://[::1]:81").host_header == "[::1]:81"


def test_our_receiver_mounted_under_a_prefix_conforms(
    tmp_path: Path, serve_wsgi: Callable[[Any], str]
) -> None:
    """In-process, under wsgiref: the configured template, under the URL's path."""
    template = Template.parse(**ROUNDTRIP_TEMPLATES["nested-json"])
    config = Config(
        reporter=ReporterConfig(
            url=template.url,
            post_data=template.post_data,
            content_type=template.content_type,
            method=template.method,
        ),
        storage=StorageConfig(
            backends=("sqlite",), options={"sqlite": {"path": str(tmp_path / "db.sqlite3")}}
        ),
        base_dir=tmp_path,
    )
    receiver = create_app(config)
    portal = DispatcherMiddleware(answering("404 Not Found", [], b"portal"), {"/portal": receiver})
    try:
        url = serve_wsgi(portal) + "/portal"
        results = run_checks(parse_target(url), template=template, sessions=4, seed=2, timeout=5)
        stored = list(receiver.receiver.storage)
    finally:
        receiver.close()
    assert [r.problem for r in results] == [None] * len(results)
    assert len(results) == 1 + 2 + 4
    assert SPEC_SELECTOR in {r.selector for r in stored} and len(stored) == 5
