"""Property: ``parse_request`` is total. Whatever arrives, it returns a valid Report or
raises ``InvalidReport`` (or a subclass); nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pushreport_core import InvalidReport, Report, Request, Template, parse_request, render_request
from pushreport_core._grammar import APP_ID, CONTROL, SELECTOR, TOKEN
from pushreport_core.testing import strategies as s

TEMPLATES = [None] + [Template.parse(**xml) for xml in s.ROUNDTRIP_TEMPLATES.values()]
SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"

_PIECES = st.sampled_from(
    [
        "/",
        "token",
        "pushToken",
        "?",
        "&",
        "=",
        "%",
        "%2F",
        "%2f",
        "%zz",
        "%ff",
        "%C3",
        "%00",
        "+",
        " ",
        "selector",
        "username",
        "token_msgs",
        "appid_msgs",
        "pushToken",
        "appid",
        "password",
        "null",
        "(null)",
        "%selector%",
        SEL,
        "QVBBOTFi+/==",
        "com.app.x",
        "é",
        "\x00",
        "[",
        "{",
        '"',
    ]
)
targets = st.one_of(
    st.text(max_size=200),
    st.lists(_PIECES, max_size=30).map("".join),
    st.lists(_PIECES, max_size=30).map(lambda p: "/token/?" + "".join(p)),
    st.lists(_PIECES, max_size=30).map(lambda p: "/pushToken/" + "".join(p)),
)
methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "get", "OPTIONS", ""]),
    st.text(max_size=8),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/xml",
            "APPLICATION/JSON; charset=utf-8",
            "application/vnd.x+json",
            "multipart/form-data; boundary=x",
            ";",
            "text/plain; charset=latin-1",
        ]
    ),
    st.text(max_size=20),
)

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([SEL, "QVBBOTFiRzlhcVd2", "com.cloudsoftphone.app", "", "null"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "selector",
                    "username",
                    "token_msgs",
                    "Token_Msgs",
                    "appId_calls",
                    "device",
                    "account",
                    "push",
                    "v",
                    "user",
                    "id",
                    "kind",
                    "token",
                    "app",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(_PIECES, max_size=30).map(lambda p: "".join(p).encode("utf-8", "surrogatepass")),
)


@st.composite
def mutated_requests(draw: Any) -> Request:
    """A valid request for one of the templates, then damaged in one place."""
    template = draw(st.sampled_from(TEMPLATES[1:]))
    request = render_request(template, s.variables_for(draw(s.registration_values)))
    part = draw(st.sampled_from(["target", "body"]))
    data = request.target if part == "target" else request.body.decode()
    if data:
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(i, min(len(data), i + 8)))
        data = data[:i] + draw(st.text(max_size=4)) + data[j:]
    if part == "target":
        return Request(
            method=request.method,
            target=data,
            body=request.body,
            content_type=request.content_type,
            user_agent=request.user_agent,
        )
    return Request(
        method=request.method,
        target=request.target,
        body=data.encode("utf-8", "surrogatepass"),
        content_type=request.content_type,
        user_agent=request.user_agent,
    )


def _assert_total(request: Request, template: Template | None, **kw: Any) -> None:
    try:
        report = parse_request(request, template, **kw)
    except InvalidReport:
        return
    # A report that comes back is a valid one.
    assert isinstance(report, Report)
    assert SELECTOR.fullmatch(report.selector)
    for token in (report.token_calls, report.token_msgs):
        assert token is None or (TOKEN.fullmatch(token) and len(token) >= 8)
    for app_id in (report.appid_calls, report.appid_msgs):
        assert app_id is None or APP_ID.fullmatch(app_id)
    for text in (report.username or "", *report.extra, *report.extra.values()):
        assert not CONTROL.search(text)
        text.encode("utf-8")  # no lone surrogate


@given(
    method=methods,
    target=targets,
    body=bodies,
    content_type=content_types,
    user_agent=st.none() | st.text(max_size=300),
    template=st.sampled_from(TEMPLATES),
    max_body=st.sampled_from([16 * 1024, 64, 0]),
)
@example(
    method="POST",
    target="/token/",
    body=b"[" * 10_000,
    content_type="application/json",
    user_agent=None,
    template=None,
    max_body=16 * 1024,
)
@example(
    method="PUT",
    target="/v2/register",
    body=b"[" * 10_000,
    content_type="application/json",
    user_agent=None,
    template=TEMPLATES[5],
    max_body=16 * 1024,
)
def test_parse_request_returns_a_report_or_raises_invalid_report(
    method: str,
    target: str,
    body: bytes,
    content_type: str | None,
    user_agent: str | None,
    template: Template | None,
    max_body: int,
) -> None:
    request = Request(
        method=method, target=target, body=body, content_type=content_type, user_agent=user_agent
    )
    _assert_total(request, template, max_body=max_body)


@given(request=mutated_requests(), template=st.sampled_from(TEMPLATES))
def test_damaged_valid_requests_are_reports_or_invalid(
    request: Request, template: Template | None
) -> None:
    _assert_total(request, template)


DEEP = b"[" * 10_000
EXPLICIT = [
    pytest.param("POST", "/token/", DEEP, "application/json", id="deep-array"),
    pytest.param("POST", "/token/", b'{"a":' * 10_000, "application/json", id="deep-object"),
    pytest.param("POST", "/token/", b"\xff\xfe\x00", "application/json", id="bad-utf8-json"),
    pytest.param("POST", "/token/", b"\xc3(", None, id="bad-utf8-form"),
    pytest.param("POST", "/token/", b"[1, 2, 3]", "application/json", id="json-array"),
    pytest.param("POST", "/token/", b"null", "application/json", id="json-null"),
    pytest.param(
        "POST",
        "/token/",
        b'{"selector": 1, "SELECTOR": 2}',
        "application/json",
        id="duplicate-keys",
    ),
    pytest.param(
        "POST",
        "/token/",
        b'{"selector": "\\ud800"}',
        "application/json",
        id="lone-surrogate-escape",
    ),
    pytest.param("POST", "/token/", b"NaN", "application/json", id="json-nan"),
    pytest.param(
        "GET", "/token/?selector=%&token_msgs=%G1%%%2", None, None, id="bad-percent-escapes"
    ),
    pytest.param("GET", "/token/?selector=%E2%82", None, None, id="truncated-utf8-escape"),
    pytest.param("GET", "/token/?=&&&=&==", None, None, id="empty-pairs"),
    pytest.param("GET", "", None, None, id="empty-target"),
    pytest.param("GET", "*", None, None, id="asterisk-target"),
    pytest.param("GET", "/token/\x00?selector=\x00", None, None, id="nul"),
    pytest.param("\x00", "/token/", None, None, id="nul-method"),
]


@pytest.mark.parametrize(("method", "target", "body", "content_type"), EXPLICIT)
@pytest.mark.parametrize("template", TEMPLATES, ids=["default", *s.ROUNDTRIP_TEMPLATES])
def test_hostile_requests_are_refused(
    method: str,
    target: str,
    body: bytes | None,
    content_type: str | None,
    template: Template | None,
) -> None:
    request = Request(method=method, target=target, body=body or b"", content_type=content_type)
    with pytest.raises(InvalidReport):
        parse_request(request, template)
