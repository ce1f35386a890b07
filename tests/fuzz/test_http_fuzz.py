"""HTTP-level fuzz of a running ``pushreport serve``: raw bytes over loopback sockets.

Hostile requests (malformed request lines, invalid percent-escapes, invalid UTF-8 in the
target and the body, duplicate keys, huge and deeply nested bodies, header floods, NUL
bytes, absurd Content-Lengths, broken chunked framing) and a hypothesis batch of
byte-mangled valid reports. The outcome for each: a 4xx answer (or, for a request whose
head never ends, the connection closed by gunicorn without an answer), nothing stored,
no traceback logged, no worker lost, and the server still answering a valid report 200.

Who answers what, as measured (gunicorn 27, sync workers): gunicorn itself answers 400
(its own HTML page) to an unparsable request line, a bad header or Content-Length, a
bare LF, NUL or a lower-case method; 414 to a request line over 8190 bytes; 431 to over
100 header fields or a field over 8190 bytes. Everything that parses as HTTP reaches
pushreport, which answers 400/404/405/413 with one ``text/plain`` line. A connection
that closes before its head is complete gets no answer.

Each request is sent, then the write side is shut, so that a request announcing more
body than it carries ends at once (the server sees the end) instead of holding a worker
until gunicorn's timeout: slow clients are tests/faults/test_slow_clients.py's subject.
"""

from __future__ import annotations

import collections
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pushreport_core import to_http_bytes
from pushreport_core._grammar import APP_ID, BAD_TEXT, SELECTOR, TOKEN
from pushreport_core.testing import SPEC_REQUESTS

from ..e2e.conftest import ENGINE, Server

pytestmark = pytest.mark.e2e

SEL = b"12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOK = b"QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
HEAD = b"Host: example.com\r\nConnection: close\r\nUser-Agent: CloudSoftphone/1.5.6\r\n"

#: Outcomes of every request sent by this module: status code, or "closed".
TALLY: collections.Counter[int | str] = collections.Counter()


def get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + HEAD + headers + b"\r\n"


def post(
    body: bytes,
    content_type: bytes = b"application/json",
    *,
    target: bytes = b"/token/",
    length: bytes | None = None,
    headers: bytes = b"",
) -> bytes:
    cl = str(len(body)).encode() if length is None else length
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\n"
        + HEAD
        + b"Content-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + cl
        + b"\r\n"
        + headers
        + b"\r\n"
        + body
    )


def chunked(chunks: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"POST /token/ HTTP/1.1\r\n"
        + HEAD
        + b"Content-Type: "
        + content_type
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
    )


VALID = {
    "spec-get": to_http_bytes(SPEC_REQUESTS["GET"], "example.com"),
    "spec-json": to_http_bytes(SPEC_REQUESTS["POST JSON"], "example.com"),
    "form": post(
        b"selector=" + SEL + b"&token_msgs=" + TOK + b"&appid_msgs=com.x.app"
        b"&username=j%C3%B6hn+doe",
        b"application/x-www-form-urlencoded",
    ),
    "path": get(
        b"/pushToken/johndow/" + SEL + b"/Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxk"
        b"rY%3D&appid=com.cloudsoftphone.app"
    ),
}

Q = b"/token/?selector=" + SEL + b"&token_msgs="
JSON_OK = b'{"selector": "' + SEL + b'", "token_msgs": "' + TOK + b'"}'

# (id, raw request). "gunicorn" marks those gunicorn refuses before pushreport sees them.
HOSTILE = [
    # -- request lines
    ("garbage-line", b"GARBAGE\r\n\r\n"),
    ("no-version", b"GET " + Q + TOK + b"\r\n\r\n"),
    ("http-0.9", b"GET /\r\n"),
    ("http-9.9", b"GET " + Q + TOK + b" HTTP/9.9\r\n" + HEAD + b"\r\n"),
    ("space-in-target", get(Q + b"a b")),
    ("lower-case-method", b"get " + Q + TOK + b" HTTP/1.1\r\n" + HEAD + b"\r\n"),
    ("binary-method", b"G\xffT " + Q + TOK + b" HTTP/1.1\r\n" + HEAD + b"\r\n"),
    ("long-method", b"X" * 300 + b" " + Q + TOK + b" HTTP/1.1\r\n" + HEAD + b"\r\n"),
    ("unknown-method", b"BREW " + Q + TOK + b" HTTP/1.1\r\n" + HEAD + b"\r\n"),
    # DELETE on the report paths is the Account Removal Reporter: PATCH is no one's.
    ("patch-method", b"PATCH " + Q + TOK + b" HTTP/1.1\r\n" + HEAD + b"\r\n"),
    ("bare-lf", (b"GET " + Q + TOK + b" HTTP/1.1\n" + HEAD + b"\n").replace(b"\r\n", b"\n")),
    ("crlf-only", b"\r\n\r\n"),
    ("line-over-8190", get(Q + b"A" * 10_000)),
    ("target-over-8k", get(Q + b"A" * 8_150)),
    ("asterisk-target", get(b"*")),
    ("no-slash-target", get(b"token/?selector=" + SEL)),
    # -- the target's bytes
    ("nul-in-target", get(Q + b"\x00" + TOK)),
    ("utf8-invalid-target", get(Q + b"\xff\xfe" + TOK)),
    ("utf8-raw-target", get(b"/token/?selector=" + SEL + b"&username=j\xc3\xb6hn&token_msgs=x")),
    ("pct-invalid", get(b"/token/?selector=%ZZ%G" + SEL + b"&token_msgs=%" + TOK)),
    ("pct-truncated", get(b"/token/?selector=" + SEL + b"%E2%82&token_msgs=" + TOK)),
    ("pct-nul", get(Q + TOK + b"%00")),
    ("pct-utf8-invalid", get(b"/token/?selector=" + SEL + b"&username=%C3%28&token_msgs=" + TOK)),
    (
        "pct-overlong-slash",
        get(b"/token/?selector=" + SEL + b"&username=%C0%AF&token_msgs=" + TOK),
    ),
    ("pct-surrogate", get(b"/token/?selector=" + SEL + b"&username=%ED%A0%80&token_msgs=" + TOK)),
    ("pct-in-selector", get(b"/token/?selector=%31" + SEL[1:] + b"%0A&token_msgs=" + TOK)),
    ("pct-in-path-shape", get(b"/pushToken/%ZZ/" + SEL + b"/" + TOK + b"%G&appid=com.x.y")),
    ("pct-control-username", get(Q + TOK + b"&username=a%1Bb")),
    ("malformed-selector", get(b"/token/?selector=" + SEL[:-9] + b"&token_msgs=" + TOK)),
    ("no-selector", get(b"/token/?token_msgs=" + TOK)),
    ("token-too-short", get(Q + b"abc")),
    ("empty-pairs", get(b"/token/?=&&&=&==&selector")),
    ("unknown-path", get(b"/admin/?selector=" + SEL)),
    # -- duplicate keys
    ("dup-query", get(Q + TOK + b"&selector=" + SEL[:-1] + b"0")),
    ("dup-query-case", get(Q + TOK + b"&Token_Msgs=" + TOK[::-1])),
    ("dup-query-alias", get(Q + TOK + b"&pushToken=" + TOK[::-1])),
    (
        "dup-form",
        post(
            b"selector=" + SEL + b"&selector=" + SEL[:-1] + b"0&token_msgs=" + TOK,
            b"application/x-www-form-urlencoded",
        ),
    ),
    ("dup-json", post(b'{"selector": "' + SEL + b'", "SELECTOR": "' + SEL + b'"}')),
    (
        "dup-json-nested",
        post(
            b'{"selector": "'
            + SEL
            + b'", "token_msgs": "'
            + TOK
            + b'", "token_msgs": "'
            + TOK[::-1]
            + b'"}'
        ),
    ),
    (
        "dup-query-and-json",
        post(JSON_OK.replace(TOK, TOK[::-1]), target=b"/token/?token_msgs=" + TOK),
    ),
    # -- bodies
    ("utf8-invalid-json", post(b'{"selector": "' + SEL + b'", "username": "\xff\xfe"}')),
    (
        "utf8-invalid-form",
        post(b"selector=" + SEL + b"&username=\xc3\x28", b"application/x-www-form-urlencoded"),
    ),
    (
        "nul-in-form",
        post(b"selector=" + SEL + b"\x00&token_msgs=" + TOK, b"application/x-www-form-urlencoded"),
    ),
    (
        "nul-escape-json",
        post(b'{"selector": "' + SEL + b'\\u0000", "token_msgs": "' + TOK + b'"}'),
    ),
    ("lone-surrogate-json", post(JSON_OK[:-1] + b', "username": "\\ud800"}')),
    ("json-not-object", post(b'["selector", "' + SEL + b'"]')),
    ("json-number-selector", post(b'{"selector": 12869}')),
    ("json-nan", post(b'{"selector": NaN}')),
    ("json-truncated", post(JSON_OK[:-5])),
    ("json-bom", post(b"\xef\xbb\xbf" + JSON_OK)),
    ("json-nested-16k", post(b"[" * 16_000)),
    ("json-nested-objects", post(b'{"a":' * 3_000)),
    ("json-nested-100k", post(b"[" * 100_000)),
    ("json-huge-string", post(b'{"selector": "' + b"A" * 16_000 + b'"}')),
    ("json-as-form", post(JSON_OK, b"application/x-www-form-urlencoded")),
    ("form-as-json", post(b"selector=" + SEL, b"application/json")),
    (
        "multipart",
        post(
            b"--x\r\nContent-Disposition: form-data; name=selector\r\n\r\n"
            + SEL
            + b"\r\n--x--\r\n",
            b"multipart/form-data; boundary=x",
        ),
    ),
    ("body-1mb", post(b"A" * 1_000_000)),
    # -- Content-Length and framing
    ("cl-absurd", post(JSON_OK, length=b"99999999999999999999")),
    ("cl-negative", post(JSON_OK, length=b"-5")),
    ("cl-not-a-number", post(JSON_OK, length=b"abc")),
    ("cl-hex", post(JSON_OK, length=b"0x20")),
    ("cl-twice", post(JSON_OK, headers=b"Content-Length: 3\r\n")),
    ("cl-longer-than-body", post(JSON_OK, length=b"4000")),
    ("cl-shorter-than-body", post(JSON_OK, length=b"10")),
    ("chunked-garbage-size", chunked(b"zz\r\nabc\r\n0\r\n\r\n")),
    ("chunked-huge-size", chunked(b"FFFFFFFFFFFF\r\nabc")),
    ("chunked-unterminated", chunked(b'5\r\n{"sel')),
    ("chunked-no-crlf", chunked(b"3\r\nabcde\r\n0\r\n\r\n")),
    ("chunked-and-cl", post(b"2\r\n{}\r\n0\r\n\r\n", headers=b"Transfer-Encoding: chunked\r\n")),
    (
        "chunked-over-limit",
        chunked(b"".join(b"1000\r\n" + b"[" * 4096 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"),
    ),
    ("te-unknown", post(JSON_OK, headers=b"Transfer-Encoding: gzip\r\n")),
    # -- headers
    ("header-flood", get(Q + TOK, b"".join(b"X-%d: y\r\n" % i for i in range(200)))),
    ("header-huge", get(Q + TOK, b"X-Big: " + b"y" * 20_000 + b"\r\n")),
    ("header-nul", get(Q + TOK, b"X-A: a\x00b\r\n")),
    ("header-bad-name", get(Q + TOK, b"X A: b\r\n")),
    ("header-no-colon", get(Q + TOK, b"garbage\r\n")),
    ("header-obs-fold", get(Q + TOK, b"X-A: a\r\n b\r\n")),
    ("content-type-nul", post(JSON_OK, b"application/\x00json")),
    # (a huge Content-Type is accepted as such: the report in it is what is refused)
    (
        "content-type-huge",
        post(JSON_OK.replace(SEL, SEL[:-9]), b"application/json; " + b"x" * 8_000),
    ),
    ("expect-continue", post(JSON_OK.replace(SEL, b"xyz"), headers=b"Expect: 100-continue\r\n")),
    # -- heads that never end: gunicorn closes without an answer
    ("nothing", b""),
    ("half-request-line", b"GET /token/?selec"),
    ("head-without-end", get(Q + TOK)[:-2]),
]
#: Requests after which the connection may close without an answer (see the docstring).
MAY_CLOSE = {"nothing", "half-request-line", "head-without-end"}


def exchange(port: int, raw: bytes, timeout: float = 15.0) -> bytes:
    """Send *raw* on a new connection, shut the write side, read the answer to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # answered and closed before all of a huge request was read: see below
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, OSError):
            # gunicorn answered and closed with request bytes unread; the kernel then
            # resets, which may discard the answer. Only an early answer (413) does this.
            if not chunks:
                return b"reset"
    return b"".join(chunks)


def status_of(answer: bytes) -> int | str:
    if answer in (b"", b"reset"):
        return "closed" if answer == b"" else "reset"
    if answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        answer = answer[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert m is not None, answer[:200]
    return int(m.group(1))


def rows(db: Path) -> list[dict[str, Any]]:
    """Every stored row, as pushreport reads them: the report spool applied first."""
    if not db.exists():
        return []
    from ..plugins.sqlite.conftest import spooled

    storage = spooled(db, busy_timeout=10, interval=10)
    try:
        storage.apply_spool()
    finally:
        storage.close()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM registrations")]


def stored_reports(db: Path) -> int:
    """How many reports the database has taken: each 200 adds exactly one."""
    return sum(r["reports"] for r in rows(db))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("http-fuzz"))
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in HOSTILE])
def test_hostile_request_is_refused_and_stores_nothing(
    server: Server, raw: bytes, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    before = stored_reports(server.db)
    answer = exchange(server.port, raw)
    status = status_of(answer)
    TALLY[status] += 1
    if name in MAY_CLOSE:
        assert status == "closed", answer[:300]
    elif status == "reset":
        # Only a request far over the body limit may be reset (after its early 413).
        assert len(raw) > 100_000, name
    else:
        assert isinstance(status, int) and 400 <= status < 500, answer[:300]
        head, _, body = answer.partition(b"\r\n\r\n")
        if b"Server: gunicorn" in head and b"text/plain" in head:
            assert body.endswith(b"\n") and body.count(b"\n") == 1, body  # pushreport's line
    assert stored_reports(server.db) == before


# Byte-level damage to a valid request: the kind of thing a broken proxy, a truncated
# write or a hostile client sends.
_INSERTS = st.sampled_from(
    [
        b"\x00",
        b"\xff",
        b"\xc3",
        b"%",
        b"%zz",
        b"%00",
        b"%C3%28",
        b"\r\n",
        b"\n",
        b" ",
        b"&",
        b"=",
        b"&selector=",
        b"&token_msgs=",
        b"[",
        b"{",
        b'"',
        b"\\",
        b"\\u0000",
        b"\\ud800",
        b"\r\n\r\n",
        b":",
        b"Content-Length: 5\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ]
)


@st.composite
def mangled(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(sorted(VALID.values()))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "truncate"]))
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(i, min(len(data), i + 16)))
        if op == "replace":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(_INSERTS | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:j]
        elif op == "duplicate":
            data[j:j] = data[i:j]
        else:
            del data[i:]
        if not data:
            data = bytearray(b"G")
    return bytes(data)


# Three times the profile's examples: 300 in CI, 15 000 with HYPOTHESIS_PROFILE=long.
@settings(
    max_examples=3 * settings().max_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(raw=mangled())
@example(raw=VALID["spec-get"].replace(b"selector=", b"selector=%zz"))
@example(raw=VALID["spec-json"].replace(b'"selector"', b'"selector": "x", "selector"'))
def test_mangled_valid_reports_are_200_or_refused(server: Server, raw: bytes) -> None:
    before = stored_reports(server.db)
    answer = exchange(server.port, raw)
    status = status_of(answer)
    TALLY[status] += 1
    assert status == "closed" or (
        isinstance(status, int) and (status == 200 or 400 <= status < 500)
    ), answer[:300]
    # A 200 stored exactly one report; anything else stored nothing.
    assert stored_reports(server.db) == before + (status == 200)


def test_nothing_bad_was_stored_and_the_server_still_serves(server: Server) -> None:
    stored = rows(server.db)
    # Whatever the mangled requests got stored is a valid report, nothing else.
    for row in stored:
        assert SELECTOR.fullmatch(row["selector"]), row
        for token in (row["token_calls"], row["token_msgs"]):
            assert token is None or (TOKEN.fullmatch(token) and len(token) >= 8), row
        for app_id in (row["appid_calls"], row["appid_msgs"]):
            assert app_id is None or APP_ID.fullmatch(app_id), row
        for text in (row["username"] or "", row["extra"], row["user_agent"] or ""):
            assert not BAD_TEXT.search(text), row
    before = stored_reports(server.db)
    for raw in VALID.values():
        assert status_of(exchange(server.port, raw)) == 200
        TALLY[200] += 1
    assert stored_reports(server.db) == before + len(VALID)
    out = server.output()
    assert "Traceback" not in out and " ERROR " not in out, out[-3000:]
    # No worker died or was replaced: both still the ones booted at start.
    booted = "Started server process" if ENGINE == "uvicorn" else "Booting worker"
    assert out.count(booted) == 2, out[-3000:]
    assert server.proc.poll() is None
    assert not [k for k in TALLY if isinstance(k, int) and k >= 500], TALLY
    tried = sum(TALLY.values())
    print(
        f"http fuzz: {tried} requests tried; answers {dict(sorted(TALLY.items(), key=str))}; "
        f"{stored_reports(server.db)} reports stored, all from 200s; 0 5xx"
    )
