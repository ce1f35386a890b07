"""A reference storage backend in memory: :func:`pushreport_core.merge` under a lock."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime
from typing import Callable, ClassVar, Iterator, Mapping

import attrs

from pushreport_core import Registration, Report, StorageUnavailable, merge, without_token

from ..storage import Capability, SpooledBatch

__all__ = ["MemoryStorage", "MemoryStore"]


@attrs.define(eq=False)
class MemoryStore:
    """The data of :class:`MemoryStorage`; several handles may share one (a "reopen")."""

    registrations: dict[str, Registration] = attrs.field(factory=dict)
    #: How far a report spool in front of it is applied (``apply_spooled``).
    spool_marks: dict[str, int] = attrs.field(factory=dict)
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    #: While true, every handle raises ``StorageUnavailable``.
    down: bool = False

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[None]:
        """Make the store unavailable while inside."""
        self.down = True
        try:
            yield
        finally:
            self.down = False


@attrs.define(eq=False)
class MemoryStorage:
    """The simplest correct :class:`~pushreport.Storage`: the reference model the
    differential check compares real backends with. Not durable: nothing survives the
    process."""

    name: ClassVar[str] = "memory"
    #: What it can do beyond the required protocol (:mod:`pushreport.storage`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.COUNT, Capability.FIND_TOKEN, Capability.FORGET_TOKEN}
    )

    store: MemoryStore = attrs.field(factory=MemoryStore)
    _closed: bool = attrs.field(default=False, init=False)

    def _check(self) -> None:
        if self._closed:
            raise StorageUnavailable("memory storage is closed")
        if self.store.down:
            raise StorageUnavailable("memory storage is unavailable")

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        with self.store.lock:
            self._check()
            data = self.store.registrations
            registration = merge(data.get(report.selector), report, now=now)
            data[report.selector] = registration
            return registration

    def get(self, selector: str) -> Registration | None:
        with self.store.lock:
            self._check()
            return self.store.registrations.get(selector)

    def find(self, *, username: str | None = None) -> list[Registration]:
        return [r for r in self if username is None or r.username == username]

    def __iter__(self) -> Iterator[Registration]:
        with self.store.lock:
            self._check()
            data = self.store.registrations
            rows = [data[k] for k in sorted(data)]
        return iter(rows)

    def remove(self, selector: str) -> bool:
        with self.store.lock:
            self._check()
            return self.store.registrations.pop(selector, None) is not None

    def count(self) -> int:
        with self.store.lock:
            self._check()
            return len(self.store.registrations)

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        with self.store.lock:
            self._check()
            data = self.store.registrations
            selectors = sorted(data) if selector is None else [selector]
            changed = []
            for s in selectors:
                if s == keep or s not in data:
                    continue
                forgotten = without_token(data[s], token)
                if forgotten != data[s]:
                    data[s] = forgotten
                    changed.append(s)
            return changed

    def find_token(self, token: str) -> list[Registration]:
        return [r for r in self if token in (r.token_calls, r.token_msgs)]

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")
        with self.store.lock:
            self._check()
            data = self.store.registrations
            gone = [data[s] for s in sorted(data) if data[s].last_seen < before]
            if not dry_run:
                for registration in gone:
                    del data[registration.selector]
            return gone

    def ping(self) -> None:
        with self.store.lock:
            self._check()

    # -- the report spool's capability (pushreport.storage.SpoolTarget) ---------------

    def spool_marks(self) -> dict[str, int]:
        with self.store.lock:
            self._check()
            return dict(self.store.spool_marks)

    def apply_spooled(self, take: Callable[[Mapping[str, int]], SpooledBatch]) -> int:
        """The batch and its marks under the store's lock, on copies swapped in at the
        end: all or nothing."""
        with self.store.lock:
            self._check()
            batch = take(dict(self.store.spool_marks))
            data = dict(self.store.registrations)
            for report, now in batch.items:
                data[report.selector] = merge(data.get(report.selector), report, now=now)
            marks = {**self.store.spool_marks, **batch.marks}
            for name in batch.forget:
                marks.pop(name, None)
            self.store.registrations, self.store.spool_marks = data, marks
            return len(batch.items)

    def close(self) -> None:
        self._closed = True
