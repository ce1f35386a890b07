"""Deliberately broken storage backends: the conformance suite must catch each one."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import attrs

from pushreport.testing import MemoryStorage
from pushreport_core import Registration, Report, StorageUnavailable, merge


class ErasingStorage(MemoryStorage):
    """A report that does not know a value erases it (the iOS delay bug)."""

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        with self.store.lock:
            self._check()
            old = self.store.registrations.get(report.selector)
            new = merge(old, report, now=now)
            new = attrs.evolve(new, token_calls=report.token_calls, token_msgs=report.token_msgs)
            self.store.registrations[report.selector] = new
            return new


class DroppingStorage(MemoryStorage):
    """Drops merges whose report carries no token, yet answers as if it had stored."""

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        with self.store.lock:
            self._check()
            old = self.store.registrations.get(report.selector)
            new = merge(old, report, now=now)
            if old is None or report.token_msgs is not None or report.token_calls is not None:
                self.store.registrations[report.selector] = new
            return new


@attrs.define(eq=False)
class EagerAckStorage(MemoryStorage):
    """Acknowledges before committing: writes wait in the handle until close()."""

    pending: dict[str, Registration] = attrs.field(factory=dict)

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        with self.store.lock:
            self._check()
            old = self.pending.get(report.selector) or self.store.registrations.get(
                report.selector
            )
            new = merge(old, report, now=now)
            self.pending[report.selector] = new
            return new

    def get(self, selector: str) -> Registration | None:
        return self.pending.get(selector) or super().get(selector)

    def close(self) -> None:
        with self.store.lock:
            self.store.registrations.update(self.pending)
        super().close()


class SwallowingStorage(MemoryStorage):
    """When it cannot commit, it returns as if it had (and stores nothing)."""

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        if self.store.down:
            return merge(self.store.registrations.get(report.selector), report, now=now)
        return super().upsert(report, now=now)

    def ping(self) -> None:
        if self.store.down:
            raise StorageUnavailable("down")


class RacyStorage(MemoryStorage):
    """Read-modify-write without holding the lock: concurrent upserts are lost."""

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        self._check()
        old = self.store.registrations.get(report.selector)
        time.sleep(0.0002)
        new = merge(old, report, now=now)
        self.store.registrations[report.selector] = new
        return new


class InclusivePruneStorage(MemoryStorage):
    """Prunes what was last seen *at* the limit too (``<=`` for ``<``)."""

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        return super().prune(before + timedelta(microseconds=1), dry_run=dry_run)


class GreedyForgetStorage(MemoryStorage):
    """Forgets the token in the registration it was told to keep as well."""

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        return super().forget_token(token, selector=selector)


class OverclaimingStorage(MemoryStorage):
    """Declares capabilities it does not have (no put_many, no upsert_many): opening it
    is refused, and the suite says so instead of skipping."""

    capabilities = MemoryStorage.capabilities | {"put_many", "upsert_many"}


class QuietlyWrongStorage(MemoryStorage):
    """Declares quiet_upsert, and its quiet write erases what the report does not
    know."""

    capabilities = MemoryStorage.capabilities | {"quiet_upsert"}

    def upsert(  # type: ignore[override]
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        if read_back:
            return super().upsert(report, now=now)
        with self.store.lock:
            self.store.registrations[report.selector] = merge(None, report, now=now)
        return None
