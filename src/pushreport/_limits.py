"""Abuse limits: rate limits, the failed-authentication lock-out, and length limits.

The counts are shared by every process that serves: they live in a
:class:`~pushreport.limitstate.LimitState` (a SQLite file beside the database for
the workers of one host and its restarts, a table of the PostgreSQL database for every
host that shares it; :func:`open_limit_state` picks it once, at start-up), so
``per_client = "20/minute"`` means 20 a minute for the whole server, whatever the
number of workers. Each check is one atomic statement in that store; when the store
cannot answer, the request is answered ``503`` with ``Retry-After``, never let through.

The store stays bounded: every few seconds each process deletes what has expired, and
beyond ``max_tracked`` rate buckets and failure counts the ones nearest their expiry,
so an attacker rotating client addresses cannot grow it.

The client is the peer address, or behind proxies the right-most address in
``client_header`` that is not one of ``trusted_proxies`` (:func:`client_address`); the
header of a peer that is not a trusted proxy is ignored.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import attrs

from pushreport_core import (
    REPORTED_FIELDS,
    Report,
    Request,
    RequestTooLarge,
    StorageUnavailable,
    TooManyRequests,
)

from ._config import Network, Rate, check_limits, trusted_networks
from .limitstate import LimitState, SQLiteLimitState, state_errors

if TYPE_CHECKING:
    from ._backends import Backend
    from ._config import Config, LimitsConfig

__all__ = [
    "Rate",
    "Limiter",
    "client_address",
    "open_limit_state",
    "share_limit_state",
    "DEFAULT_STATE_FILE",
    "PURGE_INTERVAL",
]

log = logging.getLogger("pushreport.limits")

#: The limit state's file, in the configuration's folder, when no ``[limits]
#: state_path`` is set and no storage backend provides a state.
DEFAULT_STATE_FILE = "pushreport-limits.sqlite3"
#: Seconds between two purges of the limit state by one process.
PURGE_INTERVAL = 10.0


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# --- the client address -------------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    """The address in one entry of a forwarding header: ``192.0.2.1``, ``2001:db8::1``,
    ``192.0.2.1:4711``, ``[2001:db8::1]:4711``, or RFC 7239's ``for="[2001:db8::1]"``;
    an IPv4-mapped IPv6 address as its IPv4 one. ``None`` when it is none of these."""
    text = text.strip()
    if "=" in text:  # Forwarded: for=…;proto=…
        pairs = (p.partition("=") for p in text.split(";"))
        params = {name.strip().lower(): value for name, _, value in pairs}
        text = params.get("for", "").strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in n for n in networks)


def client_address(
    peer: str | None, forwarded: str | None = None, trusted_proxies: Sequence[str] = ()
) -> str | None:
    """The client's address, as the per-client limit and the lock-out count it.

    *peer* is the address the connection came from; *forwarded* the value of the
    ``[limits] client_header`` the request carried (``None``: none);
    *trusted_proxies* is ``[limits] trusted_proxies``. Without trusted proxies (no
    ``client_header``), the peer as given. Else, when the peer is one of them, the
    header's chain of addresses is read from the right (each proxy appends the address it
    received the request from), trusted proxies skipped, and the first address that is not
    one of them is the client. Whatever is left of it was written by the client and is
    never read: a client cannot choose its address by sending the header. When every
    address is a trusted proxy, the left-most is the client.
    """
    if not trusted_proxies:
        return peer
    networks = trusted_networks(tuple(trusted_proxies))
    peer_address = _address(peer or "")
    if not _trusted(peer_address, networks):
        return str(peer_address) if peer_address is not None else peer
    client: str | None = str(peer_address)
    if forwarded is not None:
        for entry in reversed(forwarded.split(",")):
            if not entry.strip():
                continue
            address = _address(entry)
            if address is None:  # not an address, yet appended by a trusted proxy
                return entry.strip()[:64]
            client = str(address)
            if not _trusted(address, networks):
                return client
    return client


def _failure_key(report: Report, request: Request) -> str:
    """Failures count per client and username together: one client's failures never
    lock out another client, and one client's guessing is still stopped."""
    return json.dumps([request.client, report.username], ensure_ascii=False)


def _login_key(client: str | None) -> str:
    return json.dumps(["admin", client], ensure_ascii=False)


@attrs.define
class Limiter:
    """The ``[limits]`` of one receiver, called by :class:`~pushreport.Receiver`:

    1. :meth:`check_request` before parsing: URL and header lengths, the per-client rate;
    2. :meth:`check_report` before authentication: field lengths, the lock-out;
    3. :meth:`failed` after a refused authentication;
    4. :meth:`admitted` after a successful one: the per-username rate.

    The counts are kept in :attr:`state` (:func:`share_limit_state` opens it when
    :attr:`uses_state`); a limit in use without one answers ``503``.
    """

    max_url: int = 8192
    max_field: int = 4096
    max_header: int = 8190
    per_client: Rate | None = None
    per_username: Rate | None = None
    #: Failed authentications of one client and username that lock them out (0: never).
    auth_failures: int = 0
    #: Seconds of the lock-out, and of the window failures are counted in.
    lockout: float = 300.0
    #: Failed logins to the support page of one client that lock it out (0: never).
    login_failures: int = 0
    #: Rate buckets and failure counts the state keeps at most.
    max_tracked: int = 100_000
    state: LimitState | None = None
    clock: Callable[[], float] = time.time
    _next_purge: float = attrs.field(default=0.0, init=False)

    @classmethod
    def from_config(
        cls,
        limits: LimitsConfig,
        *,
        clock: Callable[[], float] = time.time,
        authenticates: bool = True,
        logins: bool = False,
    ) -> Limiter:
        """The limits of ``[limits]``; without state yet. *authenticates*: something
        checks credentials (without, there is no failure to count: no lock-out).
        *logins*: the support page is served; its failed logins are locked out by the
        same ``auth_failures`` and ``lockout``, per client.

        :raises ConfigurationError: a bad rate, proxy list or header, naming the key.
        """
        check_limits(limits)
        return cls(
            max_url=limits.max_url,
            max_field=limits.max_field,
            max_header=limits.max_header,
            per_client=Rate.parse(limits.per_client, key="limits.per_client"),
            per_username=Rate.parse(limits.per_username, key="limits.per_username"),
            auth_failures=limits.auth_failures if authenticates else 0,
            login_failures=limits.auth_failures if logins else 0,
            lockout=float(limits.lockout),
            max_tracked=limits.max_tracked,
            clock=clock,
        )

    @property
    def uses_state(self) -> bool:
        """Some limit counts: a rate, or the lock-out."""
        return bool(
            self.per_client or self.per_username or self.auth_failures or self.login_failures
        )

    @contextmanager
    def _shared(self) -> Iterator[tuple[LimitState, float]]:
        """The state and the time now; every failure of the state becomes
        ``StorageUnavailable`` (503), never a 500 nor a pass. Every
        :data:`PURGE_INTERVAL` seconds, this process purges the state first."""
        state = self.state
        if state is None:
            raise StorageUnavailable("limit state is not open")
        now = self.clock()
        with state_errors():
            if now >= self._next_purge:
                self._next_purge = now + PURGE_INTERVAL
                try:
                    state.purge(now=now, keep=self.max_tracked)
                except StorageUnavailable as e:  # housekeeping: the next round retries
                    log.warning("the limit state cannot be purged: %s", e)
            yield state, now

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
        rate = self.per_client
        if rate is not None and request.client:
            with self._shared() as (state, now):
                wait = state.take(
                    "client:" + request.client, count=rate.count, period=rate.period, now=now
                )
            if wait:
                raise TooManyRequests(
                    "too many requests from this client", retry_after=_retry_after(wait)
                )

    def check_report(self, report: Report, request: Request) -> None:
        limit = self.max_field
        for name in REPORTED_FIELDS:  # the text ones; extra is checked below
            value = getattr(report, name)
            if isinstance(value, str) and len(value) > limit:
                raise RequestTooLarge(f"{name} is too long ({len(value)} > {limit} characters)")
        for name, value in report.extra.items():
            if len(value) > limit:
                raise RequestTooLarge(f"{name} is too long ({len(value)} > {limit} characters)")
        if report.password is not None and len(report.password.reveal()) > limit:
            raise RequestTooLarge(f"password is too long (> {limit} characters)")
        if self.auth_failures:
            with self._shared() as (state, now):
                wait = state.locked(
                    _failure_key(report, request), limit=self.auth_failures, now=now
                )
            if wait:
                raise TooManyRequests(
                    "too many failed authentications; try again later",
                    retry_after=_retry_after(wait),
                )

    def failed(self, report: Report, request: Request) -> None:
        if self.auth_failures:
            with self._shared() as (state, now):
                state.fail(
                    _failure_key(report, request),
                    limit=self.auth_failures,
                    window=self.lockout,
                    now=now,
                )

    def admitted(self, report: Report, request: Request) -> None:
        if self.auth_failures:
            with self._shared() as (state, _):
                state.clear(_failure_key(report, request))
        rate = self.per_username
        if rate is not None and report.username is not None:
            with self._shared() as (state, now):
                wait = state.take(
                    "user:" + report.username, count=rate.count, period=rate.period, now=now
                )
            if wait:
                raise TooManyRequests(
                    "too many reports for this username", retry_after=_retry_after(wait)
                )

    # The support page's logins: failures per client, whatever the token tried.

    def check_login(self, client: str | None) -> None:
        """Raise :class:`TooManyRequests` while *client* is locked out of the page."""
        if self.login_failures:
            with self._shared() as (state, now):
                wait = state.locked(_login_key(client), limit=self.login_failures, now=now)
            if wait:
                raise TooManyRequests(
                    "too many failed logins; try again later", retry_after=_retry_after(wait)
                )

    def login_failed(self, client: str | None) -> None:
        if self.login_failures:
            with self._shared() as (state, now):
                state.fail(
                    _login_key(client), limit=self.login_failures, window=self.lockout, now=now
                )

    def login_succeeded(self, client: str | None) -> None:
        if self.login_failures:
            with self._shared() as (state, _):
                state.clear(_login_key(client))

    def close(self) -> None:
        state, self.state = self.state, None
        if state is not None:
            state.close()


# --- where the state lives ------------------------------------------------------------------


def open_limit_state(config: Config, backends: Sequence[Backend]) -> LimitState:
    """The limit state of *config*: ``[limits] state_path`` (a SQLite file), else the
    one the first required backend that declares ``limit_state`` provides (SQLite a
    file beside its database, PostgreSQL a table in it), else
    :data:`DEFAULT_STATE_FILE` in the configuration's folder. Opens nothing yet: the
    first operation does."""
    if config.limits.state_path:
        return SQLiteLimitState(Path(config.base_dir, config.limits.state_path))
    for backend in backends:
        provide = backend.capabilities.limit_state
        if backend.required and provide is not None:
            return provide()
    return SQLiteLimitState(Path(config.base_dir, DEFAULT_STATE_FILE))


def share_limit_state(
    limiter: Limiter, config: Config, backends: Sequence[Backend], plugins: Sequence[object]
) -> None:
    """Give *limiter* and the Digest authenticators among *plugins* (their nonce counts)
    the limit state, when one of them needs it."""
    from ._auth import DigestAuthenticator

    digest = [p for p in plugins if isinstance(p, DigestAuthenticator)]
    if not (limiter.uses_state or digest):
        return
    state = open_limit_state(config, backends)
    limiter.state = state
    for authenticator in digest:
        authenticator.nonce_counts = state
