"""Drive the WSGI and the ASGI adapter with the same raw request, in this process, as
gunicorn and uvicorn hand it over (``RAW_URI``; ``raw_path`` and ``query_string``), and
see each one's answer as the app gave it: status, headers in order, body."""

from __future__ import annotations

import asyncio
import io
from typing import Any
from urllib.parse import unquote

import attrs


@attrs.frozen
class Sent:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@attrs.frozen
class Raw:
    """One request: *headers* as sent, names in any case."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: ``False``: the connection ends before all of *body* came (Content-Length says more).
    complete: bool = True
    client: str = "127.0.0.1"


def call_wsgi(app: Any, raw: Raw) -> Sent:
    path, _, query = raw.target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": raw.method,
        "RAW_URI": raw.target,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": raw.client,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw.body),
        "wsgi.errors": io.StringIO(),
    }
    for name, value in raw.headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    got: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got.append((status, headers))

    body = b"".join(app(environ, start_response))
    status, headers = got[0]
    return Sent(int(status.split()[0]), tuple(headers), body)


def call_asgi(app: Any, raw: Raw) -> Sent:
    path, _, query = raw.target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": raw.method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in raw.headers],
        "client": (raw.client, 50000),
        "server": ("127.0.0.1", 80),
    }
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": raw.body, "more_body": False}
    ]
    if not raw.complete:
        messages = [
            {"type": "http.request", "body": raw.body, "more_body": True},
            {"type": "http.disconnect"},
        ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Sent(start["status"], headers, body)
