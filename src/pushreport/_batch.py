"""Group commit: concurrent reports share one transaction, and one fsync.

With ``synchronous = "full"`` every commit waits for the disk (about a millisecond
here), so one commit per report caps a worker at about a thousand reports a second
however fast the rest is. When several requests of one process wait for storage at
once (threaded workers), :class:`GroupCommit` lets the first of them commit everything
that is queued in one transaction while the others wait; each request is still
answered only after the commit that holds its report.

No background thread: a thread that finds nobody writing writes its own report at
once; the reports that arrive meanwhile queue up, and when the write is done the first
of them is handed the lead and commits the whole queue in one transaction. Each
leader commits one batch and passes the lead on, so no request waits behind an endless
stream of others' batches.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol, Sequence

from pushreport_core import Registration, Report

__all__ = ["GroupCommit", "BatchStorage"]


class BatchStorage(Protocol):
    def upsert(self, report: Report, *, now: datetime) -> Registration: ...

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every item in one transaction; all or nothing."""
        ...


class _Item:
    __slots__ = ("report", "now", "event", "result", "error", "lead")

    def __init__(self, report: Report, now: datetime) -> None:
        self.report = report
        self.now = now
        self.event = threading.Event()
        self.result: Registration | None = None
        self.error: BaseException | None = None
        self.lead = False


class GroupCommit:
    """Serialise the upserts of one process into batched transactions."""

    def __init__(
        self, storage: BatchStorage, *, max_batch: int = 128, quiet_alone: bool = False
    ) -> None:
        self.storage = storage
        self.max_batch = max_batch
        #: The storage's ``upsert_quiet``, if it has one.
        self._quiet = getattr(storage, "upsert_quiet", None)
        #: Its quiet write is a cheap step of its own, never batched (a report spool's
        #: append: :class:`pushreport.spool.SpooledStorage`).
        self.quiet_alone = quiet_alone
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._leading = False
        #: Writes done and reports in them, for the curious (tests, benchmarks).
        self.batches = 0
        self.reports = 0

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        with self._lock:
            item: _Item | None = None
            if self._leading:
                item = _Item(report, now)
                self._queue.append(item)
            else:
                self._leading = True
        if item is None:
            # Nobody else is writing: the backend's plain one-statement write, with no
            # more cost than a lock (a sync worker always takes this path).
            try:
                result = self.storage.upsert(report, now=now)
            finally:
                self._release()
            self.batches += 1
            self.reports += 1
            return result
        item.event.wait()
        if item.lead:
            # Handed the lead: our report is first in the queue, commit it with the rest.
            with self._lock:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            try:
                self._commit(batch)
            finally:
                self._release()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def upsert_quiet(self, report: Report, *, now: datetime) -> None:
        """:meth:`upsert` for a caller that needs no :class:`Registration` back: the
        backend's ``upsert_quiet`` when it has one and nobody else is writing (a batch
        reads its rows back anyway)."""
        quiet = self._quiet
        if quiet is None:
            self.upsert(report, now=now)
            return
        if self.quiet_alone:
            # Each report is one append of its own (a report spool): nothing to batch.
            quiet(report, now=now)
            self.batches += 1
            self.reports += 1
            return
        with self._lock:
            alone = not self._leading
            if alone:
                self._leading = True
        if not alone:
            self.upsert(report, now=now)
            return
        try:
            quiet(report, now=now)
        finally:
            self._release()
        self.batches += 1
        self.reports += 1

    def _release(self) -> None:
        """Our write is done: hand the lead to the first waiting report, if any."""
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.event.set()
            else:
                self._leading = False

    def _commit(self, batch: list[_Item]) -> None:
        try:
            results = self.storage.upsert_many([(i.report, i.now) for i in batch])
        except BaseException as e:  # every waiter gets the failure
            for item in batch:
                item.error = e
                item.event.set()
            return
        self.batches += 1
        self.reports += len(batch)
        for item, result in zip(batch, results):
            item.result = result
            item.event.set()
