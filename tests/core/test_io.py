"""One case table, run in both directions (h11's ``test_io.py`` is the model).

Each case is an Account XML configuration, the values the app knows, the request as it
arrives on the wire and the report it must give. Direction 1: template + values →
``render_request`` (the app) → ``parse_request`` (us) → the same values. Direction 2: the
literal request → ``parse_request`` → the expected report. A case runs against the
compiled template, the default shapes (no template configured), or both.
"""

from __future__ import annotations

import textwrap

import attrs
import pytest

from pushreport_core import (
    DEFAULT_SHAPES,
    Report,
    Request,
    Template,
    parse_request,
    render_request,
)

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
TOKEN_CALLS_Q = "Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
TOKEN_CALLS_JSON = TOKEN_CALLS.replace("/", "\\/")  # JSON may escape "/"
TOKEN_PLUS = "Af+3kP/9zQ+w8g=="
APP = "com.cloudsoftphone.app"
APP_PUSHKIT = "com.cloudsoftphone.app.pushkit"
UA = "CloudSoftphone/1.5.6"

BOTH = ("template", "default")
TEMPLATE = ("template",)


def wire(raw: str) -> Request:
    """A request as written in the spec (request line, headers, blank line, body)."""
    head, _, body = textwrap.dedent(raw).lstrip("\n").partition("\n\n")
    request_line, *header_lines = head.splitlines()
    method, target, _version = request_line.split(" ")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(
        method=method,
        target=target,
        body=body.encode("utf-8"),
        content_type=headers.get("content-type"),
        user_agent=headers.get("user-agent"),
    )


@attrs.frozen(kw_only=True)
class Case:
    id: str
    xml: dict[str, str]  # Account XML values, as Template.parse takes them
    values: dict[str, str | None]  # template variable -> what the app substitutes
    wire: Request  # the request as it arrives
    expected: Report
    password: str | None = None
    parse_with: tuple[str, ...] = TEMPLATE
    #: The renderer produces exactly ``wire``, byte for byte.
    exact: bool = False


SPEC_VALUES = {
    "account[username]": "johndow",
    "selector": SEL,
    "pushTokenIncomingCall": TOKEN_CALLS,
    "pushappid_incoming_call": APP_PUSHKIT,
    "pushTokenOther": TOKEN_MSGS,
    "pushappid_other": APP,
}
SPEC_REPORT = Report(
    selector=SEL,
    username="johndow",
    token_calls=TOKEN_CALLS,
    appid_calls=APP_PUSHKIT,
    token_msgs=TOKEN_MSGS,
    appid_msgs=APP,
    user_agent=UA,
)

# The spec's "GET method" request, verbatim.
SPEC_GET = wire(f"""
    GET /token/?username=johndow&password=12345678&selector={SEL}&token_msgs={TOKEN_MSGS}&appid_msgs=com.cloudsoftphone.app&token_calls={TOKEN_CALLS_Q}&appid_calls=com.cloudsoftphone.app.pushkit HTTP/1.1
    Host: example.com
    Connection: close
    Cache-Control: max-age=0
    User-Agent: CloudSoftphone/1.5.6

    """)  # noqa: E501

# The spec's "POST method, JSON" request, verbatim (its Content-Length is not the body's).
SPEC_JSON_BODY = """\
{
    "token_msgs"    : "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",
    "appid_msgs"    : "com.cloudsoftphone.app",
    "token_calls"   : "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    "appid_calls"   : "com.cloudsoftphone.app.pushkit",
    "selector"      : "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
}"""
SPEC_JSON_POST = Request(
    method="POST",
    target="/token/johndow/",
    body=SPEC_JSON_BODY.encode(),
    content_type="application/json",
    user_agent=UA,
)
assert SPEC_JSON_POST == wire(
    """
    POST /token/johndow/ HTTP/1.1
    Host: example.com
    Connection: close
    Cache-Control: max-age=0
    User-Agent: CloudSoftphone/1.5.6
    Content-Type: application/json
    Content-Length: 183

    """
    + textwrap.indent(SPEC_JSON_BODY, "    ").lstrip()
)

# The spec's configuration examples, verbatim.
SPEC_QUERY_URL = (
    "https://example.com/token/?username=%account[username]%&selector=%selector%"
    "&token_calls=%pushTokenIncomingCall%&appid_calls=%pushappid_incoming_call%"
    "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
)
SPEC_PATH_URL = (
    "https://example.com/pushToken/%account[username]%/%selector%/%pushToken%&appid=%pushappid%"
)
SPEC_FORM = (
    "username=%account[username]%&selector=%selector%&token_calls=%pushTokenIncomingCall%"
    "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
    "&appid_msgs=%pushappid_other%"
)
SPEC_JSON = (
    '{ "username" : "%account[username]%", "token_calls" : "%pushTokenIncomingCall%", '
    '"token_msgs" : "%pushTokenOther%", "selector" : "%selector%", '
    '"appId_calls": "%pushappid_incoming_call%", "appId_msgs" : "%pushappid_other%" }'
)

CASES = [
    Case(
        id="spec-get-with-password",
        xml={
            "url": SPEC_QUERY_URL.replace("&selector=", "&password=%account[password]%&selector=")
        },
        values={**SPEC_VALUES, "account[password]": "12345678"},
        wire=SPEC_GET,
        expected=SPEC_REPORT,
        password="12345678",
        parse_with=BOTH,
    ),
    Case(
        # The spec's query template has no password: the parameter is ignored.
        id="spec-get-spec-template",
        xml={"url": SPEC_QUERY_URL},
        values=SPEC_VALUES,
        wire=SPEC_GET,
        expected=SPEC_REPORT,
    ),
    Case(
        id="spec-json-post",
        xml={
            "url": "https://example.com/token/%account[username]%/",
            "post_data": SPEC_JSON_BODY.replace(TOKEN_MSGS, "%pushTokenOther%")
            .replace(f'"{APP}"', '"%pushappid_other%"')
            .replace(TOKEN_CALLS, "%pushTokenIncomingCall%")
            .replace(APP_PUSHKIT, "%pushappid_incoming_call%")
            .replace(SEL, "%selector%"),
            "content_type": "application/json",
        },
        values=SPEC_VALUES,
        wire=SPEC_JSON_POST,
        expected=SPEC_REPORT,
        parse_with=BOTH,
        exact=True,
    ),
    Case(
        # A "/" in the token travels as %2F inside the last path segment.
        id="spec-path",
        xml={"url": SPEC_PATH_URL},
        values={
            "account[username]": "johndow",
            "selector": SEL,
            "pushToken": TOKEN_CALLS,
            "pushappid": APP,
        },
        wire=wire(f"""
            GET /pushToken/johndow/{SEL}/{TOKEN_CALLS_Q}&appid=com.cloudsoftphone.app HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),
        expected=Report(
            selector=SEL, username="johndow", token_msgs=TOKEN_CALLS, appid_msgs=APP, user_agent=UA
        ),
        parse_with=BOTH,
    ),
    Case(
        id="spec-form-post",
        xml={"url": "https://example.com/token/", "post_data": SPEC_FORM},
        values=SPEC_VALUES,
        wire=wire(f"""
            POST /token/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/x-www-form-urlencoded

            username=johndow&selector={SEL}&token_calls={TOKEN_CALLS_Q}&appid_calls=com.cloudsoftphone.app.pushkit&token_msgs={TOKEN_MSGS}&appid_msgs=com.cloudsoftphone.app"""),  # noqa: E501
        expected=SPEC_REPORT,
        parse_with=BOTH,
    ),
    Case(
        # The spec's JSON template says "appId_calls"; other documents "appid_calls".
        id="spec-json-template-appId",
        xml={
            "url": "https://example.com/token/",
            "post_data": SPEC_JSON,
            "content_type": "application/json",
        },
        values=SPEC_VALUES,
        wire=wire(f"""
            POST /token/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/json; charset=utf-8

            {{"selector": "{SEL}", "username": "johndow",
              "token_calls": "{TOKEN_CALLS_JSON}", "appid_calls": "{APP_PUSHKIT}",
              "token_msgs": "{TOKEN_MSGS}", "APPID_MSGS": "{APP}"}}
            """),
        expected=SPEC_REPORT,
        parse_with=BOTH,
    ),
    Case(
        # The iOS delay: pushTokenOther not known yet, sent empty; so is its app id.
        id="ios-delay-empty-values",
        xml={"url": SPEC_QUERY_URL},
        values={**SPEC_VALUES, "pushTokenOther": None, "pushappid_other": None},
        wire=wire(f"""
            GET /token/?username=johndow&selector={SEL}&token_calls={TOKEN_CALLS_Q}&appid_calls=com.cloudsoftphone.app.pushkit&token_msgs=&appid_msgs= HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=attrs.evolve(SPEC_REPORT, token_msgs=None, appid_msgs=None),
        parse_with=BOTH,
    ),
    Case(
        # Raw variable names as form keys; the app left a "+" unencoded, which form
        # decoding turns into a space: restored, since tokens never hold a space.
        id="form-variable-names",
        xml={
            "url": "https://example.com/token/",
            "post_data": (
                "selector=%selector%&pushTokenIncomingCall=%pushTokenIncomingCall%"
                "&pushappid_incoming_call=%pushappid_incoming_call%"
                "&pushTokenOther=%pushTokenOther%&pushappid_other=%pushappid_other%"
            ),
        },
        values={
            "selector": SEL,
            "pushTokenIncomingCall": TOKEN_PLUS,
            "pushappid_incoming_call": APP_PUSHKIT,
            "pushTokenOther": TOKEN_MSGS,
            "pushappid_other": APP,
        },
        wire=wire(f"""
            POST /token/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            selector={SEL}&pushTokenIncomingCall={TOKEN_PLUS}&pushappid_incoming_call={APP_PUSHKIT}&pushTokenOther={TOKEN_MSGS}&pushappid_other={APP}
            """),  # noqa: E501
        expected=Report(
            selector=SEL,
            token_calls=TOKEN_PLUS,
            appid_calls=APP_PUSHKIT,
            token_msgs=TOKEN_MSGS,
            appid_msgs=APP,
            user_agent=UA,
        ),
        parse_with=BOTH,
    ),
    Case(
        # The deployer's own parameter names; order on the wire differs from the
        # template's; a custom Account XML key lands in extra under its variable name.
        id="query-aliases",
        xml={
            "url": (
                "https://push.example.org/register.php?sel=%selector%"
                "&push_token=%pushToken%&push_app=%pushappid%&user=%account[username]%"
                "&cloud=%account[cloud_username]%"
            )
        },
        values={
            "selector": SEL,
            "pushToken": TOKEN_PLUS,
            "pushappid": APP,
            "account[username]": "john+doe@example.com",
            "account[cloud_username]": "jd 42",
        },
        wire=wire(f"""
            GET /register.php?user=john%2Bdoe%40example.com&cloud=jd+42&sel={SEL}&push_token=Af%2B3kP%2F9zQ%2Bw8g%3D%3D&push_app={APP} HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=Report(
            selector=SEL,
            username="john+doe@example.com",
            token_msgs=TOKEN_PLUS,
            appid_msgs=APP,
            extra={"account[cloud_username]": "jd 42"},
            user_agent=UA,
        ),
    ),
    Case(
        # A text/plain body carrying the tokens, the rest in the query; a trailing
        # newline after the body is tolerated.
        id="text-plain-body",
        xml={
            "url": "https://example.com/report/?selector=%selector%&user=%account[username]%",
            "post_data": "calls=%pushTokenIncomingCall% %pushappid_incoming_call%\n"
            "msgs=%pushTokenOther% %pushappid_other%",
            "content_type": "text/plain",
        },
        values=SPEC_VALUES,
        wire=wire(f"""
            POST /report/?selector={SEL}&user=johndow HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: text/plain

            calls={TOKEN_CALLS} {APP_PUSHKIT}
            msgs={TOKEN_MSGS} {APP}
            """),
        expected=SPEC_REPORT,
    ),
    Case(
        # Objects and arrays, constants that must match, literal text around a value,
        # keys in another order and case on the wire.
        id="nested-json",
        xml={
            "url": "https://api.example.net/v1/devices",
            "method": "put",
            "content_type": "application/json",
            "post_data": textwrap.dedent("""\
                {"device": {"selector": "%selector%", "user": "%account[username]%"},
                 "push": [{"type": "voip", "token": "%pushTokenIncomingCall%",
                           "app": "%pushappid_incoming_call%"},
                          {"type": "apns", "token": "%pushTokenOther%",
                           "app": "%pushappid_other%"}],
                 "label": "acct: \\"%account[username]%\\" (%installid%)",
                 "v": 2}"""),
        },
        values={**SPEC_VALUES, "account[username]": 'j"d\\ø', "installid": "i-1"},
        wire=wire(f"""
            PUT /v1/devices HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/json

            {{"V": 2, "Label": "acct: \\"j\\"d\\\\\\u00f8\\" (i-1)",
              "Push": [{{"app": "{APP_PUSHKIT}", "token": "{TOKEN_CALLS}", "type": "voip"}},
                       {{"token": "{TOKEN_MSGS}", "app": "{APP}", "type": "apns"}}],
              "Device": {{"User": "j\\"d\\\\ø", "Selector": "{SEL}"}}}}
            """),
        expected=attrs.evolve(SPEC_REPORT, username='j"d\\ø', extra={"installid": "i-1"}),
    ),
    Case(
        # A constant shared secret in the query must be there and match.
        id="query-shared-secret",
        xml={
            "url": (
                "https://example.com/token/?key=s3cret&selector=%selector%"
                "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
            )
        },
        values={"selector": SEL, "pushTokenOther": TOKEN_MSGS, "pushappid_other": APP},
        wire=wire(f"""
            GET /token/?selector={SEL}&token_msgs={TOKEN_MSGS}&appid_msgs={APP}&key=s3cret HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=Report(selector=SEL, token_msgs=TOKEN_MSGS, appid_msgs=APP, user_agent=UA),
    ),
    Case(
        # Pasted from Account XML: "&" written "&amp;", in the URL and in the body.
        id="xml-escaped",
        xml={
            "url": "https://example.com/token/?username=%account[username]%&amp;s=1",
            "post_data": (
                "selector=%selector%&amp;token_calls=%pushTokenIncomingCall%"
                "&amp;appid_calls=%pushappid_incoming_call%"
            ),
            "content_type": "application/x-www-form-urlencoded",
        },
        values={
            "account[username]": "a&amp;b",
            "selector": SEL,
            "pushTokenIncomingCall": TOKEN_CALLS,
            "pushappid_incoming_call": APP_PUSHKIT,
        },
        wire=wire(f"""
            POST /token/?username=a%26amp%3Bb&s=1 HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/x-www-form-urlencoded

            selector={SEL}&token_calls={TOKEN_CALLS_Q}&appid_calls={APP_PUSHKIT}"""),
        expected=Report(
            selector=SEL,
            username="a&amp;b",
            token_calls=TOKEN_CALLS,
            appid_calls=APP_PUSHKIT,
            user_agent=UA,
        ),
    ),
]


def _runs() -> list[object]:
    return [
        pytest.param(case, mode, id=f"{case.id}-{mode}")
        for case in CASES
        for mode in case.parse_with
    ]


def _parse(request: Request, case: Case, mode: str) -> Report:
    template = Template.parse(**case.xml) if mode == "template" else None
    if template is not None:
        assert template.owns(request.method, request.path)
    else:
        assert DEFAULT_SHAPES.owns(request.method, request.path)
    return parse_request(request, template)


def _check(report: Report, case: Case) -> None:
    assert report == case.expected
    assert (None if report.password is None else report.password.reveal()) == case.password
    if case.password is not None:
        assert case.password not in repr(report)
        assert case.password not in str(attrs.asdict(report))


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "mode"), _runs())
def test_values_to_request_to_report(case: Case, mode: str) -> None:
    """Direction 1: what the app renders from the template, we read back."""
    request = render_request(Template.parse(**case.xml), case.values)
    if case.exact:
        assert request == case.wire
    assert request.method == case.wire.method
    _check(_parse(request, case, mode), case)


@pytest.mark.parametrize(("case", "mode"), _runs())
def test_wire_request_to_report(case: Case, mode: str) -> None:
    """Direction 2: the literal request gives the expected report."""
    _check(_parse(case.wire, case, mode), case)
