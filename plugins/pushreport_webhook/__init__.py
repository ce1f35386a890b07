"""pushreport_webhook: forward every registration change to a webhook, through a
durable outbox.

Declared in pushreport's own ``pyproject.toml`` exactly as a third-party backend would
be::

    [project.entry-points.pushreport]
    webhook = "pushreport_webhook"

and picked in the configuration by name, alone or after another backend::

    [storage]
    backends = ["sqlite", "webhook"]

    [storage.webhook]
    url = "https://portal.example.com/hooks/pushreport"
    secret_env = "PUSHREPORT_WEBHOOK_SECRET"   # or secret = "whsec_..."
    outbox = "pushreport-outbox.sqlite3"       # relative to the configuration's folder

The registrations and the events live in one SQLite file of the plugin's own (it uses
no other plugin). A report is acknowledged once its registration and its event are
committed to the outbox (one SQLite transaction), not once the webhook answered; a
background thread delivers the events, signed (Standard Webhooks' ``webhook-signature``
by default, or ``X-Pushreport-Signature`` with ``signature = "pushreport"``), in order
per selector, with retries, and moves an event that keeps failing to the dead letters.
``pushreport outbox``, a command this plugin adds (``pushreport_add_commands``), shows
and replays them. ``docs/webhook.md`` is the receiver's
side: the JSON, the headers and the verification recipe.
"""

from __future__ import annotations

from pushreport.hookspecs import AddCommand, hookimpl
from pushreport.storage import RegisterStorage

from ._cli import add_outbox_command
from ._deliver import USER_AGENT, Deliverer, DeliverySettings, backoff_delay, post
from ._outbox import REMOVED, UPDATED, DeadEvent, Event, event_body
from ._signing import (
    DEFAULT_SIGNATURE,
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SIGNATURES,
    TIMESTAMP_HEADER,
    TOLERANCE,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
    PushreportSigner,
    Signer,
    StandardSigner,
    make_signer,
    secret_problem,
    signature,
    standard_signature,
    verify,
    webhook_id,
)
from ._storage import DEFAULT_OUTBOX, OPTIONS, OPTIONS_DOC, WebhookStorage, webhook_storage

__all__ = [
    "WebhookStorage",
    "Deliverer",
    "DeliverySettings",
    "Event",
    "DeadEvent",
    "UPDATED",
    "REMOVED",
    "DEFAULT_OUTBOX",
    "OPTIONS",
    "OPTIONS_DOC",
    "webhook_storage",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_HEADER",
    "TOLERANCE",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "SIGNATURES",
    "DEFAULT_SIGNATURE",
    "Signer",
    "StandardSigner",
    "PushreportSigner",
    "make_signer",
    "secret_problem",
    "standard_signature",
    "webhook_id",
    "USER_AGENT",
    "signature",
    "verify",
    "event_body",
    "backoff_delay",
    "post",
    "pushreport_register_storage",
    "pushreport_add_commands",
]


@hookimpl
def pushreport_register_storage(register: RegisterStorage) -> None:
    """Register the ``webhook`` backend."""
    # The URL too: its path or query may carry a token, so it is never logged either.
    register("webhook", webhook_storage, secret_options=("secret", "url"))


@hookimpl
def pushreport_add_commands(add_command: AddCommand) -> None:
    """Add ``pushreport outbox``: the pending and dead events, and their replay."""
    add_outbox_command(add_command)
