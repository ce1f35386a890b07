"""A body the server cannot read for us (bad chunked framing, a client gone before its
Content-Length arrived) is the client's fault: 400, nothing stored, no traceback logged.
Found by the HTTP fuzz (tests/fuzz/test_http_fuzz.py): it used to be a 500."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from pushreport_wsgi import create_app

from .conftest import SELECTOR, make_config


class BrokenInput(io.RawIOBase):
    """A wsgi.input whose read fails the way gunicorn's body readers do."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise self.error


class InvalidChunkSize(Exception):
    """Stands for gunicorn.http.errors.InvalidChunkSize (a ParseException, no OSError)."""


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, bytes]:
    out: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        out["status"] = status

    body = b"".join(app(environ, start_response))
    return out["status"], body


@pytest.mark.parametrize(
    "error",
    [
        InvalidChunkSize("Invalid chunk size: b'zz'"),
        ConnectionResetError(104, "Connection reset by peer"),
        EOFError("No more data after: None"),
    ],
    ids=["bad-chunk", "reset", "no-more-data"],
)
@pytest.mark.parametrize(
    "framing",
    [{"CONTENT_LENGTH": "100"}, {"wsgi.input_terminated": True}],
    ids=["content-length", "chunked"],
)
def test_unreadable_body_is_400_and_stores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, framing: dict[str, Any]
) -> None:
    app = create_app(make_config(tmp_path))
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/token/",
        "PATH_INFO": "/token/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": BrokenInput(error),
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        **framing,
    }
    with caplog.at_level(logging.INFO):
        status, body = _call(app, environ)
    assert (status, body) == ("400 Bad Request", b"body could not be read\n")
    assert list(app.receiver.storage) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Still serving.
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/token/?selector={SELECTOR}",
        "PATH_INFO": "/token/",
        "QUERY_STRING": f"selector={SELECTOR}",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
    }
    assert _call(app, environ) == ("200 OK", b"")
    app.close()


class Trickle(io.RawIOBase):
    """A wsgi.input that hands over at most 7 bytes a read, as a raw stream may."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), 7, len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


FORM = f"selector={SELECTOR}&token_msgs=QVBBOTFiRzlhcVd2bW54bllCWldH".encode()


def _form_environ(stream: Any, length: int | None, terminated: bool) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/token/",
        "PATH_INFO": "/token/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": stream,
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    if terminated:
        environ["wsgi.input_terminated"] = True
    return environ


def test_body_cut_short_is_400_not_a_cut_token(tmp_path: Path) -> None:
    # gunicorn hands over whatever came before the connection ended: the first 50 bytes
    # of this form are a valid report whose token is cut short.
    app = create_app(make_config(tmp_path))
    environ = _form_environ(io.BytesIO(FORM[:50]), len(FORM), terminated=True)
    assert _call(app, environ) == (
        "400 Bad Request",
        f"body ended after 50 of {len(FORM)} bytes\n".encode(),
    )
    # A server that leaves the length to the app (werkzeug's LimitedStream) says so too.
    environ = _form_environ(io.BytesIO(FORM[:50]), len(FORM), terminated=False)
    assert _call(app, environ) == ("400 Bad Request", b"body could not be read\n")
    assert list(app.receiver.storage) == []
    app.close()


@pytest.mark.parametrize(
    ("length", "terminated"),
    [(len(FORM), True), (len(FORM), False), (None, True)],
    ids=["length-terminated", "length", "chunked"],
)
def test_body_read_in_pieces_is_read_whole(
    tmp_path: Path, length: int | None, terminated: bool
) -> None:
    app = create_app(make_config(tmp_path))
    assert _call(app, _form_environ(Trickle(FORM), length, terminated)) == ("200 OK", b"")
    [stored] = list(app.receiver.storage)
    assert stored.token_msgs == "QVBBOTFiRzlhcVd2bW54bllCWldH"
    app.close()
