"""``account_xml(base_url=…)``: the scheme and host the app should call, refused when it
cannot be one (issue 14, item 17)."""

from __future__ import annotations

import pytest

from pushreport_core import (
    ConfigurationError,
    Template,
    account_xml,
    calls_loopback,
    check_base_url,
)
from pushreport_core._removal import default_removal_template


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("push.example.com", "must start with http:// or https://, not 'push.example.com'"),
        (
            "ftp://push.example.com",
            "must start with http:// or https://, not 'ftp://push.example.com'",
        ),
        (
            "http:push.example.com",
            "must start with http:// or https://, not 'http:push.example.com'",
        ),
        ("https://", "'https://' has no host name"),
        (
            "https://push.example.com/?app=1",
            "must not have a query ('?app=1'): the keys' URL brings its own",
        ),
        (
            "https://push.example.com/#top",
            "must not have a fragment ('#top'): the app would not send it",
        ),
        ("https://push.example.com:99999", "'https://push.example.com:99999' is not a URL"),
    ],
)
def test_a_base_url_that_cannot_be_one_is_refused_naming_the_key(
    base_url: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_base_url(base_url, key="--base-url")
    assert str(info.value) == f"--base-url: {message}"
    with pytest.raises(ConfigurationError) as info:
        account_xml(base_url=base_url)  # the core refuses it too, by its own name
    assert str(info.value) == f"base_url: {message}"


def test_a_good_base_url_loses_only_its_trailing_slash() -> None:
    assert check_base_url(" https://push.example.com/ ") == "https://push.example.com"
    assert check_base_url("http://10.0.0.5:8080/push/") == "http://10.0.0.5:8080/push"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/token/?s=%selector%&t=%pushToken%", True),
        ("http://[::1]/token/?s=%selector%&t=%pushToken%", True),
        ("http://localhost:8080/t/?s=%selector%&t=%pushToken%", True),
        ("http://127.8.0.1/t/?s=%selector%&t=%pushToken%", True),
        ("https://push.example.com/t/?s=%selector%&t=%pushToken%", False),
        ("http://10.0.0.5/t/?s=%selector%&t=%pushToken%", False),
    ],
)
def test_calls_loopback(url: str, loopback: bool) -> None:
    assert calls_loopback(Template.parse(url=url)) is loopback
    assert calls_loopback(default_removal_template()) is True
