"""The spool-target conformance suite: what a backend that offers the report spool's
capability (:class:`pushreport.storage.SpoolTarget`) must do, as tests."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Iterator, Mapping, cast

import pytest

from pushreport_core import Report, StorageUnavailable, merge

from ..spool import Spoolable, SpooledStorage
from ..storage import SpooledBatch, SpoolTarget, Storage
from ._model import StorageOpener

__all__ = ["SpoolTargetConformance"]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "0123456789abcdef0123456789abcdef01234567:c0f"


def _report(i: int, **fields: Any) -> Report:
    values: dict[str, Any] = {
        "selector": SELECTOR,
        "username": "alice",
        "token_msgs": f"bXNnVG9rZW4{i:06d}",
        "appid_msgs": "com.cloudsoftphone.app",
    }
    values.update(fields)
    return Report(**values)


def _at(i: int) -> datetime:
    return T0 + timedelta(milliseconds=i)


class _Failed(Exception):
    """Raised by a test's ``take``: it must come out of ``apply_spooled`` unchanged."""


class SpoolTargetConformance:
    """What a backend must do to be wrapped by
    :class:`~pushreport.spool.SpooledStorage`. Subclass it in a ``Test*`` class with a
    ``make_storage`` fixture returning a zero-argument factory, as for
    :class:`~pushreport.testing.StorageConformance` (each call opens a new handle on the
    same, initially empty, store)::

        class TestMySpoolTarget(SpoolTargetConformance):
            @pytest.fixture
            def make_storage(self, tmp_path):
                return functools.partial(MyStorage, tmp_path / "db")

    With ``supports_unavailable = True``, implement :meth:`make_unavailable` as for
    the storage suite. Handles opened by the suite are closed by it.
    """

    __test__ = False

    #: Several handles (each with its own connection) may apply at once from threads.
    supports_threads: ClassVar[bool] = True
    #: The test can make the backend unavailable (:meth:`make_unavailable`).
    supports_unavailable: ClassVar[bool] = False
    #: Handles and batches of the exactly-once test.
    appliers: ClassVar[tuple[int, int]] = (3, 40)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @pytest.fixture
    def make_storage(self) -> StorageOpener:
        """Override: a zero-argument factory opening a handle on a fresh store."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a make_storage fixture returning a "
            "zero-argument factory of storage handles"
        )

    def make_unavailable(self, storage: Storage) -> ContextManager[None]:
        """Override with ``supports_unavailable = True``: a context manager inside which
        *storage* cannot commit."""
        raise NotImplementedError(
            f"{type(self).__name__} sets supports_unavailable but "
            "does not implement make_unavailable"
        )

    @pytest.fixture
    def opened(self, make_storage: StorageOpener) -> Iterator[list[Any]]:
        handles: list[Any] = []
        try:
            yield handles
        finally:
            for handle in handles:
                handle.close()

    @pytest.fixture
    def storage(self, make_storage: StorageOpener, opened: list[Any]) -> Any:
        opened.append(make_storage())
        return opened[-1]

    def _require(self, flag: str, why: str) -> None:
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__} declares {flag} = False: {why}")

    # -- the capability ------------------------------------------------------------------

    def test_is_a_spool_target_and_can_be_spooled(self, storage: Any, tmp_path: Path) -> None:
        assert isinstance(storage, SpoolTarget), (
            f"{type(storage).__name__} lacks spool_marks() or apply_spooled()"
        )
        SpooledStorage(cast(Spoolable, storage), folder=tmp_path / "spool")  # opens nothing

    def test_marks_start_empty(self, storage: Any) -> None:
        assert storage.spool_marks() == {}

    def test_a_batch_and_its_marks_are_committed_together(self, storage: Any) -> None:
        seen: list[dict[str, int]] = []
        items = [(_report(1), _at(1)), (_report(2, username=None), _at(2))]

        def take(marks: Mapping[str, int]) -> SpooledBatch:
            seen.append(dict(marks))
            return SpooledBatch(items=items, marks={"1-a.jsonl": 230})

        assert storage.apply_spooled(take) == 2
        assert seen[-1] == {}
        assert storage.spool_marks() == {"1-a.jsonl": 230}
        (first, at1), (second, at2) = items
        expected = merge(merge(None, first, now=at1), second, now=at2)
        assert storage.get(SELECTOR) == expected

    def test_take_sees_the_committed_marks_and_forget_deletes_them(self, storage: Any) -> None:
        storage.apply_spooled(lambda marks: SpooledBatch(marks={"1-a.jsonl": 10, "2-b.jsonl": 7}))
        seen: list[dict[str, int]] = []

        def take(marks: Mapping[str, int]) -> SpooledBatch:
            seen.append(dict(marks))
            return SpooledBatch(marks={"2-b.jsonl": 20, "3-c.jsonl": 1}, forget=["1-a.jsonl"])

        assert storage.apply_spooled(take) == 0
        assert seen[-1] == {"1-a.jsonl": 10, "2-b.jsonl": 7}
        assert storage.spool_marks() == {"2-b.jsonl": 20, "3-c.jsonl": 1}

    def test_items_are_merged_in_the_order_given(self, storage: Any) -> None:
        # Out of time order on purpose: the spool orders them, the backend keeps it.
        items = [(_report(i), _at(10 - i)) for i in range(1, 6)]
        storage.apply_spooled(lambda marks: SpooledBatch(items=items))
        expected = None
        for report, now in items:
            expected = merge(expected, report, now=now)
        assert storage.get(SELECTOR) == expected
        assert expected is not None and expected.token_msgs == _report(5).token_msgs

    def test_an_error_in_take_propagates_and_keeps_nothing(self, storage: Any) -> None:
        storage.apply_spooled(
            lambda marks: SpooledBatch(items=[(_report(1), _at(1))], marks={"1-a.jsonl": 5})
        )
        before = storage.get(SELECTOR)
        error = _Failed("a spool file cannot be read")

        def take(marks: Mapping[str, int]) -> SpooledBatch:
            raise error

        with pytest.raises(_Failed) as raised:
            storage.apply_spooled(take)
        assert raised.value is error
        assert storage.spool_marks() == {"1-a.jsonl": 5}
        assert storage.get(SELECTOR) == before
        # The lock is let go: the next batch goes through.
        assert storage.apply_spooled(lambda marks: SpooledBatch(marks={"1-a.jsonl": 9})) == 0
        assert storage.spool_marks() == {"1-a.jsonl": 9}

    def test_another_handle_sees_the_batch_at_once(
        self, make_storage: StorageOpener, opened: list[Any]
    ) -> None:
        opened.extend([make_storage(), make_storage()])
        a, b = opened
        a.apply_spooled(
            lambda marks: SpooledBatch(items=[(_report(1), _at(1))], marks={"1-a.jsonl": 5})
        )
        assert b.spool_marks() == {"1-a.jsonl": 5}
        assert b.get(SELECTOR) == merge(None, _report(1), now=_at(1))

    def test_unavailable_raises_and_keeps_nothing_of_the_batch(self, storage: Any) -> None:
        self._require("supports_unavailable", "the test cannot make it unavailable")
        storage.apply_spooled(lambda marks: SpooledBatch(marks={"1-a.jsonl": 5}))
        with self.make_unavailable(storage):
            with pytest.raises(StorageUnavailable):
                storage.apply_spooled(
                    lambda marks: SpooledBatch(
                        items=[(_report(1), _at(1))], marks={"1-a.jsonl": 99}
                    )
                )
            # Even an empty batch takes the write lock: a spool probes the store so.
            with pytest.raises(StorageUnavailable):
                storage.apply_spooled(lambda marks: SpooledBatch())
        assert storage.spool_marks() == {"1-a.jsonl": 5}
        assert storage.get(SELECTOR) is None

    def test_concurrent_appliers_apply_each_item_exactly_once(
        self, make_storage: StorageOpener, opened: list[Any]
    ) -> None:
        """Handles racing to apply one file: each takes from the marks it is given, so
        only exclusion between ``apply_spooled`` calls keeps every item applied once."""
        self._require("supports_threads", "handles may not apply from threads at once")
        handles, rounds = self.appliers
        opened.extend(make_storage() for _ in range(handles))
        total = handles * rounds
        reports = [(_report(i), _at(i)) for i in range(total)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(handles)

        def take(marks: Mapping[str, int]) -> SpooledBatch:
            start = marks.get("1-a.jsonl", 0)
            end = min(start + 1, total)
            return SpooledBatch(items=reports[start:end], marks={"1-a.jsonl": end})

        def apply(handle: Any) -> None:
            try:
                barrier.wait(timeout=60)
                for _ in range(rounds):
                    while True:
                        try:
                            handle.apply_spooled(take)
                            break
                        except StorageUnavailable:  # a lock not had in time: again
                            continue
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=apply, args=(h,)) for h in opened]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stored = opened[0].get(SELECTOR)
        assert opened[0].spool_marks() == {"1-a.jsonl": total}
        assert stored is not None and stored.reports == total, (
            f"{total} items applied as {stored and stored.reports}: one applied twice "
            "or lost (apply_spooled calls are not exclusive)"
        )
        assert stored.token_msgs == reports[-1][0].token_msgs

    # -- with the spool in front -----------------------------------------------------------

    def test_a_spool_in_front_stores_every_report_answered_once(
        self, make_storage: StorageOpener, opened: list[Any], tmp_path: Path
    ) -> None:
        """Two spooled handles (two processes' worth) append and apply at once; a third
        reads everything answered, each report once, in the order received."""
        folder = tmp_path / "spool"
        a, b, reader = (
            SpooledStorage(cast(Spoolable, make_storage()), folder=folder, interval=10)
            for _ in range(3)
        )
        opened.extend([a, b, reader])
        stop = threading.Event()
        errors: list[BaseException] = []

        def apply() -> None:
            while not stop.is_set():
                try:
                    b.apply_spool()
                except StorageUnavailable:
                    continue
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)
                    return

        applier = threading.Thread(target=apply)
        applier.start()
        try:
            for i in range(100):
                (a if i % 2 else b).upsert(_report(i), now=_at(i), read_back=False)
        finally:
            stop.set()
            applier.join()
        assert errors == []
        stored = reader.get(SELECTOR)
        assert stored is not None and stored.reports == 100
        assert stored.token_msgs == _report(99).token_msgs
        assert (stored.first_seen, stored.last_seen) == (_at(0), _at(99))
