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
from typing import Protocol

import attrs

from pushreport_core import Registration, Report

from .storage import Capabilities, QuietUpsert, Storage

__all__ = ["GroupCommit", "DirectWriter", "Writer", "writer_for"]


class Writer(Protocol):
    """What the receiver writes reports through (:attr:`Backend.writer`)."""

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        """The backend's upsert; with ``read_back=False`` it may return ``None``
        (:attr:`~pushreport.storage.Capability.QUIET_UPSERT`)."""
        ...


def writer_for(storage: Storage, capabilities: Capabilities) -> Writer:
    """A :class:`GroupCommit` over *storage* when it declares ``upsert_many``, else
    its own writes (:class:`DirectWriter`)."""
    if capabilities.upsert_many is not None:
        return GroupCommit(storage, capabilities)
    return DirectWriter(storage, capabilities)


@attrs.frozen
class DirectWriter:
    """The writes of a backend that cannot batch: each one its own."""

    storage: Storage
    capabilities: Capabilities

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        quiet = self.capabilities.quiet_upsert
        if read_back or quiet is None:
            return self.storage.upsert(report, now=now)
        quiet(report, now=now)
        return None


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
    """Serialise the upserts of one process into batched transactions, for a backend
    that declares ``upsert_many`` (*capabilities*: what it declared; default: read
    from *storage*)."""

    def __init__(
        self,
        storage: Storage,
        capabilities: Capabilities | None = None,
        *,
        max_batch: int = 128,
    ) -> None:
        if capabilities is None:
            capabilities = Capabilities.of(storage)
        upsert_many = capabilities.upsert_many
        if upsert_many is None:
            raise TypeError(f"storage backend {storage.name!r} does not declare upsert_many")
        self.storage = storage
        self._upsert_many = upsert_many
        self._quiet = capabilities.quiet_upsert
        self._spools = capabilities.spools
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._leading = False
        #: Writes done and reports in them, for the curious (tests, benchmarks).
        self.batches = 0
        self.reports = 0

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        """Upsert *report*, in a batch with the reports that wait meanwhile. With
        ``read_back=False``, the backend's quiet upsert when it declares one and nobody
        else is writing (a batch reads its rows back anyway), and ``None``."""
        if not read_back and self._quiet is not None:
            self._upsert_quiet(self._quiet, report, now)
            return None
        return self._upsert(report, now)

    def _upsert(self, report: Report, now: datetime) -> Registration:
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

    def _upsert_quiet(self, quiet: QuietUpsert, report: Report, now: datetime) -> None:
        if self._spools:
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
            self._upsert(report, now)
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
            results = self._upsert_many([(i.report, i.now) for i in batch])
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
