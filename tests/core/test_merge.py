"""Merging a report into what is stored: the iOS delay rule, as properties."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    MERGE_POLICY,
    REGISTRATION_FIELDS,
    REPORTED_FIELDS,
    Policy,
    Registration,
    Report,
    merge,
)
from pushreport_core.testing import strategies as s

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
#: The fields whose unknown value never erases a stored one, read from the table.
KNOWN = tuple(name for name, policy in MERGE_POLICY.items() if policy is Policy.KEEP_KNOWN)

stored_and_report = s.selectors.flatmap(
    lambda sel: st.tuples(st.none() | s.registrations(sel), s.reports(sel))
)


def _without_counters(registration: Registration) -> dict[str, Any]:
    fields = attrs.asdict(registration)
    del fields["reports"]
    return fields


def test_the_merge_policy_of_each_field() -> None:
    """The table, pinned: changing a field's policy changes what every backend stores."""
    assert dict(MERGE_POLICY) == {
        "selector": Policy.KEY,
        "username": Policy.KEEP_KNOWN,
        "token_calls": Policy.KEEP_KNOWN,
        "appid_calls": Policy.KEEP_KNOWN,
        "token_msgs": Policy.KEEP_KNOWN,
        "appid_msgs": Policy.KEEP_KNOWN,
        "extra": Policy.MERGE_EXTRA,
        "user_agent": Policy.KEEP_KNOWN,
        "first_seen": Policy.EARLIEST,
        "last_seen": Policy.LATEST,
        "reports": Policy.COUNT,
    }


def test_the_table_covers_every_field_of_a_registration_in_order() -> None:
    names = tuple(f.name for f in attrs.fields(Registration))
    assert tuple(MERGE_POLICY) == REGISTRATION_FIELDS == names
    # What a report carries is what the policies take from a report, in the same order.
    assert REPORTED_FIELDS == tuple(n for n, p in MERGE_POLICY.items() if p.reported)
    assert tuple(f.name for f in attrs.fields(Report)) == (*REPORTED_FIELDS, "password", "shape")
    assert set(Policy) == set(MERGE_POLICY.values()), "a policy no field uses"


#: What each policy makes of (stored value or None for a new registration, the report's
#: value, now): the expectation the property below derives from the table.
EXPECTED: dict[Policy, Any] = {
    Policy.KEY: lambda old, new, now: new,
    Policy.KEEP_KNOWN: lambda old, new, now: old if new is None else new,
    Policy.MERGE_EXTRA: lambda old, new, now: {**(old or {}), **new},
    Policy.EARLIEST: lambda old, new, now: now if old is None else min(old, now),
    Policy.LATEST: lambda old, new, now: now if old is None else max(old, now),
    Policy.COUNT: lambda old, new, now: 1 if old is None else old + 1,
}


@given(pair=stored_and_report, now=s.utc_datetimes)
def test_every_field_follows_its_policy(
    pair: tuple[Registration | None, Report], now: datetime
) -> None:
    stored, report = pair
    merged = merge(stored, report, now=now)
    for name, policy in MERGE_POLICY.items():
        old, new = getattr(stored, name, None), getattr(report, name, None)
        assert getattr(merged, name) == EXPECTED[policy](old, new, now), (name, policy)


@given(report=s.reports())
def test_stored_fields_round_trip(report: Report) -> None:
    fields = report.stored_fields()
    assert tuple(fields) == REPORTED_FIELDS and "password" not in fields
    assert Report.from_stored(fields) == report
    with pytest.raises(KeyError):
        Report.from_stored({k: v for k, v in fields.items() if k != "selector"})


@given(pair=stored_and_report, now=s.utc_datetimes)
def test_merging_the_same_report_twice_changes_only_the_count(
    pair: tuple[Registration | None, Report], now: datetime
) -> None:
    stored, report = pair
    once = merge(stored, report, now=now)
    twice = merge(once, report, now=now)
    assert _without_counters(twice) == _without_counters(once)
    assert twice.reports == once.reports + 1


@given(pair=stored_and_report, now=s.utc_datetimes)
def test_a_known_value_replaces_and_an_unknown_one_never_erases(
    pair: tuple[Registration | None, Report], now: datetime
) -> None:
    stored, report = pair
    merged = merge(stored, report, now=now)
    for name in KNOWN:
        new, old = getattr(report, name), getattr(stored, name, None)
        assert getattr(merged, name) == (old if new is None else new), name
    assert merged.extra == {**(stored.extra if stored else {}), **report.extra}
    assert merged.selector == report.selector


@given(pair=stored_and_report, now=s.utc_datetimes)
def test_a_known_token_is_never_lost(
    pair: tuple[Registration | None, Report], now: datetime
) -> None:
    stored, report = pair
    merged = merge(stored, report, now=now)
    for purpose in ("call", "message"):
        before = stored.pair(purpose) if stored else None  # type: ignore[arg-type]
        if before is not None:
            assert merged.pair(purpose) is not None  # type: ignore[arg-type]


@given(pair=stored_and_report, now=s.utc_datetimes)
def test_first_seen_last_seen_and_reports(
    pair: tuple[Registration | None, Report], now: datetime
) -> None:
    stored, report = pair
    merged = merge(stored, report, now=now)
    if stored is None:
        assert (merged.first_seen, merged.last_seen, merged.reports) == (now, now, 1)
    else:
        assert merged.first_seen == min(stored.first_seen, now)
        assert merged.last_seen == max(stored.last_seen, now)
        assert merged.reports == stored.reports + 1
    assert merged.first_seen <= now <= merged.last_seen


@given(report=s.reports(SEL), delay=st.timedeltas(timedelta(0), timedelta(minutes=5)))
def test_the_ios_delay_keeps_the_token_from_the_report_before(
    report: Report, delay: timedelta
) -> None:
    t0 = datetime(2025, 3, 15, 0, 46, 17, tzinfo=timezone.utc)
    full = attrs.evolve(report, token_msgs="QVBBOTFiRzlhcVd2bW54", appid_msgs="com.app.x")
    late = attrs.evolve(full, token_msgs=None, appid_msgs=None)
    merged = merge(merge(None, full, now=t0), late, now=t0 + delay)
    assert (merged.token_msgs, merged.appid_msgs) == ("QVBBOTFiRzlhcVd2bW54", "com.app.x")
    assert merged.reports == 2 and merged.last_seen == t0 + delay


def test_merge_returns_new_values_and_mutates_nothing() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    stored = merge(None, Report(selector=SEL, extra={"a": "1"}), now=t0)
    report = Report(selector=SEL, extra={"b": "2"})
    merged = merge(stored, report, now=t0 + timedelta(days=1))
    assert merged is not stored
    assert (stored.extra, report.extra, merged.extra) == (
        {"a": "1"},
        {"b": "2"},
        {"a": "1", "b": "2"},
    )
    assert stored.reports == 1 and stored.last_seen == t0


def test_merge_refuses_another_selector() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    stored = merge(None, Report(selector=SEL), now=t0)
    other = SEL[:-1] + "5"
    with pytest.raises(ValueError, match="cannot merge a report for selector"):
        merge(stored, Report(selector=other), now=t0)


def test_now_must_be_aware_utc() -> None:
    with pytest.raises(ValueError, match="aware datetime in UTC"):
        merge(None, Report(selector=SEL), now=datetime(2025, 1, 1))


@given(registration=s.registrations())
def test_registration_json_round_trips(registration: Registration) -> None:
    data = registration.to_json()
    assert tuple(data) == (
        "selector",
        "username",
        "token_calls",
        "appid_calls",
        "token_msgs",
        "appid_msgs",
        "extra",
        "user_agent",
        "first_seen",
        "last_seen",
        "reports",
    )
    assert Registration.from_json(data) == registration
    for required in ("selector", "first_seen", "last_seen"):
        with pytest.raises(KeyError):
            Registration.from_json({k: v for k, v in data.items() if k != required})
    optional = {"selector": data["selector"], "first_seen": data["first_seen"]}
    bare = Registration.from_json({**optional, "last_seen": data["first_seen"]})
    assert (bare.username, bare.extra, bare.reports) == (None, {}, 1)


def test_pair_picks_the_pair_for_the_purpose() -> None:
    from pushreport_core import TokenPair

    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    reg = merge(
        None,
        Report(
            selector=SEL,
            token_calls="VOIPTOKEN",
            appid_calls="a.voip",
            token_msgs="MSGTOKEN",
            appid_msgs=None,
        ),
        now=t0,
    )
    assert reg.pair("call") == TokenPair(token="VOIPTOKEN", app_id="a.voip")
    assert reg.pair("message") is None  # a token without its app id cannot be pushed to
    with pytest.raises(ValueError, match="purpose must be 'call' or 'message', not 'sms'"):
        reg.pair("sms")  # type: ignore[arg-type]


def test_parse_time_reads_naive_times_as_utc() -> None:
    from pushreport_core import format_time, parse_time

    assert parse_time("2025-01-01T10:00:00") == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    assert parse_time("2025-01-01T12:00:00+02:00") == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    assert (
        format_time(datetime(2025, 1, 1, 10, 0, 0, 5, tzinfo=timezone.utc))
        == "2025-01-01T10:00:00.000005Z"
    )
