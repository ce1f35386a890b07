"""Operator endpoints of a real ``pushreport serve``: metrics added up across worker
processes, health checks, JSON log lines."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ENGINE, Server

pytestmark = pytest.mark.e2e

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"


def get(path: str, host: str = "127.0.0.1") -> bytes:
    # HTTP/1.0: the answer is not chunked, whatever the endpoint.
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()


def report(i: int) -> bytes:
    return get(
        f"/token/?username=u{i}&password=hunter2&selector={i:040X}:7C3A0D14"
        f"&token_msgs={'a3f1' * 16}&appid_msgs=com.cloudsoftphone.app"
    )


def split(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = split(server.send(get("/metrics")))
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_add_up_every_worker_and_health_answers(tmp_path: Path):
    (tmp_path / "p.toml").write_text("[metrics]\nenabled = true\ncount_interval = 0\n")
    server = Server(tmp_path, "--config", str(tmp_path / "p.toml"), workers=2)
    try:
        for i in range(30):
            assert split(server.send(report(i)))[0] == 200
        assert split(server.send(get("/token/?selector=bad")))[0] == 400
        # Each scrape lands on whichever worker accepts it: every one must see all.
        for _ in range(6):
            samples = scrape(server)
            accepted = frozenset({("outcome", "accepted"), ("reason", "")})
            assert samples[("pushreport_reports_total", accepted)] == 30
            invalid = frozenset({("outcome", "refused"), ("reason", "invalid")})
            assert samples[("pushreport_reports_total", invalid)] == 1
            assert (
                samples[("pushreport_storage_seconds_count", frozenset({("backend", "sqlite")}))]
                == 30
            )
            assert samples[("pushreport_registrations", frozenset({("backend", "sqlite")}))] == 30
        assert split(server.send(get("/healthz"))) == (200, b"ok\n")
        assert split(server.send(get("/readyz"))) == (200, b"ok\n")
        [folder] = re.findall(r"metrics of the worker processes meet in (\S+)", server.output())
        # A worker that exits (gunicorn restarts it) leaves the shared folder, and its
        # counts, in place.
        # Listening is not "every worker booted": the second one may still be starting.
        deadline = time.monotonic() + 15
        while True:
            workers = subprocess.run(
                ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, timeout=10
            ).stdout.split()
            if len(workers) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(workers) == 2, server.output()
        os.kill(int(workers[0]), signal.SIGTERM)
        deadline = time.monotonic() + 15
        # gunicorn's line, or pushreport's master's under uvicorn.
        exited = ("Worker exiting (pid: " + workers[0], f"worker {workers[0]} exited")
        while not any(line in server.output() for line in exited):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        time.sleep(0.3)
        assert Path(folder).is_dir()
        for _ in range(4):
            samples = scrape(server)
            assert samples[("pushreport_reports_total", accepted)] == 30
    finally:
        server.stop()
    assert not Path(folder).exists(), "the master leaves its metrics folder behind"


def test_json_log_lines_with_the_access_log(tmp_path: Path):
    server = Server(tmp_path, "--access-log", "--log-format", "json", workers=1)
    try:
        assert split(server.send(report(7)))[0] == 200
        deadline = time.monotonic() + 10
        while "pushreport.access" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    lines = [line for line in server_output(tmp_path).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's too
    server_logger = "uvicorn.error" if ENGINE == "uvicorn" else "gunicorn.error"
    assert any(r["logger"] == server_logger for r in records)
    [access] = [r for r in records if r["logger"] == "pushreport.access"]
    assert (access["status"], access["shape"], access["method"]) == (200, "default-query", "GET")
    assert access["selector"] == f"{7:040X}"[:12] + "…"
    assert "hunter2" not in "\n".join(lines) and "a3f1" * 16 not in "\n".join(lines)
    assert "password=***" in access["target"]


def server_output(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")
