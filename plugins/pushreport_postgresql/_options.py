"""``[storage.postgresql]`` options and their meaning: importable without psycopg, so
that the generated reference documents them on any installation."""

from __future__ import annotations

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
}
