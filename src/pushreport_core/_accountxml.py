"""The sending side: the Account XML keys that make the app send what we parse."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from ._errors import ConfigurationError
from ._removal import default_removal_template
from ._templates import Template

__all__ = [
    "account_xml",
    "DEFAULT_ACCOUNT_XML",
    "DEFAULT_BASE_URL",
    "default_template",
    "removal_account_xml",
    "check_base_url",
    "calls_loopback",
]

#: Where the keys point without a base URL: ``pushreport serve``'s default address,
#: which no phone can reach (:func:`calls_loopback`).
DEFAULT_BASE_URL = "http://127.0.0.1:8080"

#: The default shape pushreport recommends: the spec's first example, GET with every
#: field in the query string.
DEFAULT_ACCOUNT_XML = {
    "pushTokenReporterUrl": (
        "{base_url}/token/?username=%account[username]%&selector=%selector%"
        "&token_calls=%pushTokenIncomingCall%&appid_calls=%pushappid_incoming_call%"
        "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
    ),
}

_HTTP = re.compile(r"https?://", re.I)
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
# A raw CR would be read back as LF (XML end-of-line handling): write it as a reference.
_CR = {"\r": "&#13;"}


def check_base_url(base_url: str, *, key: str = "base_url") -> str:
    """*base_url* (``https://push.example.com``, maybe with a path before the
    template's), without a trailing ``/``: the scheme and host the app should call.

    :raises ConfigurationError: naming *key*: not ``http://`` or ``https://``, no host,
        a query or a fragment (the keys' URL brings its own; they would be lost).
    """
    text = base_url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(f"{base_url!r} is not a URL", key=key) from None
    if not _HTTP.match(text):
        raise ConfigurationError(f"must start with http:// or https://, not {base_url!r}", key=key)
    if not parts.hostname:
        raise ConfigurationError(f"{base_url!r} has no host name", key=key)
    if "?" in text:
        raise ConfigurationError(
            f"must not have a query ({'?' + parts.query!r}): the keys' URL brings its own",
            key=key,
        )
    if "#" in text:
        raise ConfigurationError(
            f"must not have a fragment ({'#' + parts.fragment!r}): the app would not send it",
            key=key,
        )
    return text.rstrip("/")


def calls_loopback(template: Template) -> bool:
    """Whether *template*'s URL names a loopback host (``127.0.0.1``, ``::1``,
    ``localhost``): keys that no phone can follow, fine only for a local test."""
    host = (urlsplit(template.url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_template(base_url: str = DEFAULT_BASE_URL) -> Template:
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
    if base_url:
        base_url = check_base_url(base_url)
    if template is None:
        template = default_template(base_url or DEFAULT_BASE_URL)
    elif base_url:
        m = _ORIGIN.match(base_url)
        assert m is not None  # check_base_url: an http(s) URL with a host
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
        template = default_removal_template(
            check_base_url(base_url) if base_url else DEFAULT_BASE_URL
        )
    return account_xml(template, base_url=base_url)
