"""Pushing through the Acrobits push gateway, sans-IO: whom to push, what to send, and
what the answer means.

- :func:`push_targets` picks, from the stored registrations of one account, the
  ``(AppId, DeviceToken, Selector)`` triples to push: "the app uses two application ID /
  push token pairs. One for pushkit pushes which are now only allowed for notifying
  incoming calls [...] The other for remote-notification pushes which should be used for
  all other scenarios" (the gateway's documentation). A registration that lacks the
  token or the app id of the pair is skipped: never push without a ``DeviceToken``.
- :func:`build_push` is the JSON object ``POST``\\ ed to ``/pnm2/send``.
- :func:`judge_push_answer` turns the gateway's answer into a :class:`PushOutcome`: "the
  return value for a properly formatted input is a HTTP 2xx response with JSON object"
  whose ``code`` is 200 when accepted; a 404 (``code`` or HTTP status) means the token is
  no longer valid and is to be dropped.
- :func:`retry_delay` is the back-off between attempts (:func:`backoff`: exponential,
  jittered by a ``random.Random`` handed in; it never reads a clock and never sleeps).

No socket, no clock: :class:`pushreport.PushClient` does the I/O.
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Iterable, Literal

import attrs

from ._errors import PushReportError
from ._values import Purpose, Registration

__all__ = [
    "DEFAULT_GATEWAY_URL",
    "PUSH_VERBS",
    "PushVerb",
    "PushTarget",
    "PushOutcome",
    "OutcomeKind",
    "InvalidPush",
    "push_targets",
    "build_push",
    "default_verb",
    "judge_push_answer",
    "backoff",
    "retry_delay",
    "parse_retry_after",
]

#: The gateway's JSON address ("To send a single push, use the address ...").
DEFAULT_GATEWAY_URL = "https://pnm.cloudsoftphone.com/pnm2/send"

PushVerb = Literal["NotifyTextMessage", "NotifyGenericTextMessage"]
#: The verbs the gateway documents: ``NotifyTextMessage`` tells the app that new messages
#: wait to be fetched (needs ``Selector``); ``NotifyGenericTextMessage`` shows ``Message``.
PUSH_VERBS: tuple[PushVerb, ...] = ("NotifyTextMessage", "NotifyGenericTextMessage")

OutcomeKind = Literal["delivered", "token_invalid", "retry", "failed"]

# Optional fields of the gateway, by the keyword build_push takes them as.
_OPTIONAL_FIELDS = {
    "badge": "Badge",
    "sound": "Sound",
    "user_name": "UserName",
    "user_display_name": "UserDisplayName",
    "content_type": "ContentType",
    "id": "Id",
    "thread_id": "ThreadId",
}


class InvalidPush(PushReportError):
    """A push that must not be sent as asked (no ``DeviceToken``, an unknown verb, a
    ``NotifyGenericTextMessage`` without a message): the caller's fault."""

    error_status_hint = 400


@attrs.frozen(kw_only=True)
class PushTarget:
    """One device to push: the pair of the purpose and the registration it came from.

    ``also`` names the other selectors of the same account that hold the very same pair
    (one device, the account added twice): they share this push, and an invalid-token
    answer concerns them too.
    """

    app_id: str
    device_token: str
    selector: str
    username: str | None = None
    purpose: Purpose = "message"
    also: tuple[str, ...] = ()

    @property
    def selectors(self) -> tuple[str, ...]:
        """Every selector this push stands for, ``selector`` first."""
        return (self.selector, *self.also)

    def to_json(self) -> dict[str, str]:
        """The triple in the gateway's own spelling: ready to put into a push."""
        return {"AppId": self.app_id, "DeviceToken": self.device_token, "Selector": self.selector}


def push_targets(
    registrations: Iterable[Registration], purpose: Purpose, *, username: str | None = None
) -> list[PushTarget]:
    """The devices to push for *purpose* (``"call"``: the PushKit pair; ``"message"``:
    the other pair), one target per distinct ``(app id, token)``, by selector.

    Registrations without the pair's token or app id are skipped. When *username* is
    given, registrations of any other username are skipped too (whatever a backend's
    lookup returned). Two registrations holding the same pair are one device: the most
    recently seen one is the target, the others are in its ``also``.
    """
    if purpose not in ("call", "message"):
        raise ValueError(f"purpose must be 'call' or 'message', not {purpose!r}")
    by_pair: dict[tuple[str, str], list[Registration]] = {}
    for registration in registrations:
        if username is not None and registration.username != username:
            continue
        pair = registration.pair(purpose)
        if pair is None or not pair.token or not pair.app_id:
            continue
        by_pair.setdefault((pair.app_id, pair.token), []).append(registration)
    targets = []
    for (app_id, token), holders in by_pair.items():
        holders.sort(key=lambda r: (r.last_seen, r.selector), reverse=True)
        first = holders[0]
        targets.append(
            PushTarget(
                app_id=app_id,
                device_token=token,
                selector=first.selector,
                username=first.username,
                purpose=purpose,
                also=tuple(sorted(r.selector for r in holders[1:])),
            )
        )
    targets.sort(key=lambda t: t.selector)
    return targets


def default_verb(purpose: Purpose, message: str | None) -> PushVerb:
    """The verb to use when the caller names none.

    A call goes out as ``NotifyTextMessage`` through the PushKit pair: the gateway
    documents no call verb, the PushKit app id is what makes it a VoIP push, and this
    verb carries the ``Selector`` that tells the app which account to bring up. A
    message with a text is shown as is (``NotifyGenericTextMessage``); without one the
    app is told to fetch its new messages (``NotifyTextMessage``).
    """
    if purpose == "call" or not message:
        return "NotifyTextMessage"
    return "NotifyGenericTextMessage"


def build_push(
    target: PushTarget, verb: str, *, message: str | None = None, **optional: str | int | None
) -> dict[str, Any]:
    """The JSON object to send for *target*.

    *optional* takes the gateway's optional fields by keyword: ``badge``, ``sound``,
    ``user_name``, ``user_display_name``, ``content_type``, ``id``, ``thread_id``
    (``None`` leaves one out). Raises :class:`InvalidPush` rather than build a push
    without ``DeviceToken``, ``AppId`` or (for ``NotifyTextMessage``) ``Selector``.
    """
    if verb not in PUSH_VERBS:
        raise InvalidPush(f"unknown verb {verb!r} (expected one of: {', '.join(PUSH_VERBS)})")
    if not target.device_token:
        raise InvalidPush("a push needs a DeviceToken")
    if not target.app_id:
        raise InvalidPush("a push needs an AppId")
    if verb == "NotifyTextMessage" and not target.selector:
        raise InvalidPush("NotifyTextMessage needs a Selector")
    if verb == "NotifyGenericTextMessage" and not message:
        raise InvalidPush("NotifyGenericTextMessage needs a message")
    body: dict[str, Any] = {
        "verb": verb,
        "AppId": target.app_id,
        "DeviceToken": target.device_token,
    }
    if target.selector:
        body["Selector"] = target.selector
    if message:
        body["Message"] = message
    for key, value in optional.items():
        field = _OPTIONAL_FIELDS.get(key)
        if field is None:
            raise TypeError(f"build_push() got an unexpected keyword argument {key!r}")
        if value is not None:
            body[field] = value
    return body


@attrs.frozen(kw_only=True)
class PushOutcome:
    """What one answer of the gateway means.

    ``kind``: ``delivered`` (accepted), ``token_invalid`` (404: drop the token),
    ``retry`` (5xx, 429, no answer, an answer that cannot be read: try again later) or
    ``failed`` (any other refusal: retrying would not help). ``status`` is the HTTP
    status (``None`` without an answer), ``code`` the JSON ``code`` when there is one.
    """

    kind: OutcomeKind
    status: int | None = None
    code: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "delivered"


def judge_push_answer(
    status: int | None, body: bytes = b"", *, error: str | None = None
) -> PushOutcome:
    """Judge the gateway's answer: HTTP *status* and *body* (``status=None`` when no
    answer came; *error* says why: a timeout, a refused connection)."""
    if status is None:
        return PushOutcome(kind="retry", reason=f"no answer: {error}" if error else "no answer")
    code = _json_code(body)
    if status == 404 or code == 404:
        return PushOutcome(
            kind="token_invalid", status=status, code=code, reason="token is no longer valid"
        )
    if status == 429 or status >= 500:
        return PushOutcome(kind="retry", status=status, code=code, reason=f"HTTP {status}")
    if not 200 <= status < 300:
        return PushOutcome(kind="failed", status=status, code=code, reason=f"HTTP {status}")
    if code is None:
        return PushOutcome(kind="retry", status=status, reason="answer without a JSON code")
    if 200 <= code < 300:
        return PushOutcome(kind="delivered", status=status, code=code)
    if code == 429 or code >= 500:
        return PushOutcome(kind="retry", status=status, code=code, reason=f"code {code}")
    return PushOutcome(kind="failed", status=status, code=code, reason=f"code {code}")


def _json_code(body: bytes) -> int | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    code = data.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    return code if isinstance(code, int) else None


def backoff(
    failures: int, *, base: float, cap: float, rng: random.Random, jitter: float = 0.5
) -> float:
    """Seconds to wait after *failures* failures in a row: exponential (*base*, 2 *base*,
    4 *base*, ... up to *cap*), of which a random part, up to the fraction *jitter*, is
    dropped, so that clients that failed together do not come back together. 0.5 is
    "equal jitter" (at least half the step), 1 "full jitter" (anywhere below it).

    The one back-off formula: pushes (:func:`retry_delay`) and the webhook's deliveries
    use it. *rng* is handed in: no clock, no global randomness.
    """
    step = min(cap, base * 2.0 ** min(failures - 1, 62))
    return step * (1.0 - jitter) + rng.uniform(0.0, step * jitter)


def retry_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait before attempt *attempt* + 1 (*attempt* counts from 1).

    :func:`backoff` with "equal jitter": a random half of the step is dropped. A
    server's ``Retry-After`` is honoured when longer, bounded by *cap*.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    delay = backoff(attempt, base=base, cap=cap, rng=rng)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, cap)
    return max(0.0, min(delay, cap))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds, or an HTTP date when *now*
    is given. ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
