"""The deliverer: one background thread that POSTs the outbox's events to the webhook.

Only one process delivers at a time: the one holding an exclusive ``flock`` on
``<outbox>.deliver.lock``. The others (more gunicorn workers) try again every poll
interval, so one of them takes over within that interval when the holder exits or dies
(the kernel drops the lock of a dead process).

Each round sends the oldest event of every selector whose next attempt is due, several
selectors at once; a later event of a selector is not sent before the earlier ones were
delivered or dead-lettered, so each selector's events arrive in commit order. A 2xx
answer is a delivery (the event is deleted); anything else, a timeout or a connection
error is a failure, retried after an exponential back-off with full jitter
(``uniform(0, min(backoff_max, backoff_base * 2 ** (attempts - 1)))``), and moved to the
dead letters at ``max_attempts``. Nothing is kept in memory between rounds: after a
restart the outbox is where it was, and an event whose answer was lost with the process
is sent again under the same id (at-least-once; receivers dedupe by the id).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import attrs

from pushreport import outbound
from pushreport_core import StorageUnavailable, backoff

from ._db import OutboxDatabase
from ._outbox import Event, delivered, due_heads, event_body, failed, next_due
from ._signing import Signer, signed_headers

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: every process delivers
    fcntl = None  # type: ignore[assignment]

__all__ = ["Deliverer", "DeliverySettings", "post", "backoff_delay", "USER_AGENT"]

log = logging.getLogger("pushreport.webhook")

USER_AGENT = "pushreport-webhook/1"
#: Heads fetched per round and per delivering thread.
_ROUND_PER_THREAD = 8
_SKIPPED = "skipped"

# Lock files held by this process. A child made by fork() inherits them, and an
# inherited descriptor would keep the lock held after the parent died, with no deliverer
# in the child: the child closes its copies at once.
_HELD: set[int] = set()


def _close_inherited() -> None:  # pragma: no cover - runs in forked children
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)


def try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking ``flock`` on *path*: the descriptor, or ``None``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    if fcntl is None:  # pragma: no cover
        _HELD.add(fd)
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    _HELD.add(fd)
    return fd


def unlock(fd: int) -> None:
    _HELD.discard(fd)
    os.close(fd)  # closing the last descriptor releases the flock


def backoff_delay(attempts: int, *, base: float, maximum: float, rng: random.Random) -> float:
    """Seconds before the next attempt after *attempts* failures: "full jitter", a
    uniform draw below the capped exponential ``base * 2 ** (attempts - 1)``, so that
    many events failing together do not come back together."""
    return backoff(attempts, base=base, cap=maximum, rng=rng, jitter=1.0)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> str | None:
    """POST *body*; ``None`` for a 2xx answer, else the short reason of the failure
    (a redirect is one: not followed). Through :func:`pushreport.outbound.post`, the
    service's one way out: *timeout* bounds the whole exchange."""
    try:
        answer = outbound.post(
            url, body, headers={**headers, "User-Agent": USER_AGENT}, timeout=timeout
        )
    except outbound.OutboundError as e:
        return e.reason
    return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"


@attrs.frozen(kw_only=True)
class DeliverySettings:
    """Where and how a :class:`Deliverer` sends (the ``[storage.webhook]`` options)."""

    url: str
    #: Signs every attempt (``signature``, keyed with ``secret``).
    signer: Signer = attrs.field(repr=False)
    timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    poll_interval: float
    concurrency: int


class Deliverer:
    """The background thread of one webhook backend handle: it sends the events of
    *db*, the outbox file, as *settings* say."""

    def __init__(
        self,
        db: OutboxDatabase,
        settings: DeliverySettings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings
        self.url = settings.url
        self.signer = settings.signer
        self.rng = rng or random.Random()
        self.clock = clock
        self.lock_path = Path(f"{db.path}.deliver.lock")
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.holds_lock = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pushreport-webhook", daemon=True)
        self._pool: ThreadPoolExecutor | None = None
        #: Deliveries, failures and dead letters by this deliverer (tests, logs).
        self.delivered = 0
        self.failures = 0
        self.dead = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop and wait (at most *timeout* seconds) for the sends in flight: the lock is
        released only after them, so no other process sends a selector's next event
        while this one may still be sending the previous."""
        self.stopping.set()
        self.wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        lock: int | None = None
        try:
            # The first look is one poll interval after the start: a process that
            # opens and closes the backend at once (gunicorn's master checking the
            # configuration, `pushreport list`) never delivers.
            poll = self.settings.poll_interval
            if self.stopping.wait(poll):
                return
            while not self.stopping.is_set():
                if lock is None:
                    lock = self._lock()
                    if lock is None:
                        self.stopping.wait(poll)
                        continue
                self.wake.clear()
                try:
                    delay = self._round()
                except StorageUnavailable as e:
                    log.warning("webhook outbox unavailable: %s", e)
                    delay = poll
                except Exception:  # a bug, or a row it cannot read: say so, go on
                    log.exception("webhook delivery round failed")
                    delay = poll
                if delay > 0:
                    self.wake.wait(delay)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if lock is not None:
                self.holds_lock.clear()
                unlock(lock)
            self.db.release_thread_connection()

    def _lock(self) -> int | None:
        try:
            fd = try_lock(self.lock_path)
        except OSError as e:
            log.warning(
                "webhook deliverer cannot open its lock file: %s", e.strerror or type(e).__name__
            )
            return None
        if fd is not None:
            self.holds_lock.set()
            log.info(
                "webhook deliverer of process %d delivers to %s",
                os.getpid(),
                outbound.where(self.url),
            )
        return fd

    def _round(self) -> float:
        """Send the due heads; the seconds to wait before the next round."""
        settings = self.settings
        now = self.clock()
        heads = self.db.read(
            lambda conn: due_heads(conn, now=now, limit=settings.concurrency * _ROUND_PER_THREAD)
        )
        if not heads:
            due = self.db.read(next_due)
            if due is None:
                return settings.poll_interval
            return max(0.0, min(settings.poll_interval, due - now))
        if settings.concurrency == 1 or len(heads) == 1:
            for event in heads:
                self._record(event, self._send(event))
            return 0.0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=settings.concurrency, thread_name_prefix="pushreport-webhook-send"
            )
        futures: dict[Future[str | None], Event] = {
            self._pool.submit(self._send, event): event for event in heads
        }
        for future in as_completed(futures):
            self._record(futures[future], future.result())
        return 0.0

    def _send(self, event: Event) -> str | None:
        if self.stopping.is_set():
            return _SKIPPED
        body = event_body(event)
        headers = signed_headers(
            self.signer,
            # at sending time: a retry is signed anew, with the same id
            timestamp=int(self.clock()),
            body=body,
            event=event.event,
            event_id=event.id,
        )
        try:
            return post(self.url, body, headers, timeout=self.settings.timeout)
        except Exception as e:  # a failure of this attempt, not of the deliverer
            return outbound.describe(e)

    def _record(self, event: Event, error: str | None) -> None:
        settings = self.settings
        if error == _SKIPPED:
            return
        if error is None:
            self.db.transaction(lambda conn: delivered(conn, event.id))
            self.delivered += 1
            return
        attempts = event.attempts + 1
        delay = backoff_delay(
            attempts, base=settings.backoff_base, maximum=settings.backoff_max, rng=self.rng
        )
        now = self.clock()
        dead = self.db.transaction(
            lambda conn: failed(
                conn, event.id, error, now=now, max_attempts=settings.max_attempts, delay=delay
            )
        )
        self.failures += 1
        if dead:
            self.dead += 1
            log.warning(
                "webhook event %d (%s) failed %d times, last: %s; moved to the "
                "dead letters (pushreport outbox --replay-dead)",
                event.id,
                event.event,
                attempts,
                error,
            )
        else:
            log.info(
                "webhook event %d failed (attempt %d of %d): %s; next in %.3g s",
                event.id,
                attempts,
                settings.max_attempts,
                error,
                delay,
            )
