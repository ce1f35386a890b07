"""The floor of ``bench/load.py``: the least work a durable receiver can do per report.

Per request (``GET /token/?username=…&selector=…&token_calls=…``, as ``loadgen.py``
sends it): the query string split with :func:`urllib.parse.parse_qsl`; the selector, the
tokens and the app ids checked with simple regexes (a mismatch or a missing selector:
``400`` with ``Content-Length: 0``, nothing written); then one JSON array line (selector,
username, the two tokens, the two app ids, the ``User-Agent``, the current UTC time)
appended with one ``os.write`` to a file of the process's own, opened with
``O_APPEND``; then ``200`` with ``Content-Length: 0``, exactly ``bench/bare_asgi.py``'s
answer. As with pushreport's report spool at ``synchronous = "normal"``, a report
answered ``200`` is in the page cache: it survives a crash of the process, not a power
loss. A thread per process reads the new complete lines every 0.05 s and applies them
to an SQLite file of the process's own (WAL, ``synchronous = NORMAL``, a table keyed by
selector with an index on ``(username, selector)``): one ``executemany`` of an upsert in
one transaction per round.

What it deliberately leaves out, since it is a floor and not a receiver:

- no database shared across processes: each worker has its own pair of files, so no
  worker ever waits for another's write lock or reads a page cache that another's commit
  emptied;
- no merge rule: a report overwrites every column of its selector (a token it leaves out
  overwrites the stored one with ``NULL``); only the first time seen and a count of
  reports are kept;
- minimal validation: any path and method is a report, repeated or unknown parameters are
  not refused, the username is any text (JSON escapes it), nothing is length-limited but
  the tokens and app ids;
- no metrics, logs, limits, authentication, hooks, removal or reads, and no replay: lines
  that a killed process had not yet applied stay in its file.

``PUSHREPORT_FLOOR_DIR`` (required; the lifespan startup fails without it) names the
directory of the files, ``floor-<pid>.jsonl`` and ``floor-<pid>.sqlite3`` (created if
missing). The lifespan protocol is needed (uvicorn's ``--lifespan on``): startup opens
the files and starts the thread, shutdown applies what is left and closes them::

    PUSHREPORT_FLOOR_DIR=/tmp/floor uvicorn --app-dir bench floor_asgi:app \\
        --loop uvloop --http httptools --workers 2 --lifespan on
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

__all__ = ["APPLY_INTERVAL", "DIR_VARIABLE", "FloorApp", "app"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The environment variable that names the directory of every process's files.
DIR_VARIABLE = "PUSHREPORT_FLOOR_DIR"
#: Seconds between two rounds of the applier thread.
APPLY_INTERVAL = 0.05

# As pushreport_core's grammar, simplified (the floor imports nothing of pushreport).
_SELECTOR = re.compile(r"[0-9A-Fa-f]{40}:[0-9A-Fa-f]{1,40}")
_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{8,4096}={0,2}")
_APP_ID = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
_TOKENS = ("token_calls", "token_msgs")
_APP_IDS = ("appid_calls", "appid_msgs")

_OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_BAD = {"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS registration ("
    " selector TEXT PRIMARY KEY, username TEXT, token_calls TEXT, appid_calls TEXT,"
    " token_msgs TEXT, appid_msgs TEXT, user_agent TEXT,"
    " first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, reports INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS registration_username ON registration (username, selector)",
)
# Binds a line's array as it is: ?1 … ?7 the report, ?8 its time (first and last seen).
_UPSERT = (
    "INSERT INTO registration VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1)"
    " ON CONFLICT(selector) DO UPDATE SET username = excluded.username,"
    " token_calls = excluded.token_calls, appid_calls = excluded.appid_calls,"
    " token_msgs = excluded.token_msgs, appid_msgs = excluded.appid_msgs,"
    " user_agent = excluded.user_agent, last_seen = excluded.last_seen,"
    " reports = reports + 1"
)


def _line(query: dict[str, str], headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The line to append for a report's parameters, or ``None`` if they are bad."""
    selector = query.get("selector")
    if selector is None or not _SELECTOR.fullmatch(selector):
        return None
    for name in _TOKENS:
        value = query.get(name)
        if value is not None and not _TOKEN.fullmatch(value):
            return None
    for name in _APP_IDS:
        value = query.get(name)
        if value is not None and not _APP_ID.fullmatch(value):
            return None
    user_agent = None
    for header, header_value in headers:
        if header == b"user-agent":
            user_agent = header_value.decode("latin-1")
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    row = [
        selector,
        query.get("username"),
        query.get("token_calls"),
        query.get("appid_calls"),
        query.get("token_msgs"),
        query.get("appid_msgs"),
        user_agent,
        now.replace("+00:00", "Z"),
    ]
    # ensure_ascii (the default) escapes every control character: one line per report.
    return (json.dumps(row) + "\n").encode("ascii")


class FloorApp:
    """The ASGI app; one instance per process (``app`` below)."""

    def __init__(self) -> None:
        self._fd = -1
        self._stop = threading.Event()
        self._applier: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.lines_path: Path | None = None
        self.db_path: Path | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            line = _line(query, scope["headers"])
            if line is None:
                await send(_BAD)
            else:
                written = os.write(self._fd, line)
                if written < len(line):  # only on a full disk or a signal: finish the line
                    self._append(line[written:])
                await send(_OK)
            await send(_BODY)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": f"floor: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    self.shutdown()
                except Exception as e:
                    await send({"type": "lifespan.shutdown.failed", "message": f"floor: {e}"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Open this process's files and start the applier thread."""
        directory = os.environ.get(DIR_VARIABLE)
        if not directory:
            raise RuntimeError(
                f"the environment variable {DIR_VARIABLE} is not set: it names the "
                "directory where each process writes its lines and its SQLite file"
            )
        Path(directory).mkdir(parents=True, exist_ok=True)
        stem = Path(directory) / f"floor-{os.getpid()}"
        self.lines_path = stem.with_suffix(".jsonl")
        self.db_path = stem.with_suffix(".sqlite3")
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.lines_path, flags, 0o600)
            reader = open(self.lines_path, "rb", buffering=0)
        except BaseException:
            db.close()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            raise
        self._stop.clear()
        self._applier = threading.Thread(
            target=self._apply_loop, args=(reader, db), name="floor-applier", daemon=True
        )
        self._applier.start()

    def shutdown(self) -> None:
        """Stop taking lines, apply what is left, close the files."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._applier is not None:
            self._stop.set()
            self._applier.join()
            self._applier = None
        if self._failure is not None:
            raise RuntimeError(f"the applier thread failed: {self._failure!r}")

    def _append(self, rest: bytes) -> None:
        while rest:
            rest = rest[os.write(self._fd, rest) :]

    def _apply_loop(self, reader: io.FileIO, db: sqlite3.Connection) -> None:
        pending = b""
        try:
            while not self._stop.wait(APPLY_INTERVAL):
                pending = _apply(reader, db, pending)
            _apply(reader, db, pending)  # what the last writes left
        except BaseException as e:
            self._failure = e
            raise  # and threading.excepthook prints it
        finally:
            reader.close()
            db.close()


def _apply(reader: io.FileIO, db: sqlite3.Connection, pending: bytes) -> bytes:
    """Apply the complete lines that *pending* and the file's new bytes hold, in one
    transaction; return the incomplete rest (a write that a read caught halfway)."""
    pending += reader.readall()
    cut = pending.rfind(b"\n") + 1
    if not cut:
        return pending
    rows = [json.loads(line) for line in pending[:cut].splitlines()]
    db.execute("BEGIN")
    try:
        db.executemany(_UPSERT, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return pending[cut:]


app = FloorApp()
