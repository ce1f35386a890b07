"""The SQLite backend against real files: merge rule, schema, errors, durability."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pushreport_sqlite
from pushreport.storage import Storage, StorageContext
from pushreport_core import (
    MERGE_POLICY,
    ConfigurationError,
    Policy,
    Registration,
    Report,
    Secret,
    StorageUnavailable,
    merge,
)
from pushreport_sqlite import SCHEMA_VERSION, SQLiteStorage
from pushreport_sqlite import _storage as sql

from ...conftest import wait_for_child

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "0123456789abcdef0123456789abcdef01234567:1"
OTHER = "fedcba9876543210fedcba9876543210fedcba98:2"


def at(seconds: float) -> datetime:
    """An instant *seconds* after T0."""
    return T0 + timedelta(seconds=seconds)


# -- options -----------------------------------------------------------------------


def test_defaults_resolve_against_base_dir_and_open_nothing(tmp_path: Path) -> None:
    s = SQLiteStorage.from_options({}, StorageContext(base_dir=tmp_path))
    assert (s.path, s.synchronous, s.busy_timeout) == (
        tmp_path / "pushreport.sqlite3",
        "normal",
        2.0,
    )
    assert s.name == "sqlite"
    assert isinstance(s, Storage)
    assert list(tmp_path.iterdir()) == []  # connections are opened lazily


def test_options_are_taken(tmp_path: Path) -> None:
    s = SQLiteStorage.from_options(
        {"path": "data/r.db", "synchronous": "FULL", "busy_timeout": 5},
        StorageContext(base_dir=tmp_path),
    )
    assert (s.path, s.synchronous, s.busy_timeout) == (tmp_path / "data/r.db", "full", 5.0)
    absolute = tmp_path / "abs.db"
    s = SQLiteStorage.from_options(
        {"path": str(absolute)}, StorageContext(base_dir=Path("/elsewhere"))
    )
    assert s.path == absolute


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"file": "x.db"},
            "storage.sqlite.file: unknown option; the options are path, synchronous, "
            "busy_timeout, checkpoint_interval, spool, spool_interval, spool_max_bytes",
        ),
        ({"path": ""}, "storage.sqlite.path: must be a file path (a non-empty string), not ''"),
        ({"path": 3}, "storage.sqlite.path: must be a file path (a non-empty string), not 3"),
        (
            {"synchronous": "off"},
            'storage.sqlite.synchronous: must be "normal" or "full", not \'off\'',
        ),
        ({"synchronous": 2}, 'storage.sqlite.synchronous: must be "normal" or "full", not 2'),
        (
            {"busy_timeout": "2"},
            "storage.sqlite.busy_timeout: must be a number of seconds from 0 to 60, not '2'",
        ),
        (
            {"busy_timeout": True},
            "storage.sqlite.busy_timeout: must be a number of seconds from 0 to 60, not True",
        ),
        (
            {"busy_timeout": -1},
            "storage.sqlite.busy_timeout: must be a number of seconds from 0 to 60, not -1",
        ),
        (
            {"busy_timeout": float("nan")},
            "storage.sqlite.busy_timeout: must be a number of seconds from 0 to 60, not nan",
        ),
    ],
)
def test_bad_option_is_a_configuration_error(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        SQLiteStorage.from_options(options, StorageContext(base_dir=tmp_path))
    assert str(info.value) == message
    assert info.value.key == message.partition(":")[0]


# -- the merge rule ------------------------------------------------------------------


def test_ios_delay_keeps_the_token_the_report_does_not_know(storage: SQLiteStorage) -> None:
    first = Report(
        selector=SELECTOR,
        username="alice",
        token_calls="callTOKEN+1/==",
        appid_calls="com.example.app.voip",
        token_msgs="msgTOKEN-1",
        appid_msgs="com.example.app",
        extra={"lang": "en"},
        user_agent="UA/1",
    )
    # "the web service being called with a null value for pushTokenOther"
    delayed = Report(
        selector=SELECTOR,
        username="alice",
        token_calls="callTOKEN+2/==",
        appid_calls="com.example.app.voip",
        extra={"os": "ios"},
    )
    stored = storage.upsert(first, now=at(0))
    assert stored == merge(None, first, now=at(0))
    again = storage.upsert(delayed, now=at(60))
    assert again.token_msgs == "msgTOKEN-1" and again.appid_msgs == "com.example.app"
    assert again.token_calls == "callTOKEN+2/=="
    assert again.extra == {"lang": "en", "os": "ios"}
    assert again.user_agent == "UA/1"
    assert (again.first_seen, again.last_seen, again.reports) == (at(0), at(60), 2)
    assert again == merge(stored, delayed, now=at(60))
    assert storage.get(SELECTOR) == again


def test_times_out_of_order_take_min_and_max(storage: SQLiteStorage) -> None:
    # Whole seconds and fractions mixed: as text, "…:00Z" sorts after "…:00.5Z", so a
    # variable-width format would pick the wrong instant.
    report = Report(selector=SELECTOR)
    times = [at(10), at(10.5), at(9.999999), at(10), at(11)]
    expected = None
    for now in times:
        expected = merge(expected, report, now=now)
        assert storage.upsert(report, now=now) == expected
    assert (expected.first_seen, expected.last_seen) == (at(9.999999), at(11))


def test_now_must_be_aware(storage: SQLiteStorage) -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        storage.upsert(Report(selector=SELECTOR), now=datetime(2024, 1, 1))
    assert storage.get(SELECTOR) is None


def test_now_in_another_zone_is_stored_in_utc(storage: SQLiteStorage) -> None:
    plus2 = timezone(timedelta(hours=2))
    stored = storage.upsert(
        Report(selector=SELECTOR), now=datetime(2024, 5, 1, 14, 0, tzinfo=plus2)
    )
    assert stored.first_seen == T0 and stored.first_seen.tzinfo == timezone.utc


_token = st.none() | st.text("ABCabc0123+/=_-", min_size=1, max_size=12)
_appid = st.none() | st.sampled_from(["com.example.app", "com.example.app.voip", "a.b"])
_text = st.none() | st.text(min_size=1, max_size=8)
_reports = st.builds(
    Report,
    selector=st.sampled_from([SELECTOR, OTHER, "x"]),
    username=_text,
    token_calls=_token,
    appid_calls=_appid,
    token_msgs=_token,
    appid_msgs=_appid,
    extra=st.dictionaries(
        st.sampled_from(["lang", "os", "é", 'a"b', "k\\"]), st.text(max_size=10), max_size=3
    ),
    user_agent=_text,
    password=st.none() | st.builds(Secret, st.text(min_size=1, max_size=8)),
)
# Steps in microseconds; 0 (same instant) and whole seconds are the interesting ones.
_steps = st.sampled_from([0, 1, 999_999, 1_000_000]) | st.integers(0, 3_000_000)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_reports, _steps), min_size=1, max_size=12))
def test_upsert_is_merge_folded(steps: list[tuple[Report, int]]) -> None:
    expected: dict[str, Registration] = {}
    now = T0
    with tempfile.TemporaryDirectory() as folder:
        s = SQLiteStorage(path=Path(folder, "p.sqlite3"))
        try:
            for report, step in steps:
                now += timedelta(microseconds=step)
                expected[report.selector] = merge(expected.get(report.selector), report, now=now)
                assert s.upsert(report, now=now) == expected[report.selector]
            assert list(s) == [expected[k] for k in sorted(expected)]
            for selector, registration in expected.items():
                assert s.get(selector) == registration
        finally:
            s.close()


# -- reading -------------------------------------------------------------------------


def test_find_by_username_in_selector_order(storage: SQLiteStorage) -> None:
    for selector, username in [("c", "bob"), ("a", "bob"), ("b", "carol"), ("d", None)]:
        storage.upsert(Report(selector=selector, username=username), now=T0)
    assert [r.selector for r in storage.find(username="bob")] == ["a", "c"]
    assert storage.find(username="nobody") == []
    assert [r.selector for r in storage.find()] == ["a", "b", "c", "d"]


def test_find_by_username_uses_the_index(storage: SQLiteStorage, db_path: Path) -> None:
    storage.ping()  # creates the schema
    with sqlite3.connect(db_path) as conn:
        plan = " ".join(
            row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql.FIND_BY_USERNAME, ("bob",))
        )
    assert "USING INDEX registrations_username" in plan
    assert "TEMP B-TREE" not in plan  # selector order comes from the index


def test_iteration_pages_in_selector_order_and_tolerates_removal(
    storage: SQLiteStorage, db_path: Path
) -> None:
    n = sql.PAGE_SIZE * 2 + 7
    for i in range(3):
        storage.upsert(Report(selector=f"s{i:05d}"), now=T0)
    with sqlite3.connect(db_path) as conn:  # bulk rows, written as another tool would
        conn.executemany(
            "INSERT INTO registrations (selector, first_seen, last_seen, reports) "
            "VALUES (?, '2024-05-01T12:00:00.000000Z', '2024-05-01T12:00:00.000000Z', 1)",
            [(f"s{i:05d}",) for i in range(3, n)],
        )
    seen = []
    watcher = sqlite3.connect(db_path)
    for registration in storage:
        seen.append(registration.selector)
        assert storage.remove(registration.selector) is True
        if len(seen) == 5:
            # Committed at once, even though the iteration is still going.
            assert watcher.execute("SELECT count(*) FROM registrations").fetchone() == (n - 5,)
    watcher.close()
    assert seen == [f"s{i:05d}" for i in range(n)]
    assert list(storage) == []


def test_remove(storage: SQLiteStorage) -> None:
    storage.upsert(Report(selector=SELECTOR, token_msgs="tok12345"), now=T0)
    storage.upsert(Report(selector=OTHER), now=T0)
    assert storage.remove(SELECTOR) is True
    assert storage.remove(SELECTOR) is False
    assert storage.get(SELECTOR) is None
    assert [r.selector for r in storage] == [OTHER]


# -- the file ------------------------------------------------------------------------


def test_schema_is_plain_sqlite(storage: SQLiteStorage, db_path: Path) -> None:
    storage.upsert(
        Report(
            selector=SELECTOR,
            username="alice",
            token_msgs="tok+/=1",
            appid_msgs="com.example.app",
            extra={"lang": "en"},
            user_agent="UA/1",
        ),
        now=at(0.25),
    )
    storage.upsert(Report(selector=SELECTOR, extra={"os": "ios"}), now=at(1))
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [
            (r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(registrations)")
        ]
        assert columns == [
            ("selector", "TEXT", 1, 1),
            ("username", "TEXT", 0, 0),
            ("token_calls", "TEXT", 0, 0),
            ("appid_calls", "TEXT", 0, 0),
            ("token_msgs", "TEXT", 0, 0),
            ("appid_msgs", "TEXT", 0, 0),
            ("extra", "TEXT", 1, 0),
            ("user_agent", "TEXT", 0, 0),
            ("first_seen", "TEXT", 1, 0),
            ("last_seen", "TEXT", 1, 0),
            ("reports", "INTEGER", 1, 0),
        ]
        row = conn.execute(
            "SELECT selector, username, token_calls, token_msgs, appid_msgs, "
            "json_extract(extra, '$.lang'), json_extract(extra, '$.os'), user_agent, "
            "first_seen, last_seen, reports FROM registrations"
        ).fetchone()
    finally:
        conn.close()
    assert row == (
        SELECTOR,
        "alice",
        None,
        "tok+/=1",
        "com.example.app",
        "en",
        "ios",
        "UA/1",
        "2024-05-01T12:00:00.250000Z",
        "2024-05-01T12:00:01.000000Z",
        2,
    )
    assert datetime.fromisoformat(row[8]) == at(0.25)


def test_password_never_reaches_the_file(storage: SQLiteStorage, db_path: Path) -> None:
    password = "pw-Zq8xK3-never-stored"
    storage.upsert(
        Report(
            selector=SELECTOR,
            username="alice",
            token_msgs="tokenVISIBLE4711",
            password=Secret(password),
        ),
        now=T0,
    )
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    data = b"".join(p.read_bytes() for p in files)
    assert b"tokenVISIBLE4711" in data  # the grep does find what is stored
    assert password.encode() not in data
    storage.close()
    data = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert b"tokenVISIBLE4711" in data and password.encode() not in data


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_durable_across_reopen(db_path: Path, synchronous: str) -> None:
    first = SQLiteStorage(path=db_path, synchronous=synchronous)
    stored = first.upsert(Report(selector=SELECTOR, token_msgs="tok12345"), now=T0)
    first.close()
    second = SQLiteStorage(path=db_path, synchronous=synchronous)
    try:
        assert second.get(SELECTOR) == stored
        again = second.upsert(Report(selector=SELECTOR, token_calls="call1234"), now=at(1))
        assert (again.token_msgs, again.token_calls, again.reports) == ("tok12345", "call1234", 2)
    finally:
        second.close()


def test_durable_when_the_process_is_killed(db_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from datetime import datetime, timezone\n"
        "from pushreport_core import Report\n"
        "from pushreport_sqlite import SQLiteStorage\n"
        "s = SQLiteStorage(path=sys.argv[1])\n"
        "s.upsert(Report(selector='sel', token_msgs='killedTOKEN'),\n"
        "         now=datetime(2024, 1, 1, tzinfo=timezone.utc))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(db_path)], timeout=30, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr
    s = SQLiteStorage(path=db_path)
    try:
        stored = s.get("sel")
        assert stored is not None and stored.token_msgs == "killedTOKEN"
    finally:
        s.close()


# -- failures ------------------------------------------------------------------------


def test_lock_held_elsewhere_is_unavailable_then_recovers(
    storage: SQLiteStorage, db_path: Path
) -> None:
    storage.upsert(Report(selector=SELECTOR, token_msgs="tok12345"), now=T0)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            storage.upsert(Report(selector=SELECTOR, token_calls="call1234"), now=at(1))
        waited = time.monotonic() - started
        assert str(info.value) == "sqlite database is locked"
        assert info.value.retry_after == 1 and info.value.error_status_hint == 503
        assert 0.25 <= waited < 2.0  # about busy_timeout (0.3 s)
        with pytest.raises(StorageUnavailable, match="^sqlite database is locked$"):
            storage.ping()
        # Readers are not blocked (WAL): the last committed state is served.
        assert storage.get(SELECTOR).token_calls is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    stored = storage.upsert(Report(selector=SELECTOR, token_calls="call1234"), now=at(1))
    assert (stored.token_calls, stored.token_msgs, stored.reports) == ("call1234", "tok12345", 2)


def test_lock_released_within_busy_timeout_is_waited_for(db_path: Path) -> None:
    s = SQLiteStorage(path=db_path, busy_timeout=5)
    s.ping()
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.2, lambda: other.execute("ROLLBACK"))
    timer.start()
    try:
        assert s.upsert(Report(selector=SELECTOR), now=T0).reports == 1
    finally:
        timer.join()
        other.close()
        s.close()


def test_read_only_file_is_unavailable(db_path: Path, make_read_only) -> None:
    first = SQLiteStorage(path=db_path)
    first.upsert(Report(selector=SELECTOR, token_msgs="tok12345"), now=T0)
    first.close()
    make_read_only(db_path)
    s = SQLiteStorage(path=db_path, busy_timeout=0.1)
    try:
        with pytest.raises(StorageUnavailable, match="^sqlite database is read-only$"):
            s.upsert(Report(selector=SELECTOR, token_msgs="tok67890"), now=at(1))
        with pytest.raises(StorageUnavailable, match="^sqlite database is read-only$"):
            s.ping()
        assert s.get(SELECTOR).token_msgs == "tok12345"  # still readable
    finally:
        s.close()


def test_not_a_database_is_unavailable(db_path: Path) -> None:
    db_path.write_bytes(b"this is not an sqlite file, it is a text file " * 100)
    s = SQLiteStorage(path=db_path)
    with pytest.raises(StorageUnavailable) as info:
        s.upsert(Report(selector=SELECTOR), now=T0)
    assert str(info.value) == "sqlite database file is not a database"
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    s.close()


def test_missing_folder_is_unavailable(tmp_path: Path) -> None:
    s = SQLiteStorage(path=tmp_path / "no" / "such" / "folder.db")
    with pytest.raises(StorageUnavailable, match="^sqlite database file cannot be opened$"):
        s.ping()
    s.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s = SQLiteStorage(path=db_path)
    with pytest.raises(StorageUnavailable) as info:
        s.get(SELECTOR)
    assert str(info.value) == (
        f"sqlite database schema version {SCHEMA_VERSION + 1} is "
        f"newer than this pushreport's ({SCHEMA_VERSION})"
    )
    s.close()


def test_closed_storage_is_unavailable(storage: SQLiteStorage) -> None:
    storage.upsert(Report(selector=SELECTOR), now=T0)
    storage.close()
    with pytest.raises(StorageUnavailable, match="^sqlite storage is closed$"):
        storage.get(SELECTOR)


def test_messages_carry_no_sql_and_no_values(storage: SQLiteStorage, db_path: Path) -> None:
    storage.upsert(Report(selector=SELECTOR, extra={"k": "v"}), now=T0)
    with sqlite3.connect(db_path) as conn:  # damage a row: extra is no longer JSON
        conn.execute("UPDATE registrations SET extra = 'secretGARBAGE{'")
    with pytest.raises(StorageUnavailable) as info:
        storage.upsert(Report(selector=SELECTOR, extra={"k": "w"}), now=at(1))
    assert str(info.value) == "sqlite database failed"
    with pytest.raises(StorageUnavailable) as info:
        storage.get(SELECTOR)
    assert str(info.value) == "sqlite database holds a row that cannot be read"
    assert "secretGARBAGE" not in str(info.value)


def test_connections_are_per_thread(storage: SQLiteStorage) -> None:
    storage.upsert(Report(selector=SELECTOR), now=T0)
    connections = []

    def work() -> None:
        storage.get(SELECTOR)
        connections.append(storage._local.conn)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in connections}) == 3
    assert storage._local.conn not in connections


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_connection_opened_before_fork_is_not_used_in_the_child(storage: SQLiteStorage) -> None:
    # gunicorn --preload: the app (and maybe a connection) is made before the fork.
    storage.upsert(Report(selector=SELECTOR), now=T0)
    inherited = storage._local.conn
    pid = os.fork()
    if pid == 0:  # the child: must open its own connection
        code = 1
        try:
            storage.upsert(Report(selector=OTHER, token_msgs="fromCHILD1"), now=T0)
            if storage._local.conn is not inherited and storage._inherited == [inherited]:
                code = 0
        finally:
            os._exit(code)
    assert wait_for_child(pid) == 0
    assert storage._local.conn is inherited  # the parent's connection is still its own
    assert storage.get(OTHER).token_msgs == "fromCHILD1"


def test_registered_under_its_name() -> None:
    from pushreport.storage import MainOption

    registered = {}
    pushreport_sqlite.pushreport_register_storage(
        register=lambda name, factory, **declared: registered.setdefault(name, (factory, declared))
    )
    assert registered == {
        "sqlite": (SQLiteStorage.from_options, {"main_option": MainOption("path", is_path=True)})
    }


def test_checkpoints_run_off_the_request_path(tmp_path: Path) -> None:
    """Requests only append to the WAL; a background thread copies it into the file."""
    from pushreport_core import Report
    from pushreport_sqlite import SQLiteStorage

    path = tmp_path / "c.sqlite3"
    storage = SQLiteStorage(path, checkpoint_interval=1.0)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    storage.upsert(Report(selector=f"{0:040X}:01"), now=now)
    time.sleep(1.5)  # the first checkpoint copies the schema
    before = path.stat().st_size
    started = time.monotonic()
    for i in range(1, 400):
        storage.upsert(Report(selector=f"{i:040X}:01", token_msgs="A" * 160), now=now)
    if time.monotonic() - started < 0.9:  # no checkpoint could have run meanwhile
        assert path.stat().st_size == before, "a request checkpointed"
    assert storage._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
    deadline = time.monotonic() + 10
    while path.stat().st_size == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > before, "the background checkpoint never ran"
    thread = storage._checkpointer
    assert thread is not None and thread.is_alive()
    storage.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the checkpoint thread outlived close()"


def test_a_wal_grown_in_a_burst_is_cut_back_once_it_starts_over(tmp_path: Path) -> None:
    """A reader's snapshot keeps the checkpoint from finishing, so the WAL grows past
    the limit; once the checkpoint can finish, the next write starts the WAL over and
    cuts the file back to the limit."""
    import sqlite3
    from datetime import datetime, timezone

    from pushreport_core import Report
    from pushreport_sqlite._storage import WAL_SIZE_LIMIT

    path = tmp_path / "db.sqlite3"
    storage = SQLiteStorage(path=path, checkpoint_interval=0)
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    storage.upsert(Report(selector="0" * 40 + ":00000000"), now=now)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM registrations").fetchall()  # holds its snapshot
    big = "x" * 3000
    try:
        for i in range(1, 8000):
            storage.upsert(Report(selector=f"{i:040X}:00000000", extra={"k": big}), now=now)
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > WAL_SIZE_LIMIT  # grown past it during the "burst"
    finally:
        reader.execute("COMMIT")
        reader.close()
    storage._run("PRAGMA wal_checkpoint(PASSIVE)")
    storage.upsert(Report(selector="0" * 40 + ":00000000"), now=now)  # starts the WAL over
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    storage.close()


# -- the upsert, built from the core's merge policy table -----------------------------------


def test_every_merge_policy_has_its_sqlite_expression() -> None:
    """A policy added to the core without its SQL here fails, not an upsert."""
    assert set(sql.NEW_SQL) == set(Policy)
    assert set(sql.MERGE_SQL) == set(Policy) - {Policy.KEY}


def test_the_upsert_sets_each_column_by_its_policy() -> None:
    for column, policy in MERGE_POLICY.items():
        if policy is Policy.KEY:
            assert f"ON CONFLICT ({column})" in sql.UPSERT
            continue
        assignment = f"{column} = {sql.MERGE_SQL[policy].format(c=column)}"
        assert assignment in sql.UPSERT
        assert (assignment in sql.UPSERT_SAME_USERNAME) is (column != "username")
    assert sql.UPSERT.count(" = ") == len(MERGE_POLICY) - 1
    assert "RETURNING" not in sql.UPSERT_QUIET + sql.UPSERT_SAME_USERNAME_QUIET


def test_a_spool_line_holds_what_a_report_stores_and_when() -> None:
    """The order is on disk: a spool written before an upgrade is applied after it; a
    line applies as the same upsert parameters as the report it holds."""
    from pushreport._spool import FIELDS, decode, encode_report

    assert FIELDS == (
        "selector",
        "username",
        "token_calls",
        "appid_calls",
        "token_msgs",
        "appid_msgs",
        "extra",
        "user_agent",
        "now",
    )
    report = Report(selector=SELECTOR, username="u", token_msgs="dG9rZW4=", extra={"a": "1"})
    spooled, at = decode(encode_report(report, T0).decode())
    assert sql._params(spooled, at) == sql._params(report, T0)
