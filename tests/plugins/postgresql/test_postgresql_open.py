"""The PostgreSQL backend's ``open()`` and ``create`` on a real server (issue 14, items
12 and 14): a reader creates no table, and no message shows the DSN's user or password."""

from __future__ import annotations

import pytest

from pushreport.storage import StorageStarting
from pushreport_core import StorageUnavailable


def test_postgresql_without_create_creates_no_table(pg_dsn: str, pg_table: str) -> None:
    import psycopg

    from pushreport_postgresql import PostgreSQLStorage

    reader = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, create=False)
    with pytest.raises(StorageUnavailable) as info:
        reader.open()
    assert str(info.value) == f"no pushreport data in {reader.location}"
    with pytest.raises(StorageUnavailable):
        list(reader)
    reader.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (pg_table,)).fetchone() == (None,)
    writer = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    writer.open()
    writer.close()
    reader = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, create=False)
    reader.open()
    assert list(reader) == []
    reader.close()


def test_postgresql_location_never_shows_the_user_or_password() -> None:
    from pushreport_postgresql import PostgreSQLStorage

    storage = PostgreSQLStorage(
        dsn="postgresql://secretuser:hunter2@db.example.com:6543/pushdb", table="regs"
    )
    assert storage.location == "table regs of postgresql database pushdb on db.example.com:6543"
    storage = PostgreSQLStorage(dsn="host=127.0.0.1 port=1 user=u password=pw", timeout=0.5)
    with pytest.raises(StorageStarting) as info:
        storage.open()  # nothing listens on port 1: it may still be starting
    storage.close()
    assert str(info.value) == (
        "cannot connect to table pushreport_registrations of postgresql database "
        "(the default) on 127.0.0.1:1: server is unreachable"
    )
