"""Helpers to run ``pushreport serve`` as a real process on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Sequence

import pytest

from pushreport import ServerConfig

# The PostgreSQL fixtures, for the tests here that run against the real server.
from ..plugins.postgresql.conftest import pg_dsn, pg_table  # noqa: E402, F401

PUSHREPORT = [sys.executable, "-m", "pushreport._cli"]
#: ``PUSHREPORT_TEST_ENGINE=gunicorn`` runs every ``Server`` of the e2e, fault and fuzz
#: tests on that engine (``--engine``); unset, on the default (``.ci/run`` runs both).
FORCED_ENGINE = os.environ.get("PUSHREPORT_TEST_ENGINE") or None
#: The engine those servers run.
ENGINE = FORCED_ENGINE or ServerConfig().engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_text(log: IO[bytes]) -> str:
    """Everything a process has written to *log* so far."""
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def spawn_listening(
    argv: Sequence[str], *, cwd: Path, log: IO[bytes], port: int, name: str
) -> subprocess.Popen[bytes]:
    """Start *argv* (its output into *log*, a session of its own) and wait until it
    accepts on *port*: a bounded poll that fails with the output if it exits or never
    listens."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log_text(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen:\n{log_text(log)}") from None
            time.sleep(0.05)


class Server:
    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        workers: int = 2,
        db: bool = True,
        engine: str | None = FORCED_ENGINE,
    ) -> None:
        """*db*: pass ``--db`` (needs sqlite among the backends); ``False`` to store
        only where the ``--config`` in *args* says. *engine*: ``--engine``."""
        self.port = free_port()
        self.db = tmp_path / "pushreport.sqlite3"
        self.log = (tmp_path / "server.log").open("w+b")
        db_args = ["--db", str(self.db)] if db else []
        if engine is not None and "--engine" not in args:
            db_args += ["--engine", engine]
        self.proc = spawn_listening(
            [
                *PUSHREPORT,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *db_args,
                "--workers",
                str(workers),
                *args,
            ],
            cwd=tmp_path,
            log=self.log,
            port=self.port,
            name="server",
        )

    def output(self) -> str:
        return log_text(self.log)

    def send(self, raw: bytes, timeout: float = 10.0) -> bytes:
        """Send *raw* bytes as one request over a new connection; return the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(raw)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        """``kill -9`` the master and every worker."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def pushreport_list(db: Path, *args: str) -> list[dict]:
    out = subprocess.run(
        [*PUSHREPORT, "list", "--db", str(db), "--json", *args],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def run_pushreport(cwd: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run ``pushreport *args`` in *cwd* and wait for it to exit; a server that starts
    anyway is killed, with its workers, after *timeout* seconds, and the test fails."""
    proc = subprocess.Popen(
        [*PUSHREPORT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"pushreport {args[0]} still ran after {timeout} s:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
