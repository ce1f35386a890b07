"""The lifecycle rules of the core: durations, the prune cut-off and schedule, forgetting
a token, and who keeps a token under token_owner = "newest"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    ConfigurationError,
    Registration,
    Report,
    claimed_tokens,
    format_duration,
    merge,
    owners_to_forget,
    parse_duration,
    plan_token_move,
    prune_cutoff,
    prune_due,
    without_token,
)

T0 = datetime(2025, 3, 15, 12, 0, 0, tzinfo=timezone.utc)
T = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
U = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        ("1s", timedelta(seconds=1)),
        ("007d", timedelta(days=7)),
        ("999999w", timedelta(weeks=999999)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "90x",
            "'90x' is not a duration: write a whole number and a unit, s, m, h, d or w (e.g. 90d)",
        ),
        ("", "'' is not a duration: write a whole number and a unit, s, m, h, d or w (e.g. 90d)"),
        (
            "d",
            "'d' is not a duration: write a whole number and a unit, s, m, h, d or w (e.g. 90d)",
        ),
        (
            "1.5d",
            "'1.5d' is not a duration: write a whole number and a unit, s, m, h, d or w "
            "(e.g. 90d)",
        ),
        (
            " 90d",
            "' 90d' is not a duration: write a whole number and a unit, s, m, h, d or w "
            "(e.g. 90d)",
        ),
        (
            "90D",
            "'90D' is not a duration: write a whole number and a unit, s, m, h, d or w (e.g. 90d)",
        ),
        (
            "1d12h",
            "'1d12h' is not a duration: write a whole number and a unit, s, m, h, d or w "
            "(e.g. 90d)",
        ),
        (
            "-1d",
            "'-1d' is not a duration: write a whole number and a unit, s, m, h, d or w (e.g. 90d)",
        ),
        (
            "1000000w",
            "'1000000w' is not a duration: write a whole number and a unit, s, m, h, "
            "d or w (e.g. 90d)",
        ),
        ("0d", "'0d' is not a duration: it must be more than zero"),
    ],
)
def test_parse_duration_errors_verbatim(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        parse_duration(text)
    assert str(e.value) == message
    with pytest.raises(ConfigurationError) as e:
        parse_duration(text, key="prune.older_than")
    assert str(e.value) == f"prune.older_than: {message}"
    assert e.value.key == "prune.older_than"


@given(n=st.integers(1, 999_999), unit=st.sampled_from("smhdw"))
def test_format_duration_round_trips(n: int, unit: str) -> None:
    value = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(value)) == value


def test_format_duration_takes_the_largest_unit() -> None:
    assert [format_duration(parse_duration(t)) for t in ("14d", "24h", "90s", "120m")] == [
        "2w",
        "1d",
        "90s",
        "2h",
    ]


def test_prune_cutoff() -> None:
    assert prune_cutoff(T0, timedelta(days=90)) == T0 - timedelta(days=90)
    # Further back than year 1: nothing is that old.
    assert prune_cutoff(T0, parse_duration("999999w")) == datetime(1, 1, 1, tzinfo=timezone.utc)


def test_prune_due() -> None:
    day = timedelta(days=1)
    assert prune_due(None, T0, day)
    assert not prune_due(T0, T0, day)
    assert not prune_due(T0, T0 + day - timedelta(microseconds=1), day)
    assert prune_due(T0, T0 + day, day)
    assert prune_due(T0 + timedelta(hours=1), T0, day), "a clock set back stops pruning"


# -- forgetting a token --------------------------------------------------------------


def registration(
    selector: str = "s1",
    username: str | None = "alice",
    *,
    calls: str | None = U,
    msgs: str | None = T,
    seen: datetime = T0,
) -> Registration:
    return Registration(
        selector=selector,
        username=username,
        token_calls=calls,
        appid_calls="com.app.voip",
        token_msgs=msgs,
        appid_msgs="com.app",
        first_seen=seen,
        last_seen=seen,
        reports=3,
    )


def test_without_token_clears_only_that_token() -> None:
    r = registration()
    assert without_token(r, T) == attrs.evolve(r, token_msgs=None)
    assert without_token(r, U) == attrs.evolve(r, token_calls=None)
    assert without_token(r, "other") is r
    both = registration(calls=T)
    assert without_token(both, T) == attrs.evolve(both, token_calls=None, token_msgs=None)
    # App ids, times and the count stay.
    gone = without_token(r, T)
    assert (gone.appid_msgs, gone.last_seen, gone.reports) == ("com.app", T0, 3)


@given(
    calls=st.sampled_from([None, T, U]),
    msgs=st.sampled_from([None, T, U]),
    token=st.sampled_from([T, U, "x"]),
)
def test_without_token_is_idempotent_and_total(
    calls: str | None, msgs: str | None, token: str
) -> None:
    r = registration(calls=calls, msgs=msgs)
    once = without_token(r, token)
    assert without_token(once, token) == once
    assert token not in (once.token_calls, once.token_msgs)
    assert {once.token_calls, once.token_msgs} - {None} <= {calls, msgs} - {None}


# -- token_owner = "newest" ---------------------------------------------------------------


def test_claimed_tokens_are_the_new_ones_of_the_selector() -> None:
    report = Report(selector="s1", username="alice", token_calls=U, token_msgs=T)
    stored = merge(None, report, now=T0)
    assert claimed_tokens(None, report, stored) == [U, T]
    # The same tokens on the next start: nothing to look up.
    assert claimed_tokens(stored, report, merge(stored, report, now=T0)) == []
    # A new message token only.
    newer = attrs.evolve(report, token_msgs="bmV3")
    assert claimed_tokens(stored, newer, merge(stored, newer, now=T0)) == ["bmV3"]
    # The iOS delay: a token the report does not carry is not claimed.
    late = Report(selector="s1", username="alice")
    assert claimed_tokens(None, late, merge(stored, late, now=T0)) == []
    # One token for both purposes: claimed once.
    same = Report(selector="s1", username="alice", token_calls=T, token_msgs=T)
    assert claimed_tokens(None, same, merge(None, same, now=T0)) == [T]


def test_another_username_loses_the_token() -> None:
    me = registration("s1", "alice", seen=T0)
    bob = registration("s2", "bob", seen=T0 - timedelta(days=3))
    assert owners_to_forget(me, T, [me, bob]) == ["s2"]


def test_the_same_username_keeps_it() -> None:
    me = registration("s1", "alice", seen=T0)
    other_account = registration("s3", "alice", seen=T0 - timedelta(days=3))
    bob = registration("s2", "bob", seen=T0 - timedelta(days=3))
    assert owners_to_forget(me, T, [bob, me, other_account]) == ["s2"]
    assert owners_to_forget(me, T, [me, other_account]) == []


def test_unknown_usernames_decide_nothing() -> None:
    me = registration("s1", "alice")
    anonymous = registration("s2", None, seen=T0 - timedelta(days=1))
    assert owners_to_forget(me, T, [anonymous]) == []
    assert (
        owners_to_forget(
            registration("s1", None), T, [registration("s2", "bob", seen=T0 - timedelta(days=1))]
        )
        == []
    )


def test_a_holder_that_reported_later_keeps_it() -> None:
    # Two reports racing: whichever receiver looks, the newest owner wins.
    me = registration("s1", "alice", seen=T0)
    later = registration("s2", "bob", seen=T0 + timedelta(seconds=1))
    assert owners_to_forget(me, T, [me, later]) == ["s1"]
    assert owners_to_forget(later, T, [me, later]) == ["s1"]


def test_a_holder_no_longer_holding_it_is_left_alone() -> None:
    me = registration("s1", "alice")
    bob = registration("s2", "bob", msgs="b3RoZXI=", calls=None, seen=T0 - timedelta(days=1))
    assert owners_to_forget(me, T, [bob]) == []


def test_the_move_plan_names_who_forgets_and_what_the_reporter_keeps() -> None:
    me = registration("s1", "alice", seen=T0)
    bob = registration("s2", "bob", seen=T0 - timedelta(days=3))
    move = plan_token_move(me, T, [me, bob])
    assert (move.token, move.forget, move.stored) == (T, ("s2",), me)
    # A holder under another username reported later: the reporter is the one that
    # forgets, and the plan says what it keeps.
    later = registration("s3", "bob", seen=T0 + timedelta(seconds=1))
    move = plan_token_move(me, T, [me, later])
    assert move.forget == ("s1",) and move.stored == without_token(me, T)
    assert move.stored.token_msgs is None and move.stored.token_calls == me.token_calls


def test_the_move_plan_passes_over_registrations_without_the_token() -> None:
    """The receiver without find_token hands every registration in: the same plan."""
    me = registration("s1", "alice", seen=T0)
    bob = registration("s2", "bob", seen=T0 - timedelta(days=3))
    strangers = [
        registration(f"x{i}", "carol", msgs="b3RoZXI=", calls=None, seen=T0) for i in range(3)
    ]
    assert plan_token_move(me, T, [*strangers, bob, me]) == plan_token_move(me, T, [bob])


# -- who may write a stored registration (issue 14, item 2) ------------------------------


def test_an_identified_user_may_write_only_their_own_or_a_free_registration() -> None:
    from pushreport_core import may_write

    sel = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
    alices = merge(None, Report(selector=sel, username="alice", token_msgs=T), now=T0)
    nobodys = merge(None, Report(selector=sel, token_msgs=T), now=T0)
    assert may_write(None, "mallory")  # not stored: free
    assert may_write(nobodys, "mallory")  # stored without a username: free
    assert may_write(alices, "alice")
    assert not may_write(alices, "mallory")
    assert not may_write(alices, "Alice")  # exact: the username the app sends
    # A request that names no username writes only what names none either.
    assert may_write(nobodys, None) and may_write(None, None)
    assert not may_write(alices, None)


@given(
    stored=st.none() | st.sampled_from(["alice", "bob", None]),
    first=st.sampled_from(["alice", "bob", "mallory", None]),
    second=st.sampled_from(["alice", "bob", "mallory", None]),
)
def test_two_users_never_both_may_write_what_the_first_wrote(stored, first, second) -> None:
    """Whatever was stored, once the first writer's report is merged, a second writer
    with another username is refused: the rule cannot let a registration change hands."""
    from pushreport_core import may_write

    sel = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
    before = (
        None
        if stored is None
        else merge(None, Report(selector=sel, username=stored, token_msgs=T), now=T0)
    )
    if not may_write(before, first):
        return
    after = merge(before, Report(selector=sel, username=first, token_msgs=U), now=T0)
    if may_write(after, second):
        assert after.username in (None, second)
