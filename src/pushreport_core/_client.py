"""A model of the app: how it fills a template in and sends the request.

Sans-IO: it builds :class:`Request` values; it sends nothing. The app substitutes every
``%variable%`` of the Account XML values: escaped for URLs and form bodies,
JSON-escaped in JSON bodies, as is elsewhere. A value the app does not know yet is
substituted as an empty string (what is seen in the field).
"""

from __future__ import annotations

import json
import re
from typing import Mapping
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

from . import _grammar as g
from ._templates import BODY_METHODS, FORM, Template, media_type
from ._values import Request

__all__ = ["render_request", "substitute", "DEFAULT_USER_AGENT"]

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
    escape = {"url": _url_escape, "form": _url_escape, "xml": xml_escape}.get(kind, str)

    def sub(m: re.Match[str]) -> str:
        value = variables.get(m.group(1))
        return "" if value is None else escape(value)

    return g.PLACEHOLDER.sub(sub, text)


def _substitute_json(text: str, variables: Mapping[str, str | None]) -> str:
    out: list[str] = []
    in_string = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            m = g.PLACEHOLDER.match(text, i)
            if m is not None:
                value = variables.get(m.group(1))
                value = "" if value is None else value
                out.append(_json_escape(value) if in_string else json.dumps(value))
                i = m.end()
                continue
        if in_string and ch == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        out.append(ch)
        i += 1
    return "".join(out)


def render_request(template: Template, variables: Mapping[str, str | None], *,
                   user_agent: str = DEFAULT_USER_AGENT) -> Request:
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
        mt = media_type(template.content_type)
        if mt in ("", FORM):
            kind = "form"
        elif mt.endswith("json"):
            kind = "json"
        elif "xml" in mt:
            kind = "xml"
        else:
            kind = "text"
        body = substitute(template.post_data, variables, kind=kind).encode("utf-8")
        content_type = template.content_type or FORM
    return Request(method=template.method, target=target, body=body,
                   content_type=content_type, user_agent=user_agent)
