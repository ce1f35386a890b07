"""The account password: a ``Secret`` that never shows itself and is never stored."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import datetime, timezone

import attrs
import pytest

from pushreport_core import Registration, Report, Secret, merge, parse_request

from .test_io import SPEC_GET

PASSWORD = "12345678"


@pytest.fixture
def report() -> Report:
    report = parse_request(SPEC_GET)
    assert report.password is not None and report.password.reveal() == PASSWORD
    return report


def test_password_is_in_no_repr_or_str(report: Report) -> None:
    for text in (
        repr(report),
        str(report),
        f"{report}",
        repr(attrs.asdict(report)),
        repr(report.password),
        str(report.password),
        f"{report.password!s}",
    ):
        assert PASSWORD not in text
    assert repr(report.password) == str(report.password) == "Secret('***')"


def test_secret_does_not_pickle_or_copy(report: Report) -> None:
    for value in (report.password, report):
        with pytest.raises(TypeError, match="a Secret cannot be pickled"):
            pickle.dumps(value)
    with pytest.raises(TypeError, match="a Secret cannot be pickled"):
        copy.deepcopy(report.password)


def test_secret_is_not_json_serialisable(report: Report) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps(report.password)
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps(attrs.asdict(report))


def test_the_stored_registration_has_no_password(report: Report) -> None:
    assert "password" not in attrs.fields_dict(Registration)
    stored = merge(None, report, now=datetime(2015, 3, 15, tzinfo=timezone.utc))
    assert PASSWORD not in repr(stored)
    assert PASSWORD not in json.dumps(stored.to_json())
    assert PASSWORD not in repr(pickle.dumps(stored))


def test_secret_compares_by_value() -> None:
    secret = Secret("pässwörd")
    assert secret.matches("pässwörd") and not secret.matches("passwort")
    assert not secret.matches("")
    assert secret == Secret("pässwörd") and secret != Secret("x")
    assert secret != "pässwörd"  # never equal to the bare string
    assert hash(secret) == hash(Secret("x"))  # the hash tells nothing about the value
    assert bool(secret) and not Secret("")


def test_the_password_does_not_make_reports_differ(report: Report) -> None:
    assert report == attrs.evolve(report, password=Secret("other"))


def test_stored_fields_never_hold_the_password():
    from pushreport_core import Report, Secret

    report = Report(
        selector="A" * 40 + ":01",
        username="alice",
        extra={"k": "v"},
        password=Secret("hunter2"),
        shape="default-query",
    )
    fields = report.stored_fields()
    assert set(fields) == {
        "selector",
        "username",
        "token_calls",
        "appid_calls",
        "token_msgs",
        "appid_msgs",
        "extra",
        "user_agent",
    }
    assert "hunter2" not in repr(fields)
