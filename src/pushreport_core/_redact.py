"""What of a request target may be logged: credentials masked, push tokens shortened.

Redaction is derived from the parser, not from a list of its own: each shape says where
the values it reads sit in the raw target and what each one fills
(``Shapes.target_values``, located by the parser's own code), and the values it reads as
the account password, as the configured shared secret or as a template's literal
(``key=s3cret`` written into the URL) are masked, the push tokens shortened. A target
that does not parse is located as far as the parser gets, and every ``key=value`` item
of the query and of a path segment (``/pushToken/u/s/t&password=…``) is also masked when
its name, decoded and folded as the parser does, is a well-known sensitive one or the
secret's. A name that does not decode masks its value.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterator

from ._defaults import DEFAULT_SHAPES
from ._errors import InvalidReport
from ._fields import LITERAL, PASSWORD, decode_form, decode_url, pair_spans
from ._report import Shapes

__all__ = ["redact_target", "shorten", "SENSITIVE_NAMES", "MASK"]

#: What a masked value is logged as.
MASK = "***"

#: Parameter names whose values are never logged, whatever the shape reads them as:
#: compared once decoded, stripped and lower-cased (``pass%77ord``, ``PASSWORD``).
SENSITIVE_NAMES = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "account[password]",
        "secret",
        "key",
        "apikey",
        "api_key",
        "auth",
        "authorization",
        "token_secret",
        "sig",
        "signature",
    }
)

_TOKENS = frozenset({"token_calls", "token_msgs"})
_SHORTEN, _MASK = 1, 2


def shorten(value: str, keep: int = 8) -> str:
    """``"QVBBOTFiRzlhcVd2…"``: enough of a token to tell it apart in a log line, not
    to push with it."""
    return value if len(value) <= keep else value[:keep] + "…"


def _folded(key: str, decode: Callable[[str, str], str]) -> str | None:
    if "%" not in key and "+" not in key:
        return key.strip().lower()
    try:
        return decode(key, "a parameter name").strip().lower()
    except InvalidReport:
        return None


def _named_items(target: str) -> Iterator[tuple[int, int, str | None]]:
    """Every ``key=value`` item of the query and of a path segment's ``&`` tail: where
    its value is, and its name decoded and folded (``None``: it does not decode)."""
    path, qmark, query = target.partition("?")
    if "&" in path:
        pos = 0
        for segment in path.split("/"):
            first, amp, rest = segment.partition("&")
            if amp:
                for key, start, end in pair_spans(rest, pos + len(first) + 1):
                    yield start, end, _folded(key, decode_url)
            pos += len(segment) + 1
    if qmark:
        for key, start, end in pair_spans(query, len(path) + 1):
            yield start, end, _folded(key, decode_form)


def redact_target(
    target: str, shapes: Shapes | None = None, *, secret_fields: Collection[str] = ()
) -> str:
    """*target* (the raw request target) as it may be logged.

    Masked as ``***``: every value *shapes* (``None``: the default shapes) read as the
    account password, as a field named in *secret_fields* (``[auth] secret_field``: a
    template variable, or a default shapes' parameter) or as a literal of the template;
    and every value whose name is a well-known sensitive one (:data:`SENSITIVE_NAMES`)
    or does not decode. Shortened: every value read as a push token.
    """
    chosen = DEFAULT_SHAPES if shapes is None else shapes
    secret = {name.lower() for name in secret_fields}
    actions: list[tuple[int, int, int]] = []
    for start, end, name in chosen.target_values(target):
        if name is None or name == PASSWORD or name == LITERAL:
            action = _MASK
        else:
            folded = name.lower()
            if folded in secret or folded in SENSITIVE_NAMES:
                action = _MASK
            elif name in _TOKENS:
                action = _SHORTEN
            else:
                continue
        actions.append((start, end, action))
    for start, end, name in _named_items(target):
        if name is None or name in SENSITIVE_NAMES or name in secret:
            actions.append((start, end, _MASK))
    if not actions:
        return target
    return _apply(target, actions)


def _apply(target: str, actions: list[tuple[int, int, int]]) -> str:
    """*target* with each span masked or shortened; overlapping spans are joined, and
    masking wins."""
    actions.sort()
    out: list[str] = []
    pos = 0
    i, n = 0, len(actions)
    while i < n:
        start, end, action = actions[i]
        i += 1
        while i < n and actions[i][0] < end:
            end = max(end, actions[i][1])
            action = max(action, actions[i][2])
            i += 1
        if start == end:
            continue
        out.append(target[pos:start])
        out.append(MASK if action == _MASK else shorten(target[start:end]))
        pos = end
    out.append(target[pos:])
    return "".join(out)
