"""Pure aggregates of ``pushreport stats``: token shapes, user agents, age buckets."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given

from pushreport_core import Registration
from pushreport_core._stats import (
    AGE_BUCKETS,
    PLATFORMS,
    RegistrationStats,
    age_bucket,
    app_version,
    registration_platform,
    token_platform,
)
from pushreport_core.testing.strategies import tokens

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
APNS_HEX = "a3f1" * 16
APNS_B64 = base64.b64encode(bytes(range(32))).decode()  # 44 characters, one "="
FCM = "dGhpcyBpcyBub3Q6" + "_" * 4 + ":APA91bH" + "x-Y_z0" * 25
# The spec's examples: token_calls is base64 of 32 bytes, token_msgs base64 of "APA91b…".
SPEC_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
SPEC_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"


@pytest.mark.parametrize(
    "token, platform",
    [
        (APNS_HEX, "apns"),
        (APNS_HEX.upper(), "apns"),
        (APNS_B64, "apns"),
        (APNS_B64.rstrip("="), "apns"),
        (SPEC_CALLS, "apns"),
        (FCM, "fcm"),
        ("APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx", "fcm"),
        (SPEC_MSGS, "fcm"),
        (base64.b64encode(FCM.encode()).decode(), "fcm"),
        (APNS_HEX[:-1], "unknown"),
        ("short:token", "unknown"),
        ("not base64 at all!", "unknown"),
        (base64.b64encode(b"\xff" * 40).decode(), "unknown"),
    ],
)
def test_platform_from_the_token_shape(token, platform):
    assert token_platform(token) == platform


@given(tokens())
def test_token_platform_is_total(token):
    assert token_platform(token) in ("apns", "fcm", "unknown")


def reg(**fields) -> Registration:
    fields.setdefault("selector", "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14")
    fields.setdefault("first_seen", NOW - timedelta(days=400))
    fields.setdefault("last_seen", NOW)
    return Registration(**fields)


@pytest.mark.parametrize(
    "calls, msgs, platform",
    [
        (APNS_HEX, APNS_B64, "apns"),
        (None, FCM, "fcm"),
        (APNS_HEX, "opaque", "apns"),
        (APNS_HEX, FCM, "mixed"),
        ("opaque", None, "unknown"),
        (None, None, "none"),
    ],
)
def test_registration_platform(calls, msgs, platform):
    assert registration_platform(reg(token_calls=calls, token_msgs=msgs)) == platform


@pytest.mark.parametrize(
    "user_agent, version",
    [
        ("Cloud Softphone/2.3.4 (iPhone; iOS 17.1)", "Cloud Softphone/2.3.4"),
        ("CloudSoftphone/1.5.6", "CloudSoftphone/1.5.6"),
        ("  Cloud   Softphone / 2.3.4-beta1 (Android 14)", "Cloud Softphone/2.3.4-beta1"),
        ("Acme Phone/v5.10.2 CFNetwork/1.0 Darwin/23", "Acme Phone/5.10.2"),
        ("Acrobits Softphone 5.1 (Android)", "Acrobits Softphone/5.1"),
        ("Mozilla/5.0 (iPhone)", "Mozilla/5.0"),
        ("curl", "(unknown)"),
        ("(iPhone; iOS 17.1)", "(unknown)"),
        ("", "(none)"),
        (None, "(none)"),
    ],
)
def test_app_version_from_the_user_agent(user_agent, version):
    assert app_version(user_agent) == version


@pytest.mark.parametrize(
    "age, bucket",
    [
        (timedelta(0), "<1d"),
        (timedelta(hours=-3), "<1d"),
        (timedelta(hours=23, minutes=59), "<1d"),
        (timedelta(days=1), "<7d"),
        (timedelta(days=6, hours=23), "<7d"),
        (timedelta(days=7), "<30d"),
        (timedelta(days=29), "<30d"),
        (timedelta(days=30), "<90d"),
        (timedelta(days=89), "<90d"),
        (timedelta(days=90), "older"),
        (timedelta(days=900), "older"),
    ],
)
def test_age_buckets(age, bucket):
    assert age_bucket(NOW - age, NOW) == bucket


def test_stats_count_every_dimension_and_bound_their_keys():
    stats = RegistrationStats(now=NOW, max_keys=2)
    for i, (ua, appid) in enumerate(
        [("A/1", "x.pushkit"), ("A/1", "x.pushkit"), ("A/2", "y"), ("A/3", "z"), (None, None)]
    ):
        stats.add(
            reg(
                selector=f"{i:040X}:7C3A0D14",
                user_agent=ua,
                appid_calls=appid,
                token_calls=APNS_HEX,
                last_seen=NOW - timedelta(days=10 * i),
            )
        )
    data = stats.to_json()
    assert data["registrations"] == 5
    assert data["now"] == "2026-11-26T12:00:00.000000Z"
    assert data["app_versions"] == {"A/1": 2, "(other)": 2, "A/2": 1}
    assert data["app_ids"] == {
        "calls": {"x.pushkit": 2, "(other)": 2, "y": 1},
        "msgs": {"(none)": 5},
    }
    assert data["platforms"] == {"apns": 5, "fcm": 0, "mixed": 0, "unknown": 0, "none": 0}
    assert list(data["platforms"]) == list(PLATFORMS)
    assert data["last_report_age"] == {"<1d": 1, "<7d": 0, "<30d": 2, "<90d": 2, "older": 0}
    assert list(data["last_report_age"]) == [label for label, _ in AGE_BUCKETS]
