"""What the HTTP adapters (WSGI and ASGI) answer, decided once for both.

The service knows no server interface: each adapter reads its request (an environ, an
ASGI scope and its messages) into the few values below and sends the :class:`Answer`
back. What is decided here, and so the same byte for byte whichever adapter answers:

- :func:`outcome_answer`: a :class:`~pushreport.Outcome` as a status, headers and a
  one-line body; :func:`text_answer` and :func:`lookup_answer` for the operator
  endpoints;
- :func:`origin_form`, :func:`mounted_target`: which request target a report path sees
  (the raw one, ``%2F`` kept; relative to a mount point);
- :func:`declared_length`, :func:`whole_body`: the bounded body read's rules
  (``[reporter] max_body``: 413; a body cut short: 400);
- :func:`log_access`: the access-log line.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Sequence
from urllib.parse import quote

import attrs

from pushreport_core import (
    AuthenticationRequired,
    InvalidReport,
    MethodNotAllowed,
    RequestTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    shorten,
)

from ._health import OperatorPaths
from ._lookup import LookupAnswer
from ._service import Outcome, Receiver

__all__ = [
    "SAFE_PATH",
    "Answer",
    "access_log",
    "declared_length",
    "log_access",
    "lookup_answer",
    "method_not_allowed",
    "mounted_target",
    "origin_form",
    "outcome_answer",
    "text_answer",
    "whole_body",
]

access_log = logging.getLogger("pushreport.access")

#: Characters a request path keeps unencoded when it is rebuilt from a decoded one.
SAFE_PATH = "/:@!$&'()*+,;=-._~"
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


@attrs.frozen
class Answer:
    """One HTTP answer as an adapter sends it: *body* is what goes on the wire (empty
    for ``HEAD``; ``Content-Length`` still counts the body a GET would get)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    @property
    def status_line(self) -> str:
        """``"404 Not Found"``: the status with its standard reason phrase."""
        return f"{self.status} {phrase(self.status)}"


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_OK = Answer(200, (("Content-Length", "0"),))


def _error_headers(error: Exception | None) -> list[tuple[str, str]]:
    """The headers an error's answer carries (the error knows the values, HTTP their
    names)."""
    if isinstance(error, (ServiceUnavailable, TooManyRequests)):
        return [("Retry-After", str(error.retry_after))]
    if isinstance(error, MethodNotAllowed):
        return [("Allow", ", ".join(error.allowed))]
    if isinstance(error, AuthenticationRequired):
        return [("WWW-Authenticate", c) for c in error.challenges]
    return []


def outcome_answer(outcome: Outcome) -> Answer:
    """A report path's answer: ``200`` with an empty body, or the refusal's status with
    its one-line ``text/plain`` reason (which never echoes request values)."""
    if outcome.error is None:
        return _OK
    status = outcome.status
    data = ((outcome.reason.splitlines() or [phrase(status)])[0] + "\n").encode("utf-8")
    headers = (_TEXT, ("Content-Length", str(len(data))), *_error_headers(outcome.error))
    return Answer(status, headers, data)


def text_answer(
    status: int, text: str, headers: Sequence[tuple[str, str]] = (), *, head: bool = False
) -> Answer:
    """An operator endpoint's plain-text answer, never cached."""
    data = text.encode("utf-8")
    return Answer(
        status,
        (_TEXT, ("Content-Length", str(len(data))), ("Cache-Control", "no-store"), *headers),
        b"" if head else data,
    )


def method_not_allowed(*, head: bool = False) -> Answer:
    """The health and metrics endpoints' answer to anything but GET and HEAD."""
    allowed = ", ".join(OperatorPaths.methods)
    return text_answer(405, "method not allowed\n", [("Allow", allowed)], head=head)


def lookup_answer(answer: LookupAnswer, *, head: bool = False) -> Answer:
    """The lookup endpoint's JSON answer, never cached."""
    data = answer.json().encode("utf-8")
    return Answer(
        answer.status,
        (
            *answer.headers.items(),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("Content-Length", str(len(data))),
        ),
        b"" if head else data,
    )


def origin_form(target: str) -> str:
    """*target* as ``/path?query``: an absolute-form target (``http://host/path?q``)
    keeps its path and query only."""
    if target.startswith("/"):
        return target
    scheme_end = target.find("://")
    if scheme_end == -1:
        return target
    slash = target.find("/", scheme_end + 3)
    return target[slash:] if slash != -1 else "/"


def mounted_target(receiver: Receiver, method: str, target: str, mount: str) -> str | None:
    """The raw *target* a report path sees, or ``None`` when no shape of *receiver*
    claims the request: as sent, or relative to *mount* (a dispatcher's or a portal's
    mount point, decoded as ``SCRIPT_NAME`` and ``root_path`` are), as shapes may be
    written relative to it."""
    path = target.partition("?")[0]
    if receiver.owns(method, path):
        return target
    prefix = quote(mount.encode("latin-1"), safe=SAFE_PATH) if mount else ""
    if prefix and path.startswith(prefix) and receiver.owns(method, path[len(prefix) :]):
        return target[len(prefix) :]
    return None


def declared_length(header: str | None, limit: int) -> int:
    """The body length a ``Content-Length`` *header* declares; ``-1`` when there is none
    (or it is not a number: the server frames the body then).

    :raises RequestTooLarge: it declares more than *limit* bytes.
    """
    if not header:
        return -1
    try:
        n = int(header)
    except ValueError:
        return -1
    if n > limit:
        raise RequestTooLarge(f"body is too large ({n} > {limit} bytes)")
    return n


def whole_body(chunks: Sequence[bytes], declared: int, limit: int) -> bytes:
    """The body read as *chunks* (at most *limit* + 1 bytes are worth reading), checked:

    :raises InvalidReport: fewer bytes came than *declared* (the connection ended early;
        a cut form would still parse, with a token cut short).
    :raises RequestTooLarge: more than *limit* bytes came.
    """
    body = b"".join(chunks)
    if len(body) < declared:
        raise InvalidReport(f"body ended after {len(body)} of {declared} bytes")
    if len(body) > limit:
        raise RequestTooLarge(f"body is too large (> {limit} bytes)")
    return body


def log_access(
    receiver: Receiver,
    *,
    remote_addr: str | None,
    method: str,
    target: str,
    outcome: Outcome,
    started: float,
) -> None:
    """One access-log line for a report path's request (*started*: its
    :func:`time.perf_counter`), credentials masked, the selector shortened; the same
    fields as attributes of the record, for a structured formatter."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "remote_addr": remote_addr or "-",
        "method": method or "-",
        "target": receiver.redact(target, method),
        "status": outcome.status,
        "shape": outcome.shape or "-",
        "selector": shorten(outcome.selector, 12) if outcome.selector else "-",
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }
    access_log.info(
        '%(remote_addr)s "%(method)s %(target)s" %(status)d %(shape)s '
        "%(selector)s %(latency_ms).1fms",
        fields,
        extra=fields,
    )
