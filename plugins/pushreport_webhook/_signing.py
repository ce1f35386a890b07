"""The signature of a webhook request, in one of two schemes (``[storage.webhook]
signature``), each a :class:`Signer`.

``"standard"`` (the default), `Standard Webhooks <https://www.standardwebhooks.com/>`_,
so that receivers verify with its libraries (``standardwebhooks`` on PyPI, npm, …)::

    webhook-id: msg_42
    webhook-timestamp: 1714564800
    webhook-signature: v1,<base64 HMAC-SHA256(key, b"msg_42.1714564800." + body)>

where *key* is the base64-decoded part of the ``whsec_…`` secret.

``"pushreport"``, this project's own, kept for receivers written before::

    X-Pushreport-Timestamp: 1714564800
    X-Pushreport-Signature: sha256=<hex HMAC-SHA256(secret, b"1714564800." + body)>

Either way the timestamp is signed with the body so that a captured request cannot be
replayed later with a fresh timestamp; the receiver refuses old timestamps
(``docs/webhook.md`` has both verification recipes). The id is the outbox event's, the
same on every attempt, so receivers dedupe by it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import ClassVar, Protocol

import attrs

from pushreport_core import Secret

__all__ = [
    "SIGNATURES",
    "DEFAULT_SIGNATURE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_HEADER",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "SECRET_PREFIX",
    "MIN_KEY_BYTES",
    "Signer",
    "StandardSigner",
    "PushreportSigner",
    "make_signer",
    "secret_problem",
    "signature",
    "standard_signature",
    "webhook_id",
    "signed_headers",
    "verify",
]

#: The values of ``[storage.webhook] signature``; the first is the default.
SIGNATURES = ("standard", "pushreport")
DEFAULT_SIGNATURE = SIGNATURES[0]

SIGNATURE_HEADER = "X-Pushreport-Signature"
TIMESTAMP_HEADER = "X-Pushreport-Timestamp"
EVENT_ID_HEADER = "X-Pushreport-Event-Id"
EVENT_HEADER = "X-Pushreport-Event"
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
#: Seconds a receiver should accept a timestamp for (the recipe's default, and the
#: ``standardwebhooks`` library's).
TOLERANCE = 300
#: A Standard Webhooks secret: this prefix, then the base64 of the key.
SECRET_PREFIX = "whsec_"
#: The standard's lower bound for a key ("between 24 bytes (192 bits) and 64 bytes").
MIN_KEY_BYTES = 24


def standard_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_<base64>`` *secret*, or ``None`` when it is not one
    (no prefix, not base64 in the standard alphabet, or fewer than
    :data:`MIN_KEY_BYTES` bytes). The padding may be left out, as the standard's
    libraries allow."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) >= MIN_KEY_BYTES else None


def secret_problem(scheme: str, secret: str, *, scheme_given: bool = True) -> str | None:
    """Why *secret* cannot sign with *scheme*, in words that follow the option's name;
    ``None`` when it can. Never quotes the secret. *scheme_given*: ``signature`` was
    set (when it was not, a secret of the old form gets the upgrade hint)."""
    if scheme == "pushreport":
        return None if secret else "must be a non-empty string"
    if standard_key(secret) is not None:
        return None
    if not secret.startswith(SECRET_PREFIX) and not scheme_given:
        return (
            'is not a Standard Webhooks secret (whsec_...), and signature = "standard" is '
            'the default: set signature = "pushreport" to keep the X-Pushreport-Signature '
            "headers, or use a whsec_ secret (docs/webhook.md, upgrading)"
        )
    return (
        f'must be "{SECRET_PREFIX}" followed by the base64 of at least {MIN_KEY_BYTES} '
        'random bytes for signature = "standard"'
    )


def webhook_id(event_id: int) -> str:
    """The ``webhook-id`` of outbox event *event_id*: the same on every attempt."""
    return f"msg_{event_id}"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``f"{timestamp}."`` followed by *body*
    (the ``"pushreport"`` scheme)."""
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256 of ``f"{msg_id}.{timestamp}."`` followed by
    *body* (Standard Webhooks, *key* already decoded from ``whsec_``)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


class Signer(Protocol):
    """What signs a delivery: the headers that authenticate *body*."""

    #: The ``signature`` option's value for this scheme.
    scheme: ClassVar[str]

    def headers(self, body: bytes, *, timestamp: int, event_id: int) -> dict[str, str]:
        """The signing headers of one attempt, sent at *timestamp* (Unix seconds)."""
        ...


@attrs.frozen
class StandardSigner:
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``."""

    scheme: ClassVar[str] = "standard"
    secret: Secret = attrs.field(repr=False)
    _key: bytes = attrs.field(init=False, repr=False)

    @_key.default
    def _decode(self) -> bytes:
        key = standard_key(self.secret.reveal())
        if key is None:
            # secret_problem's words, never the secret's
            raise ValueError(f"secret {secret_problem(self.scheme, self.secret.reveal())}")
        return key

    def headers(self, body: bytes, *, timestamp: int, event_id: int) -> dict[str, str]:
        msg_id = webhook_id(event_id)
        return {
            WEBHOOK_ID_HEADER: msg_id,
            WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
            WEBHOOK_SIGNATURE_HEADER: standard_signature(self._key, msg_id, timestamp, body),
        }


@attrs.frozen
class PushreportSigner:
    """pushreport's own: ``X-Pushreport-Timestamp``, ``X-Pushreport-Signature``."""

    scheme: ClassVar[str] = "pushreport"
    secret: Secret = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.secret.reveal():
            raise ValueError("secret must be a non-empty string")

    def headers(self, body: bytes, *, timestamp: int, event_id: int) -> dict[str, str]:
        key = self.secret.reveal().encode("utf-8")
        return {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(key, timestamp, body),
        }


_SIGNERS: dict[str, type[StandardSigner] | type[PushreportSigner]] = {
    StandardSigner.scheme: StandardSigner,
    PushreportSigner.scheme: PushreportSigner,
}
assert tuple(_SIGNERS) == SIGNATURES


def make_signer(scheme: str, secret: Secret) -> Signer:
    """The :class:`Signer` of *scheme* (one of :data:`SIGNATURES`) keyed with *secret*.

    :raises ValueError: an unknown scheme, or a secret it cannot use (never quoted).
    """
    try:
        cls = _SIGNERS[scheme]
    except KeyError:
        raise ValueError(
            f"signature must be one of {', '.join(SIGNATURES)}, not {scheme!r}"
        ) from None
    return cls(secret)


def signed_headers(
    signer: Signer, *, timestamp: int, body: bytes, event: str, event_id: int
) -> dict[str, str]:
    """Every header of a delivery but ``User-Agent``: the event's, then the signer's."""
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        EVENT_ID_HEADER: str(event_id),
        **signer.headers(body, timestamp=timestamp, event_id=event_id),
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
    """The receiver's check of the ``"pushreport"`` scheme, for Python receivers and our
    tests: the signature matches (compared in constant time) and the timestamp is at
    most *tolerance* seconds away from *now*. (For ``"standard"``, use the
    ``standardwebhooks`` library.)"""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, sent_at, body), signature_header)
