"""The client's mistakes: ``parse_request`` raises ``InvalidReport`` (or a subclass) with a
short reason, tested verbatim, and the hint an adapter answers with."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    DEFAULT_MAX_BODY,
    DEFAULT_SHAPES,
    MAX_TARGET,
    InvalidReport,
    MethodNotAllowed,
    PushReportError,
    Report,
    Request,
    RequestTooLarge,
    Template,
    parse_request,
)
from pushreport_core._fields import decode_form, decode_url

from .test_io import APP, APP_PUSHKIT, SEL, SPEC_JSON_BODY, TOKEN_CALLS, TOKEN_MSGS

QUERY = Template.parse(
    url=(
        "https://example.com/token/?key=s3c.et&selector=%selector%&username=%account[username]%"
        "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
    )
)
PATH = Template.parse(
    url="https://example.com/pushToken/%account[username]%/%selector%/"
    "%pushToken%&appid=%pushappid%"
)
FORM = Template.parse(
    url="https://example.com/token/",
    post_data="selector=%selector%&token_calls=%pushTokenIncomingCall%",
)
JSON_T = Template.parse(
    url="https://example.com/token/",
    content_type="application/json",
    method="PUT",
    post_data='{"device": {"selector": "%selector%"}, "push": ["%pushTokenOther%", "x"], "v": 2}',
)
TEXT = Template.parse(
    url="https://example.com/t/",
    content_type="text/plain",
    post_data="sel=%selector%;tok=%pushToken%;",
)


def get(target: str, **kw: object) -> Request:
    return Request(method="GET", target=target, **kw)  # type: ignore[arg-type]


def post(
    target: str, body: bytes | str, content_type: str | None = None, method: str = "POST"
) -> Request:
    if isinstance(body, str):
        body = body.encode("utf-8")
    return Request(method=method, target=target, body=body, content_type=content_type)


def post_json(data: object, target: str = "/token/") -> Request:
    return post(target, json.dumps(data), "application/json")


def q(**fields: str) -> str:
    return "/token/?" + "&".join(f"{k}={v}" for k, v in fields.items())


def refused(request: Request, template: Template | None = None, **kw: int) -> InvalidReport:
    with pytest.raises(InvalidReport) as info:
        parse_request(request, template, **kw)
    return info.value


# --- field validation (the default shapes and templates share it) ---------------------


@pytest.mark.parametrize(
    ("request_", "template", "msg"),
    [
        pytest.param(
            get(q(username="johndow", token_msgs=TOKEN_MSGS)),
            None,
            "selector is missing",
            id="selector-missing",
        ),
        pytest.param(get(q(selector="")), None, "selector is missing", id="selector-empty"),
        pytest.param(
            post_json({"selector": None}), None, "selector is missing", id="selector-null"
        ),
        pytest.param(
            get("/token/?key=s3c.et&selector=&username=x&token_msgs=&appid_msgs="),
            QUERY,
            "selector is missing",
            id="selector-missing-template",
        ),
        pytest.param(
            get(q(selector=SEL[:39] + ":7C")),
            None,
            "selector is not valid: expected 40 hex digits, ':' and a hex suffix",
            id="selector-39-hex",
        ),
        pytest.param(
            get(q(selector=SEL.replace(":", ""))),
            None,
            "selector is not valid: expected 40 hex digits, ':' and a hex suffix",
            id="selector-no-suffix",
        ),
        pytest.param(
            get(q(selector=SEL + "G")),
            None,
            "selector is not valid: expected 40 hex digits, ':' and a hex suffix",
            id="selector-non-hex-suffix",
        ),
        pytest.param(
            get(q(selector=SEL[:41] + "A" * 41)),
            None,
            "selector is too long (82 > 81 characters)",
            id="selector-too-long",
        ),
        pytest.param(
            get(q(selector=SEL, token_msgs="abc$defghij")),
            None,
            "token_msgs is not valid: expected a base64 token",
            id="token-dollar",
        ),
        pytest.param(
            get(q(selector=SEL, token_calls="abcd=efgh")),
            None,
            "token_calls is not valid: expected a base64 token",
            id="token-inner-pad",
        ),
        pytest.param(
            get(q(selector=SEL, token_calls="abcdefgh===")),
            None,
            "token_calls is not valid: expected a base64 token",
            id="token-3-pads",
        ),
        pytest.param(
            get(q(selector=SEL, token_msgs="abcdefg")),
            None,
            "token_msgs is too short (7 < 8 characters)",
            id="token-too-short",
        ),
        pytest.param(
            get(q(selector=SEL, token_msgs="A" * 4097)),
            None,
            "token_msgs is too long (4097 > 4096 characters)",
            id="token-too-long",
        ),
        pytest.param(
            get(q(selector=SEL, appid_msgs="com")),
            None,
            "appid_msgs is not valid: expected a reverse-DNS app id",
            id="appid-one-label",
        ),
        pytest.param(
            get(q(selector=SEL, appid_calls="com..app")),
            None,
            "appid_calls is not valid: expected a reverse-DNS app id",
            id="appid-empty-label",
        ),
        pytest.param(
            get(q(selector=SEL, pushappid="com.app%20x")),
            None,
            "appid_msgs is not valid: expected a reverse-DNS app id",
            id="appid-space",
        ),
        pytest.param(
            get(q(selector=SEL, username="john%0Adow")),
            None,
            "username contains a control character",
            id="username-newline",
        ),
        pytest.param(
            get(q(selector=SEL, username="j%C2%85")),
            None,
            "username contains a control character",
            id="username-c1-control",
        ),
        pytest.param(
            get(q(selector=SEL, username="x" * 257)),
            None,
            "username is too long (257 > 256 characters)",
            id="username-too-long",
        ),
        pytest.param(
            post_json({"selector": SEL, "username": "\ud800"}),
            None,
            "username contains a lone surrogate",
            id="username-surrogate",
        ),
        pytest.param(
            post_json({"selector": SEL, "password": "\udfff"}),
            None,
            "password contains a lone surrogate",
            id="password-surrogate",
        ),
        pytest.param(
            post_json({"selector": SEL, "\ud800x": "y"}),
            None,
            "an extra field has an invalid name",
            id="extra-name-surrogate",
        ),
        pytest.param(
            post_json({"selector": SEL, "device": "a\tb"}),
            None,
            "device contains a control character",
            id="extra-control",
        ),
        pytest.param(
            post_json({"selector": SEL, "x" * 65: "y"}),
            None,
            "an extra field has an invalid name",
            id="extra-name-too-long",
        ),
        pytest.param(
            post_json({"selector": SEL, **{f"x{i}": "y" for i in range(33)}}),
            None,
            "too many extra fields (33 > 32)",
            id="too-many-extras",
        ),
        pytest.param(
            get(q(selector=SEL, appid_msgs=APP, pushappid="com.other.app")),
            None,
            "conflicting values for appid_msgs",
            id="conflict-alias",
        ),
        pytest.param(
            get(q(selector=SEL, pushTokenOther=TOKEN_MSGS, token_msgs=TOKEN_CALLS)),
            None,
            "conflicting values for token_msgs",
            id="conflict-token",
        ),
        pytest.param(
            get(q(selector=SEL, password="a", PASSWORD="b")),
            None,
            "conflicting values for password",
            id="conflict-password",
        ),
        pytest.param(
            post(q(selector=SEL), f"selector={SEL[:-1]}0"),
            None,
            "conflicting values for selector",
            id="conflict-query-body",
        ),
        pytest.param(
            get(f"/pushToken/u/{SEL}/{TOKEN_MSGS}&appid={APP}&pushappid=com.b.c"),
            None,
            "conflicting values for appid_msgs",
            id="conflict-in-path",
        ),
    ],
)
def test_invalid_fields(request_: Request, template: Template | None, msg: str) -> None:
    error = refused(request_, template)
    assert (type(error), str(error), error.error_status_hint) == (InvalidReport, msg, 400)


def test_the_same_value_twice_is_not_a_conflict() -> None:
    report = parse_request(
        get(
            q(
                selector=SEL,
                appid_msgs=APP,
                pushappid=APP,
                pushappid_other=APP,
                username="a",
                USERNAME="a",
            )
        )
    )
    assert (report.appid_msgs, report.username) == (APP, "a")


def test_messages_never_echo_the_password() -> None:
    error = refused(get(q(selector="bad", password="hunter2")))
    assert "hunter2" not in str(error) and "hunter2" not in repr(error)
    error = refused(get(q(selector=SEL, password="hunter2", Password="hunter3")))
    assert "hunter" not in str(error)


# --- what "not known" is spelled as --------------------------------------------------

UNKNOWN = [
    "",
    "null",
    "NULL",
    "(null)",
    "nil",
    "<null>",
    "  ",
    "%pushTokenOther%",
    "%pushappid_other%",
    "%account[username]%",
]


@pytest.mark.parametrize("spelling", UNKNOWN)
def test_unknown_values_are_none_in_the_default_shapes(spelling: str) -> None:
    from urllib.parse import quote

    v = quote(spelling, safe="")
    report = parse_request(
        get(
            q(
                selector=SEL,
                username=v,
                token_msgs=v,
                appid_msgs=v,
                token_calls=v,
                appid_calls=v,
                device=v,
            )
        )
    )
    assert report == Report(selector=SEL)


@pytest.mark.parametrize("spelling", UNKNOWN)
def test_unknown_values_are_none_in_a_json_template(spelling: str) -> None:
    template = Template.parse(
        url="https://e.com/t",
        content_type="application/json",
        post_data='{"s": "%selector%", "u": "%account[username]%",'
        ' "t": "%pushTokenOther%", "a": "%pushappid%",'
        ' "i": "%installid%"}',
    )
    body = {"s": SEL, "u": spelling, "t": spelling, "a": spelling, "i": spelling}
    assert parse_request(post_json(body, "/t"), template) == Report(selector=SEL)


def test_json_null_is_unknown() -> None:
    report = parse_request(
        post_json({"selector": SEL, "token_msgs": None, "appid_msgs": None, "username": None})
    )
    assert report == Report(selector=SEL)


def test_json_numbers_and_booleans_read_as_their_json_text() -> None:
    report = parse_request(
        post_json({"selector": SEL, "username": 42, "flag": True, "ratio": 1.5})
    )
    assert (report.username, report.extra) == ("42", {"flag": "true", "ratio": "1.5"})


def test_json_objects_are_not_field_values() -> None:
    error = refused(post_json({"selector": {"a": 1}}))
    assert str(error) == "JSON value at selector must be a string"


# --- encodings -------------------------------------------------------------------------


def test_plus_turned_into_a_space_is_restored_in_tokens() -> None:
    token = "Af+3kP/9zQ+w8g=="
    expected = Report(selector=SEL, token_msgs=token, token_calls=token, username="a b")
    # Query and form: a raw "+" decodes as a space; tokens never hold one.
    assert (
        parse_request(get(q(selector=SEL, token_msgs=token, token_calls=token, username="a+b")))
        == expected
    )
    assert (
        parse_request(
            post("/token/", f"selector={SEL}&token_msgs={token}&token_calls={token}&username=a+b")
        )
        == expected
    )
    assert (
        parse_request(
            get(f"/token/?key=s3c.et&selector={SEL}&username=x&token_msgs={token}&appid_msgs="),
            QUERY,
        ).token_msgs
        == token
    )
    assert (
        parse_request(post("/token/", f"selector={SEL}&token_calls={token}"), FORM).token_calls
        == token
    )


def test_encoded_plus_stays_a_plus_everywhere() -> None:
    report = parse_request(get(q(selector=SEL, username="a%2Bb")))
    assert report.username == "a+b"


def test_percent_2f_inside_a_path_segment_survives() -> None:
    token_q = TOKEN_CALLS.replace("/", "%2F").replace("=", "%3D")
    path = f"/pushToken/a%2Fb/{SEL}/{token_q}&appid={APP}"
    expected = Report(selector=SEL, username="a/b", token_msgs=TOKEN_CALLS, appid_msgs=APP)
    assert parse_request(get(path)) == expected
    assert parse_request(get(path), PATH) == expected
    assert parse_request(post_json({"selector": SEL}, "/token/a%2Fb/")).username == "a/b"


def test_percent_2f_is_never_a_path_separator() -> None:
    template = Template.parse(url="https://e.com/t/%selector%/x")
    assert parse_request(get(f"/t/{SEL}/x"), template).selector == SEL
    assert not template.owns("GET", f"/t/{SEL}%2Fx")
    error = refused(get(f"/t/{SEL}%2Fx"), template)
    assert str(error) == "path does not match the configured template"
    assert not PATH.owns("GET", f"/pushToken%2Fu/{SEL}/{TOKEN_MSGS}&appid={APP}")


def test_literal_text_matches_sent_or_percent_encoded() -> None:
    template = Template.parse(url="https://e.com/a:b/?x=1:2&s=%selector%&t=v %pushToken%")
    for target in (
        f"/a:b/?x=1:2&s={SEL}&t=v+{TOKEN_MSGS}",
        f"/a%3Ab/?x=1%3a2&s={SEL}&t=v%20{TOKEN_MSGS}",
    ):
        assert parse_request(get(target), template).token_msgs == TOKEN_MSGS


def test_a_dot_in_literal_text_is_a_dot() -> None:
    good = f"/token/?key=s3c.et&selector={SEL}&username=x&token_msgs=&appid_msgs="
    assert parse_request(get(good), QUERY).selector == SEL
    error = refused(get(good.replace("s3c.et", "s3cXet")), QUERY)
    assert str(error) == "query parameter 'key' does not match the configured template"
    php = Template.parse(url="https://e.com/token.php?s=%selector%")
    assert php.owns("GET", "/token.php") and not php.owns("GET", "/tokenXphp")


@pytest.mark.parametrize(
    ("request_", "template", "msg"),
    [
        pytest.param(
            get(q(selector=SEL, token_msgs="%ff%fe" + "A" * 8)),
            None,
            "token_msgs is not valid UTF-8 once percent-decoded",
            id="query-value",
        ),
        pytest.param(
            get(f"/token/?%ff={SEL}"),
            None,
            "a parameter name is not valid UTF-8 once percent-decoded",
            id="query-name",
        ),
        pytest.param(
            get(f"/token/%ff/?selector={SEL}"),
            None,
            "username is not valid UTF-8 once percent-decoded",
            id="path-username",
        ),
        pytest.param(
            post("/token/", b"selector=\xff", None),
            None,
            "body is not valid UTF-8",
            id="form-body",
        ),
        pytest.param(
            post("/token/", b'{"selector": "\xff"}', "application/json"),
            None,
            "body is not valid UTF-8",
            id="json-body",
        ),
        pytest.param(
            post("/t/", b"sel=\xff;tok=;", "text/plain"),
            TEXT,
            "body is not valid UTF-8",
            id="text-body",
        ),
    ],
)
def test_invalid_utf8(request_: Request, template: Template | None, msg: str) -> None:
    assert str(refused(request_, template)) == msg


_ESCAPED = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "%",
                "%2",
                "%2F",
                "%2f",
                "%zz",
                "%C3",
                "%A9",
                "%C3%A9",
                "%E2%82",
                "%AC",
                "%F0%9F%8E%89",
                "%ff",
                "+",
                "%2B",
                "\ud800",
            ]
        ),
        st.text(max_size=3),
    ),
    max_size=12,
).map("".join)


@given(raw=_ESCAPED)
def test_decoding_is_exactly_urllib_strict(raw: str) -> None:
    # The core decodes on its own fast path; it must accept and refuse exactly what
    # urllib's strict decoders do.
    for ours, theirs in ((decode_url, unquote), (decode_form, unquote_plus)):
        try:
            expected = theirs(raw, errors="strict")
        except UnicodeDecodeError:
            with pytest.raises(InvalidReport, match=r"^v is not valid UTF-8 once "):
                ours(raw, "v")
        else:
            assert ours(raw, "v") == expected


def test_invalid_percent_escapes_are_kept_as_text() -> None:
    # "%zz" is no escape: it stays, and then fails the token grammar, not the decoder.
    error = refused(get(q(selector=SEL, token_msgs="%zzabcdefgh")))
    assert str(error) == "token_msgs is not valid: expected a base64 token"
    assert parse_request(get(q(selector=SEL, username="100%"))).username == "100%"


# --- bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (b"", "selector is missing"),
        (
            b"{",
            "body is not valid JSON: Expecting property name enclosed in double quotes at "
            "line 1 column 2",
        ),
        (b"selector=x", "body is not valid JSON: Expecting value at line 1 column 1"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'"x"', "body must be a JSON object"),
        (b"[" * 10_000, "body is not valid JSON: nested too deeply"),
        (b'{"a": ' * 2_000 + b"1" + b"}" * 2_000, "body is not valid JSON: nested too deeply"),
        (b'{"selector": "a", "Selector": "a"}', "JSON key 'Selector' appears more than once"),
        (b"1" * 5_000, "body is not valid JSON: cannot decode"),
    ],
)
def test_bad_json_bodies(body: bytes, msg: str) -> None:
    assert str(refused(post("/token/", body, "application/json"))) == msg


def test_body_too_large() -> None:
    body = b"x" * (DEFAULT_MAX_BODY + 1)
    error = refused(post("/token/", body, "application/json"))
    assert type(error) is RequestTooLarge and isinstance(error, InvalidReport)
    assert (str(error), error.error_status_hint) == (
        "body is too large (16385 > 16384 bytes)",
        413,
    )
    assert (
        str(refused(post("/token/", b"x" * 11), max_body=10))
        == "body is too large (11 > 10 bytes)"
    )
    # The limit is inclusive.
    assert parse_request(post("/token/", f"selector={SEL}"), max_body=len(f"selector={SEL}"))


def test_target_too_long() -> None:
    target = q(selector=SEL, username="x" * MAX_TARGET)
    error = refused(get(target))
    assert type(error) is RequestTooLarge
    assert str(error) == f"request target is too long ({len(target)} > 8192 characters)"


def test_content_type_that_no_default_shape_reads() -> None:
    error = refused(post("/token/", b"x", "text/plain; charset=utf-8"))
    assert str(error) == (
        "Content-Type 'text/plain' is not a default shape; configure a template for it"
    )


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
    ],
)
def test_form_is_the_default_content_type(content_type: str | None) -> None:
    report = parse_request(
        post("/token/", f"selector={SEL}&token_msgs={TOKEN_MSGS}\r\n", content_type)
    )
    assert (report.token_msgs, report.shape) == (TOKEN_MSGS, "default-form")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/vnd.x+json", "APPLICATION/JSON; charset=utf-8"],
)
def test_any_json_media_type_is_json(content_type: str) -> None:
    report = parse_request(post("/token/johndow/", SPEC_JSON_BODY, content_type))
    assert (report.username, report.token_calls, report.shape) == (
        "johndow",
        TOKEN_CALLS,
        "default-json",
    )


def test_username_in_the_body_wins_over_the_path() -> None:
    report = parse_request(post_json({"selector": SEL, "username": "body"}, "/token/path/"))
    assert report.username == "body"


# --- templates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "template", "msg"),
    [
        pytest.param(
            get(f"/token/?selector={SEL}&username=x&token_msgs=&appid_msgs="),
            QUERY,
            "query parameter 'key' is missing",
            id="constant-missing",
        ),
        pytest.param(
            get(f"/token/?key=secret&selector={SEL}&username=x&token_msgs=&appid_msgs="),
            QUERY,
            "query parameter 'key' does not match the configured template",
            id="constant-wrong",
        ),
        pytest.param(
            get(
                f"/token/?key=s3c.et&selector={SEL}&selector=x&username=x&token_msgs=&appid_msgs="
            ),
            QUERY,
            "query parameter 'selector' appears more than once",
            id="duplicate-param",
        ),
        pytest.param(
            get(f"/token/?key=s3c.et&selector={SEL}&token_msgs=&appid_msgs="),
            QUERY,
            "query parameter 'username' is missing",
            id="param-missing",
        ),
        pytest.param(
            get(f"/tokens/?key=s3c.et&selector={SEL}"),
            QUERY,
            "path does not match the configured template",
            id="path-mismatch",
        ),
        pytest.param(
            post("/token/", f"token_calls={TOKEN_CALLS}"),
            FORM,
            "form field 'selector' is missing",
            id="form-field-missing",
        ),
        pytest.param(
            post("/token/", json.dumps({"device": {}}), "application/json", "PUT"),
            JSON_T,
            "JSON key $.device.selector is missing",
            id="json-nested-missing",
        ),
        pytest.param(
            post("/token/", json.dumps({"push": []}), "application/json", "PUT"),
            JSON_T,
            "JSON key 'device' is missing",
            id="json-top-missing",
        ),
        pytest.param(
            post(
                "/token/",
                json.dumps({"device": [], "push": [], "v": 2}),
                "application/json",
                "PUT",
            ),
            JSON_T,
            "JSON value at $.device must be an object",
            id="json-not-object",
        ),
        pytest.param(
            post(
                "/token/",
                json.dumps({"device": {"selector": SEL}, "push": ["a"], "v": 2}),
                "application/json",
                "PUT",
            ),
            JSON_T,
            "JSON value at $.push must be an array of 2 items",
            id="json-array",
        ),
        pytest.param(
            post(
                "/token/",
                json.dumps({"device": {"selector": SEL}, "push": [TOKEN_MSGS, "x"], "v": 3}),
                "application/json",
                "PUT",
            ),
            JSON_T,
            "JSON value at $.v does not match the configured template",
            id="json-constant",
        ),
        pytest.param(
            post(
                "/token/",
                json.dumps({"device": {"selector": [SEL]}, "push": [TOKEN_MSGS, "x"], "v": 2}),
                "application/json",
                "PUT",
            ),
            JSON_T,
            "JSON value at $.device.selector must be a string",
            id="json-not-scalar",
        ),
        pytest.param(
            post("/t/", f"sel={SEL};tok=;extra", "text/plain"),
            TEXT,
            "body does not match the configured template",
            id="text-mismatch",
        ),
    ],
)
def test_template_mismatches(request_: Request, template: Template, msg: str) -> None:
    error = refused(request_, template)
    assert (type(error), str(error)) == (InvalidReport, msg)


def test_template_ignores_parameters_it_does_not_name() -> None:
    report = parse_request(
        get(
            f"/token/?key=s3c.et&selector={SEL}&username=x&token_msgs="
            f"&appid_msgs=&other=1&password=p"
        ),
        QUERY,
    )
    assert (report.extra, report.password) == ({}, None)


def test_shapes_are_named_for_logs() -> None:
    assert parse_request(get(q(selector=SEL))).shape == "default-query"
    assert parse_request(post("/token/", f"selector={SEL}")).shape == "default-form"
    assert parse_request(post_json({"selector": SEL})).shape == "default-json"
    assert (
        parse_request(get(f"/pushToken/u/{SEL}/{TOKEN_MSGS}&appid={APP}")).shape == "default-path"
    )
    assert (
        parse_request(get(f"/pushToken/u/{SEL}/{TOKEN_MSGS}&appid={APP}"), PATH).shape
        == "template"
    )


def test_extras_in_the_default_shapes_are_lower_cased() -> None:
    report = parse_request(
        get(
            q(
                selector=SEL,
                InstallId="abc",
                pushTokenIncomingCall=TOKEN_CALLS,
                PUSHAPPID_INCOMING_CALL=APP_PUSHKIT,
            )
        )
    )
    assert (report.extra, report.token_calls, report.appid_calls) == (
        {"installid": "abc"},
        TOKEN_CALLS,
        APP_PUSHKIT,
    )


def test_user_agent_is_kept_and_bounded() -> None:
    assert parse_request(get(q(selector=SEL), user_agent="A" * 300)).user_agent == "A" * 256
    assert parse_request(get(q(selector=SEL), user_agent="")).user_agent is None


# --- methods (405) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "template", "msg", "allowed"),
    [
        ("DELETE", None, "method DELETE is not allowed here", ("GET", "HEAD", "POST", "PUT")),
        ("patch", None, "method PATCH is not allowed here", ("GET", "HEAD", "POST", "PUT")),
        ("GET", FORM, "method GET is not allowed here; the template uses POST", ("POST",)),
        ("POST", QUERY, "method POST is not allowed here; the template uses GET", ("GET", "HEAD")),
        ("POST", JSON_T, "method POST is not allowed here; the template uses PUT", ("PUT",)),
    ],
)
def test_method_not_allowed(
    method: str, template: Template | None, msg: str, allowed: tuple[str, ...]
) -> None:
    error = refused(Request(method=method, target=q(selector=SEL)), template)
    assert type(error) is MethodNotAllowed and isinstance(error, InvalidReport)
    assert (str(error), error.error_status_hint, error.allowed) == (msg, 405, allowed)
    shapes = DEFAULT_SHAPES if template is None else template
    assert shapes.allowed_methods() == allowed


def test_head_is_a_get_without_a_body() -> None:
    target = f"/token/?key=s3c.et&selector={SEL}&username=x&token_msgs=&appid_msgs="
    assert parse_request(Request(method="HEAD", target=target), QUERY).selector == SEL
    assert parse_request(Request(method="head", target=q(selector=SEL))).selector == SEL


# --- paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "owned"),
    [
        ("GET", "/token", True),
        ("GET", "/token/", True),
        ("HEAD", "/token/", True),
        ("POST", "/token/johndow/", True),
        ("PUT", "/token/johndow", True),
        # "/token/<username>/" is the JSON POST shape; a GET there is someone else's page.
        ("GET", "/token/johndow/", False),
        ("GET", "/token/list", False),
        ("GET", f"/pushToken/u/{SEL}/{TOKEN_MSGS}&appid={APP}", True),
        ("GET", "/token/a/b", False),
        ("GET", "/tokens/", False),
        ("GET", "/", False),
        ("GET", "/pushToken/u/s", False),
        ("GET", "/static/x.css", False),
    ],
)
def test_default_shapes_own_their_paths(method: str, path: str, owned: bool) -> None:
    assert DEFAULT_SHAPES.owns(method, path) is owned


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_template_owns_its_path_for_any_method(method: str) -> None:
    # Another method on the template's path is answered 405, not passed on.
    assert QUERY.owns(method, "/token/") and not QUERY.owns(method, "/token/x")


def test_unowned_path_is_refused() -> None:
    assert str(refused(get("/static/app.js"))) == "path is not one of the default report paths"


# --- adversarial input stays linear (the template regexes never backtrack wildly) ----


# Sized so that the backtracking matchers took a few seconds (and minutes at 8 KB): a
# regression fails here rather than hanging the run.
@pytest.mark.parametrize(
    ("template", "target"),
    [
        pytest.param(PATH, "/pushToken/" + "%2F" * 500, id="spec-path-slashes"),
        pytest.param(PATH, "/pushToken/a/b/" + "&appid=" * 1100 + "/", id="spec-path-appid"),
        pytest.param(
            Template.parse(url="https://e.com/t/?v=%selector%:%pushToken%:%pushappid%;"),
            "/t/?v=" + ":" * 800,
            id="query-three-values",
        ),
    ],
)
def test_adversarial_targets_fail_fast(template: Template, target: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidReport):
        parse_request(get(target), template)
    # Linear matching takes well under a millisecond.
    assert time.perf_counter() - start < 0.5


def test_adversarial_text_body_fails_fast() -> None:
    template = Template.parse(
        url="https://e.com/t/",
        content_type="text/plain",
        post_data="%selector% %pushToken% %pushappid% .",
    )
    start = time.perf_counter()
    with pytest.raises(InvalidReport):
        parse_request(post("/t/", " " * DEFAULT_MAX_BODY, "text/plain"), template)
    assert time.perf_counter() - start < 0.5


def test_every_error_is_a_push_report_error() -> None:
    for cls in (InvalidReport, RequestTooLarge, MethodNotAllowed):
        assert issubclass(cls, PushReportError)
    with pytest.raises(TypeError, match="abstract"):
        PushReportError("x")


# --- smaller corners ----------------------------------------------------------------


def test_json_template_null_and_literal_text() -> None:
    template = Template.parse(
        url="https://e.com/t",
        content_type="application/json",
        post_data='{"s": "%selector%", "t": %pushTokenOther%, "l": "v1:%installid%"}',
    )
    report = parse_request(post_json({"s": SEL, "t": None, "l": "v1:abc"}, "/t"), template)
    assert (report.token_msgs, report.extra) == (None, {"installid": "abc"})
    error = refused(post_json({"s": SEL, "t": None, "l": "v2:abc"}, "/t"), template)
    assert str(error) == "JSON value at $.l does not match the configured template"


def test_a_variable_used_twice_must_agree() -> None:
    template = Template.parse(url="https://e.com/t?s=%selector%&i=%installid%&j=%installid%")
    assert parse_request(get(f"/t?s={SEL}&i=x&j=x"), template).extra == {"installid": "x"}
    assert str(refused(get(f"/t?s={SEL}&i=x&j=y"), template)) == "conflicting values for installid"


def test_a_url_without_a_path_is_the_root() -> None:
    template = Template.parse(url="https://e.com?s=%selector%")
    assert template.path_template == "/"
    assert parse_request(get(f"/?s={SEL}"), template).selector == SEL
    assert QUERY.path_template == "/token/" and PATH.path_template == (
        "/pushToken/%account[username]%/%selector%/%pushToken%&appid=%pushappid%"
    )


def test_error_classes_carry_their_status_hints() -> None:
    from pushreport_core import AuthenticationFailed, StorageUnavailable

    busy = StorageUnavailable("database is locked", retry_after=7)
    assert (str(busy), busy.error_status_hint, busy.retry_after) == ("database is locked", 503, 7)
    assert StorageUnavailable("x").retry_after == 5
    assert AuthenticationFailed("no").error_status_hint == 403
    assert InvalidReport("x", error_status_hint=422).error_status_hint == 422


def test_is_unknown() -> None:
    from pushreport_core import is_unknown

    assert is_unknown(None) and is_unknown(" (NULL) ") and is_unknown("%x%")
    assert not is_unknown("nullable") and not is_unknown("%x") and not is_unknown("100%")


def test_parameter_names_compare_decoded_and_stripped() -> None:
    plus = Template.parse(url="https://e.com/t?s=%selector%&a+b=%installid%&c%5Fd=1")
    assert parse_request(get(f"/t?s={SEL}&a+b=x&c_d=1"), plus).extra == {"installid": "x"}
    assert parse_request(get(f"/t?s={SEL}&a%20b=x&C%5FD=1"), plus).extra == {"installid": "x"}
    # A form template written over several lines: the app sends the newlines as they are.
    lines = Template.parse(
        url="https://e.com/t", post_data="selector=%selector%&\ntoken_msgs=%pushTokenOther%\n"
    )
    report = parse_request(post("/t", f"selector={SEL}&\ntoken_msgs={TOKEN_MSGS}\n"), lines)
    assert report.token_msgs == TOKEN_MSGS


def test_percent_escapes_in_a_template_are_literal_text_not_variables():
    from pushreport_core import Template

    template = Template.parse(url="https://e.com/caf%C3%A9/%2Fx?s=%selector%")
    assert template.variables == frozenset({"selector"})
    assert template.owns("GET", "/caf%C3%A9/%2Fx")


def test_user_agent_loses_control_characters():
    from pushreport_core import Request, parse_request

    report = parse_request(
        Request(
            method="GET",
            target=f"/token/?selector={SEL}",
            user_agent="Cloud\x1b[31mSoftphone\n/1.5",
        )
    )
    assert report.user_agent == "Cloud[31mSoftphone/1.5"
