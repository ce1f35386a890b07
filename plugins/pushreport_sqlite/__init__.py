"""pushreport_sqlite: the built-in SQLite storage backend.

This module is the plugin. It is declared in pushreport's own ``pyproject.toml`` exactly
as a third-party backend would be::

    [project.entry-points.pushreport]
    sqlite = "pushreport_sqlite"

and picked in the configuration by name::

    [storage]
    backends = ["sqlite"]

    [storage.sqlite]
    path = "pushreport.sqlite3"   # relative to the configuration file's folder
    synchronous = "normal"        # or "full": fsync before answering
    busy_timeout = 2.0            # seconds a lock may be waited for, then 503
    spool = true                  # reports are appended to <file>.spool/, applied in batches
    spool_max_bytes = 16777216    # not yet applied past this: 503 until it is

The database is an ordinary SQLite file (WAL mode) with the table ``registrations``,
readable with the ``sqlite3`` shell; ``PRAGMA user_version`` is the schema version.
``<file>.writers`` beside it is an empty file that writers queue on (an ``flock``) for
their turn to write; deleting it is harmless. Every wait for a lock ends after
``busy_timeout``.

The backend is a plain WAL one; with ``spool = true`` (the default) the factory puts
the service's report spool in front of it (:class:`pushreport.spool.SpooledStorage`,
which it offers the capability for: :class:`pushreport.storage.SpoolTarget`).
``<file>.spool/`` then holds the reports answered and not yet applied (do not delete
it while reports wait), and the table ``pushreport_spool`` how far each of its files
is applied, recorded in the transaction that applies them. What the spool does with an
entry it cannot read, and its bound, are in ``docs/spool.md``.
``<file>.limits`` (created only when a ``[limits]`` rate, the lock-out or Digest is in
use) is the limits' shared state (``limit_state()``, ``pushreport.limitstate``):
deleting it while the server is stopped forgets the counts and nothing else.
"""

from __future__ import annotations

from pushreport.hookspecs import hookimpl
from pushreport.storage import MainOption, RegisterStorage

from ._storage import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_PATH,
    SCHEMA_VERSION,
    SYNCHRONOUS,
    SQLiteStorage,
)

__all__ = [
    "SQLiteStorage",
    "SCHEMA_VERSION",
    "DEFAULT_PATH",
    "DEFAULT_BUSY_TIMEOUT",
    "SYNCHRONOUS",
    "pushreport_register_storage",
]


@hookimpl
def pushreport_register_storage(register: RegisterStorage) -> None:
    """Register the ``sqlite`` backend; ``sqlite:PATH`` sets its ``path``."""
    register("sqlite", SQLiteStorage.from_options, main_option=MainOption("path", is_path=True))
