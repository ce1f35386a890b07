"""The limit-state conformance suite: one base class every :class:`LimitState` runs."""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable, ClassVar, ContextManager, Iterator

import pytest

from pushreport_core import StorageUnavailable

from ..limitstate import LimitState
from ._suite import _process_context

__all__ = ["LimitStateConformance", "LimitStateOpener"]

#: A zero-argument factory: each call opens a new handle on the same store.
LimitStateOpener = Callable[[], LimitState]

T0 = 1_750_000_000.0  # seconds since the epoch: the tests' "now"


def _take_many(
    opener: LimitStateOpener, key: str, n: int, barrier: Any, out: Any, now: float
) -> None:
    """A child process: *n* takes of *key* on its own handle; how many were allowed."""
    try:
        state = opener()
        try:
            barrier.wait(timeout=60)
            allowed = sum(state.take(key, count=50, period=3600, now=now) == 0.0 for _ in range(n))
        finally:
            state.close()
        out.put(allowed)
    except BaseException:
        out.put(traceback.format_exc())


class LimitStateConformance:
    """What every limit state must do, as tests. Subclass it in a ``Test*`` class with a
    ``make_state`` fixture returning a zero-argument factory; each call opens a new
    handle on the same, initially empty, store::

        class TestMyState(LimitStateConformance):
            @pytest.fixture
            def make_state(self, tmp_path):
                return functools.partial(MyState, tmp_path / "limits")

    Handles opened by the suite are closed by it.
    """

    __test__ = False

    #: Handles in several processes (``fork``) share the store.
    supports_processes: ClassVar[bool] = True
    #: The test can make the store fail (:meth:`make_unavailable`).
    supports_unavailable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @pytest.fixture
    def make_state(self) -> LimitStateOpener:
        """Override: a zero-argument factory opening a handle on a fresh store."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a make_state fixture returning a "
            "zero-argument factory of limit-state handles"
        )

    def make_unavailable(self, state: LimitState) -> ContextManager[None]:
        """Override with ``supports_unavailable = True``: a context inside which every
        write of *state* fails (another process holding the store's write lock, say)."""
        raise NotImplementedError

    @pytest.fixture
    def opened(self, make_state: LimitStateOpener) -> Iterator[list[LimitState]]:
        handles: list[LimitState] = []
        yield handles
        for handle in handles:
            handle.close()

    @pytest.fixture
    def state(self, make_state: LimitStateOpener, opened: list[LimitState]) -> LimitState:
        handle = make_state()
        opened.append(handle)
        return handle

    # -- token buckets ---------------------------------------------------------------------

    def test_a_burst_of_count_then_the_wait_for_the_next_token(self, state: LimitState) -> None:
        allowed = [state.take("k", count=3, period=60, now=T0) for _ in range(3)]
        assert allowed == [0.0, 0.0, 0.0]
        assert state.take("k", count=3, period=60, now=T0) == pytest.approx(20.0)
        assert state.take("k", count=3, period=60, now=T0 + 5) == pytest.approx(15.0)

    def test_the_bucket_refills_at_count_per_period(self, state: LimitState) -> None:
        for _ in range(3):
            state.take("k", count=3, period=60, now=T0)
        assert state.take("k", count=3, period=60, now=T0 + 20) == 0.0
        assert state.take("k", count=3, period=60, now=T0 + 20) > 0
        # Idle for a day: full again, and never more than full.
        allowed = [state.take("k", count=3, period=60, now=T0 + 86400) for _ in range(4)]
        assert allowed[:3] == [0.0, 0.0, 0.0] and allowed[3] > 0

    def test_keys_have_their_own_buckets(self, state: LimitState) -> None:
        assert state.take("a", count=1, period=60, now=T0) == 0.0
        assert state.take("a", count=1, period=60, now=T0) > 0
        assert state.take("b", count=1, period=60, now=T0) == 0.0

    def test_a_clock_behind_gains_no_tokens(self, state: LimitState) -> None:
        assert state.take("k", count=1, period=60, now=T0) == 0.0
        # Another host whose clock is 30 s behind: the bucket is not refilled by that.
        assert state.take("k", count=1, period=60, now=T0 - 30) > 0
        assert state.take("k", count=1, period=60, now=T0 + 1) > 0

    # -- failures and the lock-out ---------------------------------------------------------

    def test_the_limit_th_failure_locks_out_for_the_window(self, state: LimitState) -> None:
        assert state.locked("k", limit=3, now=T0) == 0.0
        assert state.fail("k", limit=3, window=120, now=T0) == 0.0
        assert state.fail("k", limit=3, window=120, now=T0 + 10) == 0.0
        assert state.locked("k", limit=3, now=T0 + 10) == 0.0
        assert state.fail("k", limit=3, window=120, now=T0 + 50) == pytest.approx(120.0)
        assert state.locked("k", limit=3, now=T0 + 110) == pytest.approx(60.0)
        assert state.locked("k", limit=3, now=T0 + 170) == 0.0
        assert state.locked("other", limit=3, now=T0 + 60) == 0.0

    def test_failures_outside_the_window_start_over(self, state: LimitState) -> None:
        for i in range(6):  # the window starts at the first failure: two in each
            assert state.fail("k", limit=3, window=60, now=T0 + 35 * i) == 0.0

    def test_clear_forgets_the_failures(self, state: LimitState) -> None:
        for _ in range(2):
            state.fail("k", limit=3, window=60, now=T0)
        state.clear("k")
        state.clear("never failed")
        assert state.fail("k", limit=3, window=60, now=T0) == 0.0
        assert state.fail("k", limit=3, window=60, now=T0) == 0.0

    # -- claims ----------------------------------------------------------------------------

    def test_a_claim_is_won_once_until_it_expires(self, state: LimitState) -> None:
        assert state.claim("n:1", expires=T0 + 300, now=T0) is True
        assert state.claim("n:1", expires=T0 + 300, now=T0 + 1) is False
        assert state.claim("n:2", expires=T0 + 300, now=T0 + 1) is True
        assert state.claim("n:1", expires=T0 + 600, now=T0 + 299) is False
        assert state.claim("n:1", expires=T0 + 600, now=T0 + 300) is True

    def test_the_three_kinds_never_collide(self, state: LimitState) -> None:
        assert state.claim("k", expires=T0 + 60, now=T0) is True
        assert state.take("k", count=1, period=60, now=T0) == 0.0
        assert state.fail("k", limit=1, window=60, now=T0) == pytest.approx(60.0)
        assert state.claim("k", expires=T0 + 60, now=T0) is False

    # -- bounded ---------------------------------------------------------------------------

    def test_purge_deletes_the_expired_and_bounds_the_rest(self, state: LimitState) -> None:
        for i in range(30):
            state.take(f"client{i}", count=1, period=60 + i, now=T0)
            state.fail(f"user{i}", limit=5, window=60 + i, now=T0)
            state.claim(f"nonce{i}", expires=T0 + 60 + i, now=T0)
        assert state.count() == 90
        assert state.purge(now=T0 + 10, keep=10) == 50
        # Claims are never dropped early (that would allow a replay); of the rest, the
        # ones that expire last stay.
        assert state.count() == 40
        assert state.claim("nonce0", expires=T0 + 99, now=T0 + 10) is False
        assert state.take("client29", count=1, period=89, now=T0 + 10) > 0
        assert state.take("client0", count=1, period=60, now=T0 + 10) == 0.0  # forgotten
        assert state.purge(now=T0 + 100, keep=10) == 41
        assert state.count() == 0

    # -- shared ----------------------------------------------------------------------------

    def test_another_handle_sees_the_same_counts(
        self, make_state: LimitStateOpener, opened: list[LimitState]
    ) -> None:
        one = make_state()
        opened.append(one)
        assert one.take("k", count=1, period=60, now=T0) == 0.0
        assert one.claim("n", expires=T0 + 60, now=T0) is True
        one.fail("u", limit=1, window=60, now=T0)
        one.close()
        opened.remove(one)
        two = make_state()  # after the first closed: a restart
        opened.append(two)
        assert two.take("k", count=1, period=60, now=T0) > 0
        assert two.claim("n", expires=T0 + 60, now=T0) is False
        assert two.locked("u", limit=1, now=T0) == pytest.approx(60.0)

    def test_threads_taking_at_once_get_exactly_the_count(self, state: LimitState) -> None:
        allowed: list[bool] = []
        claimed: list[bool] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work() -> None:
            try:
                barrier.wait(timeout=30)
                for _ in range(20):
                    allowed.append(state.take("k", count=50, period=3600, now=T0) == 0.0)
                    claimed.append(state.claim("n", expires=T0 + 60, now=T0))
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[0]
        assert sum(allowed) == 50 and len(allowed) == 160
        assert sum(claimed) == 1

    def test_processes_taking_at_once_get_exactly_the_count(
        self, make_state: LimitStateOpener
    ) -> None:
        if not self.supports_processes:
            pytest.skip(f"{type(self).__name__}: supports_processes is False")
        # spawn when the factory pickles: a fork of this process could inherit a lock
        # another thread holds (SQLite's, logging's) and hang.
        ctx = _process_context(make_state)
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_take_many, args=(make_state, "k", 30, barrier, out, T0))
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        try:
            results = [out.get(timeout=120) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        errors = [r for r in results if not isinstance(r, int)]
        assert not errors, errors[0]
        assert sum(results) == 50  # of 120 takes in 4 processes

    def test_a_failing_store_raises_storage_unavailable(self, state: LimitState) -> None:
        if not self.supports_unavailable:
            pytest.skip(f"{type(self).__name__}: supports_unavailable is False")
        with self.make_unavailable(state):
            for call in (
                lambda: state.take("k", count=1, period=60, now=T0),
                lambda: state.fail("k", limit=1, window=60, now=T0),
                lambda: state.claim("k", expires=T0 + 60, now=T0),
            ):
                with pytest.raises(StorageUnavailable):
                    call()
        assert state.take("k", count=1, period=60, now=T0) == 0.0  # and it recovers
