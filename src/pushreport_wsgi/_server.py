"""``pushreport serve``: the receiver under gunicorn.

gunicorn is the well-kept pre-fork WSGI server of the Python ecosystem: it passes the
raw request target (``RAW_URI``) so that ``%2F`` inside a token survives, restarts a
crashed worker, and its sync workers are the fastest plain setup measured for this
workload (see ``bench/README.md``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pushreport_core import DEFAULT_SHAPES, Template
from pushreport_core._templates import BODY_METHODS, FORM

from ._app import create_app
from ._config import Config
from ._service import Receiver

__all__ = ["serve", "describe"]

log = logging.getLogger("pushreport")


def describe(receiver: Receiver) -> list[str]:
    """Human-readable lines: which shapes are accepted and which backends are on."""
    shapes = receiver.shapes
    lines = []
    if shapes is DEFAULT_SHAPES:
        lines.append("accepting the default shapes: GET/POST/PUT "
                     + ", ".join(DEFAULT_SHAPES.paths))
    elif isinstance(shapes, Template):
        line = f"accepting {shapes.method} {shapes.path_template}"
        if shapes.post_data and shapes.method in BODY_METHODS:
            line += f" with a {shapes.content_type or FORM} body"
        lines.append(line)
    for backend in receiver.backends:
        where = getattr(backend.storage, "path", None)
        extra = f" at {where}" if where else ""
        kind = "required" if backend.required else "best-effort"
        lines.append(f"storage backend {backend.name!r} ({kind}){extra}")
    return lines


def _configure_logging(access_log: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pushreport.access").setLevel(
        logging.INFO if access_log else logging.WARNING)


def serve(config: Config, *, host: str, port: int, workers: int,
          access_log: bool | None = None) -> int:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    log_access = config.server.access_log if access_log is None else access_log
    _configure_logging(log_access)
    # Check everything once in the master, so a bad configuration fails at start-up
    # instead of in every worker. Workers open their own storage after the fork.
    receiver = Receiver.from_config(config)
    try:
        for line in describe(receiver):
            log.info("%s", line)
        if config.prune.older_than:
            log.info("pruning registrations last seen more than %s ago, every %s",
                     config.prune.older_than, config.prune.interval)
    finally:
        receiver.close()

    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": config.server.threads,
        "worker_class": "gthread" if config.server.threads > 1 else "sync",
        "timeout": config.server.timeout,
        "graceful_timeout": 10,
        "keepalive": 2,
        # Our own access log redacts credentials; gunicorn's would log the raw URL.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "limit_request_line": 8190,
        "proc_name": "pushreport",
        # gunicorn >= 24 opens a control socket at one fixed path per user: two
        # servers on one machine would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            _configure_logging(log_access)
            app = create_app(config)
            # In every worker, after the fork; a lock file elects the one that prunes.
            app.receiver.start_pruning()
            return app

    log.info("pushreport listening on http://%s:%d", host, port)
    Application().run()
    return 0
