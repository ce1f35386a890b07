"""The storage conformance suite: one base class every backend runs."""

from __future__ import annotations

import multiprocessing
import pickle
import queue as queue_module
import threading
import traceback
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, ClassVar, ContextManager, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from pushreport_core import (
    Registration,
    Report,
    StorageUnavailable,
    may_write,
    merge,
    without_token,
)
from pushreport_core.testing import strategies as prs

from ..storage import Capabilities, Capability, ForgetToken, Storage
from ._model import StorageMachine, StorageOpener

__all__ = ["StorageConformance"]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "0123456789abcdef0123456789abcdef01234567:c0f"
OTHER = "fedcba9876543210fedcba9876543210fedcba98:c0f"
THIRD = "89abcdef0123456789abcdef0123456789abcdef:c0f"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"

FULL = Report(
    selector=SELECTOR,
    username="alice",
    token_calls=TOKEN_CALLS,
    appid_calls="com.cloudsoftphone.app.pushkit",
    token_msgs=TOKEN_MSGS,
    appid_msgs="com.cloudsoftphone.app",
    extra={"installid": "i-1"},
    user_agent="CloudSoftphone/1.5.6",
)
#: The iOS delay at its most extreme: a report that knows nothing but the selector.
BARE = Report(selector=SELECTOR)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- concurrency -------------------------------------------------------------------------------

CONCURRENT_SELECTORS = (SELECTOR, OTHER)


def concurrent_report(worker: int, i: int) -> Report:
    """Worker *worker*'s *i*-th report: each knows only some of the values."""
    k = i // len(CONCURRENT_SELECTORS)
    return Report(
        selector=CONCURRENT_SELECTORS[i % len(CONCURRENT_SELECTORS)],
        username=f"user{worker}" if k % 4 == 0 else None,
        token_calls=f"call{worker}x{i}AAAA" if k % 2 == 0 else None,
        appid_calls="com.example.app.voip" if k % 2 == 0 else None,
        token_msgs=f"msg{worker}x{i}AAAA" if k % 3 != 1 else None,
        appid_msgs="com.example.app" if k % 3 != 1 else None,
        extra={f"w{worker}": str(i)},
    )


def concurrent_now(worker: int, i: int) -> datetime:
    return T0 + timedelta(microseconds=i * 1000 + worker)


Upsert = tuple[Report, datetime, Registration]


def check_linearizable(upserts: list[Upsert], final: dict[str, Registration | None]) -> None:
    """Every upsert returned its place in its selector's commit order (``reports``);
    folding merge over the reports in that order gives each returned registration and
    the final one: no lost update, no lost token, nothing counted twice."""
    by_selector: dict[str, list[Upsert]] = defaultdict(list)
    for upsert in upserts:
        by_selector[upsert[0].selector].append(upsert)
    for selector, group in by_selector.items():
        group.sort(key=lambda u: u[2].reports)
        places = [u[2].reports for u in group]
        assert places == list(range(1, len(group) + 1)), (
            f"{selector}: concurrent upserts returned reports counts {places}, not 1..n: "
            "an update was lost or counted twice"
        )
        expected: Registration | None = None
        for report, now, returned in group:
            expected = merge(expected, report, now=now)
            assert returned == expected, (
                f"{selector}: upsert #{returned.reports} returned {returned!r}; folding "
                f"merge in commit order gives {expected!r}"
            )
        assert final[selector] == expected, (
            f"{selector}: stored {final[selector]!r}, expected {expected!r}"
        )


def _process_worker(
    make_storage: StorageOpener, worker: int, count: int, queue: Any, barrier: Any
) -> None:
    try:
        storage = make_storage()
        try:
            barrier.wait(timeout=60)  # all at once, however long each took to start
            out = []
            for i in range(count):
                report, now = concurrent_report(worker, i), concurrent_now(worker, i)
                out.append((worker, i, storage.upsert(report, now=now).to_json()))
        finally:
            storage.close()
        queue.put(("ok", out))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def _may_write_as(username: str, stored: Registration | None) -> bool:
    # A module-level function (with functools.partial): it pickles into spawned children.
    return may_write(stored, username)


def _race_selector(r: int) -> str:
    return f"{r:040x}:c0f"


def _race_report(user: str, r: int) -> Report:
    return Report(
        selector=_race_selector(r),
        username=user,
        token_msgs=f"{user}x{r}AAAA",
        appid_msgs="com.example.app",
    )


def _race_worker(
    make_storage: StorageOpener, user: str, rounds: int, queue: Any, barrier: Any
) -> None:
    try:
        storage = make_storage()
        won = []
        try:
            for r in range(rounds):
                barrier.wait(timeout=60)
                allowed = partial(_may_write_as, user)
                if storage.upsert_if(_race_report(user, r), now=at(r), allowed=allowed):  # type: ignore[attr-defined]
                    won.append(r)
        finally:
            storage.close()
        queue.put(("ok", (user, won)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def _check_one_owner(storage: Storage, won: dict[int, list[str]], rounds: int) -> None:
    for r in range(rounds):
        assert len(won[r]) == 1, (
            f"{_race_selector(r)}: upsert_if allowed {won[r]} (one allowed write per new "
            "selector, the others must see it): the decision and the write are not atomic"
        )
        stored = storage.get(_race_selector(r))
        assert stored is not None and stored.username == won[r][0]
        assert stored.reports == 1 and stored.token_msgs == f"{won[r][0]}x{r}AAAA"


def _process_context(make_storage: Callable[[], object]) -> Any:
    """Fresh interpreters (``spawn``) when the factory pickles; else ``fork``, which
    copies the test process with whatever locks its other threads hold."""
    try:
        pickle.dumps(make_storage)
    except Exception:
        try:
            return multiprocessing.get_context("fork")
        except ValueError:
            pytest.skip(
                "make_storage does not pickle and this platform has no fork(): "
                "give it a picklable factory (functools.partial)"
            )
    return multiprocessing.get_context("spawn")


# -- the suite ---------------------------------------------------------------------------------


class StorageConformance:
    """What every storage backend must do, as tests. Subclass it in a ``Test*`` class and
    give it a ``make_storage`` fixture that returns a zero-argument factory; each call
    opens a new handle on the same, initially empty, store::

        class TestMyStorage(StorageConformance):
            @pytest.fixture
            def make_storage(self, tmp_path):
                return functools.partial(MyStorage, tmp_path / "db")

    A factory that pickles (``functools.partial`` of an importable class) lets the
    process test run its children in fresh interpreters; any other (a lambda) is
    carried into them by ``fork()``.

    What the backend can do beyond :class:`~pushreport.storage.Storage` comes from
    its own declaration (its ``capabilities``, :class:`~pushreport.storage.Capability`):
    the declaration must hold (:meth:`test_declared_capabilities_hold`), each declared
    capability is tested, and a test of one it does not declare is skipped with the
    reason. The flags below say what the test can do with the backend (reopen it, share
    it between threads or processes, make it unavailable); with ``supports_unavailable
    = True``, implement :meth:`make_unavailable`.
    """

    # Collected only in subclasses (see __init_subclass__), never as the base itself.
    __test__ = False

    #: A new handle (``make_storage()`` again) sees what an earlier one stored, also
    #: after that one was closed.
    supports_reopen: ClassVar[bool] = True
    #: One handle may be used from several threads at once.
    supports_threads: ClassVar[bool] = True
    #: Handles in several processes (``fork``) share the store.
    supports_processes: ClassVar[bool] = True
    #: The test can make the backend unavailable (:meth:`make_unavailable`).
    supports_unavailable: ClassVar[bool] = False

    #: Threads (and processes) and upserts each in the concurrency tests.
    concurrency: ClassVar[tuple[int, int]] = (4, 30)
    #: Hypothesis settings of the state-machine test; ``None``: the loaded profile,
    #: with no deadline and 30 steps a run.
    machine_settings: ClassVar[settings | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    # -- what a backend provides --------------------------------------------------------

    @pytest.fixture
    def make_storage(self) -> StorageOpener:
        """Override: a zero-argument factory opening a handle on a fresh store."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a make_storage fixture returning a "
            "zero-argument factory of storage handles"
        )

    def make_unavailable(self, storage: Storage) -> ContextManager[None]:
        """Override with ``supports_unavailable = True``: a context manager inside which
        *storage* cannot commit (a lock held elsewhere, the server stopped)."""
        raise NotImplementedError(
            f"{type(self).__name__} sets supports_unavailable but "
            "does not implement make_unavailable"
        )

    @pytest.fixture
    def storage(self, make_storage: StorageOpener) -> Iterator[Storage]:
        s = make_storage()
        try:
            yield s
        finally:
            s.close()

    def _require(self, flag: str, why: str) -> None:
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__} declares {flag} = False: {why}")

    def _capable(self, storage: Storage, capability: Capability, why: str) -> Capabilities:
        """What *storage* declares; the test is skipped, saying *why* it matters,
        unless it declares *capability*."""
        capabilities = Capabilities.of(storage)
        if capability not in capabilities:
            pytest.skip(
                f"{type(self).__name__}'s backend does not declare {capability.value!r}: {why}"
            )
        return capabilities

    def _forget(self, storage: Storage) -> ForgetToken:
        forget = self._capable(
            storage,
            Capability.FORGET_TOKEN,
            'token_owner = "newest" and push cannot take a token from it',
        ).forget_token
        assert forget is not None
        return forget

    # -- the protocol ----------------------------------------------------------------------

    def test_is_a_storage(self, storage: Storage) -> None:
        assert isinstance(storage, Storage), "missing methods of pushreport.Storage"
        assert isinstance(storage.name, str) and storage.name

    def test_declared_capabilities_hold(self, storage: Storage) -> None:
        """What the backend declares names real capabilities, each with its method:
        the check a backend passes when it is opened (it raises ConfigurationError,
        naming what is missing)."""
        capabilities = Capabilities.of(storage)
        for capability in capabilities.declared:
            assert isinstance(capability, Capability)

    def test_empty_store(self, storage: Storage) -> None:
        assert storage.get(SELECTOR) is None
        assert list(storage) == []
        assert storage.find(username="alice") == []
        assert storage.remove(SELECTOR) is False

    def test_ping_when_healthy(self, storage: Storage) -> None:
        storage.ping()  # raises StorageUnavailable when it cannot serve

    # -- upsert and the merge rule -------------------------------------------------------

    def test_first_upsert_returns_and_stores_the_new_registration(self, storage: Storage) -> None:
        expected = merge(None, FULL, now=T0)
        assert storage.upsert(FULL, now=T0) == expected
        assert storage.get(SELECTOR) == expected
        assert expected.first_seen == expected.last_seen == T0 and expected.reports == 1

    def test_ios_delay_never_erases_a_known_value(self, storage: Storage) -> None:
        # "On iOS, there is sometimes a delay getting the pushTokenOther which results in
        # the web service being called with a null value for pushTokenOther."
        storage.upsert(FULL, now=T0)
        late = attrs.evolve(FULL, token_msgs=None, appid_msgs=None)
        expected = merge(merge(None, FULL, now=T0), late, now=at(1))
        assert storage.upsert(late, now=at(1)) == expected
        assert storage.upsert(BARE, now=at(2)) == merge(expected, BARE, now=at(2))
        stored = storage.get(SELECTOR)
        assert stored is not None
        assert (
            stored.token_msgs,
            stored.appid_msgs,
            stored.token_calls,
            stored.username,
            stored.user_agent,
            dict(stored.extra),
        ) == (
            TOKEN_MSGS,
            "com.cloudsoftphone.app",
            TOKEN_CALLS,
            "alice",
            "CloudSoftphone/1.5.6",
            {"installid": "i-1"},
        )
        assert stored.reports == 3

    def test_late_token_fills_in(self, storage: Storage) -> None:
        first = attrs.evolve(FULL, token_msgs=None)
        storage.upsert(first, now=T0)
        stored = storage.upsert(Report(selector=SELECTOR, token_msgs=TOKEN_MSGS), now=at(3))
        assert stored.token_msgs == TOKEN_MSGS and stored.token_calls == TOKEN_CALLS
        assert storage.get(SELECTOR) == stored

    def test_known_values_replace_stored_ones(self, storage: Storage) -> None:
        storage.upsert(FULL, now=T0)
        newer = Report(
            selector=SELECTOR,
            username="bob",
            token_msgs="bmV3ZXJ0b2tlbg==",
            extra={"installid": "i-2", "device": "x"},
        )
        stored = storage.upsert(newer, now=at(1))
        assert (stored.username, stored.token_msgs, stored.token_calls) == (
            "bob",
            "bmV3ZXJ0b2tlbg==",
            TOKEN_CALLS,
        )
        assert dict(stored.extra) == {"installid": "i-2", "device": "x"}
        assert storage.get(SELECTOR) == stored

    def test_times_out_of_order_keep_first_and_last_seen(self, storage: Storage) -> None:
        storage.upsert(FULL, now=at(10))
        storage.upsert(BARE, now=at(5))
        stored = storage.upsert(BARE, now=at(7.000001))
        assert (stored.first_seen, stored.last_seen, stored.reports) == (at(5), at(10), 3)
        assert storage.get(SELECTOR) == stored

    def test_quiet_upsert_stores_what_upsert_would(self, storage: Storage) -> None:
        """``upsert(..., read_back=False)`` (``quiet_upsert``; the receiver's path when
        nothing needs the registration): ``None``, and the same merge as ``upsert``,
        visible to the next read."""
        quiet = self._capable(
            storage, Capability.QUIET_UPSERT, "the receiver always reads the row back"
        ).quiet_upsert
        assert quiet is not None
        late = attrs.evolve(FULL, token_msgs=None, appid_msgs=None)
        assert quiet(FULL, now=T0) is None
        assert quiet(late, now=at(1)) is None
        expected = merge(merge(None, FULL, now=T0), late, now=at(1))
        assert storage.get(SELECTOR) == expected
        assert storage.upsert(BARE, now=at(2)) == merge(expected, BARE, now=at(2))

    def test_batch_upsert_is_the_merges_in_order(self, storage: Storage) -> None:
        """``upsert_many`` (the receiver batches concurrent reports through it): one
        call equals the upserts one by one, in order, reports of one selector
        included."""
        upsert_many = self._capable(
            storage, Capability.UPSERT_MANY, "the receiver writes one report at a time"
        ).upsert_many
        assert upsert_many is not None
        other = attrs.evolve(BARE, selector=OTHER)
        late = attrs.evolve(FULL, token_msgs=None, username=None)
        items = [(FULL, T0), (other, at(1)), (late, at(2)), (BARE, at(3))]
        expected = []
        model: dict[str, Registration] = {}
        for report, now in items:
            model[report.selector] = merge(model.get(report.selector), report, now=now)
            expected.append(model[report.selector])
        assert upsert_many(items) == expected
        assert storage.get(SELECTOR) == model[SELECTOR]
        assert storage.get(OTHER) == model[OTHER]

    def test_put_many_stores_registrations_exactly(self, storage: Storage) -> None:
        """``put_many`` (``pushreport migrate`` copies through it): the registrations
        are stored as given, replacing the selector's state; putting them again changes
        nothing; a later upsert merges on top of them."""
        put_many = self._capable(
            storage, Capability.PUT_MANY, "pushreport migrate cannot copy into it"
        ).put_many
        assert put_many is not None
        storage.upsert(attrs.evolve(FULL, token_calls="b2xkdG9rZW4="), now=at(-5))
        put = [
            attrs.evolve(
                merge(None, FULL, now=T0), first_seen=at(-100), last_seen=at(50.000001), reports=17
            ),
            merge(None, attrs.evolve(BARE, selector=OTHER), now=at(3)),
        ]
        assert put_many(put) is None
        assert storage.get(SELECTOR) == put[0], "put_many merged instead of replacing"
        assert storage.get(OTHER) == put[1]
        put_many(put)
        assert list(storage) == sorted(put, key=lambda r: r.selector), (
            "putting the same registrations again is not idempotent"
        )
        put_many([])
        late = attrs.evolve(BARE, token_msgs="bmV3ZXJ0b2tlbg==")
        expected = merge(put[0], late, now=at(60))
        assert storage.upsert(late, now=at(60)) == expected
        assert storage.get(SELECTOR) == expected
        assert expected.reports == 18 and expected.first_seen == at(-100)

    def test_upsert_onto_any_stored_registration_is_the_merge(self, storage: Storage) -> None:
        """Whatever is stored (put there by ``put_many``) and whatever the report knows,
        ``upsert`` gives and stores what :func:`pushreport_core.merge` gives: a backend
        that writes the merge in its own language (SQL) writes the same rule, field by
        field (:data:`pushreport_core.MERGE_POLICY`)."""
        put_many = self._capable(
            storage, Capability.PUT_MANY, "a stored registration cannot be set up as drawn"
        ).put_many
        assert put_many is not None

        @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            stored=st.none() | prs.registrations(SELECTOR),
            report=prs.reports(SELECTOR),
            now=prs.utc_datetimes,
        )
        def upsert_is_merge(stored: Registration | None, report: Report, now: datetime) -> None:
            if stored is None:
                storage.remove(SELECTOR)
            else:
                put_many([stored])
            expected = merge(stored, report, now=now)
            assert storage.upsert(report, now=now) == expected
            assert storage.get(SELECTOR) == expected

        upsert_is_merge()

    def test_selectors_are_independent(self, storage: Storage) -> None:
        storage.upsert(FULL, now=T0)
        other = storage.upsert(attrs.evolve(BARE, selector=OTHER), now=at(1))
        assert other == merge(None, attrs.evolve(BARE, selector=OTHER), now=at(1))
        assert storage.get(SELECTOR) == merge(None, FULL, now=T0)

    # -- lookups and removal -------------------------------------------------------------

    def test_find_by_username_in_selector_order(self, storage: Storage) -> None:
        for selector in (THIRD, OTHER, SELECTOR):
            storage.upsert(attrs.evolve(FULL, selector=selector), now=T0)
        storage.upsert(attrs.evolve(FULL, selector=OTHER, username="alice "), now=at(1))
        found = storage.find(username="alice")
        assert [r.selector for r in found] == sorted([SELECTOR, THIRD])
        assert [r.selector for r in storage.find(username="alice ")] == [OTHER]
        assert storage.find(username="nobody") == []
        everything = storage.find()
        assert [r.selector for r in everything] == sorted([SELECTOR, OTHER, THIRD])

    def test_iteration_in_selector_order(self, storage: Storage) -> None:
        expected = {}
        for i, selector in enumerate((THIRD, SELECTOR, OTHER)):
            expected[selector] = storage.upsert(attrs.evolve(FULL, selector=selector), now=at(i))
        assert list(storage) == [expected[s] for s in sorted(expected)]

    def test_remove(self, storage: Storage) -> None:
        storage.upsert(FULL, now=T0)
        storage.upsert(attrs.evolve(FULL, selector=OTHER), now=T0)
        assert storage.remove(SELECTOR) is True
        assert storage.get(SELECTOR) is None
        assert storage.remove(SELECTOR) is False
        assert [r.selector for r in storage] == [OTHER]
        # A report after removal starts afresh.
        assert storage.upsert(BARE, now=at(1)) == merge(None, BARE, now=at(1))

    def test_count_is_the_number_of_registrations(self, storage: Storage) -> None:
        """``count`` (the ``pushreport_registrations`` gauge)."""
        count = self._capable(
            storage, Capability.COUNT, "the pushreport_registrations gauge leaves it out"
        ).count
        assert count is not None
        assert count() == 0
        storage.upsert(FULL, now=T0)
        storage.upsert(FULL, now=at(1))
        storage.upsert(attrs.evolve(BARE, selector=OTHER), now=at(2))
        assert count() == 2 == len(list(storage))
        storage.remove(SELECTOR)
        assert count() == 1

    # -- forgetting a token, pruning --------------------------------------------------------

    def _holders(self, storage: Storage) -> dict[str, Registration]:
        """SELECTOR holds TOKEN_MSGS as its message token, OTHER as its call token (with
        another message token), THIRD other tokens only."""
        return {
            SELECTOR: storage.upsert(FULL, now=T0),
            OTHER: storage.upsert(
                attrs.evolve(
                    FULL,
                    selector=OTHER,
                    username="bob",
                    token_calls=TOKEN_MSGS,
                    token_msgs="b3RoZXJtc2c=",
                ),
                now=at(1),
            ),
            THIRD: storage.upsert(
                attrs.evolve(
                    FULL, selector=THIRD, token_calls="dGhpcmQ=", token_msgs="dGhpcmRtc2c="
                ),
                now=at(2),
            ),
        }

    def test_forget_token_everywhere_but_keep(self, storage: Storage) -> None:
        forget = self._forget(storage)
        before = self._holders(storage)
        assert forget(TOKEN_MSGS, keep=SELECTOR) == [OTHER]
        other = storage.get(OTHER)
        assert other == without_token(before[OTHER], TOKEN_MSGS)
        assert other is not None and other.token_calls is None
        # Only the token goes: the app id, the other pair, times and count stay.
        assert (other.appid_calls, other.token_msgs, other.last_seen, other.reports) == (
            "com.cloudsoftphone.app.pushkit",
            "b3RoZXJtc2c=",
            at(1),
            1,
        )
        assert storage.get(SELECTOR) == before[SELECTOR]
        assert storage.get(THIRD) == before[THIRD]
        assert forget(TOKEN_MSGS, keep=SELECTOR) == [], "not idempotent"
        assert forget(TOKEN_MSGS) == [SELECTOR]
        assert storage.get(SELECTOR) == without_token(before[SELECTOR], TOKEN_MSGS)
        assert forget("bm90aGVyZQ==") == []
        assert storage.get(THIRD) == before[THIRD]

    def test_forget_token_everywhere_in_selector_order(self, storage: Storage) -> None:
        forget = self._forget(storage)
        before = self._holders(storage)
        storage.upsert(attrs.evolve(BARE, selector=THIRD, token_msgs=TOKEN_MSGS), now=at(3))
        assert forget(TOKEN_MSGS) == sorted([SELECTOR, OTHER, THIRD])
        for selector in before:
            stored = storage.get(selector)
            assert stored is not None and TOKEN_MSGS not in (stored.token_calls, stored.token_msgs)
        assert [r.selector for r in storage] == sorted(before), "forgetting removed one"

    def test_forget_token_in_one_registration(self, storage: Storage) -> None:
        forget = self._forget(storage)
        before = self._holders(storage)
        assert forget(TOKEN_MSGS, selector=OTHER) == [OTHER]
        assert storage.get(OTHER) == without_token(before[OTHER], TOKEN_MSGS)
        assert storage.get(SELECTOR) == before[SELECTOR]
        assert forget(TOKEN_MSGS, selector=OTHER) == []
        assert forget(TOKEN_MSGS, selector=SELECTOR, keep=SELECTOR) == []
        assert forget(TOKEN_MSGS, selector=THIRD) == []
        assert forget(TOKEN_MSGS, selector="0" * 40 + ":0") == []
        assert storage.get(SELECTOR) == before[SELECTOR]
        assert storage.get(THIRD) == before[THIRD]

    def test_forget_token_held_as_both_tokens(self, storage: Storage) -> None:
        forget = self._forget(storage)
        stored = storage.upsert(attrs.evolve(FULL, token_calls=TOKEN_MSGS), now=T0)
        assert forget(TOKEN_MSGS) == [SELECTOR]
        after = storage.get(SELECTOR)
        assert after == attrs.evolve(stored, token_calls=None, token_msgs=None)
        # A report carrying the token again stores it again.
        again = storage.upsert(Report(selector=SELECTOR, token_msgs=TOKEN_MSGS), now=at(1))
        assert again == merge(after, Report(selector=SELECTOR, token_msgs=TOKEN_MSGS), now=at(1))
        assert storage.get(SELECTOR) == again

    def test_find_token(self, storage: Storage) -> None:
        """``find_token`` (``[reporter] token_owner = "newest"`` uses it)."""
        find_token = self._capable(
            storage, Capability.FIND_TOKEN, "the receiver iterates every registration instead"
        ).find_token
        assert find_token is not None
        before = self._holders(storage)
        assert find_token(TOKEN_MSGS) == [before[s] for s in sorted([SELECTOR, OTHER])]
        assert find_token("b3RoZXJtc2c=") == [before[OTHER]]
        assert find_token("bm90aGVyZQ==") == []

    def test_prune_deletes_what_was_last_seen_before(self, storage: Storage) -> None:
        old = storage.upsert(FULL, now=at(-86400))
        edge = storage.upsert(attrs.evolve(FULL, selector=THIRD), now=at(-10))
        new = storage.upsert(attrs.evolve(BARE, selector=OTHER), now=at(-20))
        new = storage.upsert(attrs.evolve(BARE, selector=OTHER), now=at(5))  # seen again
        # Dry run: what would go, nothing deleted.
        assert storage.prune(at(-10), dry_run=True) == [old]
        assert storage.get(SELECTOR) == old
        # Strictly earlier: a registration last seen at the limit stays.
        assert storage.prune(at(-10)) == [old]
        assert storage.get(SELECTOR) is None
        assert storage.get(THIRD) == edge and storage.get(OTHER) == new
        assert storage.prune(at(-10)) == [], "not idempotent"
        # One microsecond later, in another time zone: the same instant rules.
        plus2 = timezone(timedelta(hours=2))
        assert storage.prune(
            (at(-10) + timedelta(microseconds=1)).astimezone(plus2), dry_run=True
        ) == [edge]
        assert storage.prune(at(10)) == sorted([new, edge], key=lambda r: r.selector)
        assert list(storage) == []
        # A pruned selector reporting again starts afresh.
        assert storage.upsert(FULL, now=at(20)) == merge(None, FULL, now=at(20))

    def test_prune_wants_an_aware_time(self, storage: Storage) -> None:
        storage.upsert(FULL, now=T0)
        with pytest.raises(ValueError):
            storage.prune(datetime(2030, 1, 1))
        assert storage.get(SELECTOR) == merge(None, FULL, now=T0)

    def test_prune_nothing_to_prune(self, storage: Storage) -> None:
        assert storage.prune(at(10)) == []
        assert storage.prune(at(10), dry_run=True) == []
        stored = storage.upsert(FULL, now=at(10))
        assert storage.prune(at(10)) == [] and storage.get(SELECTOR) == stored

    def test_forget_and_prune_are_visible_to_another_handle_at_once(
        self, make_storage: StorageOpener
    ) -> None:
        self._require("supports_reopen", "handles do not share a store")
        a, b = make_storage(), make_storage()
        try:
            self._holders(a)
            assert self._forget(b)(TOKEN_MSGS, keep=SELECTOR) == [OTHER]
            assert a.get(OTHER) == b.get(OTHER)
            assert a.get(OTHER).token_calls is None  # type: ignore[union-attr]
            assert [r.selector for r in a.prune(at(1))] == [SELECTOR]
            assert b.get(SELECTOR) is None
        finally:
            a.close()
            b.close()
        c = make_storage()
        try:
            assert [r.selector for r in c] == sorted([OTHER, THIRD])
            assert c.get(OTHER).token_calls is None  # type: ignore[union-attr]
        finally:
            c.close()

    # -- durability ------------------------------------------------------------------------

    def test_acknowledged_is_visible_to_another_handle_at_once(
        self, make_storage: StorageOpener
    ) -> None:
        self._require("supports_reopen", "handles do not share a store")
        a, b = make_storage(), make_storage()
        try:
            stored = a.upsert(FULL, now=T0)
            # Acknowledged means committed: nothing may wait for a later call or close().
            assert b.get(SELECTOR) == stored, "an acknowledged upsert is not committed"
            assert b.find(username="alice") == [stored]
        finally:
            a.close()
            b.close()

    def test_durable_across_reopen(self, make_storage: StorageOpener) -> None:
        self._require("supports_reopen", "handles do not share a store")
        a = make_storage()
        a.upsert(FULL, now=T0)
        stored = a.upsert(attrs.evolve(BARE, selector=OTHER), now=at(1))
        a.close()
        b = make_storage()
        try:
            assert b.get(SELECTOR) == merge(None, FULL, now=T0)
            assert b.get(OTHER) == stored
            assert b.upsert(BARE, now=at(2)).reports == 2
        finally:
            b.close()

    # -- concurrency -----------------------------------------------------------------------

    def test_concurrent_threads_on_the_same_selectors(self, storage: Storage) -> None:
        self._require("supports_threads", "a handle may not be shared between threads")
        workers, count = self.concurrency
        upserts: list[Upsert] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(workers)

        def work(worker: int) -> None:
            try:
                barrier.wait(timeout=30)
                for i in range(count):
                    report, now = concurrent_report(worker, i), concurrent_now(worker, i)
                    returned = storage.upsert(report, now=now)
                    with lock:
                        upserts.append((report, now, returned))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, f"upsert raised in a thread: {errors[0]!r}"
        assert len(upserts) == workers * count
        check_linearizable(upserts, {s: storage.get(s) for s in CONCURRENT_SELECTORS})

    def test_concurrent_processes_on_the_same_selectors(self, make_storage: StorageOpener) -> None:
        self._require("supports_processes", "processes do not share a store")
        ctx = _process_context(make_storage)
        workers, count = self.concurrency
        queue, barrier = ctx.Queue(), ctx.Barrier(workers)
        procs = [
            ctx.Process(target=_process_worker, args=(make_storage, w, count, queue, barrier))
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        results = []
        try:
            for _ in procs:
                try:
                    results.append(queue.get(timeout=120))
                except queue_module.Empty:
                    pytest.fail(
                        f"a child process gave no result within 120 s (start method "
                        f"{ctx.get_start_method()!r}); with 'fork', a lock held by another "
                        "thread at the fork can hang the child: give make_storage a "
                        "picklable factory (functools.partial) to run children fresh"
                    )
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():  # pragma: no cover
                    p.kill()
        errors = [detail for status, detail in results if status == "error"]
        assert not errors, f"upsert failed in a child process:\n{errors[0]}"
        upserts = [
            (concurrent_report(w, i), concurrent_now(w, i), Registration.from_json(data))
            for _, rows in results
            for w, i, data in rows
        ]
        assert len(upserts) == workers * count
        reader = make_storage()
        try:
            check_linearizable(upserts, {s: reader.get(s) for s in CONCURRENT_SELECTORS})
        finally:
            reader.close()

    # -- upsert_if and remove_if: the ownership decision, atomic with the write ----------

    def _conditional(self, storage: Storage, name: str) -> Any:
        capability = Capability(name)
        capabilities = self._capable(
            storage,
            capability,
            "the receiver decides who owns a selector with get() and a write, one step "
            "per process only",
        )
        return (
            capabilities.upsert_if
            if capability is Capability.UPSERT_IF
            else (capabilities.remove_if)
        )

    def test_upsert_if_writes_only_what_allowed_lets_it(self, storage: Storage) -> None:
        """``upsert_if``: ``allowed`` sees the stored registration (``None``
        when there is none); false writes nothing and returns ``None``, true is
        :meth:`upsert`."""
        upsert_if = self._conditional(storage, "upsert_if")
        seen: list[Registration | None] = []

        def owned_by(username: str) -> Any:
            def allowed(stored: Registration | None) -> bool:
                seen.append(stored)
                return may_write(stored, username)

            return allowed

        first = upsert_if(FULL, now=T0, allowed=owned_by("alice"))
        assert first == merge(None, FULL, now=T0) and seen == [None]
        mallory = attrs.evolve(FULL, username="mallory", token_msgs="bWFsbG9yeQ==")
        assert upsert_if(mallory, now=at(1), allowed=owned_by("mallory")) is None
        assert seen[-1] == first
        assert storage.get(SELECTOR) == first, "a refused upsert_if wrote"
        again = upsert_if(BARE, now=at(2), allowed=owned_by("alice"))
        assert again == merge(first, BARE, now=at(2)) == storage.get(SELECTOR)

    def test_upsert_if_sees_every_report_acknowledged_before(self, storage: Storage) -> None:
        """A report acknowledged by any write (``read_back=False`` too: SQLite's spool)
        is what ``allowed`` sees: the decision never misses an answered report."""
        upsert_if = self._conditional(storage, "upsert_if")
        quiet = Capabilities.of(storage).quiet_upsert or storage.upsert
        quiet(FULL, now=T0)
        mallory = attrs.evolve(FULL, username="mallory")
        assert upsert_if(mallory, now=at(1), allowed=partial(_may_write_as, "mallory")) is None
        stored = storage.get(SELECTOR)
        assert stored is not None and stored.username == "alice" and stored.reports == 1

    def test_remove_if_deletes_only_what_allowed_lets_it(self, storage: Storage) -> None:
        remove_if = self._conditional(storage, "remove_if")
        seen: list[Registration | None] = []

        def allowed_for(username: str) -> Any:
            def allowed(stored: Registration | None) -> bool:
                seen.append(stored)
                return may_write(stored, username)

            return allowed

        stored = storage.upsert(FULL, now=T0)
        assert remove_if(SELECTOR, allowed_for("mallory")) is None and seen == [stored]
        assert storage.get(SELECTOR) == stored, "a refused remove_if deleted"
        assert remove_if(SELECTOR, allowed_for("alice")) == stored
        assert storage.get(SELECTOR) is None
        assert remove_if(SELECTOR, allowed_for("alice")) is None and seen[-1] is None

    def test_upsert_if_racing_threads_one_owner(self, storage: Storage) -> None:
        self._require("supports_threads", "a handle may not be shared between threads")
        upsert_if = self._conditional(storage, "upsert_if")
        users, rounds = ("alice", "bob", "mallory", "eve"), 10
        barrier = threading.Barrier(len(users))
        won: dict[int, list[str]] = defaultdict(list)
        errors: list[BaseException] = []

        def work(user: str) -> None:
            try:
                for r in range(rounds):
                    barrier.wait(timeout=30)
                    report = _race_report(user, r)
                    if upsert_if(report, now=at(r), allowed=partial(_may_write_as, user)):
                        won[r].append(user)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, f"upsert_if raised in a thread: {errors[0]!r}"
        _check_one_owner(storage, won, rounds)

    def test_upsert_if_racing_processes_one_owner(self, make_storage: StorageOpener) -> None:
        """Processes (or hosts) racing ``upsert_if`` for new selectors, each as another
        user: per selector, exactly one is allowed, and the row is that user's."""
        self._require("supports_processes", "processes do not share a store")
        probe = make_storage()
        try:
            self._conditional(probe, "upsert_if")
        finally:
            probe.close()
        ctx = _process_context(make_storage)
        users, rounds = ("alice", "bob", "mallory"), 15
        queue, barrier = ctx.Queue(), ctx.Barrier(len(users))
        procs = [
            ctx.Process(target=_race_worker, args=(make_storage, u, rounds, queue, barrier))
            for u in users
        ]
        for p in procs:
            p.start()
        try:
            results = [queue.get(timeout=120) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():  # pragma: no cover
                    p.kill()
        errors = [detail for status, detail in results if status == "error"]
        assert not errors, f"upsert_if failed in a child process:\n{errors[0]}"
        won: dict[int, list[str]] = defaultdict(list)
        for _, (user, rounds_won) in results:
            for r in rounds_won:
                won[r].append(user)
        reader = make_storage()
        try:
            _check_one_owner(reader, won, rounds)
        finally:
            reader.close()

    # -- unavailability ----------------------------------------------------------------------

    def test_unavailable_raises_and_leaves_no_trace(self, storage: Storage) -> None:
        self._require("supports_unavailable", "the test cannot make it unavailable")
        before = storage.upsert(FULL, now=T0)
        newer = attrs.evolve(FULL, token_msgs="bmV3ZXJ0b2tlbg==", username="bob")
        with self.make_unavailable(storage):
            # It must raise: a return would tell the app its report is stored.
            with pytest.raises(StorageUnavailable):
                storage.upsert(newer, now=at(1))
            with pytest.raises(StorageUnavailable):
                storage.upsert(attrs.evolve(newer, selector=OTHER), now=at(1))
            with pytest.raises(StorageUnavailable):
                storage.ping()
        assert storage.get(SELECTOR) == before, "a failed upsert left a trace"
        assert storage.get(OTHER) is None, "a failed upsert left a trace"

    def test_unavailable_forget_and_prune_raise_and_change_nothing(self, storage: Storage) -> None:
        self._require("supports_unavailable", "the test cannot make it unavailable")
        forget = self._forget(storage)
        before = storage.upsert(FULL, now=T0)
        with self.make_unavailable(storage):
            with pytest.raises(StorageUnavailable):
                forget(TOKEN_MSGS)
            with pytest.raises(StorageUnavailable):
                forget(TOKEN_MSGS, selector=SELECTOR)
            with pytest.raises(StorageUnavailable):
                storage.prune(at(1))
        assert storage.get(SELECTOR) == before, "a failed forget or prune left a trace"

    def test_recovers_after_unavailable(self, storage: Storage) -> None:
        self._require("supports_unavailable", "the test cannot make it unavailable")
        before = storage.upsert(FULL, now=T0)
        with self.make_unavailable(storage):
            with pytest.raises(StorageUnavailable):
                storage.upsert(BARE, now=at(1))
        storage.ping()  # recovered: raises no more
        assert storage.upsert(BARE, now=at(2)) == merge(before, BARE, now=at(2))

    # -- everything at random, against a dict ------------------------------------------------

    def test_state_machine_against_a_dict_model(self, make_storage: StorageOpener) -> None:
        machine = StorageMachine.for_factory(make_storage, reopen=self.supports_reopen)
        run_state_machine_as_test(
            machine,
            settings=self.machine_settings
            or settings(
                deadline=None, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]
            ),
        )
