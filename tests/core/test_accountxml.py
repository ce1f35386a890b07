"""``account_xml()``: the keys that make the app send what we parse, ready to paste."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given

from pushreport_core import (
    DEFAULT_ACCOUNT_XML,
    ConfigurationError,
    Template,
    account_xml,
    parse_request,
    render_request,
)
from pushreport_core.testing import strategies as s

TEMPLATES = {name: Template.parse(**xml) for name, xml in s.ROUNDTRIP_TEMPLATES.items()}
TEMPLATES["crlf-text"] = Template.parse(
    url="https://e.com/t?a=1&b=%installid%",
    content_type="text/plain",
    post_data="sel=%selector% & <tok>=%pushToken%\r\nend",
)
_KEYS = {"Url": "url", "PostData": "post_data", "ContentType": "content_type", "Method": "method"}
_ELEMENT = re.compile(r"<pushTokenReporter(\w+)>(.*?)</pushTokenReporter\1>", re.S)


def _parse_back(xml: str) -> Template:
    """Template.parse on the keys exactly as pasted (still XML-escaped)."""
    return Template.parse(**{_KEYS[k]: v for k, v in _ELEMENT.findall(xml)})


def test_default_account_xml_verbatim() -> None:
    assert account_xml(base_url="https://push.example.com/") == (
        "<pushTokenReporterUrl>https://push.example.com/token/?username=%account[username]%"
        "&amp;selector=%selector%&amp;token_calls=%pushTokenIncomingCall%"
        "&amp;appid_calls=%pushappid_incoming_call%&amp;token_msgs=%pushTokenOther%"
        "&amp;appid_msgs=%pushappid_other%</pushTokenReporterUrl>\n"
    )
    assert account_xml().startswith("<pushTokenReporterUrl>http://127.0.0.1:8080/token/?")
    assert "{base_url}" in DEFAULT_ACCOUNT_XML["pushTokenReporterUrl"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_output_is_well_formed_escaped_xml(name: str) -> None:
    template = TEMPLATES[name]
    xml = account_xml(template)
    assert xml.endswith("\n") and len(_ELEMENT.findall(xml)) == len(template.as_account_xml())
    # No raw "&" or "<" inside a value: every one is escaped.
    for _, value in _ELEMENT.findall(xml):
        assert "<" not in value and "\r" not in value
        assert not re.search(r"&(?!amp;|lt;|gt;|#13;)", value)
    root = ET.fromstring(f"<account>{xml}</account>")
    assert {e.tag: e.text for e in root} == dict(template.as_account_xml())


@pytest.mark.parametrize("name", TEMPLATES)
def test_parsed_back_it_is_the_same_template(name: str) -> None:
    template = TEMPLATES[name]
    back = _parse_back(account_xml(template))
    assert back == template  # url, post_data, content_type, method, prefix, variables


@pytest.mark.parametrize("name", list(s.ROUNDTRIP_TEMPLATES))
@given(values=s.registration_values)
def test_parsed_back_it_accepts_what_the_app_renders(
    name: str, values: dict[str, str | None]
) -> None:
    template = TEMPLATES[name]
    back = _parse_back(account_xml(template))
    request = render_request(back, s.variables_for(values))
    assert request == render_request(template, s.variables_for(values))
    assert parse_request(request, back) == parse_request(request, template)


def test_method_and_content_type_are_written_when_not_the_default() -> None:
    xml = account_xml(TEMPLATES["nested-json"])
    assert "<pushTokenReporterMethod>PUT</pushTokenReporterMethod>\n" in xml
    assert "<pushTokenReporterContentType>application/json</pushTokenReporterContentType>" in xml
    assert "Method" not in account_xml(TEMPLATES["form"])
    assert "PostData" not in account_xml(TEMPLATES["query"])


def test_base_url_replaces_scheme_and_host_and_keeps_the_path() -> None:
    xml = account_xml(TEMPLATES["path"], base_url="http://10.0.0.5:8080/ignored")
    assert _parse_back(xml).url == (
        "http://10.0.0.5:8080/pushToken/%account[username]%/"
        "%selector%/%pushToken%&appid=%pushappid%"
    )


def test_base_url_must_be_absolute() -> None:
    # A ConfigurationError naming the key, like every other refusal (test_base_url.py).
    with pytest.raises(
        ConfigurationError,
        match=r"^base_url: must start with http:// or https://, not 'push\.example\.com'$",
    ):
        account_xml(TEMPLATES["query"], base_url="push.example.com")


def test_carriage_return_survives_an_xml_parser() -> None:
    template = TEMPLATES["crlf-text"]
    xml = account_xml(template)
    assert "\\r" not in repr(xml) and "&#13;" in xml
    text = ET.fromstring(f"<a>{xml}</a>").find("pushTokenReporterPostData").text  # type: ignore[union-attr]
    assert text == template.post_data


def test_base_url_keeps_literal_entities_in_the_template() -> None:
    # Pasted from Account XML, "&amp;amp;" is a literal "&amp;" the app sends as is.
    template = Template.parse(
        url="https://e.com/t?s=%selector%&amp;x=a&amp;amp;b",
        post_data="k=&lt;v&gt;&amp;s=%selector%",
    )
    assert (template.url, template.post_data) == (
        "https://e.com/t?s=%selector%&x=a&amp;b",
        "k=<v>&s=%selector%",
    )
    back = _parse_back(account_xml(template, base_url="https://o.example"))
    assert (back.url, back.post_data) == (
        "https://o.example/t?s=%selector%&x=a&amp;b",
        "k=<v>&s=%selector%",
    )
