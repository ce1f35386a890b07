"""A misspelt variable, and a reporter template without a push token, are refused when
the template is compiled (issue 14, item 17): the typo would be sent unsubstituted, land
in ``extra``, and no token would ever be stored."""

from __future__ import annotations

import pytest

from pushreport_core import TOKEN_VARIABLES, ConfigurationError, Template

URL = "pushTokenReporterUrl"


def error_of(**xml: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        Template.parse(**xml)  # type: ignore[arg-type]
    return info.value


def test_the_issue_s_typo_points_at_it_and_names_the_variable_meant() -> None:
    url = "https://push.example.com/token/?selector=%selector%&token=%pushTokn%"
    error = error_of(url=url, require_token=True)
    assert str(error) == (
        f"{URL}: unknown variable %pushTokn%: did you mean %pushToken%?\n"
        f"    {url}\n"
        f"    {' ' * url.index('%pushTokn%')}^"
    )
    assert (error.key, error.position) == (URL, url.index("%pushTokn%"))


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("selectr", "selector"),
        ("pushTokenOthr", "pushTokenOther"),
        ("pushTokenIncommingCall", "pushTokenIncomingCall"),
        ("pushapid", "pushappid"),
        ("pushappid_incomming_call", "pushappid_incoming_call"),
        ("acount[username]", "account[username]"),
        ("push_token", "pushToken"),
    ],
)
def test_a_near_miss_of_a_known_variable_is_refused(typo: str, meant: str) -> None:
    url = f"https://e.com/t/?s=%selector%&t=%pushToken%&x=%{typo}%"
    error = error_of(url=url)
    assert str(error).splitlines()[0] == (
        f"{URL}: unknown variable %{typo}%: did you mean %{meant}%?"
    )
    assert error.position == url.index(f"%{typo}%")


def test_a_typo_in_a_json_body_points_into_the_body() -> None:
    body = '{"s": "%selector%", "t": "%pushTokenOthr%"}'
    error = error_of(url="https://e.com/t/", post_data=body, content_type="application/json")
    assert str(error).splitlines()[0] == (
        "pushTokenReporterPostData: unknown variable %pushTokenOthr%: did you mean "
        "%pushTokenOther%?"
    )
    assert error.position == body.index("%pushTokenOthr%")


@pytest.mark.parametrize(
    "variable",
    [
        "installid",  # one of the app's global parameters
        "account[pushSecret]",
        "account[usernam]",  # the account's own parameters are free, however named
        "account[cloud_username]",
        "platform",
        "appVersion",
    ],
)
def test_other_parameters_stay_free_and_are_extras(variable: str) -> None:
    template = Template.parse(
        url=f"https://e.com/t/?s=%selector%&t=%pushToken%&x=%{variable}%", require_token=True
    )
    assert variable in template.variables


def test_a_reporter_template_without_a_push_token_is_refused() -> None:
    url = "https://e.com/t/?s=%selector%&u=%account[username]%&i=%installid%"
    error = error_of(url=url, require_token=True)
    assert str(error) == (
        f"{URL}: the template carries no push token: a report stores %pushToken%, "
        "%pushTokenOther% or %pushTokenIncomingCall%"
    )
    # Any one of them will do, in the URL or the body.
    for token in TOKEN_VARIABLES:
        Template.parse(url=f"https://e.com/t/?s=%selector%&t=%{token}%", require_token=True)
        Template.parse(
            url="https://e.com/t/", post_data=f"s=%selector%&t=%{token}%", require_token=True
        )
    # Other templates (a removal's, another web service's) need none.
    Template.parse(url="https://e.com/t/?s=%selector%")


def test_the_configured_reporter_template_needs_a_push_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pushreport_wsgi import load_config

    config = tmp_path / "p.toml"
    config.write_text('[reporter]\nurl = "https://e.com/t/?s=%selector%&t=%pushTokn%"\n')
    with pytest.raises(ConfigurationError) as info:
        load_config(config)
    assert str(info.value).splitlines()[0] == (
        f"{URL}: unknown variable %pushTokn%: did you mean %pushToken%?"
    )
    config.write_text('[reporter]\nurl = "https://e.com/t/?s=%selector%&x=%installid%"\n')
    with pytest.raises(ConfigurationError, match="the template carries no push token"):
        load_config(config)
