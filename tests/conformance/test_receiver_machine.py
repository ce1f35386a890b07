"""The whole receiver, driven through the app model.

A ``RuleBasedStateMachine`` runs accounts of the app (:class:`pushreport_core.AppModel`)
against the WSGI app with a real SQLite file: starts, the late iOS ``pushTokenOther``
(also while a report is in flight), rotated tokens, storage failures injected by holding
the database's write lock from another connection, retries when due, stops. After every
step what is stored equals a plain dict folded with :func:`pushreport_core.merge` over
the reports the app saw acknowledged: nothing acknowledged is lost, no token is erased
by a report that did not know it, no failed report leaves a trace; and a logout (the
Account Removal Reporter) that the receiver acknowledged leaves no registration behind.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pushreport._config import ReporterConfig, StorageConfig
from pushreport.spool import SpooledStorage
from pushreport_core import (
    AppModel,
    AppState,
    Registration,
    Removal,
    Request,
    StorageUnavailable,
    Template,
    default_removal_template,
    judge_response,
    merge,
)
from pushreport_core.testing import (
    DEFAULT_COMPATIBLE,
    ROUNDTRIP_TEMPLATES,
    Session,
    expected_report,
    run_session,
    values_variables,
)
from pushreport_core.testing import strategies as prs
from pushreport_sqlite import SQLiteStorage
from pushreport_wsgi import Config, Receiver, create_app, make_plugin_manager
from pushreport_wsgi.testing import wsgi_exchange

from ..plugins.sqlite.conftest import spooled

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
PLUGINS = make_plugin_manager()
ROUNDTRIP = {name: Template.parse(**xml) for name, xml in ROUNDTRIP_TEMPLATES.items()}
#: What the app calls on logout: the default removal shape, which the receiver accepts
#: next to any reporter template.
REMOVAL = default_removal_template("https://push.example.com")


@attrs.define
class Account:
    model: AppModel
    #: The iOS pushTokenOther the app does not have yet.
    late_token: str | None


# (app template, receiver configuration): the receiver configured with the very template
# the app uses, or with no template at all (the default shapes) for the shapes they read.
_SETUPS = st.one_of(
    st.sampled_from(sorted(ROUNDTRIP)).map(lambda n: (ROUNDTRIP[n], ROUNDTRIP[n])),
    st.sampled_from(DEFAULT_COMPATIBLE).map(lambda n: (ROUNDTRIP[n], None)),
    prs.templates().map(lambda t: (t, t)),
)


def _reporter(template: Template | None) -> ReporterConfig:
    if template is None:
        return ReporterConfig()
    return ReporterConfig(
        url=template.url,
        post_data=template.post_data,
        content_type=template.content_type,
        method=template.method,
    )


# A run creates a database per example: on tmpfs when there is one, it costs less.
_FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class Harness:
    """A receiver on a real SQLite file, a clock the test controls, and a lock to make
    storage fail. Its busy_timeout is short, not 0: the reader's handle applies the
    spool too, and a round of each meeting for a millisecond is no storage failure
    (with 0 it was one, a 503 where the session expected 200: seen in a loaded run)."""

    def __init__(self, template: Template | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pushreport-machine-", dir=_FAST_TMP))
        db = self.dir / "pushreport.sqlite3"
        self.now = T0
        config = Config(
            reporter=_reporter(template),
            storage=StorageConfig(
                backends=("sqlite",), options={"sqlite": {"path": str(db), "busy_timeout": 0.05}}
            ),
            base_dir=self.dir,
        )
        self.receiver = Receiver.from_config(
            config, plugin_manager=PLUGINS, clock=lambda: self.now
        )
        self.app = create_app(receiver=self.receiver)
        # A second handle, as `pushreport list` would read: sees only what is committed.
        self.reader = spooled(db, busy_timeout=2)
        self.reader.ping()  # creates the schema, so the lock below finds a database
        self.db = db
        self.lock: sqlite3.Connection | None = None

    def storage_down(self) -> None:
        self.lock = sqlite3.connect(self.db, isolation_level=None)
        self.lock.execute("BEGIN EXCLUSIVE")
        # The spool's background thread finds the database locked (its next round,
        # taken now): from here on reports are refused.
        self._spool_round()

    def storage_up(self) -> None:
        assert self.lock is not None
        self.lock.execute("ROLLBACK")
        self.lock.close()
        self.lock = None
        # Its next round finds the database writable again: until then (a round of the
        # background thread may hold the writers' turn, and busy_timeout is 0) reports
        # are still refused, so the harness waits for one to go through.
        deadline = time.monotonic() + 10
        while True:
            self._spool_round()
            try:
                self.receiver.storage.ping()
                return
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the spool never applied again"
                time.sleep(0.001)

    def _spool_round(self) -> None:
        storage = self.receiver.storage
        assert isinstance(storage, SpooledStorage) and isinstance(storage.storage, SQLiteStorage)
        storage.apply_round(probe=True)

    def send(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        return wsgi_exchange(self.app, request)

    def close(self) -> None:
        if self.lock is not None:
            self.storage_up()
        self.reader.close()
        self.receiver.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ReceiverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.accounts: list[Account] = []
        self.expected: dict[str, Registration] = {}
        #: Token fields an acknowledged report of the selector carried.
        self.known: dict[str, set[str]] = {}
        self.harness: Harness | None = None

    @initialize(setup=_SETUPS, values=prs.registration_values, ios=st.booleans())
    def configure(
        self, setup: tuple[Template, Template | None], values: dict[str, Any], ios: bool
    ) -> None:
        self.template, configured = setup
        self.harness = Harness(configured)
        self.add_account(values, ios)

    @property
    def h(self) -> Harness:
        assert self.harness is not None
        return self.harness

    # -- delivering what the app sends ------------------------------------------------

    def _deliver(self, account: Account, request: Request | None) -> None:
        """Send *request* and every report the app sends after it, as the app would."""
        while request is not None:
            sent = account.model.in_flight
            assert sent is not None and sent.request == request
            status, headers, body = self.h.send(request)
            ok = judge_response(status, headers, body, method=request.method)
            if self.h.lock is None:
                assert ok, f"a valid report was answered {status} {body!r}"
            else:
                assert status == 503 and not ok, f"storage is down, yet answered {status}"
                assert "Retry-After" in dict(headers), "a 503 without Retry-After"
            if ok:
                report = expected_report(
                    self.template, sent.variables, user_agent=request.user_agent
                )
                selector = report.selector
                self.expected[selector] = merge(
                    self.expected.get(selector), report, now=self.h.now
                )
                self.known.setdefault(selector, set()).update(
                    f for f in ("token_calls", "token_msgs") if getattr(report, f)
                )
            request = account.model.response(ok, now=self.h.now)

    def _pick(self, i: int, *states: AppState) -> Account:
        """The *i*-th account (cyclically) among those in one of *states* (any: all)."""
        candidates = [a for a in self.accounts if not states or a.model.state in states]
        assert candidates, "a precondition should have excluded this rule"
        return candidates[i % len(candidates)]

    def _any_in(self, *states: AppState) -> bool:
        return any(a.model.state in states for a in self.accounts)

    # -- rules ------------------------------------------------------------------------

    @precondition(lambda self: len(self.accounts) < 4)
    @rule(values=prs.registration_values, ios=st.booleans())
    def add_account(self, values: dict[str, Any], ios: bool) -> None:
        if any(a.model.variables["selector"] == values["selector"] for a in self.accounts):
            return  # the same account again: nothing new
        late = None
        if ios and values["token_msgs"] is not None:
            late, values = values["token_msgs"], {**values, "token_msgs": None}
        self.accounts.append(
            Account(
                model=AppModel(self.template, values_variables(values), removal=REMOVAL),
                late_token=late,
            )
        )

    @rule(i=st.integers(0, 3), delayed=st.booleans(), token_in_flight=st.booleans())
    def start(self, i: int, delayed: bool, token_in_flight: bool) -> None:
        """The app is (re)started. On iOS pushTokenOther may be late again (*delayed*),
        and may arrive while the first report is in flight."""
        account = self._pick(i)
        model = account.model
        if model.state is not AppState.IDLE:
            model.stop(now=self.h.now)
        delayed = delayed and model.variables.get("pushTokenOther") is not None
        if delayed:
            account.late_token = model.variables["pushTokenOther"]
        request = model.start(now=self.h.now, token_delayed=delayed)
        if token_in_flight and account.late_token is not None:
            assert model.token_arrived(account.late_token, now=self.h.now) is None
            assert model.state is AppState.SENDING_STALE
            account.late_token = None
        self._deliver(account, request)

    @precondition(lambda self: self._any_in(AppState.DONE, AppState.BACKOFF))
    @rule(i=st.integers(0, 3), rotated=prs.tokens())
    def token_arrives(self, i: int, rotated: str) -> None:
        """The late iOS pushTokenOther arrives, or the token rotates."""
        account = self._pick(i, AppState.DONE, AppState.BACKOFF)
        token, account.late_token = account.late_token or rotated, None
        self._deliver(account, account.model.token_arrived(token, now=self.h.now))

    @precondition(lambda self: self._any_in(AppState.BACKOFF))
    @rule(i=st.integers(0, 3))
    def retry(self, i: int) -> None:
        account = self._pick(i, AppState.BACKOFF)
        assert account.model.retry_at is not None
        self.h.now = max(self.h.now, account.model.retry_at)
        self._deliver(account, account.model.retry_due(now=self.h.now))

    @precondition(lambda self: self._any_in(AppState.DONE, AppState.BACKOFF))
    @rule(i=st.integers(0, 3))
    def stop(self, i: int) -> None:
        self._pick(i, AppState.DONE, AppState.BACKOFF).model.stop(now=self.h.now)

    @precondition(lambda self: self.harness is not None and self.harness.lock is None)
    @rule()
    def storage_fails(self) -> None:
        self.h.storage_down()

    @precondition(lambda self: self.harness is not None and self.harness.lock is not None)
    @rule()
    def storage_recovers(self) -> None:
        self.h.storage_up()

    @rule(seconds=st.sampled_from((1, 7, 300, 86_400)))
    def time_passes(self, seconds: int) -> None:
        self.h.now += timedelta(seconds=seconds)

    # -- account removal ------------------------------------------------------------------

    @rule(i=st.integers(0, 3))
    def log_out(self, i: int) -> None:
        """The user logs out: the app calls the Account Removal Reporter (the default
        removal shapes) with what it knows now. Once acknowledged, the registration is
        gone, unless a token the removal names differs from the stored one (a report of
        a rotated token failed and the app logged out before retrying it: the receiver
        cannot tell that from a stale removal, and keeps the registration)."""
        account = self._pick(i)
        sent = dict(account.model.variables)
        request = account.model.log_out(now=self.h.now)
        assert request is not None and account.model.state is AppState.IDLE
        removal = Removal.from_report(expected_report(REMOVAL, sent))
        deletes = removal.applies_to(self.expected.get(removal.selector))
        status, headers, body = self.h.send(request)
        ok = judge_response(status, headers, body, method=request.method)
        if self.h.lock is None or not deletes:
            # Nothing to delete needs no write: answered even while writes are locked.
            assert ok, f"a valid removal was answered {status} {body!r}"
        else:
            assert status == 503 and not ok, f"storage is down, yet answered {status}"
        if ok and deletes:
            self.expected.pop(removal.selector)
            self.known.pop(removal.selector, None)

    # -- what must hold after every step --------------------------------------------------

    @invariant()
    def stored_equals_the_model(self) -> None:
        if self.harness is None:
            return
        stored = {r.selector: r for r in self.h.reader}
        assert stored == self.expected
        for selector, fields in self.known.items():
            for field in fields:
                assert getattr(stored[selector], field) is not None, (
                    f"{field} of {selector} was erased by a report that did not know it"
                )

    def teardown(self) -> None:
        if self.harness is not None:
            self.harness.close()


def test_receiver_state_machine() -> None:
    run_state_machine_as_test(
        ReceiverMachine,
        settings=settings(
            deadline=None, stateful_step_count=25, suppress_health_check=[HealthCheck.too_slow]
        ),
    )


# -- generated sessions through the receiver -----------------------------------------------


@pytest.fixture(scope="module")
def harness() -> Any:
    h = Harness(None)
    yield h
    h.close()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    session=prs.sessions(values=prs.registration_values), name=st.sampled_from(DEFAULT_COMPATIBLE)
)
def test_generated_sessions_against_the_receiver(
    harness: Harness, session: Session, name: str
) -> None:
    """Sessions through the default shapes, failures injected by locking the database:
    every exchange goes as the session planned, and what is stored is the fold of the
    acknowledged reports over what was there before."""
    template = ROUNDTRIP[name]
    selector = session.values["selector"]
    before = harness.reader.get(selector)

    def deliver(request: Request, *, fail: bool, now: datetime) -> Any:
        harness.now = now
        if fail:
            harness.storage_down()
        try:
            return harness.send(request)
        finally:
            if fail:
                harness.storage_up()

    run = run_session(session, template, deliver, start=harness.now)
    harness.now += timedelta(days=1)
    assert run.conforms, run.first_problem()
    assert any(not e.expected_ok for e in run.exchanges) == any(not e.ok for e in run.exchanges)
    expected = before
    for e in run.exchanges:
        if e.ok:
            expected = merge(
                expected,
                expected_report(template, e.variables, user_agent=e.request.user_agent),
                now=e.at,
            )
    assert harness.reader.get(selector) == expected
