"""Aggregates over stored registrations, for ``pushreport stats``: pure, one pass.

:class:`RegistrationStats` takes registrations one by one (``add``), so that a million
of them stream through it without a list; its memory is bounded by the distinct app
ids and app versions it keeps (at most *max_keys* each, the rest counted as
``"(other)"``).

Heuristics, documented because they are guesses from the token's shape alone:

- **APNs**: 64 hexadecimal characters (Apple's device token, 32 bytes, as most servers
  print it), or base64 of exactly 32 bytes (how the Acrobits app reports it: "a base64 -
  encoded string").
- **FCM**: a registration token ``<instance id>:<rest>`` of URL-safe base64 characters
  and at least 100 characters, or a legacy GCM id (starting ``APA91b``); also when the
  base64 text decodes to one of those.
- otherwise **unknown**. A registration's platform is that of its tokens: ``mixed`` when
  its two tokens disagree, ``none`` when it has no token.
- **App version**: the first ``product/version`` of the user agent (``Cloud
  Softphone/2.3.4 (iPhone; iOS 17.1)`` → ``Cloud Softphone/2.3.4``), or a product name
  followed by a dotted version (``Acrobits Softphone 5.1``); ``(unknown)`` when neither
  is there, ``(none)`` without a user agent.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import attrs

from ._values import Registration, format_time

__all__ = [
    "RegistrationStats",
    "token_platform",
    "registration_platform",
    "app_version",
    "age_bucket",
    "AGE_BUCKETS",
    "PLATFORMS",
    "NONE",
    "UNKNOWN",
    "OTHER",
]

#: ``(label, upper bound)`` of the age of the last report, in order.
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("<1d", timedelta(days=1)),
    ("<7d", timedelta(days=7)),
    ("<30d", timedelta(days=30)),
    ("<90d", timedelta(days=90)),
    ("older", None),
)
PLATFORMS = ("apns", "fcm", "mixed", "unknown", "none")
NONE, UNKNOWN, OTHER = "(none)", "(unknown)", "(other)"

_HEX64 = re.compile(r"[0-9A-Fa-f]{64}\Z")
_FCM = re.compile(r"[A-Za-z0-9_-]+:[A-Za-z0-9_-]+\Z")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}\Z")
_UA_SLASH = re.compile(r"\s*([A-Za-z][\w .+-]*?)\s*/\s*[vV]?(\d[\w.+-]*)")
_UA_SPACE = re.compile(r"\s*([A-Za-z][\w .+-]*?)\s+[vV]?(\d+(?:\.\d+)+)\b")


def _plain_shape(token: str) -> str | None:
    if _HEX64.match(token):
        return "apns"
    if token.startswith("APA91b") or (len(token) >= 100 and _FCM.match(token)):
        return "fcm"
    return None


def token_platform(token: str) -> str:
    """``"apns"``, ``"fcm"`` or ``"unknown"``, from the token's shape alone."""
    token = token.strip()
    shape = _plain_shape(token)
    if shape is not None or not _BASE64.match(token):
        return shape or "unknown"
    padded = token.replace("-", "+").replace("_", "/")
    padded += "=" * (-len(padded) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return "unknown"
    if len(raw) == 32:
        return "apns"
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "unknown"
    return _plain_shape(text) or "unknown"


def registration_platform(registration: Registration) -> str:
    """One of :data:`PLATFORMS`: what the registration's tokens say together."""
    tokens = [t for t in (registration.token_calls, registration.token_msgs) if t]
    if not tokens:
        return "none"
    known = {token_platform(t) for t in tokens} - {"unknown"}
    if not known:
        return "unknown"
    return known.pop() if len(known) == 1 else "mixed"


def app_version(user_agent: str | None) -> str:
    """``product/version`` from a user agent, ``(unknown)`` or ``(none)``."""
    if not user_agent or not user_agent.strip():
        return NONE
    m = _UA_SLASH.match(user_agent) or _UA_SPACE.match(user_agent)
    if m is None:
        return UNKNOWN
    return f"{' '.join(m.group(1).split())}/{m.group(2).rstrip('.+-')}"


def age_bucket(last_seen: datetime, now: datetime) -> str:
    """The label of :data:`AGE_BUCKETS` for a last report at *last_seen*."""
    age = now - last_seen
    for label, bound in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    raise AssertionError("the last bucket has no bound")  # pragma: no cover


def _bounded(counter: Counter[str], key: str, max_keys: int) -> None:
    if key in counter or len(counter) < max_keys:
        counter[key] += 1
    else:
        counter[OTHER] += 1


@attrs.define
class RegistrationStats:
    """Counts over registrations, added one at a time; ``now`` dates the ages."""

    now: datetime
    max_keys: int = 1000
    registrations: int = 0
    app_ids_calls: Counter[str] = attrs.field(factory=Counter)
    app_ids_msgs: Counter[str] = attrs.field(factory=Counter)
    platforms: Counter[str] = attrs.field(factory=Counter)
    app_versions: Counter[str] = attrs.field(factory=Counter)
    ages: Counter[str] = attrs.field(factory=Counter)

    def add(self, registration: Registration) -> None:
        self.registrations += 1
        _bounded(self.app_ids_calls, registration.appid_calls or NONE, self.max_keys)
        _bounded(self.app_ids_msgs, registration.appid_msgs or NONE, self.max_keys)
        self.platforms[registration_platform(registration)] += 1
        _bounded(self.app_versions, app_version(registration.user_agent), self.max_keys)
        self.ages[age_bucket(registration.last_seen, self.now)] += 1

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object; counts by key, the largest first, fixed keys in order."""

        def ranked(counter: Counter[str]) -> dict[str, int]:
            return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

        return {
            "registrations": self.registrations,
            "now": format_time(self.now),
            "last_report_age": {label: self.ages[label] for label, _ in AGE_BUCKETS},
            "platforms": {p: self.platforms[p] for p in PLATFORMS},
            "app_ids": {"calls": ranked(self.app_ids_calls), "msgs": ranked(self.app_ids_msgs)},
            "app_versions": ranked(self.app_versions),
        }
