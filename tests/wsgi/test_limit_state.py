"""The shared limit state: the SQLite implementation runs the conformance suite, the
state is found where the brief says (state_path, the first backend that provides one,
else a file in the configuration's folder), is opened only when a limit needs it, and a
failing state answers 503 with Retry-After, never 200 and never 500."""

from __future__ import annotations

import functools
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
from werkzeug.test import Client

from pushreport._config import AuthConfig, LimitsConfig, StorageConfig
from pushreport.limitstate import LimitState, LimitStatements, SQLiteLimitState
from pushreport.testing import LimitStateConformance
from pushreport_wsgi import Config, Receiver, create_app, make_plugin_manager

from .conftest import make_config
from .test_auth import Clock, query
from .test_limits import get


class TestSQLiteLimitState(LimitStateConformance):
    supports_unavailable = True

    @pytest.fixture
    def make_state(self, tmp_path: Path) -> Any:
        return functools.partial(SQLiteLimitState, tmp_path / "x.limits", busy_timeout=0.05)

    @contextmanager
    def make_unavailable(self, state: LimitState) -> Iterator[None]:
        assert isinstance(state, SQLiteLimitState)
        state.count()  # created
        # Another process holds the write lock.
        other = sqlite3.connect(state.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("COMMIT")
            other.close()


def test_the_base_class_is_not_collected_but_subclasses_are() -> None:
    assert LimitStateConformance.__test__ is False
    assert TestSQLiteLimitState.__test__ is True


def test_the_statements_are_the_same_rule_for_both_dialects() -> None:
    sqlite, pg = LimitStatements("t"), LimitStatements("t", "postgresql")
    assert "min(:cap" in sqlite.take and "LEAST(%(cap)s" in pg.take
    assert "synchronous_commit" in pg.claim and "synchronous_commit" not in sqlite.claim
    with pytest.raises(ValueError):
        LimitStatements('t"; DROP TABLE x; --')


def test_the_sqlite_file_is_wal_and_stays_bounded(tmp_path: Path) -> None:
    state = SQLiteLimitState(tmp_path / "x.limits")
    try:
        for round_ in range(5):
            now = 1_750_000_000.0 + round_ * 120
            for i in range(2_000):
                state.take(f"client:{round_}.{i}", count=1, period=60, now=now)
            state.purge(now=now, keep=100_000)  # what expired in the round before
            assert state.count() == 2_000
        size = (tmp_path / "x.limits").stat().st_size
        assert size < 400_000  # freed pages are reused: 2,000 rows, not 10,000
    finally:
        state.close()
    with sqlite3.connect(tmp_path / "x.limits") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- where the state lives ----------------------------------------------------------------


def receiver_with(tmp_path: Path, config: Config) -> Receiver:
    return Receiver.from_config(config, plugin_manager=make_plugin_manager(), clock=Clock())


def test_the_sqlite_backend_provides_a_file_beside_its_database(tmp_path: Path) -> None:
    config = attrs.evolve(make_config(tmp_path), limits=LimitsConfig(per_client="5/minute"))
    r = receiver_with(tmp_path, config)
    try:
        state = r.limiter.state
        assert isinstance(state, SQLiteLimitState)
        assert state.path == Path(f"{r.storage.path}.limits")
    finally:
        r.close()


def test_state_path_overrides_relative_to_the_configuration(tmp_path: Path) -> None:
    config = Config.from_dict(
        {"limits": {"per_client": "5/minute", "state_path": "run/limits.db"}}, base_dir=tmp_path
    )
    config = config.with_storage_option("sqlite", "path", str(tmp_path / "db.sqlite3"))
    (tmp_path / "run").mkdir()
    r = receiver_with(tmp_path, config)
    try:
        assert r.limiter.state.path == tmp_path / "run" / "limits.db"
    finally:
        r.close()


def test_a_backend_set_without_a_state_uses_a_file_in_the_configurations_folder(
    tmp_path: Path,
) -> None:
    config = Config(
        storage=StorageConfig(backends=("files",), options={"files": {"path": "reg"}}),
        limits=LimitsConfig(per_username="5/minute"),
        base_dir=tmp_path,
    )
    r = receiver_with(tmp_path, config)
    try:
        assert r.limiter.state.path == tmp_path / "pushreport-limits.sqlite3"
    finally:
        r.close()


def test_no_state_is_opened_when_no_limit_is_in_use(tmp_path: Path) -> None:
    # The default auth_failures counts nothing when nothing authenticates.
    r = receiver_with(tmp_path, make_config(tmp_path))
    try:
        assert r.limiter.state is None and r.limiter.auth_failures == 0
        app = create_app(receiver=r)
        assert Client(app).get(query()).status_code == 200
        assert not list(tmp_path.glob("*.limits*"))
    finally:
        r.close()


def test_digest_alone_opens_the_state_for_its_nonce_counts(tmp_path: Path) -> None:
    config = attrs.evolve(
        make_config(tmp_path),
        auth=AuthConfig(methods=("digest",), digest_username="app", digest_password="pw"),
        limits=LimitsConfig(auth_failures=0),
    )
    r = receiver_with(tmp_path, config)
    try:
        [digest] = [p for p in r.plugin_manager.get_plugins() if hasattr(p, "nonce_counts")]
        assert digest.nonce_counts is r.limiter.state is not None
    finally:
        r.close()


# --- a failing state: 503 ------------------------------------------------------------------


def test_a_state_that_cannot_be_opened_answers_503_with_retry_after(tmp_path: Path) -> None:
    (tmp_path / "limits-dir").mkdir()  # a folder where the file should be
    config = attrs.evolve(
        make_config(tmp_path),
        limits=LimitsConfig(per_client="5/minute", state_path=str(tmp_path / "limits-dir")),
    )
    app = create_app(receiver=receiver_with(tmp_path, config))
    try:
        resp = get(app, query())
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.data == b"limit state file cannot be opened\n"
        assert list(app.receiver.storage) == []  # nothing stored
    finally:
        app.close()


def test_a_locked_state_answers_503_then_recovers(tmp_path: Path) -> None:
    config = attrs.evolve(make_config(tmp_path), limits=LimitsConfig(per_client="5/minute"))
    app = create_app(receiver=receiver_with(tmp_path, config))
    state = app.receiver.limiter.state
    state.busy_timeout = 0.05
    try:
        assert get(app, query()).status_code == 200
        other = sqlite3.connect(state.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        resp = get(app, query())
        assert (resp.status_code, resp.headers["Retry-After"]) == (503, "1")
        assert resp.data == b"limit state is locked\n"
        other.execute("COMMIT")
        other.close()
        assert get(app, query()).status_code == 200
        assert list(app.receiver.storage)[0].reports == 2
    finally:
        app.close()


def test_an_unexpected_error_in_the_state_is_503_not_500(tmp_path: Path) -> None:
    class Broken(SQLiteLimitState):
        def take(self, key: str, *, count: int, period: float, now: float) -> float:
            raise KeyError("a bug")

    config = attrs.evolve(make_config(tmp_path), limits=LimitsConfig(per_client="5/minute"))
    app = create_app(receiver=receiver_with(tmp_path, config))
    app.receiver.limiter.state = Broken(tmp_path / "b.limits")
    try:
        resp = get(app, query())
        assert (resp.status_code, resp.data) == (503, b"limit state failed\n")
    finally:
        app.close()


def test_digest_credentials_are_never_accepted_unchecked_for_replay(tmp_path: Path) -> None:
    from pushreport._auth import DigestAuthenticator
    from pushreport_core import AuthenticationUnavailable, Request, Secret, StorageUnavailable

    from .test_auth import authorization

    def signed(auth: DigestAuthenticator) -> Request:
        target = "/token/?selector=x"
        header = authorization(auth.challenges()[0], "GET", target, password="pw")
        return Request(method="GET", target=target, authorization=header)

    auth = DigestAuthenticator(realm="r", username="app", password=Secret("pw"), key=b"k" * 32)
    with pytest.raises(AuthenticationUnavailable) as e:  # no state: 503
        auth.verify(signed(auth))
    assert str(e.value) == "digest nonce counts have no limit state"

    class Broken(SQLiteLimitState):
        def claim(self, key: str, *, expires: float, now: float) -> bool:
            raise RuntimeError("a bug")

    auth.nonce_counts = Broken(tmp_path / "b.limits")
    with pytest.raises(StorageUnavailable) as e:
        auth.verify(signed(auth))
    assert str(e.value) == "limit state failed"
    auth.nonce_counts = SQLiteLimitState(tmp_path / "ok.limits")
    request = signed(auth)
    auth.verify(request)
    with pytest.raises(Exception, match="nonce count replayed"):
        auth.verify(request)
    auth.nonce_counts.close()


def test_a_state_path_naming_the_registrations_database_is_refused_untouched(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db.sqlite3"
    config = attrs.evolve(
        make_config(tmp_path, spool=False),
        limits=LimitsConfig(per_client="5/minute", state_path=str(db)),
    )
    app = create_app(receiver=receiver_with(tmp_path, config))
    try:
        app.receiver.storage.ping()  # the database exists
        resp = get(app, query())
        assert (resp.status_code, resp.data) == (503, b"limit state file holds other data\n")
    finally:
        app.close()
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "pushreport_limits" not in tables and "registrations" in tables


def test_workers_creating_one_new_state_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Workers starting together create the file together: none may take another's
    fresh schema for someone else's data (its two checks were once two snapshots).
    Threads, each with its own connection, race as processes do."""
    import threading

    for round_ in range(40):
        path = tmp_path / f"{round_}.limits"
        barrier = threading.Barrier(6)
        errors: list[str] = []

        def open_and_take(path: Path, barrier: threading.Barrier, errors: list[str]) -> None:
            try:
                barrier.wait(timeout=30)
                state = SQLiteLimitState(path, busy_timeout=5.0)
                try:
                    state.take("client", count=10, period=60.0, now=0.0)
                finally:
                    state.close()
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")

        threads = [
            threading.Thread(target=open_and_take, args=(path, barrier, errors)) for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [], f"round {round_}"
