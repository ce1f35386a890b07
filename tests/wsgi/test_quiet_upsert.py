"""The report path skips reading the stored row back when nothing needs it, and only then.

A ``pushreport_report_stored`` hook (even one registered after the app is built),
``token_owner = "newest"`` or a backend that does not declare ``quiet_upsert`` (the
webhook backend, whose ``upsert`` writes an event) each keep the full ``upsert``.
"""

from __future__ import annotations

import functools
import threading
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
from werkzeug.test import Client

import pushreport_sqlite._storage as sqlite_storage
from pushreport._batch import GroupCommit
from pushreport.storage import Capabilities
from pushreport_core import ConfigurationError, Registration, Report
from pushreport_sqlite import SQLiteStorage
from pushreport_wsgi import Backend, Receiver, create_app, hookimpl, make_plugin_manager

from ..plugins.sqlite.conftest import spooled
from .conftest import SELECTOR, SPEC_GET, TOKEN_CALLS, TOKEN_MSGS, make_config

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the SQLite backend runs through ``_run`` on the test's own
    thread (the request path), in order; background threads (a report spool's, of a
    storage another test left open) are not the request path."""
    seen: list[str] = []
    run = SQLiteStorage._run
    me = threading.current_thread()

    def spy(self: SQLiteStorage, sql: str, params: Any = (), **kw: Any) -> Any:
        if threading.current_thread() is me:
            seen.append(sql)
        return run(self, sql, params, **kw)

    monkeypatch.setattr(SQLiteStorage, "_run", spy)
    return seen


def test_a_report_with_no_hook_is_stored_without_reading_it_back(tmp_path, statements):
    # The statements of a report's own transaction (without the spool; with it, the
    # same statements run in the spool's batches: tests/plugins/sqlite/test_spool.py).
    app = create_app(make_config(tmp_path, spool=False))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    assert (
        c.get(SPEC_GET.replace("&token_msgs=QVBB", "&token_msgs=null&x=QVBB")).status_code == 200
    )
    assert statements == [sqlite_storage.UPSERT_SAME_USERNAME_QUIET] * 2
    # The same merge rule: the second report's null token erased nothing.
    stored = app.receiver.storage.get(SELECTOR)
    assert stored is not None
    assert (stored.username, stored.token_msgs, stored.token_calls, stored.reports) == (
        "johndow",
        TOKEN_MSGS,
        TOKEN_CALLS,
        2,
    )
    app.close()


class Stored:
    def __init__(self) -> None:
        self.registrations: list[Registration] = []

    @hookimpl
    def pushreport_report_stored(self, registration: Registration) -> None:
        self.registrations.append(registration)


def test_a_hook_registered_after_the_app_is_built_gets_the_registration(tmp_path, statements):
    pm = make_plugin_manager()
    config = make_config(tmp_path, spool=False)
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    c = Client(app)
    assert c.get(SPEC_GET).status_code == 200
    plugin = Stored()
    pm.register(plugin)
    assert c.get(SPEC_GET).status_code == 200
    assert [r.reports for r in plugin.registrations] == [2]
    assert plugin.registrations[0].token_msgs == TOKEN_MSGS
    assert statements == [
        sqlite_storage.UPSERT_SAME_USERNAME_QUIET,
        sqlite_storage.UPSERT_SAME_USERNAME,
    ]
    pm.unregister(plugin)
    assert c.get(SPEC_GET).status_code == 200
    assert statements[2:] == [sqlite_storage.UPSERT_SAME_USERNAME_QUIET]
    assert len(plugin.registrations) == 1
    app.close()


def test_token_owner_newest_reads_the_registration_back(tmp_path, statements):
    app = create_app(make_config(tmp_path, token_owner="newest"))
    assert Client(app).get(SPEC_GET).status_code == 200
    assert sqlite_storage.UPSERT_SAME_USERNAME in statements
    assert not any(s.startswith("INSERT") and "RETURNING" not in s for s in statements)
    app.close()


def test_receiver_handle_still_returns_the_stored_registration(tmp_path, statements):
    from pushreport_core import Request

    receiver = Receiver.from_config(make_config(tmp_path))
    registration = receiver.handle(Request(method="GET", target=SPEC_GET))
    assert (registration.selector, registration.reports) == (SELECTOR, 1)
    # The adapters' call reads nothing back when nothing needs it.
    outcome = receiver.receive(Request(method="GET", target=SPEC_GET))
    assert (outcome.happened, outcome.selector, outcome.registration) == ("stored", SELECTOR, None)
    assert receiver.storage.get(SELECTOR).reports == 2  # type: ignore[union-attr]
    receiver.close()


def test_the_quiet_upsert_is_declared_and_a_subclass_that_breaks_it_is_refused(tmp_path):
    """Only a backend that declares ``quiet_upsert`` is written with ``read_back=False``
    (the webhook backend, whose upsert writes an event, does not); a subclass that
    overrides ``upsert`` without ``read_back`` inherits the declaration and is refused
    when it is opened, instead of being bypassed."""
    from pushreport_webhook import WebhookStorage

    class Audited(SQLiteStorage):
        def upsert(self, report: Report, *, now: datetime) -> Registration:  # type: ignore[override]
            return super().upsert(report, now=now)

    class Both(Audited):
        def upsert(self, report: Report, *, now: datetime, read_back: bool = True) -> Any:  # type: ignore[override]
            return SQLiteStorage.upsert(self, report, now=now, read_back=read_back)

    class Plain(SQLiteStorage):
        pass

    hook = WebhookStorage(tmp_path / "hook.sqlite3", deliver=False)
    opened = [hook]
    try:
        assert Capabilities.of(hook).quiet_upsert is None
        audited = Audited(tmp_path / "a.sqlite3")
        opened.append(audited)
        with pytest.raises(ConfigurationError) as caught:
            Backend("audited", audited)
        assert str(caught.value) == (
            "storage backend 'audited' declares 'quiet_upsert' but its upsert() takes no "
            "read_back argument"
        )
        for cls in (Both, Plain, SQLiteStorage):
            storage = cls(tmp_path / f"{cls.__name__}.sqlite3")
            opened.append(storage)
            quiet = Backend("ok", storage).capabilities.quiet_upsert
            assert quiet is not None
            assert quiet(Report(selector=SELECTOR), now=T0) is None
            assert storage.get(SELECTOR).reports == 1  # type: ignore[union-attr]
    finally:
        for storage in opened:
            storage.close()


def test_the_webhook_backend_still_writes_its_event_on_the_app_path(tmp_path):
    from pushreport_webhook._outbox import pending_events

    config = make_config(tmp_path)
    config = attrs.evolve(
        config,
        storage=attrs.evolve(
            config.storage,
            backends=("webhook",),
            options={
                "webhook": {
                    "outbox": str(tmp_path / "hook.sqlite3"),
                    "url": "http://127.0.0.1:9/hook",
                    "signature": "pushreport",
                    "secret": "s" * 32,
                    "deliver": False,
                }
            },
        ),
    )
    app = create_app(config)
    assert Client(app).get(SPEC_GET).status_code == 200
    storage = app.receiver.storage
    events = storage._read(pending_events)  # type: ignore[attr-defined]
    assert len(events) == 1
    app.close()


class Counting:
    """A batch-capable storage that records which write it was asked for."""

    name = "counting"

    def __init__(self, quiet: bool) -> None:
        self.calls: list[str] = []
        self.capabilities = {"upsert_many", "quiet_upsert"} if quiet else {"upsert_many"}

    def upsert(
        self, report: Report, *, now: datetime, read_back: bool = True
    ) -> Registration | None:
        self.calls.append("upsert" if read_back else "quiet")
        if not read_back:
            return None
        return Registration(selector=report.selector, first_seen=now, last_seen=now)

    def upsert_many(self, items: Any) -> list[Registration]:  # pragma: no cover
        raise AssertionError("a lone writer never batches")


@pytest.mark.parametrize(("quiet", "expected"), [(True, "quiet"), (False, "upsert")])
def test_group_commit_passes_a_quiet_upsert_on_when_the_storage_declares_one(quiet, expected):
    storage = Counting(quiet)
    group = GroupCommit(storage)  # type: ignore[arg-type]
    group.upsert(Report(selector=SELECTOR), now=T0, read_back=False)
    group.upsert(Report(selector=SELECTOR), now=T0, read_back=False)
    assert storage.calls == [expected, expected]
    assert (group.batches, group.reports, group._leading) == (2, 2, False)


@pytest.mark.parametrize(("quiet", "spool"), [(True, False), (False, False), (True, True)])
def test_a_new_username_is_stored_by_the_whole_rule(tmp_path, statements, quiet, spool):
    path = tmp_path / "db.sqlite3"
    storage = spooled(path) if spool else SQLiteStorage(path)
    write = functools.partial(storage.upsert, read_back=False) if quiet else storage.upsert
    write(Report(selector=SELECTOR, token_msgs=TOKEN_MSGS), now=T0)
    write(Report(selector=SELECTOR, username="alice"), now=T0)  # the row had none
    write(Report(selector=SELECTOR, username="alice"), now=T0)
    write(Report(selector=SELECTOR), now=T0)  # no username: keeps alice
    write(Report(selector=SELECTOR, username="bob", token_calls=TOKEN_CALLS), now=T0)
    stored = storage.get(SELECTOR)
    assert stored is not None
    assert (stored.username, stored.token_msgs, stored.token_calls, stored.reports) == (
        "bob",
        TOKEN_MSGS,
        TOKEN_CALLS,
        5,
    )
    assert [r.selector for r in storage.find(username="bob")] == [SELECTOR]
    assert storage.find(username="alice") == []
    if not spool:  # (the spool's batches run outside _run)
        whole = sqlite_storage.UPSERT_QUIET if quiet else sqlite_storage.UPSERT
        # The whole rule ran for the two reports that changed the username, only.
        assert statements.count(whole) == 2
    storage.close()


def test_a_report_repeating_the_username_writes_one_page(tmp_path):
    """The username index is left alone when the username does not change: each commit
    appends one page (the row's) to the WAL, not two."""
    path = tmp_path / "db.sqlite3"
    storage = SQLiteStorage(path, checkpoint_interval=0)
    storage.upsert(Report(selector=SELECTOR, username="alice"), now=T0, read_back=False)
    page = storage._run("PRAGMA page_size")[0][0]
    wal = path.with_name(path.name + "-wal")
    before = wal.stat().st_size
    for n in range(10):
        storage.upsert(
            Report(selector=SELECTOR, username="alice", token_msgs=f"TOKEN{n:04d}AAAA"),
            now=T0,
            read_back=False,
        )
    assert (wal.stat().st_size - before) == 10 * (page + 24)
    storage.close()
