"""Call a WSGI app with the request the app model rendered, as a server would."""

from __future__ import annotations

import io
import sys
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from pushreport_core import BODY_METHODS, Request

__all__ = ["wsgi_exchange"]


def wsgi_exchange(
    app: Callable[..., Iterable[bytes]], request: Request, *, host: str = "push.example.com"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send *request* to the WSGI *app* in-process; return ``(status, headers, body)``.

    The environ is what gunicorn builds for the bytes of
    :func:`pushreport_core.to_http_bytes`: the raw target in ``RAW_URI`` (so ``%2F``
    survives), the decoded path in ``PATH_INFO``, and the app's headers.
    """
    path, _, query = request.target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": request.target,
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "HTTP_CONNECTION": "close",
        "HTTP_CACHE_CONTROL": "max-age=0",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if request.user_agent:
        environ["HTTP_USER_AGENT"] = request.user_agent
    if request.content_type is not None:
        environ["CONTENT_TYPE"] = request.content_type
    if request.body or request.method.upper() in BODY_METHODS:
        environ["CONTENT_LENGTH"] = str(len(request.body))
    captured: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(captured["status"].split()[0]), list(captured["headers"]), body
