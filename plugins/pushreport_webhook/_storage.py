"""The webhook backend: the SQLite backend's registrations plus an outbox of events,
written by the same transaction, and a deliverer that POSTs them."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import attrs

from pushreport._config import value_or_env
from pushreport.storage import BackendOptions, StorageContext
from pushreport_core import Registration, Report, Secret, format_time
from pushreport_sqlite._storage import (
    _COLUMNS,
    DEFAULT_BUSY_TIMEOUT,
    FORGET,
    HOLDERS,
    MAX_BUSY_TIMEOUT,
    PUT,
    SYNCHRONOUS,
    UPSERT,
    SQLiteStorage,
    _decode,
    _NoData,
    _params,
    _put_params,
)

from ._deliver import Deliverer
from ._outbox import OUTBOX_SCHEMA, REMOVED, UPDATED, counts, enqueue

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
    "secret": "The HMAC-SHA256 key that signs every request (X-Pushreport-Signature); "
    "this or secret_env is required.",
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

_REMOVE = f"DELETE FROM registrations WHERE selector = ? RETURNING {_COLUMNS}"
# The SQLite backend's forget and prune, returning whole rows: their events carry them.
_FORGET = FORGET.replace("RETURNING selector", f"RETURNING {_COLUMNS}")
_PRUNE = f"DELETE FROM registrations WHERE last_seen < ? RETURNING {_COLUMNS}"


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
class WebhookStorage(SQLiteStorage):
    """A :class:`~pushreport.storage.Storage` that forwards every registration
    change to a webhook, through a durable outbox.

    The registrations live in the outbox's SQLite file (the ``registrations`` table of
    the SQLite backend, so the whole protocol is the SQLite backend's); every write also
    adds an event to the ``outbox`` table in the same transaction. A report is
    acknowledged once both are committed, not once the webhook answered. With *deliver*,
    a background thread sends the events (see :mod:`pushreport_webhook._deliver`).
    """

    name = "webhook"

    url: str | None = attrs.field(default=None, kw_only=True)
    secret: Secret | None = attrs.field(default=None, converter=_secret, kw_only=True, repr=False)
    deliver: bool = attrs.field(default=True, kw_only=True)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, converter=float, kw_only=True)
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, kw_only=True)
    backoff_base: float = attrs.field(default=DEFAULT_BACKOFF_BASE, converter=float, kw_only=True)
    backoff_max: float = attrs.field(default=DEFAULT_BACKOFF_MAX, converter=float, kw_only=True)
    poll_interval: float = attrs.field(
        default=DEFAULT_POLL_INTERVAL, converter=float, kw_only=True
    )
    concurrency: int = attrs.field(default=DEFAULT_CONCURRENCY, kw_only=True)
    _deliverer: Deliverer | None = attrs.field(init=False, default=None, repr=False)
    _deliverer_pid: int = attrs.field(init=False, default=0, repr=False)
    _deliverer_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.deliver:
            if not self.url or _check_url(self.url) is not None:
                raise ValueError("deliver needs an http:// or https:// url")
            if self.secret is None or not self.secret.reveal():
                raise ValueError("deliver needs a secret")
        if self.max_attempts < 1 or self.concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._start_deliverer()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: StorageContext) -> WebhookStorage:
        """The backend for the ``[storage.webhook]`` table of the configuration.

        ``url`` and one of ``secret`` or ``secret_env`` are required; the other options
        have defaults (docs/storage.md, "Webhook backend"). Starts the deliverer thread unless
        ``deliver = false``; opens no file yet.

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
        secret = _secret_of(opts, options)
        outbox = opts.string("outbox", DEFAULT_OUTBOX, what="a file path (a non-empty string)")
        return cls(
            Path(context.base_dir, outbox),
            synchronous=opts.string("synchronous", "normal", choices=SYNCHRONOUS),
            busy_timeout=opts.number(
                "busy_timeout", DEFAULT_BUSY_TIMEOUT, low=0, high=MAX_BUSY_TIMEOUT
            ),
            url=url,
            secret=secret,
            deliver=opts.boolean("deliver", True),
            timeout=opts.number("timeout", DEFAULT_TIMEOUT, low=0.1, high=300),
            max_attempts=opts.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, low=1, high=1000),
            backoff_base=opts.number("backoff_base", DEFAULT_BACKOFF_BASE, low=0.001, high=3600),
            backoff_max=opts.number("backoff_max", DEFAULT_BACKOFF_MAX, low=0.001, high=86400),
            poll_interval=opts.number("poll_interval", DEFAULT_POLL_INTERVAL, low=0.01, high=60),
            concurrency=opts.integer("concurrency", DEFAULT_CONCURRENCY, low=1, high=64),
            create=context.create,
        )

    # -- the deliverer -----------------------------------------------------------------

    def _start_deliverer(self) -> None:
        """One deliverer per handle and process (a forked child starts its own)."""
        if not self.deliver or self._closed or self._deliverer_pid == os.getpid():
            return
        with self._deliverer_lock:
            if self._deliverer_pid == os.getpid():
                return
            assert self.url is not None and self.secret is not None
            deliverer = Deliverer(self, url=self.url, secret=self.secret)
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

    # -- the SQLite backend, with the outbox -------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = super()._open()
        self._start_deliverer()
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        super()._create_schema(conn)
        if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'"
        ).fetchone():
            return
        if not self.create:
            raise _NoData("sqlite database holds no webhook outbox")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in OUTBOX_SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* on this thread's connection, outside a transaction."""
        try:
            return work(self._connection())
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc

    def _release_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            self._local.conn = None
            conn.close()

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* and add its ``registration.updated`` event, in one
        transaction; both committed on return."""

        def work(conn: sqlite3.Connection) -> Registration:
            registration = _decode(conn.execute(UPSERT, _params(report, now)).fetchone())
            enqueue(conn, UPDATED, [(registration, now)])
            return registration

        registration = self._transaction(work)
        self._wake()
        return registration

    def upsert_many(self, items: Sequence[tuple[Report, datetime]]) -> list[Registration]:
        """Upsert every ``(report, now)`` and add their events, in one transaction."""

        def work(conn: sqlite3.Connection) -> list[Registration]:
            registrations = [
                _decode(conn.execute(UPSERT, _params(report, now)).fetchone())
                for report, now in items
            ]
            enqueue(conn, UPDATED, zip(registrations, (now for _, now in items)))
            return registrations

        registrations = self._transaction(work)
        self._wake()
        return registrations

    def put_many(self, registrations: Sequence[Registration]) -> None:
        """Store *registrations* exactly as given (``pushreport migrate``), each with a
        ``registration.updated`` event, in one transaction."""
        if not registrations:
            return
        params = [_put_params(r) for r in registrations]
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(PUT, params)
            enqueue(conn, UPDATED, [(r, at) for r in registrations])

        self._transaction(work)
        self._wake()

    def remove(self, selector: str) -> bool:
        """Delete the registration of *selector* and add a ``registration.removed``
        event carrying it as it was, in one transaction."""
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_REMOVE, (selector,)).fetchone()
            if row is None:
                return False
            enqueue(conn, REMOVED, [(_decode(row), at)])
            return True

        removed = self._transaction(work)
        if removed:
            self._wake()
        return removed

    def forget_token(
        self, token: str, *, selector: str | None = None, keep: str | None = None
    ) -> list[str]:
        """Clear *token* like the SQLite backend, adding a ``registration.updated``
        event for each registration changed, in one transaction."""
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> list[Registration]:
            if selector is None:
                holders = [row[0] for row in conn.execute(HOLDERS, (token, token))]
            else:
                holders = [selector]
            holders = [s for s in holders if s != keep]
            if not holders:
                return []
            rows = conn.execute(
                _FORGET, {"token": token, "selectors": json.dumps(holders)}
            ).fetchall()
            changed = sorted((_decode(row) for row in rows), key=lambda r: r.selector)
            enqueue(conn, UPDATED, [(r, at) for r in changed])
            return changed

        changed = self._transaction(work)
        if changed:
            self._wake()
        return [r.selector for r in changed]

    def prune(self, before: datetime, *, dry_run: bool = False) -> list[Registration]:
        """Delete the registrations last seen before *before* like the SQLite backend,
        adding a ``registration.removed`` event for each, in one transaction."""
        if dry_run:
            return super().prune(before, dry_run=True)
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be an aware datetime, got {before!r}")
        cutoff = format_time(before)
        at = datetime.now(timezone.utc)

        def work(conn: sqlite3.Connection) -> list[Registration]:
            gone = sorted(
                (_decode(row) for row in conn.execute(_PRUNE, (cutoff,))), key=lambda r: r.selector
            )
            enqueue(conn, REMOVED, [(r, at) for r in gone])
            return gone

        gone = self._transaction(work)
        if gone:
            self._wake()
        return gone

    def metrics(self) -> dict[str, float]:
        """The outbox's figures for ``/metrics``: ``webhook_outbox_pending`` (events not
        yet delivered) and ``webhook_outbox_dead`` (dead letters), exported as
        ``pushreport_webhook_outbox_pending{backend}`` and ``…_dead``."""
        pending, dead = self._read(counts)
        return {"webhook_outbox_pending": pending, "webhook_outbox_dead": dead}

    def close(self) -> None:
        """Stop the deliverer (waiting for its sends in flight, at most *timeout*
        seconds), then close like the SQLite backend."""
        deliverer = self.deliverer
        if deliverer is not None:
            deliverer.stop(self.timeout + 1)
        super().close()


def _secret_of(opts: BackendOptions, options: Mapping[str, Any]) -> Secret:
    """``secret``, or the environment variable ``secret_env`` names; never quoted."""
    secret, env = options.get("secret"), options.get("secret_env")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise opts.error("secret", "must be a non-empty string")
    if env is not None and (not isinstance(env, str) or not env):
        raise opts.error("secret_env", "must be the name of an environment variable")
    value = value_or_env(
        secret, env, "secret", error=opts.error, needed_by="the webhook backend (its signing key)"
    )
    assert value is not None  # needed_by: none is an error
    return Secret(value)


def webhook_storage(options: Mapping[str, Any], context: StorageContext) -> WebhookStorage:
    """The factory registered as ``webhook``: :meth:`WebhookStorage.from_options`, with
    ``options_doc`` for the generated configuration reference."""
    return WebhookStorage.from_options(options, context)


webhook_storage.options_doc = OPTIONS_DOC  # type: ignore[attr-defined]
