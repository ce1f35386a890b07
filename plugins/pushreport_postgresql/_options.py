"""``[storage.postgresql]`` options and their meaning: importable without psycopg, so
that the generated reference documents them on any installation."""

from __future__ import annotations

from pushreport import spool

__all__ = ["OPTIONS_DOC"]

OPTIONS_DOC = {
    "dsn": "libpq connection string or URL (e.g. postgresql://pushreport@db/pushreport); "
    "default: the PUSHREPORT_DATABASE_URL environment variable. Never logged",
    "pool_min": "connections each process keeps open (default 1)",
    "pool_max": "most connections each process opens (default 4)",
    "timeout": "seconds to wait for a connection or a lock before the app is answered "
    "503 (default 2)",
    "table": "the table's name (default pushreport_registrations); its indexes and "
    "schema-version table are named after it",
    **spool.options_doc(folder="spool_dir", fsync="unless spool_fsync is false"),
    "spool": "true: a report is appended to a file of its process's in spool_dir (with an "
    "fdatasync unless spool_fsync is false) and answered, and a background thread applies "
    "the spool to the database in batches; every read through pushreport applies this "
    "host's spool first. false (default): each report is its own transaction. Hosts "
    "sharing the database must agree on the time with its server (a removal outlives "
    "a report spooled before it by its timestamp)",
    "spool_dir": "the report spool's folder, on a local disk of this host (default "
    "<table>.spool, relative to the configuration file)",
    "spool_fsync": "true (default): each spooled report is synced to disk before it is "
    "answered (concurrent threads share one sync), as PostgreSQL syncs its commits; "
    "false: it survives a crash of the process, not a power loss",
}
