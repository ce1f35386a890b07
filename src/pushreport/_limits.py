"""Abuse limits: rate limits, the failed-authentication lock-out, and length limits.

Everything lives in the memory of one process, bounded: with ``serve --workers N``
each worker keeps its own counts, so a client may get up to N times a rate (the
gunicorn arbiter spreads connections over the workers) and a username N times its
failures before every worker has locked it out. Put the limits in a proxy in front for
exact global numbers; these are the floor that needs no infrastructure.

Memory is bounded by ``max_tracked`` per table: a table is a least-recently-used map,
an attacker rotating client addresses evicts the oldest entries (whose limits start
again from a full bucket) instead of growing it.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Generic, Mapping, TypeVar

import attrs

from pushreport_core import ConfigurationError, Report, Request, RequestTooLarge, TooManyRequests

if TYPE_CHECKING:
    from ._config import LimitsConfig

__all__ = ["Rate", "TokenBuckets", "Lockout", "Limiter", "client_address"]

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]*\.?[0-9]*)\s*([a-z]+?)s?\s*", re.I)

T = TypeVar("T")


@attrs.frozen
class Rate:
    """``count`` requests per ``period`` seconds, as a token bucket: a burst of up to
    ``count``, refilled at ``count / period`` per second."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str, *, key: str) -> Rate | None:
        """``"60/minute"``, ``"10/second"``, ``"1000/hour"``, ``"5/10s"``; empty: no
        limit (``None``)."""
        if not text.strip():
            return None
        m = _RATE.fullmatch(text)
        unit = _UNITS.get(m.group(3).lower()) if m else None
        if m is None or unit is None:
            raise ConfigurationError(
                f'must be a rate such as "60/minute" (units: second, minute, hour, day), '
                f"not {text!r}",
                key=key,
            )
        count = int(m.group(1))
        period = float(m.group(2)) * unit if m.group(2) else unit
        if count < 1 or period <= 0:
            raise ConfigurationError(f"must allow at least one request, not {text!r}", key=key)
        return cls(count, period)


class _Table(Generic[T]):
    """A least-recently-used map of at most *size* entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: str, value: T) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    def pop(self, key: str) -> None:
        self.data.pop(key, None)

    def __len__(self) -> int:
        return len(self.data)


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class TokenBuckets:
    """One token bucket per key (a client address, a username)."""

    def __init__(self, rate: Rate, *, max_keys: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.clock = clock
        self._per_second = rate.count / rate.period
        self._table: _Table[list[float]] = _Table(max_keys)  # key -> [tokens, updated]
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for *key*: ``0.0`` when allowed, else the seconds until the
        next token."""
        now = self.clock()
        cap = float(self.rate.count)
        with self._lock:
            bucket = self._table.get(key)
            if bucket is None:
                bucket = [cap, now]
                self._table.put(key, bucket)
            tokens = min(cap, bucket[0] + (now - bucket[1]) * self._per_second)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return 0.0
            bucket[0] = tokens
            return (1.0 - tokens) / self._per_second

    def __len__(self) -> int:
        return len(self._table)


class Lockout:
    """After *failures* failed authentications of a key within *window* seconds, the key
    is locked out for *window* seconds: every request for it is answered ``429`` without
    being checked, so that a password cannot be guessed faster than that."""

    def __init__(
        self, failures: int, window: float, *, max_keys: int, clock: Callable[[], float]
    ) -> None:
        self.failures = failures
        self.window = window
        self.clock = clock
        # key -> [failures counted, first failure time, locked until]
        self._table: _Table[list[float]] = _Table(max_keys)
        self._lock = threading.Lock()

    def locked(self, key: str) -> float:
        """Seconds *key* stays locked out, ``0.0`` when it is not."""
        if self.failures <= 0:
            return 0.0
        with self._lock:
            entry = self._table.get(key)
            if entry is None:  # the usual case: no failure counted, no clock to read
                return 0.0
            now = self.clock()
            if entry[2] <= now:
                return 0.0
            return entry[2] - now

    def failed(self, key: str) -> None:
        if self.failures <= 0:
            return
        now = self.clock()
        with self._lock:
            entry = self._table.get(key)
            if entry is None or now - entry[1] >= self.window:
                entry = [0.0, now, 0.0]
            entry[0] += 1
            if entry[0] >= self.failures:
                entry[2] = now + self.window
                entry[0], entry[1] = 0.0, now + self.window
            self._table.put(key, entry)

    def succeeded(self, key: str) -> None:
        if self.failures <= 0:
            return
        with self._lock:
            self._table.pop(key)

    def __len__(self) -> int:
        return len(self._table)


def client_address(environ: Mapping[str, object], header: str = "") -> str | None:
    """The client's address: the last one in *header* (what the proxy in front appended;
    the ones before it are the client's own say) when configured and present, else the
    peer address."""
    if header:
        value = environ.get("HTTP_" + header.upper().replace("-", "_"))
        if isinstance(value, str) and value.strip():
            return value.rsplit(",", 1)[-1].strip()[:64] or None
    remote = environ.get("REMOTE_ADDR")
    return remote if isinstance(remote, str) else None


#: The text fields of a report that are stored, in ``Report.stored_fields()`` order.
_TEXT_FIELDS = (
    "selector",
    "username",
    "token_calls",
    "appid_calls",
    "token_msgs",
    "appid_msgs",
    "user_agent",
)


def _username_key(report: Report, request: Request) -> str:
    if report.username is not None:
        return "user:" + report.username
    return "client:" + (request.client or "-")


@attrs.define
class Limiter:
    """The ``[limits]`` of one receiver, called by :class:`~pushreport.Receiver`:

    1. :meth:`check_request` before parsing: URL and header lengths, the per-client rate;
    2. :meth:`check_report` before authentication: field lengths, the lock-out;
    3. :meth:`failed` after a refused authentication;
    4. :meth:`admitted` after a successful one: the per-username rate.
    """

    max_url: int = 8192
    max_field: int = 4096
    max_header: int = 8190
    per_client: TokenBuckets | None = None
    per_username: TokenBuckets | None = None
    lockout: Lockout | None = None

    @classmethod
    def from_config(
        cls, limits: LimitsConfig, *, clock: Callable[[], float] = time.time
    ) -> Limiter:
        size = limits.max_tracked
        client = Rate.parse(limits.per_client, key="limits.per_client")
        user = Rate.parse(limits.per_username, key="limits.per_username")
        return cls(
            max_url=limits.max_url,
            max_field=limits.max_field,
            max_header=limits.max_header,
            per_client=TokenBuckets(client, max_keys=size, clock=clock) if client else None,
            per_username=TokenBuckets(user, max_keys=size, clock=clock) if user else None,
            lockout=Lockout(
                limits.auth_failures, float(limits.lockout), max_keys=size, clock=clock
            )
            if limits.auth_failures
            else None,
        )

    def check_request(self, request: Request) -> None:
        if len(request.target) > self.max_url:
            raise RequestTooLarge(
                f"request target is too long ({len(request.target)} > {self.max_url} characters)",
                error_status_hint=414,
            )
        for name, value in (
            ("Authorization", request.authorization),
            ("User-Agent", request.user_agent),
            ("Content-Type", request.content_type),
        ):
            if value is not None and len(value) > self.max_header:
                raise RequestTooLarge(
                    f"header {name} is too long (> {self.max_header} bytes)", error_status_hint=431
                )
        if self.per_client is not None and request.client:
            wait = self.per_client.take(request.client)
            if wait:
                raise TooManyRequests(
                    "too many requests from this client", retry_after=_retry_after(wait)
                )

    def check_report(self, report: Report, request: Request) -> None:
        limit = self.max_field
        for name in _TEXT_FIELDS:
            value = getattr(report, name)
            if isinstance(value, str) and len(value) > limit:
                raise RequestTooLarge(f"{name} is too long ({len(value)} > {limit} characters)")
        for name, value in report.extra.items():
            if len(value) > limit:
                raise RequestTooLarge(f"{name} is too long ({len(value)} > {limit} characters)")
        if report.password is not None and len(report.password.reveal()) > limit:
            raise RequestTooLarge(f"password is too long (> {limit} characters)")
        if self.lockout is not None:
            wait = self.lockout.locked(_username_key(report, request))
            if wait:
                raise TooManyRequests(
                    "too many failed authentications; try again later",
                    retry_after=_retry_after(wait),
                )

    def failed(self, report: Report, request: Request) -> None:
        if self.lockout is not None:
            self.lockout.failed(_username_key(report, request))

    def admitted(self, report: Report, request: Request) -> None:
        key = _username_key(report, request)
        if self.lockout is not None:
            self.lockout.succeeded(key)
        if self.per_username is not None and report.username is not None:
            wait = self.per_username.take(key)
            if wait:
                raise TooManyRequests(
                    "too many reports for this username", retry_after=_retry_after(wait)
                )
