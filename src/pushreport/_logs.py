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
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Hashable

__all__ = [
    "JsonFormatter",
    "TEXT_FORMAT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "level_number",
    "configure_logging",
    "ThrottledLog",
    "THROTTLE_INTERVAL",
]

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


#: The levels of ``--log-level``, least severe first.
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    *, access_log: bool, log_format: str = "text", level: str | None = None
) -> None:
    """Log to stderr in *log_format* (once per process); turn the access log on or off.

    *level* (``--log-level``, one of :data:`LOG_LEVELS`; default ``info``) is the
    least severe line written, and it wins over *access_log*: the access log's lines
    are ``info``, so above that there are none.

    The handler is added only when the root logger has none, so that a configuration
    done before (by a test, or in the master before the workers fork) stays.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        handler.setFormatter(formatter(log_format))
    threshold = logging.INFO
    if level is not None:
        threshold = level_number(level)
        root.setLevel(threshold)
    logging.getLogger("pushreport.access").setLevel(
        max(logging.INFO, threshold) if access_log else max(logging.WARNING, threshold)
    )


def level_number(level: str) -> int:
    """The :mod:`logging` level of one of :data:`LOG_LEVELS` (any case)."""
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    return int(getattr(logging, name.upper()))


#: Seconds between two lines of one repeated failure (:class:`ThrottledLog`).
THROTTLE_INTERVAL = 60.0


class ThrottledLog:
    """A logger for failures that repeat: one line per *interval* and key, with a count.

    The first occurrence of a key is logged at once. Later ones are counted, and the
    first one *interval* seconds or more after the last line logged is logged with
    the count of those left out: ``"... (17 more times in the last 60 s)"``. A
    storage that fails every request then logs one line a minute per process, not one
    per request. Thread-safe; the key is the formatted message unless given.

    ::

        failures = ThrottledLog(logging.getLogger("pushreport.mybackend"))
        failures.warning("cannot reach %s: %s", host, reason)
    """

    #: Keys remembered at most; the one unseen longest is forgotten first.
    MAX_KEYS = 256

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = THROTTLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (when its last line was logged, occurrences left out since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def log(
        self,
        level: int,
        msg: str,
        *args: Any,
        key: Hashable = None,
        exc_info: Any = None,
    ) -> bool:
        """Log *msg* % *args* at *level* unless its key was logged less than
        *interval* seconds ago; then only count it. Whether a line was logged."""
        return self._log(level, msg, args, key, exc_info)

    def warning(self, msg: str, *args: Any, key: Hashable = None) -> bool:
        return self._log(logging.WARNING, msg, args, key, None)

    def error(self, msg: str, *args: Any, key: Hashable = None, exc_info: Any = None) -> bool:
        return self._log(logging.ERROR, msg, args, key, exc_info)

    def _log(
        self, level: int, msg: str, args: tuple[Any, ...], key: Hashable, exc_info: Any
    ) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        if key is None:
            key = msg % args if args else msg
        now = self._clock()
        with self._lock:
            last = self._seen.pop(key, None)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen[key] = (now, 0)
            while len(self._seen) > self.MAX_KEYS:
                del self._seen[next(iter(self._seen))]
        if last is not None and last[1]:
            msg = f"{msg} (%d more times in the last %d s)"
            args = (*args, last[1], round(now - last[0]))
        # stacklevel: the record names the caller of log(), warning() or error().
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=3)
        return True

    def forget(self, key: Hashable) -> int:
        """Forget *key* (its failure is over): its next occurrence is logged at once.
        Returns how many occurrences were left out since its last line."""
        with self._lock:
            last = self._seen.pop(key, None)
        return 0 if last is None else last[1]
