"""The push gateway client: the I/O around :mod:`pushreport_core`'s gateway rules.

:class:`PushClient` POSTs the JSON the core builds (:func:`~pushreport_core.build_push`)
with :mod:`urllib.request` from the standard library — one small JSON POST per device
needs no extra dependency — judges each answer with
:func:`~pushreport_core.judge_push_answer`, retries ``retry`` outcomes after a jittered
back-off (honouring a bounded ``Retry-After``), and on ``token_invalid`` makes the
storage forget the token (``forget_token``), so that the next lookup no longer offers it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import attrs

from pushreport_core import (
    DEFAULT_GATEWAY_URL,
    Purpose,
    PushOutcome,
    PushTarget,
    build_push,
    default_verb,
    judge_push_answer,
    parse_retry_after,
    retry_delay,
)

from ._config import Config, PushConfig, load_config
from ._lookup import Lookup
from ._metrics import Metrics, NullMetrics
from ._redact import shorten
from ._service import Receiver
from .outbound import OPENER, OutboundError, post
from .storage import Capabilities, ForgetToken, Storage

__all__ = ["PushClient", "PushResult", "push"]

log = logging.getLogger("pushreport.push")

#: The most of an answer that is read: the gateway answers a small JSON object.
MAX_ANSWER = 64 * 1024


@attrs.frozen(kw_only=True)
class PushResult:
    """What became of one device's push.

    ``outcome`` is the last answer's judgement; ``attempts`` how many requests were
    sent; ``forgotten`` the selectors whose token was removed after a 404.
    """

    target: PushTarget
    outcome: PushOutcome
    attempts: int
    forgotten: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def status(self) -> str:
        """One word: ``delivered``, ``token-removed`` (``token-invalid`` when no storage
        could forget it), ``failed`` or ``gave-up`` (still failing after every attempt)."""
        if self.outcome.kind == "token_invalid":
            return "token-removed" if self.forgotten else "token-invalid"
        return {"delivered": "delivered", "failed": "failed", "retry": "gave-up"}[
            self.outcome.kind
        ]

    def to_json(self) -> dict[str, Any]:
        """What ``pushreport push --json`` prints for this device (the token shortened,
        as in :meth:`line`)."""
        return {
            "selector": self.target.selector,
            "also": list(self.target.also),
            "app_id": self.target.app_id,
            "token": shorten(self.target.device_token, 12),
            "status": self.status,
            "ok": self.ok,
            "attempts": self.attempts,
            "http_status": self.outcome.status,
            "code": self.outcome.code,
            "reason": self.outcome.reason,
            "forgotten": list(self.forgotten),
        }

    def line(self) -> str:
        """The line ``pushreport push`` prints: selector, shortened token, outcome."""
        detail = self.outcome.reason
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        text = (
            f"{self.target.selector}  {shorten(self.target.device_token, 12)}  "
            f"{self.status}  {tries}"
        )
        return f"{text}  {detail}" if detail else text


@attrs.define
class PushClient:
    """Send pushes to the Acrobits JSON gateway, one device at a time.

    :param gateway_url: where to POST (default: the public ``/pnm2/send``).
    :param timeout: seconds to wait for one answer.
    :param attempts: requests per device at most (``retry`` outcomes only).
    :param backoff: seconds before the second request, doubled for each next one.
    :param max_delay: the longest wait between requests (``Retry-After`` is cut to it).
    :param storages: where a token the gateway calls invalid is forgotten (each one
        that declares ``forget_token``; read when the client is made).
    :param rng: the jitter's randomness; :param sleep: how to wait (tests pass their own).
    :param metrics: counts each device's push by its outcome (``pushreport_pushes_total``).
    """

    gateway_url: str = DEFAULT_GATEWAY_URL
    timeout: float = 10.0
    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    backoff: float = 0.5
    max_delay: float = 30.0
    storages: Sequence[Storage] = ()
    rng: random.Random = attrs.field(factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    opener: urllib.request.OpenerDirector = OPENER
    metrics: Metrics = attrs.field(factory=NullMetrics)
    #: Each storage's name and bound ``forget_token`` (``None``: it declares none).
    _forgetters: tuple[tuple[str, ForgetToken | None], ...] = attrs.field(
        init=False, default=(), repr=False
    )

    def __attrs_post_init__(self) -> None:
        self._forgetters = tuple(
            (storage.name, Capabilities.of(storage).forget_token) for storage in self.storages
        )

    @classmethod
    def from_config(
        cls, config: PushConfig, *, storages: Sequence[Storage] = (), **kwargs: Any
    ) -> PushClient:
        return cls(
            gateway_url=config.gateway_url,
            timeout=config.timeout,
            attempts=config.attempts,
            backoff=config.backoff,
            max_delay=config.max_delay,
            storages=storages,
            **kwargs,
        )

    def send(
        self,
        target: PushTarget,
        *,
        verb: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> PushResult:
        """Push *target*; retry while the gateway says so; return what became of it.

        *verb* defaults to :func:`~pushreport_core.default_verb` for the target's
        purpose; *fields* are the gateway's optional fields (``badge=``, ``sound=``, ...).
        Raises :class:`~pushreport_core.InvalidPush` before sending anything when the
        push cannot be built (never a request without a ``DeviceToken``).
        """
        body = build_push(
            target, verb or default_verb(target.purpose, message), message=message, **fields
        )
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            outcome, retry_after = self._post(data)
            if outcome.kind != "retry" or attempt >= self.attempts:
                break
            delay = retry_delay(
                attempt,
                base=self.backoff,
                cap=self.max_delay,
                rng=self.rng,
                retry_after=retry_after,
            )
            log.info("push to %s: %s; retrying in %.1fs", target.selector, outcome.reason, delay)
            self.sleep(delay)
        self.metrics.push_done(outcome.kind)
        forgotten: tuple[str, ...] = ()
        if outcome.kind == "token_invalid":
            forgotten = self._forget(target)
        log.info(
            "push to %s (%s): %s after %d attempt(s)",
            target.selector,
            shorten(target.device_token),
            outcome.kind,
            attempt,
        )
        return PushResult(target=target, outcome=outcome, attempts=attempt, forgotten=forgotten)

    def send_all(self, targets: Iterable[PushTarget], **kwargs: Any) -> list[PushResult]:
        return [self.send(target, **kwargs) for target in targets]

    def _post(self, data: bytes) -> tuple[PushOutcome, float | None]:
        try:
            answer = post(
                self.gateway_url,
                data,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=self.timeout,
                max_answer=MAX_ANSWER,
                opener=self.opener,
            )
        except OutboundError as e:
            return judge_push_answer(None, error=e.reason), None
        headers = answer.headers
        retry_after = parse_retry_after(
            headers.get("Retry-After") if headers else None, now=datetime.now(timezone.utc)
        )
        return judge_push_answer(answer.status, answer.body), retry_after

    def _forget(self, target: PushTarget) -> tuple[str, ...]:
        changed: set[str] = set()
        for name, forget in self._forgetters:
            if forget is None:
                log.warning(
                    "storage %r cannot forget tokens: the invalid token of %s stays",
                    name,
                    target.selector,
                )
                continue
            for selector in target.selectors:
                try:
                    changed.update(forget(target.device_token, selector=selector))
                except Exception:
                    log.exception("forgetting the invalid token of %s failed", selector)
        return tuple(sorted(changed))


def push(
    config_or_receiver: Receiver | Config | str | os.PathLike[str] | None = None,
    *,
    username: str,
    purpose: Purpose = "message",
    message: str | None = None,
    verb: str | None = None,
    client: PushClient | None = None,
    **fields: Any,
) -> list[PushResult]:
    """Push every device of *username* for *purpose*; one :class:`PushResult` each.

    *config_or_receiver*: a :class:`Receiver` (its storage is used and left open), a
    :class:`Config`, a configuration file's path, or ``None`` (the embedded default).
    *client* overrides the one built from ``[push]``. An account without a device to
    push returns ``[]``. Each push is counted in the receiver's metrics (a *client*
    that has metrics of its own keeps them).
    """
    if isinstance(config_or_receiver, Receiver):
        receiver, owned = config_or_receiver, False
    else:
        if config_or_receiver is None:
            config = Config()
        elif isinstance(config_or_receiver, Config):
            config = config_or_receiver
        else:
            config = load_config(config_or_receiver)
        receiver, owned = Receiver.from_config(config, serving=False), True
    try:
        storages = [backend.storage for backend in receiver.backends]
        if client is None:
            client = PushClient.from_config(
                receiver.config.push, storages=storages, metrics=receiver.metrics
            )
        else:
            if not client.storages:
                client = attrs.evolve(client, storages=storages)
            if not client.metrics.enabled:
                client = attrs.evolve(client, metrics=receiver.metrics)
        targets = Lookup(receiver.storage).push_targets(username, purpose)
        return client.send_all(targets, verb=verb, message=message, **fields)
    finally:
        if owned:
            receiver.close()
