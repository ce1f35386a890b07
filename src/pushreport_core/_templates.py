"""Account XML templates: compile the deployer's ``pushTokenReporterUrl``,
``pushTokenReporterPostData``, ``pushTokenReporterContentType`` and
``pushTokenReporterMethod`` into a parser for exactly the request the app will send.

The template is never percent-decoded itself: ``%account[username]%`` is a placeholder, not
an escape. Literal text in the template must match the request (a fixed path segment, a
constant query value such as a shared secret, the text around values in a body); a
literal character matches either as sent or percent-encoded, so the match does not
depend on how eagerly a client encodes.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote_plus

import attrs

from . import _grammar as g
from ._errors import ConfigurationError, InvalidReport, MethodNotAllowed, shown_method
from ._fields import (
    LITERAL,
    PASSWORD_VARIABLE,
    VARIABLE_FIELDS,
    FieldCollector,
    TargetValue,
    decode_form,
    decode_url,
    pair_spans,
    split_pairs,
    variable_name,
)
from ._values import Report, Request

__all__ = [
    "Template",
    "xml_unescape",
    "media_type",
    "request_content_type",
    "body_format",
    "json_scalar",
    "FORM",
    "METHODS",
    "BODY_METHODS",
    "TOKEN_VARIABLES",
]

#: "<prefix>Method — GET, POST, PUT, HEAD or DELETE."
METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE")
#: "<prefix>PostData — the body; ignored for GET." (and for HEAD, which has none)
BODY_METHODS = frozenset({"POST", "PUT", "DELETE"})

FORM = "application/x-www-form-urlencoded"

_ENTITY = re.compile(r"&(amp|lt|gt|quot|apos|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)(?:#.*)?\Z", re.S)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Variables that carry push tokens: a Push Token Reporter template carries at least one
#: (what else would it report?).
TOKEN_VARIABLES = ("pushToken", "pushTokenOther", "pushTokenIncomingCall")
_TOKEN_VARIABLES = frozenset(TOKEN_VARIABLES)

_KNOWN = (*VARIABLE_FIELDS, PASSWORD_VARIABLE)
_KNOWN_LOWER = {v.lower(): v for v in _KNOWN}
#: How alike an unknown variable's name must be to a known one to be taken for its typo
#: (difflib's ratio): %pushTokn% is 0.94 from %pushToken%, %installid% at most 0.44 from
#: any. Below it, the variable is one of the app's other parameters, kept as an extra.
_TYPO_CUTOFF = 0.8


def xml_unescape(text: str) -> str:
    """Undo the XML escaping of a value pasted from Account XML (``&amp;`` → ``&``).

    Only well-formed entities are touched: a bare ``&`` (as in ``a=1&b=2``) stays.
    """
    if "&" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name[0] == "#":
            code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
            return chr(code) if 0 < code <= 0x10FFFF else m.group(0)
        return _ENTITIES[name]

    return _ENTITY.sub(sub, text)


def media_type(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` → ``"application/json"``."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def request_content_type(content_type: str | None) -> str:
    """The Content-Type of a request body: "pushTokenReporterContentType — Specifies the
    value of Content-Type header to be sent in the request. If not specified, the app
    will default to application/x-www-form-urlencoded"."""
    return content_type if content_type and media_type(content_type) else FORM


def body_format(content_type: str | None) -> str:
    """How a request body of *content_type* is written and read: ``"form"``,
    ``"json"``, ``"xml"`` or ``"text"`` (no Content-Type: a form)."""
    mt = media_type(request_content_type(content_type))
    if mt == FORM:
        return "form"
    if mt.endswith("json"):
        return "json"
    if "xml" in mt:
        return "xml"
    return "text"


def _percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def _hex_insensitive(escape: str) -> str:
    # "%2F" must also match "%2f".
    out = []
    for ch in escape:
        if ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _url_literal(text: str) -> str:
    """A regex that matches *text* as sent, or with any character percent-encoded."""
    out = []
    for ch in text:
        if ch in _UNRESERVED:
            out.append(re.escape(ch))  # "." is unreserved, and a regex wildcard
        elif ch == " ":
            out.append(r"(?: |%20|\+)")
        else:
            out.append(f"(?:{re.escape(ch)}|{_hex_insensitive(_percent(ch))})")
    return "".join(out)


def _path_literal(text: str) -> str:
    """Like :func:`_url_literal`, but a ``/`` matches only ``/``: in a path, ``%2F`` is
    data inside a segment (a token's "/"), never a separator."""
    return "/".join(_url_literal(part) for part in text.split("/"))


def _plain_literal(text: str) -> str:
    return re.escape(text)


@attrs.frozen
class _Spot:
    """Where a text came from, for error messages that point at the spot."""

    key: str
    text: str
    offset: int = 0

    def error(self, msg: str, position: int) -> ConfigurationError:
        return ConfigurationError(
            msg, key=self.key, position=self.offset + position, text=self.text
        )


def _placeholders(text: str) -> Iterator[re.Match[str]]:
    return g.PLACEHOLDER.finditer(text)


def _check_variable(name: str, spot: _Spot, position: int) -> None:
    """Refuse a variable that is a known one misspelt: the app would send it
    unsubstituted, and its value (a token, the selector) would never be stored.

    "Parameter templates ... can use any variables from Global parameters and Account
    parameters scopes": a name far from every known one is such a parameter (an extra),
    and ``%account[…]%`` names are the account's own, all free.
    """
    if name in VARIABLE_FIELDS or name == PASSWORD_VARIABLE or name.startswith("account["):
        return
    # The app substitutes variables by their exact name: a wrong case is a typo too.
    known = _KNOWN_LOWER.get(name.lower())
    if known is None:
        close = difflib.get_close_matches(name, _KNOWN, n=1, cutoff=_TYPO_CUTOFF)
        known = close[0] if close else None
    if known is not None:
        raise spot.error(f"unknown variable %{name}%: did you mean %{known}%?", position)


def _compile_text(
    text: str, spot: _Spot, literal: Callable[[str], str], capture: str
) -> tuple[str, tuple[str, ...]]:
    """Regex source (unanchored) for *text*, and its variables in group order.

    A value ends at the first occurrence of the literal text that follows it: each value
    but the last is an atomic group with that text, so a hostile request cannot make the
    captures backtrack against each other (time polynomial in the request's length). The
    split is the one lazy backtracking found anyway: a capture takes any text (within one
    path segment, in a path), so ending earlier never makes the rest fail to match.
    """
    parts: list[str] = []
    variables: list[str] = []
    pos = 0
    for m in _placeholders(text):
        if variables and m.start() == pos:
            raise spot.error(
                f"%{variables[-1]}% and %{m.group(1)}% have no literal text between them, "
                "so the request cannot be split unambiguously",
                m.start(),
            )
        _check_variable(m.group(1), spot, m.start())
        lit = literal(text[pos : m.start()])
        parts.append(f"(?>{capture}{lit})" if variables else lit)
        variables.append(m.group(1))
        pos = m.end()
    if variables:
        parts.append(capture)
    parts.append(literal(text[pos:]))
    return "".join(parts), tuple(variables)


@attrs.frozen
class _Pattern:
    """A compiled piece of text with placeholders: a path, a query value, a body."""

    regex: re.Pattern[str]
    variables: tuple[str, ...]

    @classmethod
    def compile(
        cls, text: str, spot: _Spot, literal: Callable[[str], str], capture: str, flags: int = 0
    ) -> _Pattern:
        source, variables = _compile_text(text, spot, literal, capture)
        return cls(re.compile(source, flags), variables)


@attrs.frozen
class _Pair:
    """``key=value-pattern`` of a query string or form body."""

    key: str
    lower: str
    pattern: _Pattern
    constant: bool
    #: The variable when the value is exactly ``%variable%`` (the usual case): the whole
    #: value is captured, no regex needed.
    whole: str | None = None


def _compile_pairs(text: str, spot: _Spot) -> tuple[_Pair, ...]:
    pairs: list[_Pair] = []
    seen: set[str] = set()
    offset = 0
    for item in text.split("&"):
        here = offset
        offset += len(item) + 1
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        m = g.PLACEHOLDER.search(key)
        if m is not None:
            raise spot.error("a variable in a parameter name is not supported", here + m.start())
        # Compared with the request's names decoded the same way ("+" is a space, "%5F"
        # an underscore) and stripped (a multi-line form template puts "\n" before them).
        lower = unquote_plus(key).strip().lower()
        if lower in seen:
            raise spot.error(f"parameter {key!r} appears twice", here)
        seen.add(lower)
        pattern = _Pattern.compile(
            value,
            _Spot(spot.key, spot.text, spot.offset + here + len(key) + len(eq)),
            _url_literal,
            "(.*?)",
            re.S,
        )
        whole = g.PLACEHOLDER.fullmatch(value)
        pairs.append(
            _Pair(
                key.strip(),
                lower,
                pattern,
                not pattern.variables,
                whole.group(1) if whole else None,
            )
        )
    return tuple(pairs)


def _pair_key(key: str) -> str:
    """A request's parameter name as compared with the template's (:attr:`_Pair.lower`)."""
    return decode_form(key, "a parameter name").strip().lower()


def _pair_names(pair: _Pair) -> tuple[str, ...]:
    """What the value of *pair* fills: its variables' fields, or :data:`LITERAL`."""
    if pair.constant:
        return (LITERAL,)
    return tuple(variable_name(v) for v in pair.pattern.variables)


def _match_pairs(
    pairs: Sequence[_Pair], raw: str, into: FieldCollector, where: str, offset: int = 0
) -> None:
    spans = into.spans
    if spans is not None:
        # Locating only: which of the template's parameters each value is (a value the
        # template has no parameter for is not read), the name compared as below.
        by_key = {pair.lower: pair for pair in pairs}
        for key, start, end in pair_spans(raw, offset):
            try:
                pair = by_key.get(_pair_key(key))
            except InvalidReport:
                spans.append(TargetValue(start, end, None))
                continue
            if pair is not None:
                spans.extend(TargetValue(start, end, name) for name in _pair_names(pair))
        return
    got: dict[str, str] = {}
    for key, value in split_pairs(raw):
        lk = _pair_key(key)
        old = got.get(lk)
        if old is not None and old != value:
            raise InvalidReport(f"{where} {key!r} appears more than once")
        got[lk] = value
    for pair in pairs:
        found = got.get(pair.lower)
        if found is None:
            raise InvalidReport(f"{where} {pair.key!r} is missing")
        value = found
        if pair.whole is not None:
            into.add_variable(pair.whole, decode_form(value, pair.whole))
            continue
        m = pair.pattern.regex.fullmatch(value)
        if m is None:
            raise InvalidReport(f"{where} {pair.key!r} does not match the configured template")
        for variable, captured in zip(pair.pattern.variables, m.groups()):
            into.add_variable(variable, decode_form(captured, variable))


# --- JSON bodies ------------------------------------------------------------------------

_IN = "\ue000"  # a placeholder inside a JSON string
_BARE = "\ue002"  # a placeholder standing for a whole JSON value
_END = "\ue001"
_SENTINEL = re.compile(f"[{_IN}{_BARE}]([0-9]+){_END}")


@attrs.frozen
class _JConst:
    value: Any


@attrs.frozen
class _JVar:
    variable: str
    bare: bool


@attrs.frozen
class _JText:
    pattern: _Pattern


@attrs.frozen
class _JObject:
    members: tuple[tuple[str, str, Any], ...]  # (lower key, key, node)


@attrs.frozen
class _JArray:
    items: tuple[Any, ...]


class _DuplicateKey(ValueError):
    pass


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Keys match case-insensitively ("appId_calls" and "appid_calls" are one field), so a
    # body that repeats a key in any case is refused rather than silently taking one.
    d: dict[str, Any] = {}
    for k, v in pairs:
        lk = k.lower()
        if lk in d:
            raise _DuplicateKey(k)
        d[lk] = v
    return d


# Built once: json.loads with a hook builds a new decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)


def load_json_body(body: bytes) -> Any:
    """Decode a JSON request body; every failure is an :class:`InvalidReport`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidReport("body is not valid UTF-8") from None
    try:
        return _DECODER.decode(text)
    except _DuplicateKey as e:
        raise InvalidReport(f"JSON key {str(e)!r} appears more than once") from None
    except RecursionError:
        raise InvalidReport("body is not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise InvalidReport(f"body is not valid JSON: {_json_reason(e)}") from None


def _json_reason(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at line {e.lineno} column {e.colno}"
    return "cannot decode"


def split_json_template(text: str) -> Iterator[tuple[int, str | re.Match[str], bool]]:
    """Split a JSON template into literal text and placeholders, in order.

    Yields ``(offset, piece, in_string)``: *piece* is literal text or the placeholder's
    match, and *in_string* tells whether a placeholder sits inside a JSON string (the
    app JSON-escapes it there) or stands for a whole value. Shared by the parser (which
    compiles the template) and the app model (which fills it in).
    """
    in_string = False
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            m = g.PLACEHOLDER.match(text, i)
            if m is not None:
                if start < i:
                    yield start, text[start:i], False
                yield i, m, in_string
                i = start = m.end()
                continue
        if in_string and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        i += 1
    if start < n:
        yield start, text[start:], False


def _compile_json(text: str, spot: _Spot) -> Any:
    out: list[str] = []
    origin: list[int] = []  # source offset of each output character
    variables: list[tuple[str, int]] = []
    for offset, piece, in_string in split_json_template(text):
        if isinstance(piece, str):
            out.append(piece)
            origin.extend(range(offset, offset + len(piece)))
            continue
        _check_variable(piece.group(1), spot, offset)
        idx = len(variables)
        variables.append((piece.group(1), offset))
        chunk = f"{_IN}{idx}{_END}" if in_string else f'"{_BARE}{idx}{_END}"'
        out.append(chunk)
        origin.extend([offset] * len(chunk))
    source = "".join(out)
    try:
        tree = json.loads(source, object_pairs_hook=_Members)
    except json.JSONDecodeError as e:
        where = origin[min(e.pos, len(origin) - 1)] if origin else 0
        raise spot.error(f"not valid JSON once variables are put in: {e.msg}", where) from None

    def build(node: Any) -> Any:
        if isinstance(node, _Members):
            members = []
            seen: set[str] = set()
            for key, value in node:
                if _SENTINEL.search(key):
                    pos = variables[int(_SENTINEL.search(key).group(1))][1]  # type: ignore[union-attr]
                    raise spot.error("a variable in a JSON key is not supported", pos)
                lk = key.lower()
                if lk in seen:
                    # The parsed tree keeps no offsets: name the key, point nowhere.
                    raise ConfigurationError(f"JSON key {key!r} appears twice", key=spot.key)
                seen.add(lk)
                members.append((lk, key, build(value)))
            return _JObject(tuple(members))
        if isinstance(node, list):
            return _JArray(tuple(build(v) for v in node))
        if isinstance(node, str):
            found = list(_SENTINEL.finditer(node))
            if not found:
                return _JConst(node)
            if len(found) == 1 and found[0].group(0) == node:
                var, _ = variables[int(found[0].group(1))]
                return _JVar(var, node[0] == _BARE)
            # Literal text around the values: rebuild it with the placeholders back in.
            # Positions in the rebuilt string count from the string's start; anchor them
            # so that the first placeholder lands where it is in the template.
            first = variables[int(found[0].group(1))][1] - found[0].start()
            restored = _SENTINEL.sub(lambda m: f"%{variables[int(m.group(1))][0]}%", node)
            return _JText(
                _Pattern.compile(
                    restored, _Spot(spot.key, spot.text, first), _plain_literal, "(.*?)", re.S
                )
            )
        return _JConst(node)

    return build(tree)


class _Members(list):  # type: ignore[type-arg]
    """The members of a JSON object in the template, in order, duplicates kept."""


def json_scalar(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    raise InvalidReport(f"JSON value at {where} must be a string")


def _match_json(node: Any, value: Any, into: FieldCollector, where: str) -> None:
    if isinstance(node, _JVar):
        scalar = json_scalar(value, where)
        if scalar is not None:
            into.add_variable(node.variable, scalar)
    elif isinstance(node, _JObject):
        if not isinstance(value, dict):
            raise InvalidReport(f"JSON value at {where} must be an object")
        for lk, key, sub in node.members:
            if lk not in value:
                raise InvalidReport(
                    f"JSON key {where}.{key} is missing"
                    if where != "$"
                    else f"JSON key {key!r} is missing"
                )
            _match_json(sub, value[lk], into, f"{where}.{key}")
    elif isinstance(node, _JArray):
        if not isinstance(value, list) or len(value) != len(node.items):
            raise InvalidReport(
                f"JSON value at {where} must be an array of {len(node.items)} items"
            )
        for i, (sub, item) in enumerate(zip(node.items, value)):
            _match_json(sub, item, into, f"{where}[{i}]")
    elif isinstance(node, _JText):
        scalar = json_scalar(value, where)
        m = node.pattern.regex.fullmatch(scalar or "")
        if m is None:
            raise InvalidReport(f"JSON value at {where} does not match the configured template")
        for variable, captured in zip(node.pattern.variables, m.groups()):
            into.add_variable(variable, captured)
    else:  # _JConst
        if value != node.value:
            raise InvalidReport(f"JSON value at {where} does not match the configured template")


def _json_variables(node: Any) -> Iterator[str]:
    if isinstance(node, _JVar):
        yield node.variable
    elif isinstance(node, _JText):
        yield from node.pattern.variables
    elif isinstance(node, _JObject):
        for _, _, sub in node.members:
            yield from _json_variables(sub)
    elif isinstance(node, _JArray):
        for sub in node.items:
            yield from _json_variables(sub)


# --- the template -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Template:
    """A compiled Push Token Reporter configuration (or any Acrobits web service's).

    Build one with :meth:`parse`; it raises :class:`ConfigurationError` pointing at the
    spot when the template cannot be parsed unambiguously.
    """

    url: str
    post_data: str
    content_type: str
    method: str
    #: The Account XML prefix: ``pushTokenReporter`` (or ``accountRemovalReporter``).
    prefix: str = "pushTokenReporter"
    variables: frozenset[str] = attrs.field(repr=False)
    _path: _Pattern = attrs.field(repr=False, eq=False, alias="path_pattern")
    _query: tuple[_Pair, ...] = attrs.field(repr=False, eq=False, alias="query_pairs")
    _body_kind: str = attrs.field(repr=False, eq=False, alias="body_kind")
    _body: Any = attrs.field(repr=False, eq=False, alias="body_matcher")

    @property
    def request_content_type(self) -> str:
        """The Content-Type the app sends a body with (:func:`request_content_type`)."""
        return request_content_type(self.content_type)

    @classmethod
    def parse(
        cls,
        *,
        url: str,
        post_data: str = "",
        content_type: str = "",
        method: str = "",
        prefix: str = "pushTokenReporter",
        require: Sequence[str] = ("selector",),
        require_token: bool = False,
    ) -> Template:
        """Compile the Account XML values (XML-escaped or not) into a template.

        *require*: variables the template must carry. *require_token*: it must carry
        one of :data:`TOKEN_VARIABLES` too, as the deployer's Push Token Reporter
        template must (``[reporter]``): without one, every report would store a
        selector and no token, and the mistake (``%pushTokn%``) would go unnoticed.
        """
        url = xml_unescape((url or "").strip())
        post_data = xml_unescape(post_data or "")
        content_type = xml_unescape((content_type or "").strip())
        url_key, body_key = f"{prefix}Url", f"{prefix}PostData"
        method_u = (method or "").strip().upper()
        if not method_u:
            # "Unset: GET when PostData is empty, else POST."
            method_u = "POST" if post_data.strip() else "GET"
        if method_u not in METHODS:
            raise ConfigurationError(
                f"method {method!r} is not one of {', '.join(METHODS)}", key=f"{prefix}Method"
            )

        m = _URL.match(url)
        if m is None:
            raise ConfigurationError(
                "must be an absolute URL with a scheme, e.g. "
                "https://example.com/token/?selector=%selector%",
                key=url_key,
                position=0,
                text=url,
            )
        scheme, host, rest = m.groups()
        if scheme.lower() not in ("http", "https"):
            raise ConfigurationError(
                f"scheme {scheme!r} is not http or https", key=url_key, position=0, text=url
            )
        spot = _Spot(url_key, url)
        hm = g.PLACEHOLDER.search(host)
        if hm is not None:
            raise spot.error(
                "a variable in the host name is not supported", m.start(2) + hm.start()
            )
        path, qmark, query = rest.partition("?")
        path_offset = m.start(3)
        if not path:
            path = "/"
        path_pattern = _Pattern.compile(
            path, _Spot(url_key, url, path_offset), _path_literal, "([^/]*?)"
        )
        query_pairs = _compile_pairs(
            query, _Spot(url_key, url, path_offset + len(path) + len(qmark))
        )

        body_kind: str = "none"
        body: Any = None
        # Form and text bodies are compiled stripped; positions still count from the
        # value as configured.
        body_spot = _Spot(body_key, post_data, len(post_data) - len(post_data.lstrip()))
        if method_u in BODY_METHODS and post_data.strip():
            body_kind = body_format(content_type)
            if body_kind == "form":
                body = _compile_pairs(post_data.strip(), body_spot)
            elif body_kind == "json":
                body = _compile_json(post_data, _Spot(body_key, post_data))
            else:  # text or xml
                # Compiled stripped and matched against the stripped body: whitespace
                # around the body is tolerated (a padding regex would backtrack).
                body = _Pattern.compile(
                    post_data.strip(), body_spot, _plain_literal, "(.*?)", re.S
                )

        variables = set(path_pattern.variables)
        for pair in query_pairs:
            variables.update(pair.pattern.variables)
        if body_kind == "form":
            for pair in body:
                variables.update(pair.pattern.variables)
        elif body_kind == "json":
            variables.update(_json_variables(body))
        elif body_kind in ("text", "xml"):
            variables.update(body.variables)
        # What the required variables are for, in the error: a removal deletes by them.
        purpose = (
            "registrations are removed by"
            if prefix == "accountRemovalReporter"
            else "reports are stored by"
        )
        where = url_key if body_kind == "none" else f"{url_key}/{body_key}"
        for name in require:
            if name not in variables:
                raise ConfigurationError(
                    f"the template carries no %{name}%: {purpose} {name}", key=where
                )
        if require_token and not variables & _TOKEN_VARIABLES:
            raise ConfigurationError(
                "the template carries no push token: a report stores "
                + ", ".join(f"%{v}%" for v in TOKEN_VARIABLES[:-1])
                + f" or %{TOKEN_VARIABLES[-1]}%",
                key=where,
            )
        return cls(
            url=url,
            post_data=post_data,
            content_type=content_type,
            method=method_u,
            prefix=prefix,
            variables=frozenset(variables),
            path_pattern=path_pattern,
            query_pairs=query_pairs,
            body_kind=body_kind,
            body_matcher=body,
        )

    @property
    def path_template(self) -> str:
        """The path part of the URL template, e.g. ``/token/``."""
        m = _URL.match(self.url)
        assert m is not None
        return m.group(3).partition("?")[0] or "/"

    def owns(self, method: str, raw_path: str) -> bool:
        """Whether a request for *raw_path* (still percent-encoded) is meant for us.

        Any method: a request on the template's path with another method is answered
        405, not passed on.
        """
        return self._path.regex.fullmatch(raw_path) is not None

    def allowed_methods(self) -> tuple[str, ...]:
        return ("GET", "HEAD") if self.method == "GET" else (self.method,)

    def parse_request(self, request: Request) -> Report:
        """Parse *request* (already within size limits) into a validated report."""
        method = request.method.upper()
        if method != self.method and not (method == "HEAD" and self.method == "GET"):
            raise MethodNotAllowed(
                f"method {shown_method(method)} is not allowed here; "
                f"the template uses {self.method}",
                allowed=self.allowed_methods(),
            )
        into = FieldCollector()
        self._read_target(request.path, request.query, into)
        kind = self._body_kind
        if kind != "none" and method in BODY_METHODS:
            body = request.body
            if kind == "json":
                _match_json(self._body, load_json_body(body), into, "$")
            else:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidReport("body is not valid UTF-8") from None
                if kind == "form":
                    _match_pairs(self._body, text.strip(), into, "form field")
                else:
                    bm = self._body.regex.fullmatch(text.strip())
                    if bm is None:
                        raise InvalidReport("body does not match the configured template")
                    for variable, captured in zip(self._body.variables, bm.groups()):
                        into.add_variable(
                            variable, xml_unescape(captured) if kind == "xml" else captured
                        )
        return into.report(user_agent=request.user_agent, shape="template")

    def _read_target(self, path: str, query: str, into: FieldCollector) -> None:
        """Read the variables of the target: the path's, then the query's.

        Locating (``into.spans`` set), it appends where each value sits and what it
        fills instead, and raises nothing.
        """
        spans = into.spans
        m = self._path.regex.fullmatch(path)
        if m is None:
            if spans is None:
                raise InvalidReport("path does not match the configured template")
        elif spans is not None:
            for i, variable in enumerate(self._path.variables, 1):
                spans.append(TargetValue(*m.span(i), variable_name(variable)))
        else:
            for variable, captured in zip(self._path.variables, m.groups()):
                into.add_variable(variable, decode_url(captured, variable))
        if self._query:
            _match_pairs(self._query, query, into, "query parameter", len(path) + 1)

    def target_values(self, target: str) -> list[TargetValue]:
        """Where the values this template reads sit in *target*, and what each fills
        (for redaction); whether or not the request parses. A literal query value
        (``key=s3cret`` in the URL) is named :data:`~pushreport_core._fields.LITERAL`."""
        spans: list[TargetValue] = []
        path, _, query = target.partition("?")
        self._read_target(path, query, FieldCollector(spans=spans))
        return spans

    def as_account_xml(self) -> Mapping[str, str]:
        """The Account XML keys and (unescaped) values that configure the app."""
        keys = {f"{self.prefix}Url": self.url}
        if self.post_data:
            keys[f"{self.prefix}PostData"] = self.post_data
        if self.content_type:
            keys[f"{self.prefix}ContentType"] = self.content_type
        default = "POST" if self.post_data.strip() else "GET"
        if self.method != default:
            keys[f"{self.prefix}Method"] = self.method
        return keys
