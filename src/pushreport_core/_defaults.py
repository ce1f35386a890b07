"""The default shapes: what the receiver accepts with no template configured.

Every shape the specification shows, out of the box:

- ``GET /token/?username=…&selector=…&token_calls=…`` (the spec's query example);
- ``/pushToken/<username>/<selector>/<pushToken>&appid=<pushappid>`` (the path example);
- a form ``POST`` to ``/token/`` (the spec's form example);
- a JSON ``POST`` to ``/token/`` or ``/token/<username>/`` (username from the path when the
  body has none).

Field names are the spec's (``username``, ``selector``, ``token_calls``, ``appid_calls``,
``token_msgs``, ``appid_msgs``) or the raw variable names (``pushToken``,
``pushTokenIncomingCall``, ...), matched case-insensitively. Any other field is kept as an
``extra`` under its lower-cased name.
"""

from __future__ import annotations

import re
from typing import Callable

from ._errors import InvalidReport, MethodNotAllowed, shown_method
from ._fields import (
    DEFAULT_KEYS,
    FieldCollector,
    TargetValue,
    decode_form,
    decode_url,
    pair_spans,
    split_pairs,
)
from ._templates import body_format, json_scalar, load_json_body, media_type
from ._values import Report, Request

__all__ = [
    "DefaultShapes",
    "DEFAULT_SHAPES",
    "TOKEN_PATH",
    "PUSHTOKEN_PATH",
    "on_default_path",
    "parse_default",
    "locate_default",
]

#: ``/token/`` and ``/token/<username>/``: the spec's query example
#: ("https://example.com/token/?username=…") and its JSON example ("POST /token/johndow/").
TOKEN_PATH = re.compile(r"/token(?:/([^/]*)/?)?")
#: The spec's path example: "https://example.com/pushToken/%account[username]%/%selector%/
#: %pushToken%&appid=%pushappid%" (the last segment carries the ``&appid=`` tail).
PUSHTOKEN_PATH = re.compile(r"/pushToken/([^/]*)/([^/]*)/([^/]*?)/?")
_METHODS = ("GET", "HEAD", "POST", "PUT")


def _add(into: FieldCollector, key: str, value: str) -> None:
    lk = key.lower()
    field = DEFAULT_KEYS.get(lk)
    if field is None:
        into.add_extra(lk, value)
    else:
        into.add(field, value)


def _name(key: str, decode: Callable[[str, str], str]) -> str | None:
    """What the parameter named *key* (raw) fills, as :func:`_add` decides; ``None``
    when the name does not decode."""
    try:
        lk = decode(key, "a parameter name").lower()
    except InvalidReport:
        return None
    return DEFAULT_KEYS.get(lk, lk)


def _add_pairs(into: FieldCollector, raw: str, offset: int = 0) -> None:
    spans = into.spans
    if spans is not None:
        # Locating only: the names the loop below gives, where the values are.
        for key, start, end in pair_spans(raw, offset):
            spans.append(TargetValue(start, end, _name(key, decode_form)))
        return
    # split_pairs, decode_form and _add in one loop: this runs for every pair of every
    # query and form report.
    keys = DEFAULT_KEYS
    for item in raw.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        name = decode_form(key, "a parameter name")
        value = decode_form(value, name)
        lk = name.lower()
        field = keys.get(lk)
        if field is None:
            into.add_extra(lk, value)
        else:
            into.add(field, value)


def on_default_path(raw_path: str) -> bool:
    """Whether *raw_path* is one of the default shapes' paths (whatever the method)."""
    return (
        TOKEN_PATH.fullmatch(raw_path) is not None
        or PUSHTOKEN_PATH.fullmatch(raw_path) is not None
    )


class DefaultShapes:
    """Parser for the default shapes (no template configured)."""

    #: Paths the default shapes own, for documentation and ``account-xml``.
    paths = (
        "/token/",
        "/token/<username>/",
        "/pushToken/<username>/<selector>/<pushToken>&appid=<pushappid>",
    )

    def owns(self, method: str, raw_path: str) -> bool:
        m = TOKEN_PATH.fullmatch(raw_path)
        if m is not None:
            # "/token/<username>/" is the JSON POST shape; a portal's own GET page under
            # /token/ (say /token/list) is not a report and passes through.
            return not m.group(1) or method.upper() in ("POST", "PUT")
        return PUSHTOKEN_PATH.fullmatch(raw_path) is not None

    def allowed_methods(self) -> tuple[str, ...]:
        return _METHODS

    def target_values(self, target: str) -> list[TargetValue]:
        """Where the values this parser reads sit in *target*, and what each fills (for
        redaction); whether or not the request parses."""
        return locate_default(target, TOKEN_PATH)

    def parse_request(self, request: Request) -> Report:
        method = request.method.upper()
        if method not in _METHODS:
            raise MethodNotAllowed(
                f"method {shown_method(method)} is not allowed here", allowed=_METHODS
            )
        return parse_default(request, TOKEN_PATH, body_methods=("POST", "PUT"))


def parse_default(
    request: Request,
    token_path: re.Pattern[str],
    *,
    body_methods: tuple[str, ...],
    shape: str = "default",
) -> Report:
    """Read a request of the default shapes: the fields from *token_path* (``/token/`` or
    ``/token/<username>/``; the Account Removal Reporter's ``/removal/`` too) or the
    spec's ``/pushToken/...`` path, the query string, and a form or JSON body for
    *body_methods*. *shape* starts the shape name given to the report (for logs)."""
    method = request.method.upper()
    into = FieldCollector()
    kind, path_username = _read_target(request.path, request.query, token_path, into)
    if method in body_methods and request.body.strip():
        kind = body_format(request.content_type)
        if kind == "json":
            data = load_json_body(request.body)
            if not isinstance(data, dict):
                raise InvalidReport("body must be a JSON object")
            for key, value in data.items():
                scalar = json_scalar(value, key)
                if scalar is not None:
                    _add(into, key, scalar)
        elif kind == "form":
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidReport("body is not valid UTF-8") from None
            _add_pairs(into, text.strip())
        else:
            raise InvalidReport(
                f"Content-Type {media_type(request.content_type)!r} is not a default shape; "
                "configure a template for it"
            )
    elif kind == "token":
        kind = "query"
    if path_username is not None and "username" not in into.fields:
        into.add("username", path_username)
    return into.report(user_agent=request.user_agent, shape=f"{shape}-{kind}")


def _read_target(
    path: str, query: str, token_path: re.Pattern[str], into: FieldCollector
) -> tuple[str, str | None]:
    """Read the fields of the target: the path (*token_path*, or the spec's
    ``/pushToken/...``), then the query. Returns the shape's kind (``token`` or
    ``path``) and the username the path names, if any.

    Locating (``into.spans`` set), it appends where each value sits and what it fills
    instead, and raises nothing: a target that does not parse is located as far as it
    goes.
    """
    spans = into.spans
    path_username: str | None = None
    kind = "token"
    m = token_path.fullmatch(path)
    if m is not None:
        if m.group(1):
            if spans is not None:
                spans.append(TargetValue(*m.span(1), "username"))
            else:
                path_username = decode_url(m.group(1), "username")
    else:
        m = PUSHTOKEN_PATH.fullmatch(path)
        if m is None:
            if spans is None:
                raise InvalidReport("path is not one of the default report paths")
        else:
            kind = "path"
            # ".../%pushToken%&appid=%pushappid%": the app id sits inside the segment.
            token, amp, rest = m.group(3).partition("&")
            if spans is not None:
                start = m.start(3)
                spans.append(TargetValue(*m.span(1), "username"))
                spans.append(TargetValue(*m.span(2), "selector"))
                spans.append(TargetValue(start, start + len(token), "token_msgs"))
                for key, vstart, vend in pair_spans(rest, start + len(token) + len(amp)):
                    spans.append(TargetValue(vstart, vend, _name(key, decode_url)))
            else:
                path_username = decode_url(m.group(1), "username")
                into.add("selector", decode_url(m.group(2), "selector"))
                into.add("token_msgs", decode_url(token, "token_msgs"))
                for key, value in split_pairs(rest):
                    name = decode_url(key, "a parameter name")
                    _add(into, name, decode_url(value, name))
    if query:
        _add_pairs(into, query, len(path) + 1)
    return kind, path_username


def locate_default(target: str, token_path: re.Pattern[str]) -> list[TargetValue]:
    """The values the default shapes (with *token_path*) read from *target*: where
    each sits and what it fills. Never raises."""
    spans: list[TargetValue] = []
    path, _, query = target.partition("?")
    _read_target(path, query, token_path, FieldCollector(spans=spans))
    return spans


DEFAULT_SHAPES = DefaultShapes()
