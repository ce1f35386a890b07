"""Redaction derived from the parser: each shape locates the values it reads
(``target_values``), and ``redact_target`` masks what it reads as the password, as the
configured secret or as a template literal, and shortens the tokens."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    DEFAULT_REMOVAL_SHAPES,
    DEFAULT_SHAPES,
    LITERAL,
    InvalidReport,
    Request,
    Shapes,
    TargetValue,
    Template,
    is_unknown,
    parse_request,
    redact_target,
    render_request,
    shorten,
)
from pushreport_core._fields import decode_form, decode_url, pair_spans, split_pairs
from pushreport_core.testing import strategies as s

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
SHORT = f"{TOKEN[:8]}…"
PASSWORD = "Hq7PwZr2Lk9xVb4T"
SECRET = "Sc3tN8vQe1mYw6Rj"


def _value(target: str, located: TargetValue) -> str:
    raw = target[located.start : located.end]
    in_path = located.end <= len(target.partition("?")[0])
    return decode_url(raw, "v") if in_path else decode_form(raw, "v")


def _parsed(report: Any, name: str) -> str | None:
    if name == "password":
        return None if report.password is None else report.password.reveal()
    if name in report.extra:
        return str(report.extra[name])
    value = getattr(report, name, None)
    return value if isinstance(value, str) else None


def _check_located(request: Request, shapes: Shapes) -> list[TargetValue]:
    """Every value located in the target, decoded, is what the parser read under that
    name."""
    report = parse_request(request, shapes)
    located = shapes.target_values(request.target)
    for value in located:
        assert value.name is not None
        if value.name == LITERAL:
            continue
        text = _value(request.target, value)
        if value.name in ("token_calls", "token_msgs"):
            text = text.replace(" ", "+")  # as FieldCollector restores a form's "+"
        if not is_unknown(text):
            assert _parsed(report, value.name) == text, value
    return located


@given(values=s.registration_values)
def test_located_values_are_what_the_default_shapes_read(values: dict[str, Any]) -> None:
    for name in s.DEFAULT_COMPATIBLE:
        template = Template.parse(**s.ROUNDTRIP_TEMPLATES[name])
        request = render_request(template, s.variables_for(values))
        located = _check_located(request, DEFAULT_SHAPES)
        # The password, when the request carries one in its target, is located.
        if values["password"] is not None and "account[password]" in template.url:
            assert any(v.name == "password" for v in located)


@given(template=s.templates(), values=s.registration_values)
def test_located_values_are_what_a_template_reads(
    template: Template, values: dict[str, Any]
) -> None:
    request = render_request(template, s.variables_for(values))
    located = _check_located(request, template)
    path_or_query = template.url.partition("://")[2]
    if values["password"] is not None and "%account[password]%" in path_or_query:
        assert any(v.name == "password" for v in located)


def default(target: str, **kw: Any) -> str:
    return redact_target(target, **kw)


@pytest.mark.parametrize(
    "target, shown",
    [
        # The query: names compared once decoded and lower-cased, as the parser does.
        (
            f"/token/?selector={SEL}&pass%77ord={PASSWORD}&push%73ecret={SECRET}"
            f"&token_msgs={TOKEN}&PASSWORD={PASSWORD}&Account%5BPassword%5D={PASSWORD}",
            f"/token/?selector={SEL}&pass%77ord=***&push%73ecret=***"
            f"&token_msgs={SHORT}&PASSWORD=***&Account%5BPassword%5D=***",
        ),
        # The path shape: the token shortened, its "&key=value" tail read like a query.
        (
            f"/pushToken/alice/{SEL}/{TOKEN}&appid=com.x&pass%77ord={PASSWORD}"
            f"&pushSecret={SECRET}?pushTokenIncomingCall={TOKEN}",
            f"/pushToken/alice/{SEL}/{SHORT}&appid=com.x&pass%77ord=***"
            f"&pushSecret=***?pushTokenIncomingCall={SHORT}",
        ),
        # Refused by the parser (a name that does not decode, a conflict): the same.
        (
            f"/token/?%FF=x&password={PASSWORD}&password=other&pushsecret={SECRET}",
            "/token/?%FF=***&password=***&password=***&pushsecret=***",
        ),
        # A path the default shapes do not own: the well-known names still.
        (
            f"/elsewhere/a&password={PASSWORD}/b?secret={SECRET}&x=1",
            "/elsewhere/a&password=***/b?secret=***&x=1",
        ),
        # "+" is a space in a query name, not in a path tail's; a short token stays.
        ("/token/?+password=a+b&token_calls=abc", "/token/?+password=***&token_calls=abc"),
    ],
)
def test_default_shapes(target: str, shown: str) -> None:
    assert default(target, secret_fields={"pushSecret", "pushsecret"}) == shown


def test_default_removal_shapes() -> None:
    target = f"/removal/bob/?selector={SEL}&token_msgs={TOKEN}&passwOrd={PASSWORD}"
    assert redact_target(target, DEFAULT_REMOVAL_SHAPES) == (
        f"/removal/bob/?selector={SEL}&token_msgs={SHORT}&passwOrd=***"
    )
    target = f"/pushToken/u/{SEL}/{TOKEN}&password={PASSWORD}"
    assert redact_target(target, DEFAULT_REMOVAL_SHAPES) == (
        f"/pushToken/u/{SEL}/{SHORT}&password=***"
    )


TEMPLATE = Template.parse(
    url=(
        "https://e.com/r/%account[password]%/%pushToken%?s=%selector%&amp;k=s3cret"
        "&amp;pw=x%account[password]%&amp;ps=%account[pushSecret]%"
        "&amp;t=%pushTokenIncomingCall%-%installid%&amp;both=%pushTokenOther%.%account[password]%"
    )
)


def test_template_masks_what_it_reads_as_password_secret_or_literal() -> None:
    target = (
        f"/r/{PASSWORD}/{TOKEN}?s={SEL}&K=s3cret&p%77=x{PASSWORD}&ps={SECRET}"
        f"&t={TOKEN}-abc&both={TOKEN}.{PASSWORD}&password={PASSWORD}&other=1"
    )
    report = parse_request(Request(method="GET", target=target), TEMPLATE)
    assert report.password is not None and report.extra["account[pushSecret]"] == SECRET
    assert redact_target(target, TEMPLATE, secret_fields={"account[pushSecret]"}) == (
        f"/r/***/{SHORT}?s={SEL}&K=***&p%77=***&ps=***"
        f"&t={shorten(TOKEN + '-abc')}&both=***&password=***&other=1"
    )
    # Without the secret configured, %account[pushSecret]% is an extra like any other.
    assert f"&ps={SECRET}&" in redact_target(target, TEMPLATE)


def test_template_target_that_does_not_parse() -> None:
    # The path matches; the query stops the parser (a repeated name, then one that
    # does not decode): every value is still located by the template's own names.
    target = f"/r/{PASSWORD}/{TOKEN}?s=1&s=2&%FF&ps={SECRET}&pw={PASSWORD}"
    with pytest.raises(InvalidReport):
        parse_request(Request(method="GET", target=target), TEMPLATE)
    assert redact_target(target, TEMPLATE, secret_fields={"account[pushSecret]"}) == (
        f"/r/***/{SHORT}?s=1&s=2&%FF&ps=***&pw=***"
    )


def test_located_spans_in_order_with_names() -> None:
    target = f"/pushToken/al%69ce/{SEL}/{TOKEN}&appid=com.x&%FF=1?Token_Calls=abc"
    path_end = len(target.partition("?")[0])
    assert [(target[v.start : v.end], v.name) for v in DEFAULT_SHAPES.target_values(target)] == [
        ("al%69ce", "username"),
        (SEL, "selector"),
        (TOKEN, "token_msgs"),
        ("com.x", "appid_msgs"),
        ("1", None),
        ("abc", "token_calls"),
    ]
    assert DEFAULT_SHAPES.target_values(target)[-1].start == path_end + len("?Token_Calls=")


def test_request_repr_hides_query_and_path_tail_values() -> None:
    request = Request(method="GET", target=f"/pushToken/a/b/c&password={PASSWORD}?k={SECRET}")
    assert repr(request).startswith(
        "Request(method='GET', target='/pushToken/a/b/c&password=…?k=…'"
    )


def test_shorten() -> None:
    assert shorten("12345678") == "12345678"
    assert shorten("123456789") == "12345678…"
    assert shorten("123456789", 4) == "1234…"


@given(text=st.text(st.sampled_from("ab=&%+"), max_size=20), offset=st.integers(0, 9))
def test_pair_spans_split_as_split_pairs_does(text: str, offset: int) -> None:
    target = "x" * offset + text
    assert [(k, target[s:e]) for k, s, e in pair_spans(text, offset)] == split_pairs(text)
