"""Report fields: which variable fills which field, and how each value is decoded and
validated. Shared by the configured templates and the default shapes."""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import unquote, unquote_to_bytes

from . import _grammar as g
from ._errors import InvalidReport
from ._values import REPORTED_FIELDS, Report, Secret

__all__ = [
    "VARIABLE_FIELDS",
    "PASSWORD_VARIABLE",
    "DEFAULT_KEYS",
    "REPORT_FIELDS",
    "FieldCollector",
    "TargetValue",
    "LITERAL",
    "variable_name",
    "pair_spans",
    "decode_url",
    "decode_form",
    "split_pairs",
]

#: Template variables that fill a canonical field. Every other variable is an ``extra``.
VARIABLE_FIELDS: Mapping[str, str] = {
    "selector": "selector",
    "account[username]": "username",
    "pushTokenIncomingCall": "token_calls",
    "pushappid_incoming_call": "appid_calls",
    # "pushTokenOther ... It is alias to pushToken."
    "pushTokenOther": "token_msgs",
    "pushToken": "token_msgs",
    # "pushappid_other ... It is the alias for pushappid"
    "pushappid_other": "appid_msgs",
    "pushappid": "appid_msgs",
}

#: The canonical report fields: the stored fields a template variable fills, in the
#: order a registration stores them.
REPORT_FIELDS = tuple(f for f in REPORTED_FIELDS if f in VARIABLE_FIELDS.values())

#: The variable that carries the account password: handed to authentication only.
PASSWORD_VARIABLE = "account[password]"
PASSWORD = "password"

#: What each template variable fills: a canonical field, or ``password``; any other
#: variable is an extra field under its own name (:func:`variable_name`).
_VARIABLE_NAMES: Mapping[str, str] = {**VARIABLE_FIELDS, PASSWORD_VARIABLE: PASSWORD}

#: The name of a template's literal query value (``key=s3cret`` written into the URL):
#: a shared secret, as far as logs are concerned.
LITERAL = "(literal)"


def variable_name(variable: str) -> str:
    """The field template variable *variable* fills (``pushTokenOther`` →
    ``token_msgs``, ``account[password]`` → ``password``), or its own name for an extra."""
    return _VARIABLE_NAMES.get(variable, variable)


#: Field names accepted by the default shapes, lower-cased: the spec's own names and the
#: raw variable names. Matching is case-insensitive ("appId_calls" and "appid_calls").
DEFAULT_KEYS: Mapping[str, str] = {
    **{k: k for k in REPORT_FIELDS},
    **{k.lower(): v for k, v in VARIABLE_FIELDS.items()},
    # The spec's path example: ".../%pushToken%&appid=%pushappid%".
    "appid": "appid_msgs",
    "password": PASSWORD,
    PASSWORD_VARIABLE: PASSWORD,
}


def _unquote(raw: str, name: str) -> str:
    """``unquote(raw, errors="strict")`` at half the cost, on the hot path.

    Decoding all the bytes at once accepts exactly what decoding each ASCII run does: a
    raw non-ASCII character is a whole UTF-8 sequence, so no escape can complete or break
    one across it.
    """
    try:
        try:
            return unquote_to_bytes(raw).decode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the raw text: unquote keeps it
            return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidReport(f"{name} is not valid UTF-8 once percent-decoded") from None


def decode_url(raw: str, name: str) -> str:
    """Percent-decode a value from a path segment (``+`` stays a plus)."""
    if "%" not in raw:
        return raw
    return _unquote(raw, name)


def decode_form(raw: str, name: str) -> str:
    """Decode a value from a query string or form body (``+`` is a space)."""
    if "+" in raw:
        raw = raw.replace("+", " ")
    if "%" not in raw:
        return raw
    return _unquote(raw, name)


class TargetValue(NamedTuple):
    """A value a parser reads from a request target, as the parser names it: what
    redaction masks or shortens (:func:`pushreport_core.redact_target`)."""

    #: The raw (still percent-encoded) value is ``target[start:end]``.
    start: int
    end: int
    #: What the parser fills with it: a report field (``password``, ``token_msgs``...),
    #: an extra field's name (``pushsecret``, ``account[pushSecret]``), :data:`LITERAL`,
    #: or ``None`` when the parameter's name does not decode.
    name: str | None


def pair_spans(raw: str, offset: int = 0) -> Iterator[tuple[str, int, int]]:
    """``(raw key, start, end)`` of each value of ``a=1&b=2``, split as
    :func:`split_pairs` does; positions count from *offset* (where *raw* starts in the
    target)."""
    pos = offset
    for item in raw.split("&"):
        start = pos
        pos += len(item) + 1
        if item:
            key, _, value = item.partition("=")
            end = start + len(item)
            yield key, end - len(value), end


def split_pairs(raw: str) -> list[tuple[str, str]]:
    """Split ``a=1&b=2`` into raw (still encoded) pairs; empty items are skipped."""
    pairs = []
    for item in raw.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((key, value))
    return pairs


class FieldCollector:
    """Collects the values of one request, refusing conflicts, then builds the Report.

    A value may arrive more than once (a variable used twice in a template, an alias and
    its original, the query and the body): the same value is fine, two different known
    values for one field are refused.
    """

    __slots__ = ("fields", "extra", "password", "spans")

    def __init__(self, *, spans: list[TargetValue] | None = None) -> None:
        self.fields: dict[str, str] = {}
        self.extra: dict[str, str] = {}
        self.password: str | None = None
        #: Given a list, the parsers' target readers only locate: they append a
        #: :class:`TargetValue` for each value they would read from the target, and
        #: neither decode nor check nor add anything (so they never raise).
        self.spans = spans

    def add(self, field: str, value: str) -> None:
        if g.is_unknown(value):
            return
        if field == PASSWORD:
            if self.password is not None and self.password != value:
                raise InvalidReport("conflicting values for password")
            self.password = value
            return
        if (field == "token_calls" or field == "token_msgs") and " " in value:
            # A "+" that a form decoder turned into a space is restored: tokens are
            # base64 and never contain a space.
            value = value.replace(" ", "+")
        old = self.fields.get(field)
        if old is not None and old != value:
            raise InvalidReport(f"conflicting values for {field}")
        self.fields[field] = value

    def add_extra(self, name: str, value: str) -> None:
        if g.is_unknown(value):
            return
        old = self.extra.get(name)
        if old is not None and old != value:
            raise InvalidReport(f"conflicting values for {name}")
        self.extra[name] = value

    def add_variable(self, variable: str, value: str) -> None:
        """Add the value of template variable *variable* (e.g. ``pushTokenOther``)."""
        field = _VARIABLE_NAMES.get(variable)
        if field is not None:
            self.add(field, value)
        else:
            self.add_extra(variable, value)

    def report(self, *, user_agent: str | None, shape: str) -> Report:
        f = self.fields
        selector = f.get("selector")
        if selector is None:
            raise InvalidReport("selector is missing")
        _check(
            selector, "selector", g.SELECTOR, g.MAX_SELECTOR, "40 hex digits, ':' and a hex suffix"
        )
        username = f.get("username")
        if username is not None:
            _check_text(username, "username", g.MAX_USERNAME)
        for name in ("token_calls", "token_msgs"):
            v = f.get(name)
            if v is not None:
                if len(v) < g.MIN_TOKEN:
                    raise InvalidReport(
                        f"{name} is too short ({len(v)} < {g.MIN_TOKEN} characters)"
                    )
                _check(v, name, g.TOKEN, g.MAX_TOKEN, "a base64 token")
        for name in ("appid_calls", "appid_msgs"):
            v = f.get(name)
            if v is not None:
                _check(v, name, g.APP_ID, g.MAX_APP_ID, "a reverse-DNS app id")
        extra = self.extra
        if extra:
            if len(extra) > g.MAX_EXTRA_FIELDS:
                raise InvalidReport(f"too many extra fields ({len(extra)} > {g.MAX_EXTRA_FIELDS})")
            for name, value in extra.items():
                if len(name) > g.MAX_EXTRA_NAME or g.BAD_TEXT.search(name):
                    raise InvalidReport("an extra field has an invalid name")
                _check_text(value, name, g.MAX_EXTRA_VALUE)
        if self.password is not None and g.SURROGATE.search(self.password):
            raise InvalidReport("password contains a lone surrogate")
        if user_agent is not None:
            # Stored and logged: no control characters, bounded length.
            user_agent = g.CONTROL.sub("", user_agent)[:256] or None
        known: dict[str, Any] = {name: f.get(name) for name in REPORT_FIELDS}
        return Report(
            **known,
            extra=extra,
            user_agent=user_agent,
            password=None if self.password is None else Secret(self.password),
            shape=shape,
        )


def _check(value: str, name: str, pattern: re.Pattern[str], limit: int, expected: str) -> None:
    if len(value) > limit:
        raise InvalidReport(f"{name} is too long ({len(value)} > {limit} characters)")
    if pattern.fullmatch(value) is None:
        raise InvalidReport(f"{name} is not valid: expected {expected}")


def _check_text(value: str, name: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidReport(f"{name} is too long ({len(value)} > {limit} characters)")
    if g.BAD_TEXT.search(value):
        if g.CONTROL.search(value):
            raise InvalidReport(f"{name} contains a control character")
        raise InvalidReport(f"{name} contains a lone surrogate")


def known_variables() -> Iterable[str]:
    yield from VARIABLE_FIELDS
    yield PASSWORD_VARIABLE
