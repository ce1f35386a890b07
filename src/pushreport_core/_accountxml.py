"""The sending side: the Account XML keys that make the app send what we parse."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from ._removal import default_removal_template
from ._templates import Template

__all__ = ["account_xml", "DEFAULT_ACCOUNT_XML", "default_template", "removal_account_xml"]

#: The default shape pushreport recommends: the spec's first example, GET with every
#: field in the query string.
DEFAULT_ACCOUNT_XML = {
    "pushTokenReporterUrl": (
        "{base_url}/token/?username=%account[username]%&selector=%selector%"
        "&token_calls=%pushTokenIncomingCall%&appid_calls=%pushappid_incoming_call%"
        "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
    ),
}

_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
# A raw CR would be read back as LF (XML end-of-line handling): write it as a reference.
_CR = {"\r": "&#13;"}


def default_template(base_url: str = "http://127.0.0.1:8080") -> Template:
    """The template of :data:`DEFAULT_ACCOUNT_XML` for *base_url*."""
    return Template.parse(
        url=DEFAULT_ACCOUNT_XML["pushTokenReporterUrl"].format(base_url=base_url.rstrip("/"))
    )


def account_xml(template: Template | None = None, *, base_url: str | None = None) -> str:
    """Render the Account XML keys for *template* (``None``: the default shapes).

    The values are XML-escaped (``&`` → ``&amp;``), ready to paste into Account XML,
    one element a line. *base_url* (``https://push.example.com``) replaces the scheme and
    host of the template's URL; the path is kept, since that is what the receiver matches.
    """
    if template is None:
        template = default_template(base_url or "http://127.0.0.1:8080")
    elif base_url:
        m = _ORIGIN.match(base_url.strip())
        if m is None:
            raise ValueError(f"base_url {base_url!r} is not an absolute http(s) URL")
        # Template.parse XML-unescapes what it is given: hand it escaped values, or a
        # literal "&amp;" in the template would lose its escaping a second time.
        template = Template.parse(
            url=escape(_ORIGIN.sub(lambda _: m.group(0), template.url, count=1)),
            post_data=escape(template.post_data),
            content_type=escape(template.content_type),
            method=template.method,
            prefix=template.prefix,
        )
    lines = [
        f"<{key}>{escape(value, _CR)}</{key}>" for key, value in template.as_account_xml().items()
    ]
    return "\n".join(lines) + "\n"


def removal_account_xml(template: Template | None = None, *, base_url: str | None = None) -> str:
    """The ``accountRemovalReporter*`` keys for a removal *template* (``None``: the
    default removal shape, :data:`~pushreport_core.DEFAULT_REMOVAL_ACCOUNT_XML`), like
    :func:`account_xml`."""
    if template is None:
        template = default_removal_template(base_url or "http://127.0.0.1:8080")
    return account_xml(template, base_url=base_url)
