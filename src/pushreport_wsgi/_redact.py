"""Keep credentials out of logs: redact request targets before they are logged."""

from __future__ import annotations

from typing import Any, Collection

__all__ = ["redact_target", "SENSITIVE_KEYS", "shorten"]

#: Parameter names whose values are never logged (compared lower-cased).
SENSITIVE_KEYS = frozenset(
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
#: Parameter names that carry push tokens: logged shortened.
TOKEN_KEYS = frozenset(
    {"token_calls", "token_msgs", "pushtoken", "pushtokenother", "pushtokenincomingcall"}
)


def shorten(value: str, keep: int = 8) -> str:
    """``"QVBBOTFiRzlhcVd2…"``: enough to tell tokens apart in a log, not to use one."""
    return value if len(value) <= keep else value[:keep] + "…"


def redact_target(target: str, shapes: Any = None, *, also: Collection[str] = ()) -> str:
    """*target* with credentials masked and tokens shortened, ready for a log line.

    Uses the shapes' own knowledge when they have it (``shapes.redact(target)``: a
    template knows which of its parts carry ``%account[password]%`` or a constant
    secret), then masks parameters with well-known sensitive names. *also* names more
    fields to mask: the template variables or parameter names that carry a configured
    secret (``[auth] secret_field``).
    """
    redact = getattr(shapes, "redact", None)
    if redact is not None:
        target = redact(target, also=also) if also else redact(target)
    path, qmark, query = target.partition("?")
    if not query:
        return target
    items = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        lk = key.lower()
        if eq and value:
            if lk in SENSITIVE_KEYS or lk in also:
                value = "***"
            elif lk in TOKEN_KEYS:
                value = shorten(value)
        items.append(f"{key}{eq}{value}")
    return f"{path}?{'&'.join(items)}"
