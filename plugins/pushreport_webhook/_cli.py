"""``pushreport outbox``: the webhook backend's pending and dead events, and their
replay; a command the plugin adds through ``pushreport_add_commands``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

from pushreport import Config
from pushreport.hookspecs import AddCommand
from pushreport.storage import BackendOptions, StorageContext
from pushreport_core import StorageUnavailable, format_time

from ._outbox import DeadEvent, Event, dead_events, pending_events, replay_dead
from ._storage import OPTIONS, WebhookStorage, outbox_file

__all__ = ["run_outbox", "open_outbox", "add_outbox_command"]


def add_outbox_command(add_command: AddCommand) -> None:
    """``pushreport outbox [--json] [--replay-dead [--id N]]``."""
    command = add_command(
        "outbox",
        _run,
        help="show the webhook backend's pending and dead events; replay dead ones",
    )
    command.add_argument(
        "--json", action="store_true", help="print a JSON object with the pending and dead events"
    )
    command.add_argument(
        "--replay-dead",
        action="store_true",
        help="move the dead events back to the outbox, to be delivered again",
    )
    command.add_argument(
        "--id", type=int, metavar="N", help="with --replay-dead: only the dead event with this id"
    )


def _run(config: Config, args: argparse.Namespace) -> int:
    return run_outbox(config, as_json=args.json, replay=args.replay_dead, event_id=args.id)


def open_outbox(config: Config) -> WebhookStorage:
    """The outbox ``[storage.webhook]`` names, opened without a deliverer.

    Needs neither the URL nor the secret (``secret_env`` may be unset where an operator
    runs this command).

    :raises LookupError: no webhook backend is configured; the message is the one
        the command prints. (Nothing is opened yet: :meth:`WebhookStorage.open` says
        when the outbox file does not exist or cannot be read.)
    """
    if "webhook" not in config.storage.backends:
        raise LookupError("no webhook backend in storage.backends")
    options = config.storage.options_for("webhook")
    options.pop("required", None)
    opts = BackendOptions("webhook", options, OPTIONS)
    context = StorageContext(base_dir=config.base_dir, create=False)
    return WebhookStorage(**outbox_file(opts, context), deliver=False)


def _when(seconds: float) -> str | None:
    if not seconds:
        return None
    return format_time(datetime.fromtimestamp(seconds, timezone.utc))


def _pending_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.event,
        "selector": event.selector,
        "occurred_at": event.occurred_at,
        "attempts": event.attempts,
        "next_attempt_at": _when(event.next_attempt_at),
        "last_error": event.last_error,
        "registration": dict(event.registration),
    }


def _dead_json(event: DeadEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.event,
        "selector": event.selector,
        "occurred_at": event.occurred_at,
        "attempts": event.attempts,
        "failed_at": _when(event.failed_at),
        "last_error": event.last_error,
        "registration": dict(event.registration),
    }


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)


def _short(text: str | None) -> str:
    return "-" if text is None else text[:19].replace("T", " ")


def run_outbox(
    config: Config,
    *,
    as_json: bool = False,
    replay: bool = False,
    event_id: int | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The ``outbox`` command; its exit status (1: no dead event with that id; 2: no
    outbox, or it cannot be read)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if event_id is not None and not replay:
        print("pushreport: outbox: --id needs --replay-dead", file=err)
        return 2
    try:
        storage = open_outbox(config)
    except LookupError as e:
        print(f"pushreport: outbox: {e.args[0]}", file=err)
        return 2
    try:
        storage.open()
        if replay:
            moved = storage._transaction(lambda conn: replay_dead(conn, event_id))
            if event_id is not None and moved == 0:
                print(f"pushreport: outbox: no dead event with id {event_id}", file=err)
                return 1
            print(f"replayed {moved} dead event{'' if moved == 1 else 's'}", file=out)
            return 0
        pending, dead = storage._read(lambda conn: (pending_events(conn), dead_events(conn)))
    except StorageUnavailable as e:
        print(f"pushreport: outbox: {e}", file=err)
        return 2
    finally:
        storage.close()
    if as_json:
        json.dump(
            {
                "outbox": str(storage.path),
                "pending": [_pending_json(e) for e in pending],
                "dead": [_dead_json(e) for e in dead],
            },
            out,
            ensure_ascii=False,
            indent=2,
        )
        out.write("\n")
        return 0
    print(f"outbox {storage.path}: {len(pending)} pending, {len(dead)} dead", file=out)
    if pending:
        print("pending:", file=out)
        _table(
            [("ID", "EVENT", "SELECTOR", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR")]
            + [
                (
                    str(e.id),
                    e.event,
                    e.selector,
                    str(e.attempts),
                    _short(_when(e.next_attempt_at)) if e.attempts else "now",
                    e.last_error or "-",
                )
                for e in pending
            ],
            out,
        )
    if dead:
        print("dead:", file=out)
        _table(
            [("ID", "EVENT", "SELECTOR", "ATTEMPTS", "FAILED AT", "LAST ERROR")]
            + [
                (
                    str(e.id),
                    e.event,
                    e.selector,
                    str(e.attempts),
                    _short(_when(e.failed_at)),
                    e.last_error,
                )
                for e in dead
            ],
            out,
        )
    return 0
