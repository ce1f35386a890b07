"""Helpers for the fault tests: reports with their own selector, answers read as the app
reads them, what the database holds, and the root-only ways to break a filesystem.

The tests run as root here and in CI; root ignores file modes, so a read-only file is
made with the immutable flag (``chattr +i``) and a full disk with a small tmpfs mount.
Without the means (not root, no such flag), they skip with the reason; under
``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..e2e.conftest import Server
from ..plugins.sqlite.conftest import _set_immutable, spooled

__all__ = [
    "Server",
    "Ledger",
    "RECOVERY",
    "report_request",
    "answer",
    "stored",
    "unavailable",
    "immutable",
    "tmpfs",
    "log_lines",
    "log_output",
]


def selector_for(tag: int, i: int) -> str:
    return f"{tag:08X}{i:032X}:{tag:04X}"


def token_for(tag: int, i: int) -> str:
    return f"TOKEN{tag:04d}x{i:08d}"


def report_request(tag: int, i: int, shape: str = "get") -> bytes:
    """The app's request for report *i* of series *tag*: its own selector and token."""
    sel, tok = selector_for(tag, i), token_for(tag, i)
    head = "Host: example.com\r\nConnection: close\r\nUser-Agent: CloudSoftphone/1.5.6\r\n"
    if shape == "get":
        return (
            f"GET /token/?selector={sel}&token_msgs={tok}&appid_msgs=com.x.app"
            f"&username=u{tag} HTTP/1.1\r\n{head}\r\n"
        ).encode()
    if shape == "form":
        body = f"selector={sel}&token_msgs={tok}&appid_msgs=com.x.app&username=u{tag}"
        ctype = "application/x-www-form-urlencoded"
    else:
        body = (
            f'{{"selector": "{sel}", "token_msgs": "{tok}", "appid_msgs": "com.x.app",'
            f' "username": "u{tag}"}}'
        )
        ctype = "application/json"
    return (
        f"POST /token/ HTTP/1.1\r\n{head}Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def answer(server: Server, raw: bytes, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the answer to *raw*."""
    data = server.send(raw, timeout=timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0])
    assert m is not None, data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(m.group(1)), headers, body


def stored(db: Path) -> dict[str, tuple[str | None, int]]:
    """``{selector: (token_msgs, reports)}`` of every registration in *db*, as
    pushreport reads it: what its report spool holds applied first (by a process of
    its own, as after a crash of the server)."""
    storage = spooled(db, busy_timeout=10, interval=10)
    try:
        storage.apply_spool()
    finally:
        storage.close()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return {
            sel: (tok, n)
            for sel, tok, n in conn.execute(
                "SELECT selector, token_msgs, reports FROM registrations"
            )
        }


def unavailable(reason: str) -> None:
    """Skip for want of a means; under ``CI=true`` (root, here) that is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def immutable(paths: list[Path], on: bool) -> None:
    """Set or clear the immutable flag: the file cannot be written, even by root, even
    through a descriptor opened before."""
    if os.geteuid() != 0:
        unavailable("needs root to set the immutable flag (file modes do not stop root)")
    for path in paths:
        try:
            _set_immutable(path, on)
        except OSError as exc:
            unavailable(f"this filesystem has no immutable flag: {exc}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test: a disk that can be filled up."""
    if os.geteuid() != 0:
        unavailable("needs root to mount a small tmpfs (a disk to fill up)")
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


#: Seconds a fault may take to clear in the server's eyes once it is gone.
RECOVERY = 5.0


class Ledger:
    """Reports sent to one server and how they were answered."""

    def __init__(self, server: Server, tag: int) -> None:
        self.server, self.tag, self.sent = server, tag, 0
        self.ok: list[int] = []
        self.refused: list[int] = []

    def report(self) -> tuple[int, dict[str, str], bytes]:
        i = self.sent
        self.sent += 1
        status, headers, body = answer(
            self.server, report_request(self.tag, i, ("get", "form", "json")[i % 3])
        )
        (self.ok if status == 200 else self.refused).append(i)
        return status, headers, body

    def during_fault(self, n: int, reason: str | tuple[str, ...]) -> None:
        """Report until *n* in a row are refused with 503, Retry-After and the backend's
        reason (within RECOVERY): before that, a worker whose spool has not yet met
        the fault answers 200, and that report must be stored in the end."""
        reasons = (reason,) if isinstance(reason, str) else reason
        started, streak = time.monotonic(), 0
        while streak < n:
            assert time.monotonic() - started < RECOVERY, (self.ok, self.refused)
            status, headers, body = self.report()
            if status != 503:
                assert status == 200, (status, body)
                streak = 0
                time.sleep(0.02)
                continue
            assert int(headers["retry-after"]) >= 1
            assert body.decode().rstrip("\n") in reasons, body
            streak += 1

    def recovers(self, n: int = 6) -> float:
        """Report until *n* in a row are answered 200 (within RECOVERY): both workers
        serve again (each one's spool thread finds the database writable on its own
        next round). Returns how long the first 200 took."""
        started = time.monotonic()
        took, streak = None, 0
        while streak < n:
            assert time.monotonic() - started < RECOVERY, self.server.output()[-2000:]
            status, _, body = self.report()
            if status == 200:
                took = time.monotonic() - started if took is None else took
                streak += 1
            else:
                assert status == 503, body
                streak = 0
                time.sleep(0.05)
        assert took is not None
        return took

    def check_stored(self, db: Path) -> None:
        """Exactly the reports answered 200 are stored, each with its own token."""
        rows = stored(db)
        mine = {sel: row for sel, row in rows.items() if sel.endswith(f":{self.tag:04X}")}
        assert set(mine) == {selector_for(self.tag, i) for i in self.ok}
        for i in self.ok:
            assert mine[selector_for(self.tag, i)] == (token_for(self.tag, i), 1)


def log_output(server: Server) -> str:
    """The server's log so far (after stop() too)."""
    return Path(server.log.name).read_text(encoding="utf-8", errors="replace")


def log_lines(server: Server, text: str) -> list[str]:
    """The lines of the server's log that contain *text*."""
    return [line for line in log_output(server).splitlines() if text in line]
