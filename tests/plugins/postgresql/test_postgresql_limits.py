"""The PostgreSQL backend's limit state: the conformance suite on a real server, its
table beside the registrations, a receiver finding it, and an unreachable server
answered 503."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from werkzeug.test import Client

from pushreport._config import LimitsConfig, StorageConfig
from pushreport.limitstate import LimitState
from pushreport.testing import LimitStateConformance
from pushreport_postgresql import PostgreSQLStorage
from pushreport_postgresql._limitstate import PostgreSQLLimitState
from pushreport_wsgi import Config, Receiver, create_app, make_plugin_manager


class TestPostgreSQLLimitState(LimitStateConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_state(self, pg_dsn: str, pg_table: str) -> Iterator[Any]:
        storages: list[PostgreSQLStorage] = []

        def make() -> LimitState:
            storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table, timeout=1.5)
            storages.append(storage)
            return storage.limit_state()

        yield make
        for storage in storages:
            storage.close()

    @contextmanager
    def make_unavailable(self, state: LimitState) -> Iterator[None]:
        assert isinstance(state, PostgreSQLLimitState)
        state.count()  # created
        dsn = state.storage.dsn
        with psycopg.connect(dsn) as other:
            # Another host holds the table's write lock (reads still go through).
            other.execute(
                sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(state.table))
            )
            yield
            other.rollback()


def test_the_table_is_created_beside_the_registrations(pg_dsn: str, pg_table: str) -> None:
    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        state = storage.limit_state()
        assert state.table == f"{pg_table}_limits"
        assert state.take("client:192.0.2.1", count=1, period=60, now=1e9) == 0.0
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                sql.SQL("SELECT kind, name FROM {}").format(sql.Identifier(state.table))
            ).fetchall()
        assert rows == [("b", "client:192.0.2.1")]
    finally:
        storage.close()


def test_hosts_starting_together_create_the_table_once(pg_dsn: str, pg_table: str) -> None:
    errors: list[BaseException] = []
    storages = [PostgreSQLStorage(dsn=pg_dsn, table=pg_table) for _ in range(6)]
    barrier = threading.Barrier(len(storages))

    def start(storage: PostgreSQLStorage) -> None:
        try:
            barrier.wait(timeout=30)
            storage.limit_state().claim("n", expires=2e9, now=1e9)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors, errors[0]
        assert storages[0].limit_state().count() == 1
    finally:
        for s in storages:
            s.close()


def pg_config(tmp_path: Path, dsn: str, table: str, **limits: Any) -> Config:
    return Config(
        storage=StorageConfig(
            backends=("postgresql",),
            options={"postgresql": {"dsn": dsn, "table": table, "timeout": 0.5}},
        ),
        limits=LimitsConfig(**limits),
        base_dir=tmp_path,
    )


def test_a_receiver_on_postgresql_counts_in_its_table(
    tmp_path: Path, pg_dsn: str, pg_table: str
) -> None:
    receivers = [
        Receiver.from_config(
            pg_config(tmp_path, pg_dsn, pg_table, per_client="2/minute"),
            plugin_manager=make_plugin_manager(),
        )
        for _ in range(2)  # two hosts
    ]
    try:
        statuses = []
        for i in range(6):
            app = create_app(receiver=receivers[i % 2])
            statuses.append(
                Client(app)
                .get(
                    "/token/?selector=12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
                    "&token_msgs=QVBBOTFi&appid_msgs=com.x",
                    environ_base={"REMOTE_ADDR": "192.0.2.7"},
                )
                .status_code
            )
        assert statuses == [200, 200, 429, 429, 429, 429]
        assert isinstance(receivers[0].limiter.state, PostgreSQLLimitState)
        assert not list(tmp_path.iterdir())  # no file of its own
    finally:
        for r in receivers:
            r.close()


def test_an_unreachable_server_answers_503(tmp_path: Path) -> None:
    config = pg_config(
        tmp_path, "host=127.0.0.1 port=1 dbname=x connect_timeout=1", "t", per_client="2/minute"
    )
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=make_plugin_manager()))
    try:
        resp = Client(app).get(
            "/token/?selector=12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
            "&token_msgs=QVBBOTFi&appid_msgs=com.x",
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        )
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert resp.data.startswith(b"postgresql ")
    finally:
        app.close()
