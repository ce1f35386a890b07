"""``pushreport prune`` and pruning on a schedule while serving.

The app reports on every start, and nothing tells the receiver when it is uninstalled:
a registration whose last report is older than a limit is taken for gone. The rules
(the cut-off, when a run is due) are the core's; this module does the I/O.

While serving, every gunicorn worker runs a :class:`PruneSchedule` thread, and an
``flock`` on a lock file next to the storage elects the one that prunes: the file also
holds the time of the last run, so one prune happens per interval whichever worker
(or restarted worker) gets there first. Not in the gunicorn master: it forks workers at
any time, and a fork while another of its threads is inside SQLite would hand the child
SQLite's process-wide mutexes locked.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence, TextIO

import attrs

from pushreport_core import (
    Registration,
    StorageUnavailable,
    format_duration,
    format_time,
    parse_duration,
    parse_time,
    prune_cutoff,
    prune_due,
)

from ._backends import close_backends, open_backends, open_now
from ._config import Config
from ._metrics import Metrics, NullMetrics
from ._plugins import make_plugin_manager
from ._redact import shorten
from .storage import Storage

__all__ = ["run_prune", "PruneSchedule", "prune_lock_path", "prune_backends"]

log = logging.getLogger("pushreport")

#: The longest a schedule thread sleeps between looks at the lock file's last run.
MAX_POLL = 60.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _count(n: int) -> str:
    return f"{n} registration" if n == 1 else f"{n} registrations"


def prune_backends(
    storages: Sequence[tuple[str, Storage]], before: datetime, *, dry_run: bool = False
) -> list[Registration]:
    """Prune every backend, in order; what the first one pruned (or would)."""
    first: list[Registration] | None = None
    for name, storage in storages:
        gone = storage.prune(before, dry_run=dry_run)
        if first is None:
            first = gone
        elif len(gone) != len(first):
            log.info("storage backend %r pruned %s", name, _count(len(gone)))
    return first or []


def run_prune(
    config: Config,
    older_than: str,
    *,
    dry_run: bool = False,
    as_json: bool = False,
    verbose: bool = False,
    out: TextIO,
    now: datetime | None = None,
) -> int:
    """``pushreport prune``: delete (with *dry_run*: count) the registrations last seen
    more than *older_than* before *now* (default: the clock) in every configured
    backend. Prints a summary line; with *verbose*, one line per registration of the
    first backend before it (a prune of 200,000 is one line, not 200,001); with
    *as_json*, a JSON object that lists them. Creates no store: a missing one is an
    error that names it."""
    limit = parse_duration(older_than, key="--older-than")
    now = now if now is not None else _utcnow()
    before = prune_cutoff(now, limit)
    # The backends alone, opened at once (a missing or unusable store fails here, named):
    # a prune needs neither authentication nor limits.
    pm = make_plugin_manager(blocked=config.blocked_plugins)
    backends = open_backends(config, pm, create=False)
    try:
        open_now(backends)
        try:
            gone = prune_backends([(b.name, b.storage) for b in backends], before, dry_run=dry_run)
        except StorageUnavailable as e:
            print(f"pushreport: storage unavailable: {e}", file=sys.stderr)
            return 1
    finally:
        close_backends(backends)
    if as_json:
        json.dump(
            {
                "before": format_time(before),
                "dry_run": dry_run,
                "count": len(gone),
                "registrations": [r.to_json() for r in gone],
            },
            out,
            ensure_ascii=False,
            indent=2,
        )
        out.write("\n")
        return 0
    rows = [
        (
            r.selector,
            r.username or "-",
            shorten(r.token_msgs or "-", 12),
            shorten(r.token_calls or "-", 12),
            format_time(r.last_seen),
        )
        for r in (gone if verbose else ())
    ]
    if rows:
        rows.insert(0, ("SELECTOR", "USERNAME", "TOKEN_MSGS", "TOKEN_CALLS", "LAST_SEEN"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    verb = "would prune" if dry_run else "pruned"
    out.write(
        f"{verb} {_count(len(gone))} last seen before {format_time(before)} "
        f"(older than {format_duration(limit)})\n"
    )
    return 0


def prune_lock_path(config: Config, beside: Path | None) -> Path:
    """Where the schedule's lock and last run live: next to the first backend's file or
    folder (*beside*: its declared ``path``) as ``<path>.prune-lock``, else in the
    configuration's folder."""
    if beside is not None:
        return Path(f"{os.fspath(beside)}.prune-lock")
    return config.base_dir / "pushreport.prune-lock"


@attrs.define(eq=False)
class PruneSchedule:
    """Prune *storages* every *interval*, one process at a time (see the module)."""

    storages: Sequence[tuple[str, Storage]]
    older_than: timedelta
    interval: timedelta
    lock_path: Path
    clock: Callable[[], datetime] = _utcnow
    #: Told of every run (``prune_done``/``prune_failed``); reads :meth:`last_success`.
    metrics: Metrics = attrs.field(factory=NullMetrics)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    #: The last stamp read: what :meth:`last_success` answers while a run rewrites it.
    _last: datetime | None = attrs.field(init=False, default=None)

    @classmethod
    def from_config(
        cls,
        config: Config,
        storages: Sequence[tuple[str, Storage]],
        *,
        clock: Callable[[], datetime] = _utcnow,
        beside: Path | None = None,
        metrics: Metrics | None = None,
    ) -> PruneSchedule | None:
        """The schedule ``[prune]`` asks for; ``None`` when ``older_than`` is empty.
        *beside*: the first backend's declared ``path`` (:func:`prune_lock_path`);
        *metrics*: what counts its runs."""
        older_than = config.prune.older_than_delta()
        if older_than is None or not storages:
            return None
        return cls(
            storages=storages,
            older_than=older_than,
            interval=config.prune.interval_delta(),
            lock_path=prune_lock_path(config, beside),
            clock=clock,
            metrics=metrics if metrics is not None else NullMetrics(),
        )

    def run_due(self) -> int | None:
        """Prune now if a run is due and no other process is pruning. The number of
        registrations pruned (of the first backend), or ``None`` when it did not run."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another process is pruning
            now = self.clock()
            if not prune_due(_read_stamp(fd), now, self.interval):
                return None
            before = prune_cutoff(now, self.older_than)
            try:
                gone = prune_backends(self.storages, before)
                _write_stamp(fd, now)
            except Exception:
                self.metrics.prune_failed()
                raise
            self._last = now
            self.metrics.prune_done(len(gone))
            log.info(
                "pruned %s last seen before %s (older than %s)",
                _count(len(gone)),
                format_time(before),
                format_duration(self.older_than),
            )
            return len(gone)
        finally:
            os.close(fd)  # and with it the lock

    def last_success(self) -> datetime | None:
        """When a run last went through, by this process or another one (the lock
        file's stamp); ``None`` when none ever did. Takes no lock: a run that is
        rewriting the stamp just now leaves the time read before."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return self._last
        try:
            stamp = _read_stamp(fd)
        finally:
            os.close(fd)
        if stamp is not None and (self._last is None or stamp > self._last):
            self._last = stamp
        return self._last

    def start(self) -> None:
        """Run :meth:`run_due` now and then on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        poll = min(MAX_POLL, self.interval.total_seconds())
        self._stop.clear()

        def loop() -> None:
            while True:
                try:
                    self.run_due()
                except Exception as e:  # a storage failure: the next look tries again
                    log.warning("scheduled prune failed: %s", e)
                if self._stop.wait(poll):
                    return

        self._thread = threading.Thread(target=loop, name="pushreport-prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)


def _read_stamp(fd: int) -> datetime | None:
    data = os.pread(fd, 100, 0).decode("ascii", "replace").strip()
    try:
        return parse_time(data) if data else None
    except ValueError:
        return None  # unreadable: as if never run


def _write_stamp(fd: int, now: datetime) -> None:
    data = (format_time(now) + "\n").encode("ascii")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
