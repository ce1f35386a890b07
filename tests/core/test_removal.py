"""The Account Removal Reporter in the core: one case table run in both directions (the
app renders the removal from its template, we parse it back; the literal request gives
the expected removal), the default removal shapes, what a removal deletes, keeping the
reporter's and the removal's requests apart, and the Account XML keys."""

from __future__ import annotations

import re
import textwrap
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    DEFAULT_REMOVAL_ACCOUNT_XML,
    DEFAULT_REMOVAL_SHAPES,
    DEFAULT_SHAPES,
    AppModel,
    AppState,
    ConfigurationError,
    InvalidReport,
    MethodNotAllowed,
    Registration,
    Removal,
    RemovalPlan,
    Request,
    RequestTooLarge,
    Template,
    account_xml,
    app_variables,
    claim,
    default_removal_template,
    may_write,
    parse_removal,
    removal_account_xml,
    removal_template,
    render_request,
    shapes_overlap,
)
from pushreport_core._grammar import SELECTOR, TOKEN
from pushreport_core.testing import SPEC_TEMPLATES, SPEC_VALUES, values_variables

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
SEL_Q = SEL.replace(":", "%3A")
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
TOKEN_CALLS_Q = "Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
UA = "CloudSoftphone/1.5.6"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

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
    xml: dict[str, str]  # accountRemovalReporter* values, as removal_template takes them
    values: dict[str, str | None]
    wire: Request
    expected: Removal
    password: str | None = None
    parse_with: tuple[str, ...] = TEMPLATE


VALUES = app_variables(
    selector=SEL,
    username="johndow",
    token_calls=TOKEN_CALLS,
    appid_calls="com.cloudsoftphone.app.pushkit",
    token_msgs=TOKEN_MSGS,
    appid_msgs="com.cloudsoftphone.app",
)
FULL = Removal(
    selector=SEL, username="johndow", token_calls=TOKEN_CALLS, token_msgs=TOKEN_MSGS, user_agent=UA
)
_PAIRS = (
    "selector=%selector%&username=%account[username]%"
    "&token_calls=%pushTokenIncomingCall%&token_msgs=%pushTokenOther%"
)
_JSON = (
    '{"selector": "%selector%", "username": "%account[username]%", '
    '"token_calls": "%pushTokenIncomingCall%", "token_msgs": "%pushTokenOther%"}'
)

CASES = [
    Case(
        id="default-get",
        xml={
            "url": DEFAULT_REMOVAL_ACCOUNT_XML["accountRemovalReporterUrl"].format(
                base_url="https://push.example.com"
            )
        },
        values=VALUES,
        wire=wire(f"""
            GET /removal/?selector={SEL_Q}&username=johndow&token_calls={TOKEN_CALLS_Q}&token_msgs={TOKEN_MSGS} HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=FULL,
        parse_with=BOTH,
    ),
    Case(
        # Only the selector: remove whatever is stored for it.
        id="selector-only-get",
        xml={"url": "https://push.example.com/removal/?selector=%selector%"},
        values=VALUES,
        wire=wire(f"""
            GET /removal/?selector={SEL} HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),
        expected=Removal(selector=SEL, user_agent=UA),
        parse_with=BOTH,
    ),
    Case(
        id="form-post",
        xml={"url": "https://push.example.com/removal/", "post_data": _PAIRS},
        values=VALUES,
        wire=wire(f"""
            POST /removal/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/x-www-form-urlencoded

            selector={SEL}&username=johndow&token_calls={TOKEN_CALLS_Q}&token_msgs={TOKEN_MSGS}"""),  # noqa: E501
        expected=FULL,
        parse_with=BOTH,
    ),
    Case(
        # The username in the path, as the reporter's JSON example has it.
        id="json-post-username-in-path",
        xml={
            "url": "https://push.example.com/removal/%account[username]%/",
            "content_type": "application/json",
            "post_data": '{"selector": "%selector%", "token_msgs": "%pushTokenOther%"}',
        },
        values=VALUES,
        wire=wire(f"""
            POST /removal/johndow/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/json

            {{"selector": "{SEL}", "token_msgs": "{TOKEN_MSGS}"}}"""),
        expected=Removal(selector=SEL, username="johndow", token_msgs=TOKEN_MSGS, user_agent=UA),
        parse_with=BOTH,
    ),
    Case(
        id="delete-token-query",
        xml={"url": f"https://push.example.com/token/?{_PAIRS}", "method": "DELETE"},
        values=VALUES,
        wire=wire(f"""
            DELETE /token/?selector={SEL}&username=johndow&token_calls={TOKEN_CALLS_Q}&token_msgs={TOKEN_MSGS} HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=FULL,
        parse_with=BOTH,
    ),
    Case(
        id="delete-token-username-json",
        xml={
            "url": "https://push.example.com/token/%account[username]%/",
            "method": "DELETE",
            "content_type": "application/json",
            "post_data": _JSON,
        },
        values=VALUES,
        wire=wire(f"""
            DELETE /token/johndow/ HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/json

            {{"selector": "{SEL}", "username": "johndow", "token_calls": "{TOKEN_CALLS}",
              "Token_Msgs": "{TOKEN_MSGS}"}}"""),
        expected=FULL,
        parse_with=BOTH,
    ),
    Case(
        # The reporter's path example, deleted; a "/" in the token travels as %2F.
        id="delete-pushtoken-path",
        xml={
            "url": "https://push.example.com/pushToken/%account[username]%/%selector%/%pushToken%",
            "method": "DELETE",
        },
        values=VALUES,
        wire=wire(f"""
            DELETE /pushToken/johndow/{SEL}/{TOKEN_MSGS} HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),
        expected=Removal(selector=SEL, username="johndow", token_msgs=TOKEN_MSGS, user_agent=UA),
        parse_with=BOTH,
    ),
    Case(
        # The iOS delay at logout: pushTokenOther unknown, sent empty: not named.
        id="ios-token-unknown",
        xml={"url": f"https://push.example.com/removal/?{_PAIRS}"},
        values={**VALUES, "pushTokenOther": None, "pushToken": None},
        wire=wire(f"""
            GET /removal/?selector={SEL}&username=johndow&token_calls={TOKEN_CALLS_Q}&token_msgs= HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),  # noqa: E501
        expected=attrs.evolve(FULL, token_msgs=None),
        parse_with=BOTH,
    ),
    Case(
        id="template-rest-path-with-password",
        xml={
            "url": "https://portal.example.com/api/v1/accounts/%account[username]%/"
            "devices/%selector%?auth=%account[password]%",
            "method": "DELETE",
        },
        values={**VALUES, "account[password]": "s3cr&t pw"},
        wire=wire(f"""
            DELETE /api/v1/accounts/johndow/devices/{SEL_Q}?auth=s3cr%26t%20pw HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6

            """),
        expected=Removal(selector=SEL, username="johndow", user_agent=UA),
        password="s3cr&t pw",
    ),
    Case(
        id="template-nested-json-with-extra",
        xml={
            "url": "https://portal.example.com/v2/logout",
            "method": "POST",
            "content_type": "application/json",
            "post_data": '{"account": {"id": "%selector%", "user": "%account[username]%"},'
            ' "install": "%installid%", "voip": "%pushTokenIncomingCall%"}',
        },
        values={**VALUES, "installid": "inst-42"},
        wire=wire(f"""
            POST /v2/logout HTTP/1.1
            User-Agent: CloudSoftphone/1.5.6
            Content-Type: application/json

            {{"account": {{"id": "{SEL}", "user": "johndow"}}, "install": "inst-42",
              "voip": "{TOKEN_CALLS}"}}"""),
        expected=Removal(
            selector=SEL,
            username="johndow",
            token_calls=TOKEN_CALLS,
            extra={"installid": "inst-42"},
            user_agent=UA,
        ),
    ),
]


def _runs() -> list[Any]:
    return [pytest.param(c, mode, id=f"{c.id}-{mode}") for c in CASES for mode in c.parse_with]


def _parse(request: Request, case: Case, mode: str) -> Removal:
    if mode == "default":
        assert DEFAULT_REMOVAL_SHAPES.owns(request.method, request.path)
        return parse_removal(request)
    template = removal_template(**case.xml)
    assert template.owns(request.method, request.path)
    return parse_removal(request, template)


def _check(removal: Removal, case: Case) -> None:
    assert removal == case.expected
    assert (None if removal.password is None else removal.password.reveal()) == case.password
    if case.password is not None:
        assert case.password not in repr(removal)
        assert case.password not in repr(removal.as_report())


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "mode"), _runs())
def test_values_to_request_to_removal(case: Case, mode: str) -> None:
    """Direction 1: what the app renders from the removal template, we read back."""
    template = removal_template(**case.xml)
    assert template.prefix == "accountRemovalReporter"
    request = render_request(template, case.values)
    assert request.method == case.wire.method
    assert unquote(request.path) == unquote(case.wire.path)
    _check(_parse(request, case, mode), case)


@pytest.mark.parametrize(("case", "mode"), _runs())
def test_wire_request_to_removal(case: Case, mode: str) -> None:
    """Direction 2: the literal request gives the expected removal."""
    _check(_parse(case.wire, case, mode), case)


# -- the default removal shapes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "owned"),
    [
        ("GET", "/removal/", True),
        ("GET", "/removal", True),
        ("PATCH", "/removal/", True),  # ours: answered 405, not passed on
        ("POST", "/removal/johndow/", True),
        ("DELETE", "/removal/johndow/", True),
        ("GET", "/removal/help", False),  # a portal's page under /removal/
        ("DELETE", "/token/", True),
        ("DELETE", "/token/johndow/", True),
        ("DELETE", f"/pushToken/johndow/{SEL}/{TOKEN_MSGS}", True),
        ("GET", "/token/", False),  # the reporter's
        ("POST", "/token/johndow/", False),
        ("GET", "/token/list", False),
        ("DELETE", "/something/else", False),
        ("DELETE", "/tokens/", False),
    ],
)
def test_default_removal_shapes_own(method: str, path: str, owned: bool) -> None:
    assert DEFAULT_REMOVAL_SHAPES.owns(method, path) is owned


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (
            Request(method="GET", target="/removal/?username=johndow"),
            InvalidReport,
            "selector is missing",
        ),
        (
            Request(method="GET", target="/removal/?selector=nothex"),
            InvalidReport,
            "selector is not valid: expected 40 hex digits, ':' and a hex suffix",
        ),
        (
            Request(method="GET", target=f"/removal/?selector={SEL}&token_msgs=abc"),
            InvalidReport,
            "token_msgs is too short (3 < 8 characters)",
        ),
        (
            Request(method="PATCH", target=f"/removal/?selector={SEL}"),
            MethodNotAllowed,
            "method PATCH is not allowed here",
        ),
        (
            Request(
                method="POST",
                target="/removal/",
                body=b"selector " + SEL.encode(),
                content_type="text/plain",
            ),
            InvalidReport,
            "Content-Type 'text/plain' is not a default shape; configure a template for it",
        ),
        (
            Request(
                method="DELETE", target="/token/", body=b"[1]", content_type="application/json"
            ),
            InvalidReport,
            "body must be a JSON object",
        ),
        (
            Request(method="DELETE", target=f"/tokens/?selector={SEL}"),
            InvalidReport,
            "path is not one of the default removal paths",
        ),
        (
            Request(method="GET", target=f"/token/?selector={SEL}"),
            MethodNotAllowed,
            "method GET is not allowed here",
        ),
        (
            Request(method="GET", target=f"/removal/?selector={SEL}", body=b"x" * 65),
            RequestTooLarge,
            "body is too large (65 > 64 bytes)",
        ),
    ],
)
def test_invalid_removals_are_refused_verbatim(
    request_: Request, error: type, message: str
) -> None:
    with pytest.raises(error) as info:
        parse_removal(request_, max_body=64)
    assert str(info.value) == message


def test_method_not_allowed_names_the_allowed_ones() -> None:
    with pytest.raises(MethodNotAllowed) as info:
        parse_removal(Request(method="PATCH", target="/removal/"))
    assert info.value.allowed == ("GET", "HEAD", "POST", "PUT", "DELETE")
    assert info.value.error_status_hint == 405


def test_a_configured_removal_template_refuses_another_method() -> None:
    template = removal_template(url="https://x/logout/?s=%selector%", method="DELETE")
    with pytest.raises(MethodNotAllowed) as info:
        parse_removal(Request(method="GET", target=f"/logout/?s={SEL}"), template)
    assert str(info.value) == "method GET is not allowed here; the template uses DELETE"


_PIECES = st.sampled_from(
    [
        "/",
        "removal",
        "token",
        "pushToken",
        "?",
        "&",
        "=",
        "%",
        "%2F",
        "%zz",
        "+",
        "selector",
        "username",
        "token_msgs",
        "token_calls",
        SEL,
        TOKEN_MSGS,
        "null",
        "é",
        "\x00",
        "{",
        '"',
    ]
)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", ""]),
    target=st.one_of(
        st.text(max_size=80),
        st.lists(_PIECES, max_size=20).map(lambda p: "/removal/?" + "".join(p)),
        st.lists(_PIECES, max_size=20).map(lambda p: "/token/" + "".join(p)),
    ),
    body=st.one_of(
        st.binary(max_size=100), st.lists(_PIECES, max_size=20).map(lambda p: "".join(p).encode())
    ),
    content_type=st.sampled_from([None, "application/json", "text/plain", ""]),
    template=st.sampled_from(
        [
            None,
            removal_template(
                url="https://x/removal/%account[username]%/",
                method="DELETE",
                content_type="application/json",
                post_data=_JSON,
            ),
        ]
    ),
)
def test_parse_removal_returns_a_removal_or_raises_invalid_report(
    method: str, target: str, body: bytes, content_type: str | None, template: Template | None
) -> None:
    request = Request(method=method, target=target, body=body, content_type=content_type)
    try:
        removal = parse_removal(request, template)
    except InvalidReport:
        return
    assert SELECTOR.fullmatch(removal.selector)
    for token in (removal.token_calls, removal.token_msgs):
        assert token is None or TOKEN.fullmatch(token)


# -- what a removal deletes ---------------------------------------------------------------------

OTHER = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="


def _registration(**fields: Any) -> Registration:
    return Registration(selector=SEL, first_seen=T0, last_seen=T0, **fields)


@pytest.mark.parametrize(
    ("removal", "stored", "applies"),
    [
        (Removal(selector=SEL), None, False),  # nothing stored: nothing to delete
        (Removal(selector=SEL), _registration(token_msgs=TOKEN_MSGS), True),
        (Removal(selector=SEL, token_msgs=TOKEN_MSGS), _registration(token_msgs=TOKEN_MSGS), True),
        # A stored token the removal does not know, or a named one nothing is stored for.
        (Removal(selector=SEL, token_msgs=TOKEN_MSGS), _registration(token_calls=OTHER), True),
        (
            Removal(selector=SEL, token_calls=TOKEN_CALLS, token_msgs=TOKEN_MSGS),
            _registration(token_calls=TOKEN_CALLS, token_msgs=TOKEN_MSGS),
            True,
        ),
        # A newer report replaced the token the removal names: the removal is stale.
        (Removal(selector=SEL, token_msgs=TOKEN_MSGS), _registration(token_msgs=OTHER), False),
        (
            Removal(selector=SEL, token_calls=TOKEN_CALLS, token_msgs=TOKEN_MSGS),
            _registration(token_calls=OTHER, token_msgs=TOKEN_MSGS),
            False,
        ),
        # Usernames and app ids do not guard: the selector is the account on this install.
        (Removal(selector=SEL, username="someone"), _registration(username="johndow"), True),
        (
            Removal(selector=SEL),
            Registration(selector="ab" * 20 + ":1", first_seen=T0, last_seen=T0),
            False,
        ),
    ],
)
def test_applies_to(removal: Removal, stored: Registration | None, applies: bool) -> None:
    assert removal.applies_to(stored) is applies


@pytest.mark.parametrize(
    ("removal", "stored", "identified", "plan"),
    [
        (Removal(selector=SEL), None, False, RemovalPlan.GONE),
        (Removal(selector=SEL, username="u"), None, True, RemovalPlan.GONE),
        (Removal(selector=SEL), _registration(token_msgs=TOKEN_MSGS), False, RemovalPlan.DELETE),
        (
            Removal(selector=SEL, token_msgs=TOKEN_MSGS),
            _registration(token_msgs=OTHER),
            False,
            RemovalPlan.KEEP_NEWER,
        ),
        # Another user's registration: refused when the user is identified, else the
        # username does not guard.
        (
            Removal(selector=SEL, username="mallory"),
            _registration(username="johndow"),
            True,
            RemovalPlan.REFUSE,
        ),
        (
            Removal(selector=SEL, username="mallory"),
            _registration(username="johndow"),
            False,
            RemovalPlan.DELETE,
        ),
        (
            Removal(selector=SEL, username="johndow"),
            _registration(username="johndow"),
            True,
            RemovalPlan.DELETE,
        ),
        (Removal(selector=SEL, username="u"), _registration(), True, RemovalPlan.DELETE),
        # Refused before it is judged stale: the other user learns nothing of its tokens.
        (
            Removal(selector=SEL, username="mallory", token_msgs=TOKEN_MSGS),
            _registration(username="johndow", token_msgs=OTHER),
            True,
            RemovalPlan.REFUSE,
        ),
    ],
)
def test_the_removal_plan(
    removal: Removal, stored: Registration | None, identified: bool, plan: RemovalPlan
) -> None:
    assert removal.plan(stored, identified=identified) is plan


@given(
    removal=st.builds(
        Removal,
        selector=st.just(SEL),
        username=st.sampled_from((None, "a", "b")),
        token_calls=st.sampled_from((None, TOKEN_CALLS, OTHER)),
        token_msgs=st.sampled_from((None, TOKEN_MSGS, OTHER)),
    ),
    stored=st.none()
    | st.builds(
        _registration,
        username=st.sampled_from((None, "a", "b")),
        token_calls=st.sampled_from((None, TOKEN_CALLS, OTHER)),
        token_msgs=st.sampled_from((None, TOKEN_MSGS, OTHER)),
    ),
    identified=st.booleans(),
)
def test_the_plan_deletes_exactly_what_applies_and_may_be_written(
    removal: Removal, stored: Registration | None, identified: bool
) -> None:
    plan = removal.plan(stored, identified=identified)
    may = not identified or may_write(stored, removal.username)
    assert (plan is RemovalPlan.DELETE) is (may and removal.applies_to(stored))
    assert (plan is RemovalPlan.GONE) is (stored is None)


def test_a_plan_for_another_selectors_registration_is_a_bug() -> None:
    other = Registration(selector="ab" * 20 + ":1", first_seen=T0, last_seen=T0)
    with pytest.raises(ValueError, match="has no plan for"):
        Removal(selector=SEL).plan(other)


def test_as_report_carries_what_authentication_reads() -> None:
    template = removal_template(
        url="https://x/r/?s=%selector%&u=%account[username]%&p=%account[password]%"
    )
    removal = parse_removal(
        render_request(template, {**VALUES, "account[password]": "pw123456"}), template
    )
    report = removal.as_report()
    assert (report.selector, report.username) == (SEL, "johndow")
    assert report.password is not None and report.password.matches("pw123456")
    assert "pw123456" not in repr(removal) and "pw123456" not in repr(report)
    assert report.appid_calls is None and report.appid_msgs is None


# -- templates: required variables, errors that name the removal's keys ---------------------


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            {"url": "https://x/removal/?u=%account[username]%"},
            "accountRemovalReporterUrl: the template carries no %selector%: registrations are "
            "removed by selector",
        ),
        (
            {"url": "https://x/removal/", "post_data": "u=%account[username]%"},
            "accountRemovalReporterUrl/accountRemovalReporterPostData: the template carries no "
            "%selector%: registrations are removed by selector",
        ),
        (
            {"url": "https://x/?s=%selector%", "method": "PATCH"},
            "accountRemovalReporterMethod: method 'PATCH' is not one of GET, POST, PUT, HEAD, "
            "DELETE",
        ),
        (
            {"url": "x/?s=%selector%"},
            "accountRemovalReporterUrl: must be an absolute URL with a scheme, e.g. "
            "https://example.com/token/?selector=%selector%",
        ),
    ],
)
def test_removal_template_errors_name_the_removal_keys(xml: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        removal_template(**xml)
    assert str(info.value).split("\n")[0] == message


def test_the_reporter_still_requires_what_it_requires() -> None:
    with pytest.raises(ConfigurationError) as info:
        Template.parse(url="https://x/token/?u=%account[username]%")
    assert str(info.value) == (
        "pushTokenReporterUrl: the template carries no %selector%: reports are stored by selector"
    )


def test_a_removal_needs_only_the_selector() -> None:
    template = removal_template(url="https://x/bye/%selector%", method="DELETE")
    assert template.variables == {"selector"}
    assert parse_removal(Request(method="DELETE", target=f"/bye/{SEL}"), template) == Removal(
        selector=SEL
    )


# -- keeping the reporter's and the removal's requests apart --------------------------------

REPORTER_QUERY = Template.parse(**SPEC_TEMPLATES["query"])


@pytest.mark.parametrize(
    ("reporter", "removal", "overlap"),
    [
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, None),
        (REPORTER_QUERY, DEFAULT_REMOVAL_SHAPES, None),
        (DEFAULT_SHAPES, default_removal_template(), None),
        # One path, two methods: apart.
        (
            REPORTER_QUERY,
            removal_template(url="https://example.com/token/?s=%selector%", method="DELETE"),
            None,
        ),
        # One path, one method: the removal would take the reports.
        (
            REPORTER_QUERY,
            removal_template(url="https://example.com/token/?s=%selector%"),
            ("GET", "/token/"),
        ),
        (
            DEFAULT_SHAPES,
            removal_template(url="https://x/token/%account[username]%/", post_data="s=%selector%"),
            ("POST", "/token/u/"),
        ),
        # A reporter configured on the default removal path, or with DELETE on /token/.
        (
            Template.parse(url="https://x/removal/?s=%selector%"),
            DEFAULT_REMOVAL_SHAPES,
            ("GET", "/removal/"),
        ),
        (
            Template.parse(url="https://x/token/?s=%selector%", method="DELETE"),
            DEFAULT_REMOVAL_SHAPES,
            ("DELETE", "/token/"),
        ),
    ],
)
def test_shapes_overlap(reporter: Any, removal: Any, overlap: tuple[str, str] | None) -> None:
    assert shapes_overlap(reporter, removal) == overlap


REMOVAL_DELETE_ON_TOKEN = removal_template(
    url="https://example.com/token/?s=%selector%", method="DELETE"
)


@pytest.mark.parametrize(
    ("reporter", "removal", "method", "path", "claimed"),
    [
        (DEFAULT_SHAPES, None, "GET", "/token/", "report"),
        (DEFAULT_SHAPES, None, "DELETE", "/token/", "report"),  # answered 405
        (DEFAULT_SHAPES, None, "GET", "/elsewhere", None),
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "GET", "/token/", "report"),
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "DELETE", "/token/", "removal"),
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "delete", "/pushToken/u/s/t", "removal"),
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "GET", "/removal/", "removal"),
        # A portal's own page under /removal/ passes through.
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "GET", "/removal/help", None),
        # One path, two methods: each takes its own.
        (REPORTER_QUERY, REMOVAL_DELETE_ON_TOKEN, "GET", "/token/", "report"),
        (REPORTER_QUERY, REMOVAL_DELETE_ON_TOKEN, "DELETE", "/token/", "removal"),
        # A method neither accepts on a path both own: the reporter's (it answers 405).
        (REPORTER_QUERY, REMOVAL_DELETE_ON_TOKEN, "PATCH", "/token/", "report"),
        # A method only the removal's path owner refuses, on a path only it owns.
        (DEFAULT_SHAPES, DEFAULT_REMOVAL_SHAPES, "PATCH", "/removal/", "removal"),
    ],
)
def test_which_shapes_claim_a_request(
    reporter: Any, removal: Any, method: str, path: str, claimed: str | None
) -> None:
    assert claim(method, path, reporter=reporter, removal=removal) == claimed


# -- the Account XML keys ---------------------------------------------------------------------

_ELEMENT = re.compile(r"<accountRemovalReporter(\w+)>(.*?)</accountRemovalReporter\1>", re.S)
_KEYS = {"Url": "url", "PostData": "post_data", "ContentType": "content_type", "Method": "method"}


def test_default_removal_account_xml_verbatim() -> None:
    assert removal_account_xml(base_url="https://push.example.com/") == (
        "<accountRemovalReporterUrl>https://push.example.com/removal/?selector=%selector%"
        "&amp;username=%account[username]%&amp;token_calls=%pushTokenIncomingCall%"
        "&amp;token_msgs=%pushTokenOther%</accountRemovalReporterUrl>\n"
    )
    assert removal_account_xml().startswith(
        "<accountRemovalReporterUrl>http://127.0.0.1:8080/removal/?"
    )


@pytest.mark.parametrize("case", [c for c in CASES], ids=[c.id for c in CASES])
def test_removal_keys_parse_back_to_the_same_template(case: Case) -> None:
    template = removal_template(**case.xml)
    xml = removal_account_xml(template, base_url="https://other.example.org")
    assert "pushTokenReporter" not in xml
    back = removal_template(**{_KEYS[k]: v for k, v in _ELEMENT.findall(xml)})
    assert back.prefix == "accountRemovalReporter"
    assert (back.method, back.path_template, back.variables) == (
        template.method,
        template.path_template,
        template.variables,
    )
    assert back.url.startswith("https://other.example.org/")
    assert account_xml(template) == removal_account_xml(template)


# -- the app model logs out -------------------------------------------------------------------


def test_app_model_logs_out_through_the_removal_template() -> None:
    removal = default_removal_template("https://push.example.com")
    model = AppModel(
        Template.parse(**SPEC_TEMPLATES["query"]), values_variables(SPEC_VALUES), removal=removal
    )
    model.start(now=T0)
    assert model.state is AppState.SENDING
    request = model.log_out(now=T0)
    assert model.state is AppState.IDLE and model.in_flight is None
    assert request is not None and request.method == "GET"
    assert request.user_agent == model.user_agent
    assert parse_removal(request) == Removal(
        selector=SEL,
        username="johndow",
        token_calls=SPEC_VALUES["token_calls"],
        token_msgs=SPEC_VALUES["token_msgs"],
        user_agent=model.user_agent,
    )
    # Logging in again reports anew.
    assert model.start(now=T0) is not None


def test_app_model_without_a_removal_template_sends_nothing_at_logout() -> None:
    model = AppModel(Template.parse(**SPEC_TEMPLATES["query"]), values_variables(SPEC_VALUES))
    assert model.log_out(now=T0) is None
    assert model.state is AppState.IDLE
