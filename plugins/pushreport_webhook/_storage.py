"""The webhook backend: registrations and an outbox of events in one SQLite file,
every change and its event written by the same transaction, and a deliverer that POSTs
the events. It stands alone: the merge rule and the token rule are the core's
(:func:`pushreport_core.merge`, :func:`pushreport_core.without_token`), the file is
:mod:`pushreport_webhook._db`'s."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import attrs

from pushreport import value_or_env
from pushreport.storage import BackendOptions, Capability, StorageContext
from pushreport_core import Registration, Report, Secret, merge, without_token

from ._db import (
    COLUMNS,
    DEFAULT_BUSY_TIMEOUT,
    MAX_BUSY_TIMEOUT,
    PING,
    SYNCHRONOUS,
    OutboxDatabase,
    db_time,
    decode,
    encode,
)
from ._deliver import Deliverer, DeliverySettings
from ._outbox import REMOVED, UPDATED, counts, enqueue
from ._signing import DEFAULT_SIGNATURE, SIGNATURES, make_signer, secret_problem

T = TypeVar("T")

__all__ = ["WebhookStorage", "DEFAULT_OUTBOX", "OPTIONS", "OPTIONS_DOC", "webhook_storage"]

#: ``[storage.webhook] outbox`` when unset, relative to the configuration's folder.
DEFAULT_OUTBOX = "pushreport-outbox.sqlite3"
DEFAULT_TIMEOUT = 10.0
#: With the default back-off, 24 attempts span about 6 hours on average (12 at most)
#: before an event is dead-lettered: an outage of the receiver for a night loses nothing.
DEFAULT_MAX_ATTEMPTS = 24
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_MAX = 3600.0
DEFAULT_POLL_INTERVAL = 0.5
DEFAULT_CONCURRENCY = 4

OPTIONS = (
    "url",
    "signature",
    "secret",
    "secret_env",
    "outbox",
    "timeout",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "deliver",
    "poll_interval",
    "concurrency",
    "synchronous",
    "busy_timeout",
)

#: One sentence per option, for the generated configuration reference.
OPTIONS_DOC = {
    "url": "Required. The http:// or https:// URL every event is POSTed to (never logged: "
    "only its host). A user name or password in it (user:password@host) is refused: the "
    "requests are signed with secret.",
    "signature": f'How requests are signed: "{DEFAULT_SIGNATURE}" (the default), as '
    "Standard Webhooks says (webhook-id, webhook-timestamp, webhook-signature), or "
    '"pushreport" (X-Pushreport-Timestamp, X-Pushreport-Signature); docs/webhook.md.',
    "secret": 'The key that signs every request (HMAC-SHA256): for signature = "standard", '
    'whsec_ and the base64 of at least 24 random bytes; for "pushreport", any '
    "non-empty string. This or secret_env is required; never logged.",
    "secret_env": "The name of an environment variable holding the key, instead of secret.",
    "outbox": f"The SQLite file holding the registrations, the outbox and the dead "
    f"letters (default {DEFAULT_OUTBOX!r}, relative to the configuration's "
    f"folder); not the sqlite backend's file.",
    "timeout": f"Seconds for the connection and for each read of one delivery (default "
    f"{DEFAULT_TIMEOUT:g}).",
    "max_attempts": f"Failed attempts after which an event moves to the dead letters "
    f"(default {DEFAULT_MAX_ATTEMPTS}).",
    "backoff_base": f"Seconds before the second attempt, doubled for each further one, "
    f"drawn with full jitter (default {DEFAULT_BACKOFF_BASE:g}).",
    "backoff_max": f"Seconds at most between two attempts (default {DEFAULT_BACKOFF_MAX:g}).",
    "deliver": "Run the deliverer thread in this process (default true); one process "
    "delivers at a time.",
    "poll_interval": f"Seconds between looks for events other processes committed, and "
    f"between tries for the delivery lock (default "
    f"{DEFAULT_POLL_INTERVAL:g}).",
    "concurrency": f"Selectors delivered at once (default {DEFAULT_CONCURRENCY}).",
    "synchronous": "As [storage.sqlite] synchronous, for the outbox file.",
    "busy_timeout": "As [storage.sqlite] busy_timeout, for the outbox file.",
}
assert tuple(OPTIONS_DOC) == OPTIONS

_GET = f"SELECT {COLUMNS} FROM registrations WHERE selector = ?"
_FIND_BY_USERNAME = f"SELECT {COLUMNS} FROM registrations WHERE username = ? ORDER BY selector"
_HOLDERS = (
    f"SELECT {COLUMNS} FROM registrations WHERE token_calls = ? OR token_msgs = ? "
    "ORDER BY selector"
)
_STALE = f"SELECT {COLUMNS} FROM registrations WHERE last_seen < ? ORDER BY selector"
_PUT = (
    f"INSERT OR REPLACE INTO registrations ({COLUMNS}) VALUES ("
    + ", ".join(f":{name}" for name in COLUMNS.split(", "))
    + ")"
)
_DELETE = "DELETE FROM registrations WHERE selector = ?"
_COUNT = "SELECT COUNT(*) FROM registrations"
#: Rows read per query while iterating (no statement stays open between pages).
PAGE_SIZE = 256


def _secret(value: Secret | str | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def _check_url(url: str) -> str | None:
    """Why *url* cannot be a webhook URL, or ``None``. Never quotes it: it may hold a
    credential."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "must be an http:// or https:// URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        # http.client would take "user:pw@host" for the host name and never deliver;
        # sending it as Basic auth would put a second credential in the configuration.
        return (
            "must not carry a user name or password (user:password@): "
            "pushreport signs its requests with secret instead"
        )
    return None


@attrs.define(eq=False)
class WebhookStorage:
    """A :class:`~pushreport.storage.Storage` that forwards every registration
    change to a webhook, through a durable outbox.

    The registrations and the events live in one SQLite file (:mod:`._db`); every write
    adds its events to the ``outbox`` table in the same ``BEGIN IMMEDIATE``
    transaction, which also makes each read-merge-write atomic against every other
    process. A report is acknowledged once both are committed, not once the webhook
    answered. With *deliver*, a background thread sends the events (see
    :mod:`pushreport_webhook._deliver`).
    """

    name = "webhook"
    #: What it can do beyond the required protocol (:mod:`pushreport.storage`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.OPEN,
            Capability.UPSERT_MANY,
            Capability.PUT_MANY,
            Capability.COUNT,
            Capability.METRICS,
            Capability.FIND_TOKEN,
            Capability.FORGET_TOKEN,
            Capability.UPSERT_IF,
            Capability.REMOVE_IF,
            Capability.PATH,
        }
    )

    path: Path = attrs.field(converter=Path)
    synchronous: str = attrs.field(default="normal", kw_only=True)
    busy_timeout: float = attrs.field(default=DEFAULT_BUSY_TIMEOUT, converter=float, kw_only=True)
    #: Create the file and its tables when missing (``StorageContext.create``).
    create: bool = attrs.field(default=True, kw_only=True)
    url: str | None = attrs.field(default=None, kw_only=True)
    secret: Secret | None = attrs.field(default=None, converter=_secret, kw_only=True, repr=False)
    #: ``"standard"`` or ``"pushreport"`` (:data:`~._signing.SIGNATURES`).
    signature: str = attrs.field(
        default=DEFAULT_SIGNATURE, validator=attrs.validators.in_(SIGNATURES), kw_only=True
    )
    deliver: bool = attrs.field(default=True, kw_only=True)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, converter=float, kw_only=True)
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, kw_only=True)
    backoff_base: float = attrs.field(default=DEFAULT_BACKOFF_BASE, converter=float, kw_only=True)
    backoff_max: float = attrs.field(default=DEFAULT_BACKOFF_MAX, converter=float, kw_only=True)
    poll_interval: float = attrs.field(
        default=DEFAULT_POLL_INTERVAL, converter=float, kw_only=True
    )
    concurrency: int = attrs.field(default=DEFAULT_CONCURRENCY, kw_only=True)
    _db: OutboxDatabase = attrs.field(init=False, repr=False)
    _deliverer: Deliverer | None = attrs.field(init=False, default=None, repr=False)
    _deliverer_pid: int = attrs.field(init=False, default=0, repr=False)
    _deliverer_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.deliver:
            if not self.url or _check_url(self.url) is not None:
                raise ValueError("deliver needs an http:// or https:// url")
            if self.secret is None or not self.secret.reveal():
                raise ValueError("deliver needs a secret")
            make_signer(self.signature, self.secret)  # a ValueError that never quotes it
        if self.max_attempts < 1 or self.concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._db = OutboxDatabase(
            self.path,
            synchronous=self.synchronous,
            busy_timeout=self.busy_timeout,
            create=self.create,
        )
        self._start_deliverer()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: StorageContext) -> WebhookStorage:
        """The backend for the ``[storage.webhook]`` table of the configuration.

        ``url`` and one of ``secret`` or ``secret_env`` are required, the secret of
        the form ``signature`` needs (``whsec_…`` for ``"standard"``, the default); the
        other options have defaults (docs/storage.md, "Webhook backend"). Starts the
        deliverer thread unless ``deliver = false``; opens no file yet.

        :raises ConfigurationError: an unknown option, a missing or malformed one, or an
            unset ``secret_env`` variable, naming ``storage.webhook.<option>``; never
            quoting the URL or the secret.
        """
        opts = BackendOptions("webhook", options, OPTIONS)
        url = options.get("url")
        if url is None:
            raise opts.error("url", "is required: the webhook's http:// or https:// URL")
        problem = _check_url(url) if isinstance(url, str) else "must be an http:// or https:// URL"
        if problem is not None:
            raise opts.error("url", problem)
        scheme = opts.string("signature", DEFAULT_SIGNATURE, choices=SIGNATURES)
        secret = _secret_of(opts, options, scheme)
        return cls(
            **outbox_file(opts, context),
            url=url,
            secret=secret,
            signature=scheme,
            deliver=opts.boolean("deliver", True),
            timeout=opts.number("timeout", DEFAULT_TIMEOUT, low=0.1, high=300),
            max_attempts=opts.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, low=1, high=1000),
            backoff_base=opts.number("backoff_base", DEFAULT_BACKOFF_BASE, low=0.001, high=3600),
            backoff_max=opts.number("backoff_max", DEFAULT_BACKOFF_MAX, low=0.001, high=86400),
            poll_interval=opts.number("poll_interval", DEFAULT_POLL_INTERVAL, low=0.01, high=60),
            concurrency=opts.integer("concurrency", DEFAULT_CONCURRENCY, low=1, high=64),
        )

    # -- the deliverer -----------------------------------------------------------------

    def _start_deliverer(self) -> None:
        """One deliverer per handle and process (a forked child starts its own)."""
        if not self.deliver or self._db.closed or self._deliverer_pid == os.getpid():
            return
        with self._deliverer_lock:
            if self._deliverer_pid == os.getpid():
                return
            assert self.url is not None and self.secret is not None
            deliverer = Deliverer(
                self._db,
                DeliverySettings(
                    url=self.url,
                    signer=make_signer(self.signature, self.secret),
                    timeout=self.timeout,
                    max_attempts=self.max_attempts,
                    backoff_base=self.backoff_base,
                    backoff_max=self.backoff_max,
                    poll_interval=self.poll_interval,
                    concurrency=self.concurrency,
                ),
            )
            self._deliverer, self._deliverer_pid = deliverer, os.getpid()
            deliverer.start()

    @property
    def deliverer(self) -> Deliverer | None:
        """This process's deliverer thread, if it runs here."""
        return self._deliverer if self._deliverer_pid == os.getpid() else None

    def _wake(self) -> None:
        deliverer = self.deliverer
        if deliverer is not None:
            deliverer.wake.set()

    # -- the file ----------------------------------------------------------------------

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* on this thread's connection, outside a transaction."""
        self._start_deliverer()  # in a forked child: its own
        return self._db.read(work)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* in one ``BEGIN IMMEDIATE`` transaction; roll back on any failure."""
        self._start_deliverer()
        return self._db.transaction(work)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`_transaction`, then wake the deliverer when *work* returned something
        (a change: its events wait)."""
        result = self._transaction(work)
        if result:
            self._wake()
        return result

    def open(self) -> None:
        """Open the outbox file now (see :meth:`OutboxDatabase.open`)."""
        self._db.open()
        self._start_deliverer()

    # -- Storage -----------------------------------------------------------------------

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* (:func:`pushreport_core.merge`) and add its
        ``registration.updated`` event, in one transaction; both committed on return."""
        db_time(now)  # an aware time, checked before anything is written
        return self._write(lambda conn: _upsert(conn, report, now))

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every ``(report, now)`` and add their events, in one transaction."""
        for _, now in items:
            db_time(now)

        def work(conn: sqlite3.Connection) -> list[Registration]:
            return [_upsert(conn, report, now) for report, now in items]

        return self._write(work)

    def upsert_if(
        self,
        report: Report,
        *,
        now: datetime,
        allowed: Callable[[Registration | None], bool],
    ) -> Registration | None:
        """:meth:`upsert`, unless ``allowed(the stored registration or None)`` is false:
        then nothing is written (no event) and ``None`` returned. The read, the
        decision and the write are one ``BEGIN IMMEDIATE`` transaction."""
        db_time(now)

        def work(conn: sqlite3.Connection) -> Registration | None:
            if not allowed(_get(conn, report.selector)):
                return None
            return _upsert(conn, report, now)

        return self._write(work)

    def put_many(self, registrations: Sequence[Registration]) -> None:
        """Store *registrations* exactly as given (``pushreport migrate``), each with a
        ``registration.updated`` event, in one transaction."""
        if not registrations:
            return
        rows = [encode(r) for r in registrations]
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> bool:
            conn.executemany(_PUT, rows)
            enqueue(conn, UPDATED, [(r, at) for r in registrations])
            return True

        self._write(work)

    def get(self, selector: str) -> Registration | None:
        return self._read(lambda conn: _get(conn, selector))

    def find(self, *, username: str | None = None) -> list[Registration]:
        if username is None:
            return list(self)
        return [decode(row) for row in self._read_rows(_FIND_BY_USERNAME, (username,))]

    def __iter__(self) -> Iterator[Registration]:
        self._start_deliverer()
        return (decode(row) for row in self._db.pages(PAGE_SIZE))

    def remove(self, selector: str) -> bool:
        """Delete the registration of *selector* and add a ``registration.removed``
        event carrying it as it was, in one transaction."""
        return self.remove_if(selector, lambda stored: True) is not None

    def remove_if(
        self, selector: str, allowed: Callable[[Registration | None], bool]
    ) -> Registration | None:
        """Delete the registration of *selector*, with its ``registration.removed``
        event, if ``allowed(it, or None)`` is true, in one transaction as
        :meth:`upsert_if`; the registration deleted, or ``None``."""
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> Registration | None:
            stored = _get(conn, selector)
            if not allowed(stored) or stored is None:
                return None
            conn.execute(_DELETE, (selector,))
            enqueue(conn, REMOVED, [(stored, at)])
            return stored

        return self._write(work)

    def count(self) -> int:
        """How many registrations are stored (the ``pushreport_registrations`` gauge)."""
        ((n,),) = self._read_rows(_COUNT)
        return int(n)

    def find_token(self, token: str) -> list[Registration]:
        """Registrations holding *token*, by selector. A scan: tokens are not indexed."""
        return [decode(row) for row in self._read_rows(_HOLDERS, (token, token))]

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* (:func:`pushreport_core.without_token`), adding a
        ``registration.updated`` event for each registration changed, in one
        transaction. The selectors changed, sorted."""
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> list[Registration]:
            holders = [decode(row) for row in conn.execute(_HOLDERS, (token, token))]
            changed = [
                without_token(r, token)
                for r in holders
                if r.selector != keep and (selector is None or r.selector == selector)
            ]
            conn.executemany(_PUT, [encode(r) for r in changed])
            enqueue(conn, UPDATED, [(r, at) for r in changed])
            return changed

        return [r.selector for r in self._write(work)]

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete the registrations last seen before *before*, adding a
        ``registration.removed`` event for each, in one transaction; with *dry_run*,
        only say which."""
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")
        cutoff = db_time(before)
        if dry_run:
            return [decode(row) for row in self._read_rows(_STALE, (cutoff,))]
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> list[Registration]:
            gone = [decode(row) for row in conn.execute(_STALE, (cutoff,))]
            conn.executemany(_DELETE, [(r.selector,) for r in gone])
            enqueue(conn, REMOVED, [(r, at) for r in gone])
            return gone

        return self._write(work)

    def metrics(self) -> dict[str, float]:
        """The outbox's figures for ``/metrics``: ``webhook_outbox_pending`` (events not
        yet delivered) and ``webhook_outbox_dead`` (dead letters), exported as
        ``pushreport_webhook_outbox_pending{backend}`` and ``…_dead``."""
        pending, dead = self._read(counts)
        return {"webhook_outbox_pending": pending, "webhook_outbox_dead": dead}

    def ping(self) -> None:
        """Take and release the write lock, as a write would: fails on a locked,
        read-only or broken file, within *busy_timeout*."""
        self._read_rows(PING)

    def close(self) -> None:
        """Stop the deliverer (waiting for its sends in flight, at most *timeout*
        seconds), then close the file."""
        deliverer = self.deliverer
        if deliverer is not None:
            deliverer.stop(self.timeout + 1)
        self._db.close()

    def _read_rows(self, sql: str, params: Any = ()) -> list[Any]:
        return self._read(lambda conn: conn.execute(sql, params).fetchall())


def _get(conn: sqlite3.Connection, selector: str) -> Registration | None:
    row = conn.execute(_GET, (selector,)).fetchone()
    return None if row is None else decode(row)


def _upsert(conn: sqlite3.Connection, report: Report, now: datetime) -> Registration:
    """Inside the caller's transaction: the merge rule, the row and its event."""
    registration = merge(_get(conn, report.selector), report, now=now)
    conn.execute(_PUT, encode(registration))
    enqueue(conn, UPDATED, [(registration, now)])
    return registration


def outbox_file(opts: BackendOptions, context: StorageContext) -> dict[str, Any]:
    """The options of ``[storage.webhook]`` that locate and tune the outbox file:
    ``outbox`` (relative to the configuration's folder), ``synchronous`` and
    ``busy_timeout``, as keyword arguments of :class:`WebhookStorage`."""
    outbox = opts.string("outbox", DEFAULT_OUTBOX, what="a file path (a non-empty string)")
    return {
        "path": Path(context.base_dir, outbox),
        "synchronous": opts.string("synchronous", "normal", choices=SYNCHRONOUS),
        "busy_timeout": opts.number(
            "busy_timeout", DEFAULT_BUSY_TIMEOUT, low=0, high=MAX_BUSY_TIMEOUT
        ),
        "create": context.create,
    }


def _secret_of(opts: BackendOptions, options: Mapping[str, Any], scheme: str) -> Secret:
    """``secret``, or the environment variable ``secret_env`` names, checked for
    *scheme*'s form (:func:`~._signing.secret_problem`); never quoted."""
    secret, env = options.get("secret"), options.get("secret_env")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise opts.error("secret", "must be a non-empty string")
    if env is not None and (not isinstance(env, str) or not env):
        raise opts.error("secret_env", "must be the name of an environment variable")
    value = value_or_env(
        secret, env, "secret", error=opts.error, needed_by="the webhook backend (its signing key)"
    )
    assert value is not None  # needed_by: none is an error
    problem = secret_problem(scheme, value, scheme_given="signature" in options)
    if problem is not None:
        if env is not None:
            raise opts.error("secret_env", f"the value of environment variable {env!r} {problem}")
        raise opts.error("secret", problem)
    return Secret(value)


def webhook_storage(options: Mapping[str, Any], context: StorageContext) -> WebhookStorage:
    """The factory registered as ``webhook``: :meth:`WebhookStorage.from_options`, with
    ``options_doc`` for the generated configuration reference."""
    return WebhookStorage.from_options(options, context)


webhook_storage.options_doc = OPTIONS_DOC  # type: ignore[attr-defined]
