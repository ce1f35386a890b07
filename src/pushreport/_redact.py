"""Keep credentials out of the server's own log lines.

Request targets are redacted by the core (:func:`pushreport_core.redact_target`, derived
from the parser); :func:`shorten` is re-exported for the modules that import it from
here. What is left is gunicorn's error log: it quotes what it could not parse.
"""

from __future__ import annotations

import logging
import re

from pushreport_core import redact_target, shorten

__all__ = ["redact_target", "shorten", "ServerLogFilter", "filter_server_log"]

# gunicorn's "Invalid request from ip=…: Invalid HTTP request line: 'GET /t?pw=… x'",
# and the like for a header, a version, the bytes before the connection ended.
_QUOTED = re.compile(r":\s*b?['\"(]")


class ServerLogFilter(logging.Filter):
    """Cuts what gunicorn's error log quotes of a request it refused (the raw request
    line, a header, leftover bytes: a password or a secret may be among them), keeping
    the client and the reason; redacts the target of a request that failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not isinstance(msg, str):
            return True
        if msg.startswith("Invalid request from "):
            message = record.getMessage()
            cut = _QUOTED.search(message, message.find(": ") + 1)
            if cut is not None:
                record.msg, record.args = message[: cut.start()], ()
        elif msg.startswith("Error handling request ") and isinstance(record.args, tuple):
            record.args = tuple(
                redact_target(a) if isinstance(a, str) and a.startswith("/") else a
                for a in record.args
            )
        return True


def filter_server_log() -> None:
    """Put :class:`ServerLogFilter` on gunicorn's error logger (once per process)."""
    logger = logging.getLogger("gunicorn.error")
    if not any(isinstance(f, ServerLogFilter) for f in logger.filters):
        logger.addFilter(ServerLogFilter())
