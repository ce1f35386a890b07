"""The signature of a webhook request: HMAC-SHA256 over the timestamp and the body.

::

    X-Pushreport-Timestamp: 1714564800
    X-Pushreport-Signature: sha256=<hex HMAC-SHA256(secret, b"1714564800." + body)>

The timestamp is signed with the body so that a captured request cannot be replayed
later with a fresh timestamp; the receiver refuses old timestamps (``docs/webhook.md``
has the verification recipe).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_HEADER",
    "signature",
    "signed_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Pushreport-Signature"
TIMESTAMP_HEADER = "X-Pushreport-Timestamp"
EVENT_ID_HEADER = "X-Pushreport-Event-Id"
EVENT_HEADER = "X-Pushreport-Event"
#: Seconds a receiver should accept a timestamp for (the recipe's default).
TOLERANCE = 300


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``f"{timestamp}."`` followed by *body*."""
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(
    secret: bytes, *, timestamp: int, body: bytes, event: str, event_id: int
) -> dict[str, str]:
    """Every header of a delivery but ``User-Agent``."""
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        EVENT_ID_HEADER: str(event_id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: bytes,
    *,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE,
) -> bool:
    """The receiver's check, for Python receivers and our tests: the signature matches
    (compared in constant time) and the timestamp is at most *tolerance* seconds away
    from *now*."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, sent_at, body), signature_header)
