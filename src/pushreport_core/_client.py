"""A model of the app: how it fills a template in, sends the request, judges the answer
and decides what to do next.

Sans-IO, like h11: it builds :class:`Request` values and the bytes of the HTTP/1.1
request (:func:`to_http_bytes`), judges a response handed to it as values
(:func:`judge_response`), and keeps the reporting state of one account
(:class:`AppModel`). It opens no socket, reads no clock (time is the ``now=``
argument) and never sleeps.

The app substitutes every ``%variable%`` of the Account XML values: escaped for URLs and
form bodies, JSON-escaped in JSON bodies, as is elsewhere. A value the app does not know
yet is substituted as an empty string (what is seen in the field).

The app's rules, as a transition table (:data:`TRANSITIONS`):

- "The token will be reported every time the app is newly started": ``START``.
- "On iOS, there is sometimes a delay getting the pushTokenOther ... the web service
  should be called a few moments later when the app does have the pushTokenOther":
  ``TOKEN_ARRIVED`` after a successful report sends another one.
- "Any responses which have other response code are silently ignored, but the request
  is considered as failed and the app will try to make the request later again": a
  failure (``RESPONSE_FAILED``) backs off, ``RETRY_DUE`` sends again.
- "the body must match the content type": :func:`judge_response` decides which of
  ``RESPONSE_OK`` and ``RESPONSE_FAILED`` an answer is.
"""

from __future__ import annotations

import enum
import json
import re
import zlib
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote
from xml.parsers import expat
from xml.sax.saxutils import escape as xml_escape

import attrs

from . import _grammar as g
from ._errors import AppModelError
from ._templates import BODY_METHODS, Template, body_format, media_type, split_json_template
from ._values import Request

__all__ = [
    "render_request",
    "substitute",
    "DEFAULT_USER_AGENT",
    "DEFAULT_BACKOFF",
    "app_variables",
    "to_http_bytes",
    "judge_response",
    "response_problem",
    "AppState",
    "AppEvent",
    "TRANSITIONS",
    "transition",
    "AppModel",
    "Sent",
]

DEFAULT_USER_AGENT = "CloudSoftphone/1.5.6"

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*)([^#]*)")


def _url_escape(value: str) -> str:
    return quote(value, safe="")


def _json_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def substitute(text: str, variables: Mapping[str, str | None], *, kind: str) -> str:
    """Fill *text*'s placeholders from *variables*, escaped for *kind*.

    *kind* is ``"url"``, ``"form"``, ``"json"``, ``"xml"`` or ``"text"``. In JSON a
    placeholder outside a string is replaced by a JSON value (a string).
    """
    if kind == "json":
        return _substitute_json(text, variables)
    escapes: dict[str, Callable[[str], str]] = {
        "url": _url_escape,
        "form": _url_escape,
        "xml": xml_escape,
    }
    escape = escapes.get(kind, str)

    def sub(m: re.Match[str]) -> str:
        value = variables.get(m.group(1))
        return "" if value is None else escape(value)

    return g.PLACEHOLDER.sub(sub, text)


def _substitute_json(text: str, variables: Mapping[str, str | None]) -> str:
    out: list[str] = []
    for _, piece, in_string in split_json_template(text):
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = variables.get(piece.group(1))
        value = "" if value is None else value
        out.append(_json_escape(value) if in_string else json.dumps(value))
    return "".join(out)


def render_request(
    template: Template,
    variables: Mapping[str, str | None],
    *,
    user_agent: str = DEFAULT_USER_AGENT,
) -> Request:
    """The request the app sends for *template* with these variable values.

    *variables* maps variable names (``selector``, ``account[username]``,
    ``pushTokenOther``, ...) to values; ``None`` or a missing name is "not known".
    """
    m = _URL.match(template.url)
    assert m is not None, "a parsed Template always has an absolute URL"
    target = substitute(m.group(2), variables, kind="url") or "/"
    body = b""
    content_type = None
    if template.method in BODY_METHODS and template.post_data.strip():
        kind = body_format(template.content_type)
        body = substitute(template.post_data, variables, kind=kind).encode("utf-8")
        content_type = template.request_content_type
    return Request(
        method=template.method,
        target=target,
        body=body,
        content_type=content_type,
        user_agent=user_agent,
    )


# -- the variables the app fills in ------------------------------------------------------


def app_variables(
    *,
    selector: str | None,
    username: str | None = None,
    password: str | None = None,
    token_calls: str | None = None,
    appid_calls: str | None = None,
    token_msgs: str | None = None,
    appid_msgs: str | None = None,
    extra: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """The template variables the app substitutes, aliases included, from report-field
    values (``None``: not known yet). *extra* maps other variable names (``installid``,
    ``account[displayName]``) to their values."""
    variables: dict[str, str | None] = {
        "selector": selector,
        "account[username]": username,
        "account[password]": password,
        "pushTokenIncomingCall": token_calls,
        "pushappid_incoming_call": appid_calls,
        # "pushTokenOther ... It is alias to pushToken."
        "pushTokenOther": token_msgs,
        "pushToken": token_msgs,
        # "pushappid_other ... It is the alias for pushappid"
        "pushappid_other": appid_msgs,
        "pushappid": appid_msgs,
    }
    if extra:
        variables.update(extra)
    return variables


# -- the bytes on the wire -----------------------------------------------------------------

# Everything printable in ASCII but the space stays as is ("%" too: the target is
# already percent-encoded); anything else (a literal "é" in a template) is encoded.
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


def _header_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain a line break: {value!r}")
    return value


def to_http_bytes(request: Request, host: str) -> bytes:
    """The HTTP/1.1 request the app sends for *request* to *host* (``host[:port]``).

    Headers in the order of the spec's examples: ``Host``, ``Connection: close``,
    ``Cache-Control: max-age=0``, ``User-Agent``, then ``Content-Type`` and
    ``Content-Length`` when there is a body (or the method carries one).
    """
    target = quote(request.target, safe=_TARGET_SAFE)
    lines = [
        f"{request.method} {target} HTTP/1.1",
        f"Host: {_header_value('host', host)}",
        "Connection: close",
        "Cache-Control: max-age=0",
    ]
    if request.user_agent:
        lines.append(f"User-Agent: {_header_value('user_agent', request.user_agent)}")
    if request.content_type is not None:
        lines.append(f"Content-Type: {_header_value('content_type', request.content_type)}")
    if request.body or request.method.upper() in BODY_METHODS:
        lines.append(f"Content-Length: {len(request.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + request.body


# -- judging a response as the app does ------------------------------------------------------


def _header(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if key.lower() == name:
            return str(value)
    return None


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _decoded(body: bytes, encoding: str | None) -> bytes:
    coding = (encoding or "identity").strip().lower()
    if coding == "identity" or not body:
        return body
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"Content-Encoding {coding} cannot be decoded")


def _refuse_entities(*args: Any) -> None:
    raise ValueError("the body declares XML entities")


def response_problem(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    method: str | None = None,
) -> str | None:
    """Why the app counts this response as failed; ``None`` when it is a success.

    "The response will be considered successful if the HTTP response code is 2xx" and
    "the body must match the content type. e.g. if the response has content type of
    application/json, it must have a body of at least {}": a JSON type needs a body that
    parses as JSON (an empty one does not), an XML type well-formed XML, a ``text/*``
    type text that decodes in its charset (UTF-8 when none is given). With no
    ``Content-Type`` any body is fine. A ``HEAD`` answer has no body to match.
    """
    if not 200 <= status <= 299:
        return f"status {status} is not 2xx"
    content_type = _header(headers, "content-type")
    if content_type is None or (method or "").upper() == "HEAD":
        return None
    mt = media_type(content_type)
    is_json = mt.endswith("/json") or mt.endswith("+json")
    is_xml = mt in ("application/xml", "text/xml") or mt.endswith("+xml")
    is_text = mt.startswith("text/")
    if not (is_json or is_xml or is_text):
        return None
    try:
        data = _decoded(body, _header(headers, "content-encoding"))
    except (ValueError, zlib.error) as e:
        return f"Content-Type {mt}: the body cannot be decoded ({e})"
    charset = _charset(content_type)
    if is_json:
        if not data.strip():
            return f"Content-Type {mt} needs a JSON body (at least {{}}); the body is empty"
        try:
            json.loads(data.decode(charset) if charset else data)
        except LookupError:
            return f"Content-Type {mt}: unknown charset {charset!r}"
        except ValueError as e:
            return f"Content-Type {mt} needs a JSON body; the body is not JSON ({e})"
        return None
    if is_xml:
        if not data.strip():
            return f"Content-Type {mt} needs an XML body; the body is empty"
        try:
            parser = expat.ParserCreate(charset)
            parser.EntityDeclHandler = _refuse_entities
            parser.Parse(data, True)
        except (expat.ExpatError, ValueError, LookupError) as e:
            return f"Content-Type {mt} needs well-formed XML; the body is not ({e})"
        return None
    try:
        data.decode(charset or "utf-8")
    except LookupError:
        return f"Content-Type {mt}: unknown charset {charset!r}"
    except UnicodeDecodeError:
        return f"Content-Type {mt}: the body is not valid {charset or 'utf-8'}"
    return None


def judge_response(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    method: str | None = None,
) -> bool:
    """Whether the app counts this response as a success (see :func:`response_problem`)."""
    return response_problem(status, headers, body, method=method) is None


# -- the app's reporting rules: a transition table -------------------------------------------


class AppState(enum.Enum):
    """Where one account of the app stands in reporting its tokens."""

    #: The app is not running.
    IDLE = "IDLE"
    #: A report is in flight.
    SENDING = "SENDING"
    #: A report is in flight and a newer token arrived meanwhile: once it succeeds,
    #: the app reports again (the iOS delay).
    SENDING_STALE = "SENDING_STALE"
    #: The last report failed; the app tries again when the retry is due.
    BACKOFF = "BACKOFF"
    #: The last report succeeded and carried everything the app knows.
    DONE = "DONE"


class AppEvent(enum.Enum):
    """What can happen to the app. A response is judged first (:func:`judge_response`)
    and fed as ``RESPONSE_OK`` or ``RESPONSE_FAILED``."""

    #: "The token will be reported every time the app is newly started."
    START = "START"
    #: A token became known or changed: the late iOS ``pushTokenOther``.
    TOKEN_ARRIVED = "TOKEN_ARRIVED"
    #: The answer to the report in flight was a success.
    RESPONSE_OK = "RESPONSE_OK"
    #: The report in flight failed: a non-2xx answer, a body not matching its
    #: Content-Type, or no answer at all.
    RESPONSE_FAILED = "RESPONSE_FAILED"
    #: The back-off timer fired.
    RETRY_DUE = "RETRY_DUE"
    #: The app was closed or killed; a report in flight is abandoned.
    STOP = "STOP"


_S, _E = AppState, AppEvent

#: state → event → next state. A report is sent on every transition into ``SENDING``;
#: a pair that is not here cannot happen (:func:`transition` raises).
TRANSITIONS: Mapping[AppState, Mapping[AppEvent, AppState]] = {
    _S.IDLE: {_E.START: _S.SENDING},
    _S.SENDING: {
        _E.TOKEN_ARRIVED: _S.SENDING_STALE,
        _E.RESPONSE_OK: _S.DONE,
        _E.RESPONSE_FAILED: _S.BACKOFF,
        _E.STOP: _S.IDLE,
    },
    _S.SENDING_STALE: {
        _E.TOKEN_ARRIVED: _S.SENDING_STALE,
        _E.RESPONSE_OK: _S.SENDING,
        _E.RESPONSE_FAILED: _S.BACKOFF,
        _E.STOP: _S.IDLE,
    },
    # The retry is rendered when it is due, so it carries a token that arrived meanwhile.
    _S.BACKOFF: {_E.TOKEN_ARRIVED: _S.BACKOFF, _E.RETRY_DUE: _S.SENDING, _E.STOP: _S.IDLE},
    _S.DONE: {_E.TOKEN_ARRIVED: _S.SENDING, _E.STOP: _S.IDLE},
}

#: Seconds to wait before the n-th consecutive retry; the last one repeats.
DEFAULT_BACKOFF: tuple[float, ...] = (5, 10, 30, 60, 120, 300)


def transition(state: AppState, event: AppEvent) -> AppState:
    """The state *event* leads to from *state*; :class:`AppModelError` if it cannot
    happen there."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise AppModelError(
            f"event {event.name} cannot happen in state {state.name}", state=state, event=event
        ) from None


def _check_backoff(instance: Any, attribute: Any, value: tuple[float, ...]) -> None:
    if not value or any(not (d > 0) for d in value):
        raise ValueError(
            f"backoff must be a non-empty sequence of positive seconds, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class Sent:
    """A report the app sent: the request and the variables it was rendered with."""

    request: Request
    variables: Mapping[str, str | None]
    at: datetime


_TOKEN_ALIASES = {
    "pushTokenOther": ("pushTokenOther", "pushToken"),
    "pushToken": ("pushTokenOther", "pushToken"),
}


@attrs.define
class AppModel:
    """One account of the app, reporting its tokens to *template*'s receiver.

    Feed it what happens (:meth:`start`, :meth:`token_arrived`, :meth:`receive` or
    :meth:`response`, :meth:`retry_due`, :meth:`stop`); each returns the
    :class:`Request` the app sends next, or ``None``. An event that cannot happen in
    the current :attr:`state` raises :class:`~pushreport_core.AppModelError` before
    anything changes.

    *variables* are the values the app knows now (see :func:`app_variables`); leave
    ``pushTokenOther`` out to model the iOS delay, and deliver it later with
    :meth:`token_arrived`.
    """

    template: Template
    variables: dict[str, str | None] = attrs.field(factory=dict, converter=dict)
    backoff: tuple[float, ...] = attrs.field(
        default=DEFAULT_BACKOFF, converter=tuple, validator=_check_backoff
    )
    user_agent: str = DEFAULT_USER_AGENT
    #: The Account Removal Reporter's template (``accountRemovalReporter*``), if the
    #: Account XML configures one: :meth:`log_out` renders it.
    removal: Template | None = None
    state: AppState = attrs.field(default=AppState.IDLE, init=False)
    #: Consecutive failed reports since the last success or start.
    failures: int = attrs.field(default=0, init=False)
    #: When the next retry is due (in ``BACKOFF``).
    retry_at: datetime | None = attrs.field(default=None, init=False)
    #: The report in flight (in ``SENDING`` and ``SENDING_STALE``).
    in_flight: Sent | None = attrs.field(default=None, init=False)

    def retry_delay(self, failures: int) -> float:
        """Seconds before the retry after *failures* consecutive failures (>= 1)."""
        return float(self.backoff[min(max(failures, 1), len(self.backoff)) - 1])

    def feed(
        self,
        event: AppEvent,
        *,
        now: datetime,
        token: str | None = None,
        variable: str = "pushTokenOther",
    ) -> Request | None:
        """Take *event* at *now*; return the request the app sends, if any.

        ``TOKEN_ARRIVED`` needs *token*, the new value of *variable*.
        """
        new = transition(self.state, event)
        if event is AppEvent.TOKEN_ARRIVED and not token:
            raise ValueError("TOKEN_ARRIVED needs the token that arrived")
        if event is AppEvent.RETRY_DUE and self.retry_at is not None and now < self.retry_at:
            raise AppModelError(
                f"event RETRY_DUE cannot happen in state {self.state.name} "
                f"before the retry is due ({self.retry_at.isoformat()})",
                state=self.state,
                event=event,
            )
        self.state = new
        if event is AppEvent.START:
            self.failures, self.retry_at = 0, None
        elif event is AppEvent.TOKEN_ARRIVED:
            for name in _TOKEN_ALIASES.get(variable, (variable,)):
                self.variables[name] = token
        elif event is AppEvent.RESPONSE_OK:
            self.failures, self.in_flight = 0, None
        elif event is AppEvent.RESPONSE_FAILED:
            self.failures += 1
            self.in_flight = None
            self.retry_at = now + timedelta(seconds=self.retry_delay(self.failures))
        elif event is AppEvent.RETRY_DUE:
            self.retry_at = None
        elif event is AppEvent.STOP:
            self.in_flight, self.retry_at = None, None
        if new is AppState.SENDING:
            request = render_request(self.template, self.variables, user_agent=self.user_agent)
            self.in_flight = Sent(request=request, variables=dict(self.variables), at=now)
            return request
        return None

    def start(self, *, now: datetime, token_delayed: bool = False) -> Request:
        """The app is newly started: it reports.

        With *token_delayed* (iOS), ``pushTokenOther`` is not known yet at this start:
        the report carries none, and :meth:`token_arrived` brings it later.
        """
        transition(self.state, AppEvent.START)  # raises before anything changes
        if token_delayed:
            for name in _TOKEN_ALIASES["pushTokenOther"]:
                self.variables[name] = None
        request = self.feed(AppEvent.START, now=now)
        assert request is not None
        return request

    def token_arrived(
        self, token: str, *, now: datetime, variable: str = "pushTokenOther"
    ) -> Request | None:
        """A token arrived (or changed); a report follows unless one is pending."""
        return self.feed(AppEvent.TOKEN_ARRIVED, now=now, token=token, variable=variable)

    def response(self, ok: bool, *, now: datetime) -> Request | None:
        """The report in flight succeeded (*ok*) or failed; returns the next report
        when a newer token is waiting."""
        return self.feed(AppEvent.RESPONSE_OK if ok else AppEvent.RESPONSE_FAILED, now=now)

    def receive(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
        *,
        now: datetime,
    ) -> Request | None:
        """Judge the answer to the report in flight as the app does, then
        :meth:`response`."""
        method = self.in_flight.request.method if self.in_flight is not None else None
        return self.response(judge_response(status, headers, body, method=method), now=now)

    def retry_due(self, *, now: datetime) -> Request:
        """The back-off timer fired (not before :attr:`retry_at`): the app reports."""
        request = self.feed(AppEvent.RETRY_DUE, now=now)
        assert request is not None
        return request

    def stop(self, *, now: datetime) -> None:
        """The app was closed or killed."""
        self.feed(AppEvent.STOP, now=now)

    def log_out(self, *, now: datetime) -> Request | None:
        """The user logged out or removed the account.

        The app stops reporting for it (a report in flight or a pending retry is
        abandoned, as on :meth:`stop`) and calls the Account Removal Reporter with the
        variables it knows now; returns that request, or ``None`` when :attr:`removal`
        is not configured. *Unconfirmed*: whether the app retries a failed removal; the
        model sends it once, and a later :meth:`start` (logging in again) reports anew.
        """
        if self.state is not AppState.IDLE:
            self.feed(AppEvent.STOP, now=now)
        if self.removal is None:
            return None
        return render_request(self.removal, self.variables, user_agent=self.user_agent)
