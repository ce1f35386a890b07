"""Hypothesis strategies for reports, registrations and templates.

Meant to move into a shipped ``pushreport_core.testing`` module (as ``zarr.testing`` does),
so it imports nothing from the test suite and only public names from the core.
"""

from __future__ import annotations

import base64
import string
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from hypothesis import strategies as st

from pushreport_core import (PASSWORD_VARIABLE, REPORT_FIELDS, VARIABLE_FIELDS, Registration,
                             Report, Template, is_unknown)

__all__ = [
    "selectors", "tokens", "app_ids", "usernames", "passwords", "extra_values",
    "registration_values", "variables_for", "expected_fields", "ROUNDTRIP_TEMPLATES",
    "DEFAULT_COMPATIBLE", "user_agents", "reports", "registrations", "utc_datetimes",
]

_HEX = "0123456789abcdefABCDEF"

#: "The value is a SHA1 hash with a suffix." 40 hex digits, ':' and a hex suffix.
selectors = st.builds(
    lambda sha, suffix: f"{sha}:{suffix}",
    st.text(_HEX, min_size=40, max_size=40),
    st.text(_HEX, min_size=1, max_size=40),
)


@st.composite
def tokens(draw: Any) -> str:
    """Push tokens: base64 (standard or URL-safe, padded or not) or APNs hex, 8..300 chars."""
    kind = draw(st.sampled_from(("standard", "urlsafe", "hex")))
    if kind == "hex":
        return draw(st.binary(min_size=4, max_size=150)).hex()
    # 6 bytes encode to 8 characters, 225 bytes to 300: always within 8..300.
    raw = draw(st.binary(min_size=6, max_size=225))
    text = (base64.b64encode(raw) if kind == "standard"
            else base64.urlsafe_b64encode(raw)).decode("ascii")
    if draw(st.booleans()):
        text = text.rstrip("=")
    return text


_LABEL = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)

#: Reverse-DNS app ids, real ones first so that shrinking lands on something readable.
app_ids = st.one_of(
    st.sampled_from(("com.cloudsoftphone.app", "com.cloudsoftphone.app.pushkit")),
    st.lists(_LABEL, min_size=2, max_size=5).map(".".join),
)

# Characters that break naive parsers, given extra weight; then any printable text. No
# control characters (the core refuses them) and no lone surrogates (not UTF-8).
_AWKWARD = st.sampled_from(list("+/=&\"\\ %?#:;@<>'[]{},") + ["é", "ß", "日", "\u2028", "🎉"])
_TEXT_CHAR = st.one_of(_AWKWARD, st.characters(exclude_categories=("Cc", "Cs")))


def _free_text(max_size: int) -> st.SearchStrategy[str]:
    # The spellings of "not known" ("", "null", "(null)", "%placeholder%", blanks) mean
    # exactly that: such a value reads back as None, so they are not values here.
    return st.text(_TEXT_CHAR, min_size=1, max_size=max_size).filter(
        lambda s: not is_unknown(s))


usernames = _free_text(48)
passwords = _free_text(32)
extra_values = _free_text(48)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


#: What the app knows at report time, by report field; ``None`` is "not known yet". The
#: selector is always known (reports are stored by it). ``password`` and ``installid``
#: are carried only by the templates that name them.
registration_values = st.fixed_dictionaries({
    "selector": selectors,
    "username": _maybe(usernames),
    "token_calls": _maybe(tokens()),
    "appid_calls": _maybe(app_ids),
    "token_msgs": _maybe(tokens()),
    "appid_msgs": _maybe(app_ids),
    "password": _maybe(passwords),
    "installid": _maybe(extra_values),
})

_FIELD_OF = {**VARIABLE_FIELDS, PASSWORD_VARIABLE: "password"}


def variables_for(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """The template variables (aliases included) that carry *values*."""
    out: dict[str, str | None] = {var: values.get(field) for var, field in _FIELD_OF.items()}
    out["installid"] = values.get("installid")
    return out


def expected_fields(template: Template, values: Mapping[str, str | None]) -> dict[str, Any]:
    """What a report parsed from *template*'s request must hold: the fields the template
    carries take their values, the others are None."""
    carried = {_FIELD_OF.get(v, v) for v in template.variables}
    fields: dict[str, Any] = {f: values.get(f) if f in carried else None
                              for f in REPORT_FIELDS}
    fields["password"] = values.get("password") if "password" in carried else None
    fields["extra"] = ({"installid": values["installid"]}
                       if "installid" in carried and values.get("installid") is not None
                       else {})
    return fields


_BASE = "https://push.example.com"

#: Every kind of template the core supports, as Account XML values (unescaped).
ROUNDTRIP_TEMPLATES: dict[str, dict[str, str]] = {
    "query": {"url": (
        f"{_BASE}/token/?username=%account[username]%&password=%account[password]%"
        "&selector=%selector%&token_calls=%pushTokenIncomingCall%"
        "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
        "&appid_msgs=%pushappid_other%")},
    "path": {"url": f"{_BASE}/pushToken/%account[username]%/%selector%/%pushToken%"
                    "&appid=%pushappid%"},
    "form": {"url": f"{_BASE}/token/", "post_data": (
        "username=%account[username]%&selector=%selector%&token_calls=%pushTokenIncomingCall%"
        "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
        "&appid_msgs=%pushappid_other%")},
    "json": {"url": f"{_BASE}/token/%account[username]%/", "content_type": "application/json",
             "post_data": (
                 '{ "username" : "%account[username]%", "token_calls" : '
                 '"%pushTokenIncomingCall%", "token_msgs" : "%pushTokenOther%", "selector" : '
                 '"%selector%", "appId_calls": "%pushappid_incoming_call%", "appId_msgs" : '
                 '"%pushappid_other%" }')},
    "nested-json": {"url": f"{_BASE}/v2/register", "content_type": "application/json",
                    "method": "PUT", "post_data": (
                        '{"account": {"user": "%account[username]%", "id": "%selector%",'
                        ' "secret": "%account[password]%"},'
                        ' "devices": [{"kind": "voip", "token": "%pushTokenIncomingCall%",'
                        ' "app": "%pushappid_incoming_call%"},'
                        ' {"kind": "remote", "token": "%pushTokenOther%",'
                        ' "app": "%pushappid_other%"}],'
                        ' "install": %installid%, "version": 2, "debug": false}')},
    "text": {"url": f"{_BASE}/text/?selector=%selector%&user=%account[username]%",
             "content_type": "text/plain; charset=utf-8", "post_data": (
                 "calls %pushTokenIncomingCall% %pushappid_incoming_call%;\n"
                 "msgs %pushTokenOther% %pushappid_other%;\n")},
    "xml": {"url": f"{_BASE}/xml/", "content_type": "application/xml", "post_data": (
        "<push><selector>%selector%</selector><user>%account[username]%</user>"
        "<calls app='%pushappid_incoming_call%'>%pushTokenIncomingCall%</calls>"
        "<msgs app='%pushappid_other%'>%pushTokenOther%</msgs></push>")},
}

#: The templates whose requests the default shapes (no template configured) also read.
DEFAULT_COMPATIBLE = ("query", "path", "form", "json")

user_agents = _maybe(st.sampled_from(("CloudSoftphone/1.5.6", "Acrobits Groundwire/24.1")))

utc_datetimes = st.datetimes(
    min_value=datetime(2015, 1, 1), max_value=datetime(2040, 1, 1),
    timezones=st.just(timezone.utc))

_EXTRA = st.dictionaries(st.sampled_from(("installid", "account[cloud_username]", "device")),
                         extra_values, max_size=3)


def reports(selector: str | st.SearchStrategy[str] = selectors) -> st.SearchStrategy[Report]:
    """Valid reports (as ``parse_request`` returns them) for *selector*."""
    return st.builds(
        Report,
        selector=st.just(selector) if isinstance(selector, str) else selector,
        username=_maybe(usernames),
        token_calls=_maybe(tokens()), appid_calls=_maybe(app_ids),
        token_msgs=_maybe(tokens()), appid_msgs=_maybe(app_ids),
        extra=_EXTRA, user_agent=user_agents,
    )


@st.composite
def registrations(draw: Any, selector: str | st.SearchStrategy[str] = selectors
                  ) -> Registration:
    """Stored registrations for *selector*, as a storage backend would return them."""
    first = draw(utc_datetimes)
    last = first + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=900)))
    return Registration(
        selector=selector if isinstance(selector, str) else draw(selector),
        username=draw(_maybe(usernames)),
        token_calls=draw(_maybe(tokens())), appid_calls=draw(_maybe(app_ids)),
        token_msgs=draw(_maybe(tokens())), appid_msgs=draw(_maybe(app_ids)),
        extra=draw(_EXTRA), user_agent=draw(user_agents),
        first_seen=first, last_seen=last, reports=draw(st.integers(1, 10**6)),
    )
