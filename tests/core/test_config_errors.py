"""The deployer's mistakes: ``Template.parse`` raises ``ConfigurationError`` at start-up,
naming the Account XML key and pointing at the spot. Messages are tested verbatim."""

from __future__ import annotations

import textwrap

import pytest

from pushreport_core import ConfigurationError, PushReportError, Template

URL, BODY = "pushTokenReporterUrl", "pushTokenReporterPostData"
JSON = "application/json"


def _error(**xml: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        Template.parse(**xml)
    return info.value


def _caret(text: str, position: int) -> str:
    # The line holding the spot, and a caret under it.
    start = text.rfind("\n", 0, position) + 1
    line = text[start:].partition("\n")[0]
    return f"\n    {line}\n    {' ' * (position - start)}^"


@pytest.mark.parametrize(
    ("xml", "key", "position", "msg"),
    [
        pytest.param(
            {"url": "https://example.com/t/%selector%%pushToken%"},
            URL,
            32,
            "%selector% and %pushToken% have no literal text between them, so the request "
            "cannot be split unambiguously",
            id="adjacent-in-path",
        ),
        pytest.param(
            {"url": "https://example.com/t/?s=%selector%%pushToken%"},
            URL,
            35,
            "%selector% and %pushToken% have no literal text between them, so the request "
            "cannot be split unambiguously",
            id="adjacent-in-query-value",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": "s=%selector%&t=%pushToken%%pushappid%",
            },
            BODY,
            26,
            "%pushToken% and %pushappid% have no literal text between them, so the request "
            "cannot be split unambiguously",
            id="adjacent-in-form",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": "s=%selector%\n%pushToken%%pushappid%",
                "content_type": "text/plain",
            },
            BODY,
            24,
            "%pushToken% and %pushappid% have no literal text between them, so the request "
            "cannot be split unambiguously",
            id="adjacent-in-text",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": '{"s": "x%selector%%pushToken%"}',
                "content_type": JSON,
            },
            BODY,
            18,
            "%selector% and %pushToken% have no literal text between them, so the request "
            "cannot be split unambiguously",
            id="adjacent-in-json-string",
        ),
        pytest.param(
            {"url": "ftp://example.com/t/?s=%selector%"},
            URL,
            0,
            "scheme 'ftp' is not http or https",
            id="non-http-scheme",
        ),
        pytest.param(
            {"url": "example.com/t/?s=%selector%"},
            URL,
            0,
            "must be an absolute URL with a scheme, e.g. "
            "https://example.com/token/?selector=%selector%",
            id="no-scheme",
        ),
        pytest.param(
            {"url": "https://example.com/t/?a=1&x%selector%=1"},
            URL,
            28,
            "a variable in a parameter name is not supported",
            id="variable-in-parameter-name",
        ),
        pytest.param(
            {"url": "https://example.com/t/", "post_data": "%selector%=1"},
            BODY,
            0,
            "a variable in a parameter name is not supported",
            id="variable-in-form-name",
        ),
        pytest.param(
            {"url": "https://%account[username]%.example.com/t/?s=%selector%"},
            URL,
            8,
            "a variable in the host name is not supported",
            id="variable-in-host",
        ),
        pytest.param(
            {"url": "https://example.com/t/?s=%Selector%"},
            URL,
            25,
            "unknown variable %Selector%: did you mean %selector%?",
            id="wrong-case-selector",
        ),
        pytest.param(
            {"url": "https://example.com/t/?s=%selector%&t=%pushtokenother%"},
            URL,
            38,
            "unknown variable %pushtokenother%: did you mean %pushTokenOther%?",
            id="wrong-case-token",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": '{"s": "%selector%", "u": "%Account[Username]%"}',
                "content_type": JSON,
            },
            BODY,
            26,
            "unknown variable %Account[Username]%: did you mean %account[username]%?",
            id="wrong-case-in-json",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": '{"s": "%selector%", }',
                "content_type": JSON,
            },
            BODY,
            20,
            "not valid JSON once variables are put in: Expecting property name enclosed in "
            "double quotes",
            id="invalid-json",
        ),
        pytest.param(
            {
                "url": "https://example.com/t/",
                "post_data": '{"%selector%": 1}',
                "content_type": JSON,
            },
            BODY,
            2,
            "a variable in a JSON key is not supported",
            id="variable-in-json-key",
        ),
        pytest.param(
            {"url": "https://example.com/t/?s=%selector%&S=1"},
            URL,
            36,
            "parameter 'S' appears twice",
            id="duplicate-parameter",
        ),
    ],
)
def test_configuration_error_points_at_the_spot(
    xml: dict[str, str], key: str, position: int, msg: str
) -> None:
    error = _error(**xml)
    text = xml["url"] if key == URL else xml["post_data"]
    assert (error.key, error.position, error.text) == (key, position, text)
    assert str(error) == f"{key}: {msg}" + _caret(text, position)
    assert error.error_status_hint == 500
    assert isinstance(error, PushReportError)


def test_caret_points_into_the_right_line_of_a_multiline_body() -> None:
    body = textwrap.dedent("""\
        {
          "selector": "%selector%",
          "token": "%pushTokenOther%%pushappid_other%"
        }""")
    error = _error(url="https://example.com/t/", post_data=body, content_type=JSON)
    assert error.position == body.index("%pushappid_other%")
    assert str(error).splitlines()[1:] == [
        '      "token": "%pushTokenOther%%pushappid_other%"',
        "                                ^",
    ]


def test_position_counts_leading_whitespace_of_the_body() -> None:
    body = "\n  s=%selector%&t=%pushToken%%pushappid%"
    error = _error(url="https://example.com/t/", post_data=body)
    assert error.position == body.index("%pushappid%")


def test_position_is_in_the_xml_unescaped_value() -> None:
    error = _error(url="https://example.com/t/?s=%selector%&amp;t=%pushtoken%")
    assert error.text == "https://example.com/t/?s=%selector%&t=%pushtoken%"
    assert error.position == error.text.index("%pushtoken%")


def test_duplicate_json_key_names_the_key() -> None:
    error = _error(
        url="https://example.com/t/", post_data='{"a": 1, "A": "%selector%"}', content_type=JSON
    )
    assert (error.key, error.msg) == (BODY, f"{BODY}: JSON key 'A' appears twice")


@pytest.mark.parametrize(
    ("xml", "key"),
    [
        ({"url": "https://example.com/t/?u=%account[username]%&token=%pushToken%"}, URL),
        ({"url": "https://example.com/t/", "post_data": "u=%account[username]%"}, f"{URL}/{BODY}"),
        # PostData is ignored for GET, so a selector there does not count.
        ({"url": "https://example.com/t/", "post_data": "s=%selector%", "method": "GET"}, URL),
    ],
)
def test_missing_selector(xml: dict[str, str], key: str) -> None:
    error = _error(**xml)
    assert str(error) == (
        f"{key}: the template carries no %selector%: reports are stored by selector"
    )
    assert (error.key, error.position) == (key, None)


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "G ET"])
def test_unknown_method(method: str) -> None:
    error = _error(url="https://example.com/t/?s=%selector%", method=method)
    assert str(error) == (
        f"pushTokenReporterMethod: method {method!r} is not one of GET, POST, PUT, HEAD, DELETE"
    )
    assert (error.key, error.position) == ("pushTokenReporterMethod", None)


def test_keys_follow_the_prefix() -> None:
    error = _error(url="ftp://example.com/?s=%selector%", prefix="accountRemovalReporter")
    assert error.key == "accountRemovalReporterUrl"
    assert str(error).startswith("accountRemovalReporterUrl: scheme 'ftp'")


@pytest.mark.parametrize(
    ("xml", "method"),
    [
        ({"url": "https://e.com/?s=%selector%"}, "GET"),
        ({"url": "https://e.com/", "post_data": "s=%selector%"}, "POST"),
        ({"url": "https://e.com/", "post_data": "  "}, "GET"),
        ({"url": "https://e.com/?s=%selector%", "method": "head"}, "HEAD"),
        ({"url": "https://e.com/", "post_data": "s=%selector%", "method": " put "}, "PUT"),
    ],
)
def test_method_defaults_to_get_without_post_data_else_post(
    xml: dict[str, str], method: str
) -> None:
    assert Template.parse(**xml, require=()).method == method


def test_unknown_variables_are_extras_not_errors() -> None:
    template = Template.parse(
        url="https://e.com/?s=%selector%&i=%installid%&c=%account[cloud_username]%"
    )
    assert template.variables == {"selector", "installid", "account[cloud_username]"}
