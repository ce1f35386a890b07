"""Property: ``Template.parse`` is total over arbitrary Account XML values, and every
template it accepts gives a total parser.

``Template.parse`` returns a :class:`Template` or raises :class:`ConfigurationError`
(the deployer's fault, with a key), nothing else; for each template that parses,
``parse_request`` returns a valid :class:`Report` or raises a 4xx
:class:`PushReportError`, whatever request arrives — the app's own request for it, that
request damaged, or arbitrary text — and in time linear in the request, not exponential
(``tests/core/test_parse_total.py`` does the same for a fixed set of templates).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pushreport_core import (
    ConfigurationError,
    InvalidReport,
    MethodNotAllowed,
    PushReportError,
    Report,
    Request,
    Template,
    parse_request,
    render_request,
)
from pushreport_core._grammar import APP_ID, BAD_TEXT, SELECTOR, TOKEN
from pushreport_core.testing import strategies as s

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"

# Placeholders the app knows, their wrong-case spellings (refused with a hint), custom
# ones (stored in extra), and things that look like placeholders but are not.
_PLACEHOLDERS = st.sampled_from(
    [
        "%selector%",
        "%selector%",
        "%pushToken%",
        "%pushTokenOther%",
        "%pushTokenIncomingCall%",
        "%pushappid%",
        "%pushappid_other%",
        "%pushappid_incoming_call%",
        "%account[username]%",
        "%account[password]%",
        "%installid%",
        "%account[displayName]%",
        "%Selector%",
        "%PUSHTOKEN%",
        "%account[Username]%",
        "%2F%",
        "%%",
        "%",
        "%selector",
        "%a b%",
        "%account[]%",
        "%x.y-z%",
    ]
)
_URL_LITERALS = st.sampled_from(
    [
        "/",
        "/",
        "token",
        "pushToken",
        "?",
        "&",
        "&amp;",
        "=",
        "%2F",
        "%2f",
        "%zz",
        "%C3%A9",
        "+",
        " ",
        "#frag",
        ";",
        ":",
        "@",
        "&#x25;",
        "&#37;",
        "&lt;",
        "é",
        "日",
        "\n",
        "\x00",
        "key=secret",
        "selector=",
        "appid=",
        "a",
        "-",
        ".",
        "~",
        "[",
        "]",
    ]
)
_URL_PIECES = st.one_of(_PLACEHOLDERS, _URL_LITERALS, st.text(max_size=4))
_SCHEMES = st.sampled_from(
    [
        "https://push.example.com",
        "http://h:8080",
        "HTTPS://x",
        "ftp://x",
        "https://",
        "//x",
        "",
        "https://%selector%.x",
        "https://x?",
        "x",
    ]
)


@st.composite
def template_urls(draw: Any) -> str:
    """``pushTokenReporterUrl`` values: a scheme and host, then placeholders and
    literals in random places of the path and query."""
    if draw(st.integers(0, 9)) == 0:
        return str(draw(st.text(max_size=60)))
    return str(draw(_SCHEMES)) + "".join(draw(st.lists(_URL_PIECES, max_size=14)))


_LITERAL = st.one_of(
    st.sampled_from(
        [
            "token",
            "v2",
            "a-b",
            "x.y",
            "~u",
            "%2F",
            "%41",
            "é",
            "+",
            " ",
            ":",
            "@",
            ",",
            ";",
            "&amp;",
            "&#38;",
            "=",
            "appid=",
            "-",
            "_",
        ]
    ),
    st.text(max_size=3),
)


def _mixed(piece: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Placeholders with literal text around and between them, or sometimes none."""
    return st.lists(st.tuples(piece, _LITERAL), min_size=1, max_size=3).map(
        lambda items: "".join(p + lit for p, lit in items)
    )


@st.composite
def likely_urls(draw: Any) -> str:
    """URLs close to valid ones, so that many parse: path segments and query values
    made of placeholders and literals, ``%selector%`` somewhere in them."""
    segment = st.one_of(_LITERAL, _mixed(_PLACEHOLDERS), _PLACEHOLDERS)
    path = "/".join(draw(st.lists(segment, max_size=4)))
    names = st.one_of(
        st.sampled_from(["selector", "s", "token_msgs", "user", "key", "A", "a+b", "a%5Fb", " q"]),
        st.text(max_size=3),
    )
    pairs = draw(
        st.lists(
            st.tuples(names, st.one_of(_PLACEHOLDERS, _mixed(_PLACEHOLDERS), _LITERAL)), max_size=4
        )
    )
    query = "&".join(f"{k}={v}" for k, v in pairs)
    where = draw(st.sampled_from(["path", "query", "nowhere"]))
    if where == "path":
        path += "/%selector%"
    elif where == "query":
        query += ("&" if query else "") + "sel=%selector%"
    url = f"https://push.example.com/{path}"
    if query or draw(st.booleans()):
        url += "?" + query
    return url


@st.composite
def likely_account_xml_values(draw: Any) -> dict[str, str]:
    """Account XML values of which most parse: a likely URL, and a body of the kind its
    content type says (often carrying the selector) or none."""
    url = draw(likely_urls())
    kind = draw(st.sampled_from(["none", "form", "json", "text", "any"]))
    if kind == "none":
        return {"url": url, "post_data": "", "content_type": "", "method": draw(methods)}
    if kind == "form":
        body = draw(st.lists(_FORM_PIECES, max_size=10).map("".join))
        body += draw(st.sampled_from(["", "&selector=%selector%", "&s=a%selector%b"]))
        ctype = draw(st.sampled_from(["", "application/x-www-form-urlencoded"]))
    elif kind == "json":
        body = draw(json_post_data())
        ctype = draw(st.sampled_from(["application/json", "application/vnd.x+json"]))
    elif kind == "text":
        body = draw(st.lists(_TEXT_PIECES, max_size=10).map("".join)) + "\n%selector%;"
        ctype = draw(st.sampled_from(["text/plain", "application/xml"]))
    else:
        body, ctype = draw(post_datas), draw(content_types)
    return {
        "url": url,
        "post_data": body,
        "content_type": ctype,
        "method": draw(st.sampled_from(["", "POST", "PUT", "DELETE", "GET"])),
    }


_JSON_LITERALS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"',
        '"',
        '"k"',
        '"selector"',
        '"Selector"',
        '"a":',
        " ",
        "\n",
        "null",
        "true",
        "2",
        "\\",
        '\\"',
        "\\u00e9",
        "\\ud800",
        "x",
    ]
)


@st.composite
def json_post_data(draw: Any) -> str:
    """JSON templates: well-formed ones with placeholders inside strings or standing for
    whole values (nested objects and arrays), then sometimes damaged; or JSON-ish
    token soup."""
    if draw(st.booleans()):
        return "".join(draw(st.lists(st.one_of(_JSON_LITERALS, _PLACEHOLDERS), max_size=20)))
    leaves = st.one_of(
        _PLACEHOLDERS.map(lambda p: f'"{p}"'),
        _PLACEHOLDERS,
        _PLACEHOLDERS.map(lambda p: f'"pre {p} post"'),
        st.sampled_from(['"const"', "2", "false", "null", '""']),
    )
    keys = st.one_of(
        st.sampled_from(["selector", "token", "app", "user", "Token", "id"]),
        st.text(max_size=5),
        _PLACEHOLDERS,
    )

    def obj(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        members = st.lists(st.tuples(keys, children), max_size=4)
        return members.map(
            lambda ms: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in ms) + "}"
        )

    tree = st.recursive(
        leaves,
        lambda c: obj(c) | st.lists(c, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        max_leaves=10,
    )
    text: str = draw(obj(tree))
    if text and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(_JSON_LITERALS) + text[i + 1 :]
    return text


_FORM_PIECES = st.one_of(
    _PLACEHOLDERS,
    st.sampled_from(
        [
            "&",
            "&",
            "=",
            "selector=",
            "token_msgs=",
            "a=",
            "=%selector%",
            "&amp;",
            "\n",
            " ",
            "+",
            "%20",
            "%5F",
            "key=const",
            "A=",
            "a=",
        ]
    ),
    st.text(max_size=3),
)
_TEXT_PIECES = st.one_of(
    _PLACEHOLDERS,
    st.sampled_from(
        [
            "<push>",
            "</push>",
            "<a>",
            "</a>",
            "'",
            " ",
            ";",
            "\n",
            "calls ",
            "&amp;",
            "&lt;",
        ]
    ),
    st.text(max_size=3),
)

post_datas = st.one_of(
    st.just(""),
    st.lists(_FORM_PIECES, max_size=16).map("".join),
    json_post_data(),
    st.lists(_TEXT_PIECES, max_size=16).map("".join),
    st.text(max_size=40),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/vnd.api+json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/xml",
            "text/xml; charset=utf-8",
            ";",
            " ",
            "multipart/form-data",
        ]
    ),
    st.text(max_size=12),
)
methods = st.one_of(
    st.sampled_from(
        ["", "GET", "POST", "PUT", "HEAD", "DELETE", "post", " put ", "PATCH", "OPTIONS"]
    ),
    st.text(max_size=6),
)


@st.composite
def account_xml_values(draw: Any) -> dict[str, str]:
    return {
        "url": draw(template_urls()),
        "post_data": draw(post_datas),
        "content_type": draw(content_types),
        "method": draw(methods),
    }


def parse_template(xml: dict[str, str]) -> Template | None:
    """``Template.parse``, checked to be total: a Template, or None for a
    ConfigurationError that names its key and is fit to print."""
    try:
        template = Template.parse(**xml)
    except ConfigurationError as e:
        assert e.key, e
        assert e.key.startswith("pushTokenReporter"), e.key
        assert str(e).startswith(f"{e.key}: ")
        str(e).encode("utf-8", "surrogatepass")
        return None
    assert isinstance(template, Template)
    assert "selector" in template.variables
    assert template.method in ("GET", "POST", "PUT", "HEAD", "DELETE")
    return template


def assert_total(request: Request, template: Template) -> Report | None:
    """``parse_request`` returns a valid report or raises a 4xx PushReportError."""
    try:
        report = parse_request(request, template)
    except PushReportError as e:
        assert isinstance(e, InvalidReport), repr(e)
        assert 400 <= e.error_status_hint < 500
        assert e.msg and "\n" not in e.msg, repr(e.msg)
        assert e.msg.isprintable(), repr(e.msg)
        return None
    assert isinstance(report, Report)
    assert SELECTOR.fullmatch(report.selector)
    for token in (report.token_calls, report.token_msgs):
        assert token is None or (TOKEN.fullmatch(token) and len(token) >= 8)
    for app_id in (report.appid_calls, report.appid_msgs):
        assert app_id is None or APP_ID.fullmatch(app_id)
    for text in (report.username or "", *report.extra, *report.extra.values()):
        assert not BAD_TEXT.search(text)
    return report


@given(xml=st.one_of(account_xml_values(), likely_account_xml_values()))
@example(
    xml={
        "url": "https://x/%selector%%pushToken%",
        "post_data": "",
        "content_type": "",
        "method": "",
    }
)
@example(
    xml={
        "url": "https://x/",
        "post_data": '{"a": %selector%, "a": 1}',
        "content_type": "application/json",
        "method": "",
    }
)
@example(
    xml={
        "url": "https://x/",
        "post_data": '{"%selector%": 1}',
        "content_type": "application/json",
        "method": "",
    }
)
@example(
    xml={"url": "https://x/?a=%selector%&A=1", "post_data": "", "content_type": "", "method": ""}
)
@example(
    xml={
        "url": "https://x/\ud800?s=%selector%",
        "post_data": "\udfff",
        "content_type": "\x00",
        "method": "\ud800",
    }
)
def test_template_parse_returns_a_template_or_raises_configuration_error(
    xml: dict[str, str],
) -> None:
    parse_template(xml)


@st.composite
def requests_for(draw: Any, template: Template) -> Request:
    """The app's request for *template* (all values known, some, or awkward), damaged in
    a few places or not; or one with an arbitrary target and body."""
    if draw(st.integers(0, 4)) == 0:
        return Request(
            method=draw(methods),
            target=draw(st.text(max_size=80)),
            body=draw(st.binary(max_size=80)),
            content_type=draw(st.none() | content_types),
        )
    values = draw(s.registration_values)
    variables = s.variables_for(values)
    variables["account[displayName]"] = draw(st.none() | st.text(max_size=8))
    request = render_request(template, variables)
    target, body = request.target, request.body.decode("utf-8")
    for _ in range(draw(st.integers(0, 3))):
        which = draw(st.sampled_from(["target", "body"]))
        data = target if which == "target" else body
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 6)))
        data = data[:i] + draw(st.text(max_size=4)) + data[j:]
        if which == "target":
            target = data
        else:
            body = data
    return Request(
        method=draw(st.sampled_from([request.method, request.method, "GET", "POST", "head"])),
        target=target,
        body=body.encode("utf-8", "surrogatepass"),
        content_type=draw(
            st.sampled_from(
                [
                    request.content_type,
                    request.content_type,
                    None,
                    "application/json",
                    "text/plain",
                ]
            )
        ),
        user_agent=draw(st.none() | st.text(max_size=20)),
    )


@given(data=st.data(), xml=likely_account_xml_values())
def test_every_template_that_parses_gives_a_total_parser(data: Any, xml: dict[str, str]) -> None:
    template = parse_template(xml)
    assume(template is not None)
    assert template is not None
    for _ in range(5):
        assert_total(data.draw(requests_for(template)), template)


@given(data=st.data(), template=s.templates())
def test_generated_templates_give_a_total_parser(data: Any, template: Template) -> None:
    # The kit's templates always parse: the requests against them get deeper into the
    # matchers than those against random templates, which mostly fail early.
    for _ in range(5):
        assert_total(data.draw(requests_for(template)), template)


@given(
    xml=likely_account_xml_values(),
    filler=st.sampled_from(["a", "%", "&", "/", "=", "%2F", '"', "\\", " "]),
)
@settings(max_examples=max(20, settings().max_examples * 3 // 5))  # each one is slow
def test_long_hostile_requests_take_linear_time(xml: dict[str, str], filler: str) -> None:
    # A template with several values and literal text between them must not backtrack
    # against a request made of that literal text repeated (a ReDoS): the limits allow an
    # 8 KiB target and a 16 KiB body.
    template = parse_template(xml)
    assume(template is not None)
    assert template is not None
    target_len = 8 * 1024 // len(filler) - 2
    body_len = 16 * 1024 // len(filler) - 2
    request = Request(
        method=template.method,
        target="/" + filler * target_len,
        body=(filler * body_len).encode(),
        content_type=template.content_type or None,
    )
    started = time.process_time()
    assert_total(request, template)
    assert time.process_time() - started < 1.0


@pytest.mark.parametrize(
    ("method", "shown"),
    [
        ("\n", "'\\n'"),
        ("G\x00T", "'G\\x00T'"),
        ("GÉT", "'G\\xc9T'"),
        ("X" * 30, repr("X" * 20)),
        ("PATCH", "PATCH"),
        ("M-SEARCH", "M-SEARCH"),
    ],
)
@pytest.mark.parametrize(
    "template", [None, Template.parse(url="https://x/?s=%selector%")], ids=["default", "template"]
)
def test_a_method_not_allowed_is_shown_on_one_printable_line(
    method: str, shown: str, template: Template | None
) -> None:
    # Found by the long run of the properties above: the method was echoed as sent.
    with pytest.raises(MethodNotAllowed) as info:
        parse_request(Request(method=method, target="/token/"), template)
    assert info.value.msg.startswith(f"method {shown} is not allowed here")
    assert info.value.msg.isprintable()
