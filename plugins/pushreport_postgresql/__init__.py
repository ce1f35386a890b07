"""pushreport_postgresql: the built-in PostgreSQL storage backend.

This module is the plugin. It is declared in pushreport's own ``pyproject.toml`` exactly
as a third-party backend would be::

    [project.entry-points.pushreport]
    postgresql = "pushreport_postgresql"

and picked in the configuration by name (install ``pushreport[postgresql]``)::

    [storage]
    backends = ["postgresql"]

    [storage.postgresql]
    dsn = "postgresql://pushreport@db.example.com/pushreport"  # else $PUSHREPORT_DATABASE_URL
    pool_min = 1                        # connections kept open per worker process
    pool_max = 4                        # at most, per worker process
    timeout = 2.0                       # seconds for a connection, a lock or a statement, then 503
    table = "pushreport_registrations"

Several hosts may share one database: the merge rule runs inside PostgreSQL, in one
``INSERT … ON CONFLICT DO UPDATE`` per report, so no host erases a token another stored.
The ``[limits]`` and Digest nonce counts of every host are kept in the table
``<table>_limits`` beside it (``limit_state()``, ``pushreport.limitstate``), so the
hosts count together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from pushreport.hookspecs import hookimpl
from pushreport.storage import MainOption, RegisterStorage, Storage, StorageContext
from pushreport_core import ConfigurationError

from ._options import OPTIONS_DOC

if TYPE_CHECKING:
    from ._storage import (
        DEFAULT_POOL_MAX,
        DEFAULT_POOL_MIN,
        DEFAULT_TABLE,
        DEFAULT_TIMEOUT,
        DSN_ENV,
        SCHEMA_VERSION,
        PostgreSQLStorage,
    )

__all__ = [
    "PostgreSQLStorage",
    "SCHEMA_VERSION",
    "DEFAULT_TABLE",
    "DEFAULT_POOL_MIN",
    "DEFAULT_POOL_MAX",
    "DEFAULT_TIMEOUT",
    "DSN_ENV",
    "pushreport_register_storage",
]

#: psycopg is an optional dependency: this module (the plugin, loaded with every
#: installation) imports it only when the backend is used.
MISSING_DRIVER = (
    "needs psycopg 3 and psycopg-pool, which are not installed: "
    "pip install 'pushreport[postgresql]'"
)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _storage

        return getattr(_storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _factory(options: Mapping[str, Any], context: StorageContext) -> Storage:
    try:
        from ._storage import PostgreSQLStorage
    except ImportError as exc:
        raise ConfigurationError(MISSING_DRIVER, key="storage.postgresql") from exc
    return PostgreSQLStorage.from_options(options, context)


_factory.options_doc = OPTIONS_DOC  # type: ignore[attr-defined]


@hookimpl
def pushreport_register_storage(register: RegisterStorage) -> None:
    """Register the ``postgresql`` backend; ``postgresql:DSN`` sets its ``dsn``, which
    may hold a password and is never printed."""
    register("postgresql", _factory, main_option=MainOption("dsn", secret=True))
