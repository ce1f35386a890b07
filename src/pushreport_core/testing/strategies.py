"""Hypothesis strategies for the Push Token Reporter: selectors, tokens, app ids,
usernames, reports, registrations, Account XML templates and whole app sessions.

Needs hypothesis (``pip install 'pushreport[testing]'``). Imports only public names of
the core, so a receiver or a storage plugin can use it as is::

    from hypothesis import given
    from pushreport_core.testing import strategies as prs

    @given(prs.reports())
    def test_my_backend_stores_any_report(report): ...
"""

from __future__ import annotations

import base64
import string
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from hypothesis import strategies as st

from pushreport_core import (
    PASSWORD_VARIABLE,
    REPORT_FIELDS,
    TOKEN_VARIABLES,
    VARIABLE_FIELDS,
    Registration,
    Report,
    Template,
    is_unknown,
)

from . import DEFAULT_COMPATIBLE, ROUNDTRIP_TEMPLATES, Session, build_session

__all__ = [
    "selectors",
    "tokens",
    "apns_tokens",
    "fcm_tokens",
    "app_ids",
    "usernames",
    "passwords",
    "extra_values",
    "registration_values",
    "variables_for",
    "expected_fields",
    "ROUNDTRIP_TEMPLATES",
    "DEFAULT_COMPATIBLE",
    "TEMPLATE_KINDS",
    "templates",
    "user_agents",
    "reports",
    "registrations",
    "utc_datetimes",
    "sessions",
]

_HEX = "0123456789abcdefABCDEF"

#: "The value is a SHA1 hash with a suffix." 40 hex digits, ':' and a hex suffix.
selectors = st.builds(
    lambda sha, suffix: f"{sha}:{suffix}",
    st.text(_HEX, min_size=40, max_size=40),
    st.text(_HEX, min_size=1, max_size=40),
)

#: APNs device tokens: 32 bytes, as the app reports them (hex, or base64 with "+", "/"
#: and "=").
apns_tokens = st.binary(min_size=32, max_size=32).flatmap(
    lambda raw: st.sampled_from((raw.hex(), base64.b64encode(raw).decode("ascii")))
)

_FCM_CHARS = string.ascii_letters + string.digits + "-_"

#: FCM-style tokens: an ``<instance id>:APA91b...`` registration id, base64-encoded by
#: the app (the spec's Android example decodes to ``APA91bG9...``): long, with "+",
#: "/" and "=" in it.
fcm_tokens = st.builds(
    lambda instance, rest, pad: (
        base64.b64encode(f"{instance}:APA91b{rest}".encode("ascii"))
        .decode("ascii")
        .rstrip("" if pad else "=")
    ),
    st.text(_FCM_CHARS, min_size=11, max_size=11),
    st.text(_FCM_CHARS, min_size=100, max_size=160),
    st.booleans(),
)


@st.composite
def _generic_tokens(draw: Any) -> str:
    kind = draw(st.sampled_from(("standard", "urlsafe", "hex")))
    if kind == "hex":
        hex_text: str = draw(st.binary(min_size=4, max_size=150)).hex()
        return hex_text
    # 6 bytes encode to 8 characters, 225 bytes to 300: always within 8..300.
    raw = draw(st.binary(min_size=6, max_size=225))
    text = (base64.b64encode(raw) if kind == "standard" else base64.urlsafe_b64encode(raw)).decode(
        "ascii"
    )
    if draw(st.booleans()):
        text = text.rstrip("=")
    return text


def tokens() -> st.SearchStrategy[str]:
    """Push tokens: base64 (standard or URL-safe, padded or not) or hex of any length
    from 8 characters, APNs and FCM-style ones among them."""
    return st.one_of(_generic_tokens(), apns_tokens, fcm_tokens)


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
    return st.text(_TEXT_CHAR, min_size=1, max_size=max_size).filter(lambda s: not is_unknown(s))


#: Usernames with awkward characters: ``+``, ``/``, ``&``, ``%41``, quotes, non-ASCII.
usernames = _free_text(48)
passwords = _free_text(32)
extra_values = _free_text(48)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


#: A known value of each canonical report field (``REPORT_FIELDS``).
_KNOWN: Mapping[str, st.SearchStrategy[Any]] = {
    "selector": selectors,
    "username": usernames,
    "token_calls": tokens(),
    "appid_calls": app_ids,
    "token_msgs": tokens(),
    "appid_msgs": app_ids,
}


def _maybe_known(*but: str) -> dict[str, st.SearchStrategy[Any]]:
    """A known value or ``None`` ("not known yet") for each canonical field but *but*."""
    return {field: _maybe(values) for field, values in _KNOWN.items() if field not in but}


#: What the app knows at report time, by report field; ``None`` is "not known yet". The
#: selector is always known (reports are stored by it). ``password`` and ``installid``
#: are carried only by the templates that name them.
registration_values = st.fixed_dictionaries(
    {
        "selector": selectors,
        **_maybe_known("selector"),
        "password": _maybe(passwords),
        "installid": _maybe(extra_values),
    }
)

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
    fields: dict[str, Any] = {f: values.get(f) if f in carried else None for f in REPORT_FIELDS}
    fields["password"] = values.get("password") if "password" in carried else None
    fields["extra"] = (
        {"installid": values["installid"]}
        if "installid" in carried and values.get("installid") is not None
        else {}
    )
    return fields


# -- templates -----------------------------------------------------------------------------

#: The kinds of template :func:`templates` draws.
TEMPLATE_KINDS = ("query", "path", "form", "json", "nested-json", "text", "xml")

# Variables a template may carry besides %selector%; one of each alias pair.
_OPTIONAL_VARIABLES = (
    ("account[username]",),
    ("pushTokenIncomingCall",),
    ("pushappid_incoming_call",),
    ("pushTokenOther", "pushToken"),
    ("pushappid_other", "pushappid"),
    ("account[password]",),
    ("installid",),
)
# Free text (usernames, passwords, extras) may hold any character but control ones, so
# in a text body it is only safe where a line break follows it.
_FREE_TEXT = frozenset({"account[username]", "account[password]", "installid"})
_TOKENS = frozenset(TOKEN_VARIABLES)
_NAME = st.text(string.ascii_lowercase + "_", min_size=1, max_size=10)
_SEGMENT = st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=8)


@st.composite
def templates(draw: Any, kinds: Sequence[str] = TEMPLATE_KINDS) -> Template:
    """Account XML templates of the given *kinds* (query string, path segments, form,
    flat and nested JSON, ``text/plain``, XML), each carrying ``%selector%`` and a random
    subset of the other variables, under random names and in random order."""
    kind = draw(st.sampled_from(tuple(kinds)))
    chosen = [draw(st.sampled_from(pair)) for pair in _OPTIONAL_VARIABLES if draw(st.booleans())]
    if not _TOKENS.intersection(chosen):
        # A reporter template carries a push token ([reporter] refuses one without); a
        # report of it may still bring none (the iOS delay).
        chosen.append(draw(st.sampled_from(sorted(_TOKENS))))
    variables = draw(st.permutations(["selector", *chosen]))
    names = draw(
        st.lists(_NAME, min_size=len(variables), max_size=len(variables), unique_by=str.lower)
    )
    prefix = "/".join(draw(st.lists(_SEGMENT, min_size=1, max_size=3)))
    base = f"https://push.example.com/{prefix}"
    pairs = "&".join(f"{n}=%{v}%" for n, v in zip(names, variables))
    if kind == "query":
        secret = draw(
            st.none() | st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)
        )
        if secret is not None:
            pairs += f"&key={secret}" if "key" not in names else ""
        return Template.parse(url=f"{base}/?{pairs}")
    if kind == "path":
        segments = [f"%{v}%" for v in variables]
        return Template.parse(url=f"{base}/" + "/".join(segments))
    method = draw(st.sampled_from(("POST", "PUT")))
    if kind == "form":
        return Template.parse(url=f"{base}/", post_data=pairs, method=method)
    if kind in ("json", "nested-json"):
        members = [f'"{n}": "%{v}%"' for n, v in zip(names, variables)]
        if kind == "json":
            body = "{" + ", ".join(members) + "}"
        else:
            half = len(members) // 2
            body = (
                '{"account": {'
                + ", ".join(members[:half])
                + '}, "devices": [{'
                + ", ".join(members[half:])
                + '}], "version": 2, "debug": false}'
            )
        content_type = draw(
            st.sampled_from(("application/json", "application/json; charset=utf-8"))
        )
        return Template.parse(
            url=f"{base}/", post_data=body, content_type=content_type, method=method
        )
    if kind == "text":
        # Free text goes first on its own line; "name value;" lines after it.
        free = [(n, v) for n, v in zip(names, variables) if v in _FREE_TEXT]
        fixed = [(n, v) for n, v in zip(names, variables) if v not in _FREE_TEXT]
        lines = [f"{n} %{v}%;" for n, v in fixed]
        url_pairs = "&".join(f"{n}=%{v}%" for n, v in free)
        url = f"{base}/?{url_pairs}" if url_pairs else f"{base}/"
        return Template.parse(
            url=url,
            post_data="\n".join(lines) + "\n",
            content_type="text/plain; charset=utf-8",
            method=method,
        )
    assert kind == "xml", kind
    body = "<push>" + "".join(f"<{n}>%{v}%</{n}>" for n, v in zip(names, variables)) + "</push>"
    return Template.parse(
        url=f"{base}/", post_data=body, content_type="application/xml", method=method
    )


# -- reports and registrations ---------------------------------------------------------------

user_agents = _maybe(st.sampled_from(("CloudSoftphone/1.5.6", "Acrobits Groundwire/24.1")))

utc_datetimes = st.datetimes(
    min_value=datetime(2015, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(timezone.utc)
)

_EXTRA = st.dictionaries(
    st.sampled_from(("installid", "account[cloud_username]", "device")), extra_values, max_size=3
)


def reports(
    selector: str | st.SearchStrategy[str] = selectors,
    username: str | st.SearchStrategy[str | None] | None = None,
) -> st.SearchStrategy[Report]:
    """Valid reports (as ``parse_request`` returns them) for *selector*; *username*
    pins or draws the username (default: any, or none)."""
    if username is None:
        username_strategy: st.SearchStrategy[Any] = _maybe(usernames)
    elif isinstance(username, str):
        username_strategy = st.just(username)
    else:
        username_strategy = username
    return st.builds(
        Report,
        selector=st.just(selector) if isinstance(selector, str) else selector,
        username=username_strategy,
        **_maybe_known("selector", "username"),
        extra=_EXTRA,
        user_agent=user_agents,
    )


@st.composite
def registrations(draw: Any, selector: str | st.SearchStrategy[str] = selectors) -> Registration:
    """Stored registrations for *selector*, as a storage backend would return them: a
    report's fields, seen *reports* times between two instants."""
    report = draw(reports(selector))
    first = draw(utc_datetimes)
    last = first + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=900)))
    return Registration(
        **report.stored_fields(),
        first_seen=first,
        last_seen=last,
        reports=draw(st.integers(1, 10**6)),
    )


# -- whole app sessions ----------------------------------------------------------------------


@st.composite
def sessions(
    draw: Any,
    values: st.SearchStrategy[Mapping[str, str | None]] | None = None,
    max_steps: int = 10,
) -> Session:
    """App sessions: what the account knows at the first start, and a sequence of starts,
    iOS delays (``pushTokenOther`` arriving after the first report), injected failures,
    retries when due, stops and waits — each step one the app can take then.

    *values* draws report-field values (default: a selector, a username, both token
    pairs, all known).
    """
    if values is None:
        values = st.fixed_dictionaries(_KNOWN)
    account = dict(draw(values))
    late = None
    if account.get("token_msgs") is not None and draw(st.booleans()):
        late, account["token_msgs"] = account["token_msgs"], None
    steps = draw(st.integers(1, max_steps))
    return build_session(
        account,
        choose=lambda options: draw(st.sampled_from(options)),
        make_token=lambda: draw(tokens()),
        late_token=late,
        steps=steps,
    )
