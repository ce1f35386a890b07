"""Log output of ``pushreport serve``: one text line, or one JSON object per line.

Embedded in another application, pushreport only logs (on ``pushreport`` and
``pushreport.access``); the host's logging configuration decides where and how, and
:class:`JsonFormatter` can be used there like any ``logging.Formatter``.

The access log's record carries its fields as attributes (``remote_addr``, ``method``,
``target``, ``status``, ``shape``, ``selector``, ``latency_ms``), already redacted: the
target with the password and constant secrets masked and tokens shortened, the
selector shortened. A formatter that prints them prints nothing the text line does not.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["JsonFormatter", "TEXT_FORMAT", "LOG_FORMATS", "configure_logging"]

#: The text format of ``pushreport serve``'s log lines.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")

# The attributes every LogRecord has: anything else came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message`` (the
    formatted message), then every attribute given with ``extra=`` (the access log's
    fields), and ``exc_info`` with the traceback when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of *log_format* (``"text"`` or ``"json"``)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")


def configure_logging(*, access_log: bool, log_format: str = "text") -> None:
    """Log to stderr in *log_format* (once per process); turn the access log on or off.

    The handler is added only when the root logger has none, so that a configuration
    done before (by a test, or in the master before the workers fork) stays.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        handler.setFormatter(formatter(log_format))
    logging.getLogger("pushreport.access").setLevel(
        logging.INFO if access_log else logging.WARNING
    )
