"""The metrics the dashboard and the alert rules read (monitoring/): request latency,
removals, pushes, scheduled prunes; every one moves when its event happens, on real
SQLite files and a real gateway on loopback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import attrs
import pytest
from werkzeug.test import Client

from pushreport._config import PruneConfig
from pushreport._metrics import PUSH_OUTCOMES, REMOVAL_OUTCOMES, PrometheusMetrics
from pushreport._prune import PruneSchedule
from pushreport_core import Registration, StorageUnavailable
from pushreport_sqlite import SQLiteStorage
from pushreport_wsgi import create_app, push

from ..fake_gateway import GONE, FakeGateway, running_gateway
from .conftest import make_config
from .test_metrics import metrics_config, scrape, value
from .test_push import SEL_A, SEL_B, client, report

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


def test_requests_are_timed_and_removals_counted_by_outcome(tmp_path):
    app = create_app(metrics_config(tmp_path))
    try:
        before = scrape(app)
        for outcome in REMOVAL_OUTCOMES:  # every series there from the start
            assert ("pushreport_removals_total", frozenset({("outcome", outcome)})) in before
        assert value(before, "pushreport_request_seconds_count") == 0
        c = Client(app)
        report(app, "alice", SEL_A, msgs="MSGTOKEN-1")
        assert c.get(f"/removal/?selector={SEL_A}&username=alice").status_code == 200
        assert c.get(f"/removal/?selector={SEL_A}&username=alice").status_code == 200
        report(app, "bob", SEL_B, msgs="MSGTOKEN-2")
        # A removal that names another token than the stored one keeps the newer report.
        assert (
            c.get(f"/removal/?selector={SEL_B}&username=bob&token_msgs=MSGTOKEN-OLD").status_code
            == 200
        )
        assert c.get("/removal/?selector=bad").status_code == 400
        after = scrape(app)
        assert value(after, "pushreport_removals_total", outcome="removed") == 1
        assert value(after, "pushreport_removals_total", outcome="gone") == 1
        assert value(after, "pushreport_removals_total", outcome="kept") == 1
        assert value(after, "pushreport_request_seconds_count") == 6
        assert value(after, "pushreport_request_seconds_bucket", le="+Inf") == 6
        assert 0 < value(after, "pushreport_request_seconds_sum") < 6
        # The scrape itself is not a report: not timed.
        assert value(scrape(app), "pushreport_request_seconds_count") == 6
    finally:
        app.close()


def test_pushes_are_counted_by_the_gateways_answer(tmp_path, gateway):
    app = create_app(metrics_config(tmp_path))
    try:
        report(app, "alice", SEL_A, calls="CALLTOKEN-A")
        report(app, "alice", SEL_B, calls="CALLTOKEN-B")
        gateway.plan("CALLTOKEN-B", [GONE])
        results = push(app.receiver, username="alice", purpose="call", client=client(gateway))
        assert sorted(r.outcome.kind for r in results) == ["delivered", "token_invalid"]
        samples = scrape(app)
        assert value(samples, "pushreport_pushes_total", outcome="delivered") == 1
        assert value(samples, "pushreport_pushes_total", outcome="token_invalid") == 1
        for outcome in set(PUSH_OUTCOMES) - {"delivered", "token_invalid"}:
            assert ("pushreport_pushes_total", frozenset({("outcome", outcome)})) in samples
            assert value(samples, "pushreport_pushes_total", outcome=outcome) == 0
    finally:
        app.close()


class Broken(SQLiteStorage):
    def prune(self, before, *, dry_run=False):  # type: ignore[no-untyped-def]
        raise StorageUnavailable("sqlite database is locked")


def schedule(tmp_path: Path, storage: SQLiteStorage, metrics, clock) -> PruneSchedule:
    config = attrs.evolve(
        metrics_config(tmp_path), prune=PruneConfig(older_than="90d", interval="1h")
    )
    made = PruneSchedule.from_config(
        config, [("sqlite", storage)], clock=clock, beside=storage.path, metrics=metrics
    )
    assert made is not None
    return made


def test_prune_runs_and_the_last_success_come_from_the_schedule(tmp_path):
    now = [T0]
    db = tmp_path / "pushreport.sqlite3"
    storage = SQLiteStorage(db)
    storage.put_many(
        [Registration(selector=SEL_A, first_seen=T0, last_seen=T0 - timedelta(days=200))]
    )
    metrics = PrometheusMetrics()
    ours = schedule(tmp_path, storage, metrics, lambda: now[0])
    metrics.watch_prune(ours)
    registry = metrics.registry([])
    get = registry.get_sample_value
    assert get("pushreport_prune_last_success_timestamp_seconds") == 0  # never
    assert get("pushreport_prune_interval_seconds") == 3600
    assert ours.run_due() == 1
    assert get("pushreport_prune_runs_total", {"outcome": "success"}) == 1
    assert get("pushreport_pruned_total") == 1
    assert get("pushreport_prune_last_success_timestamp_seconds") == T0.timestamp()
    assert ours.run_due() is None  # not due: not a run
    assert get("pushreport_prune_runs_total", {"outcome": "success"}) == 1
    # Two hours later a run fails (a locked database): a failure, and the last
    # success stays T0.
    now[0] = T0 + timedelta(hours=2)
    broken = Broken(db)
    theirs = schedule(tmp_path, broken, metrics, lambda: now[0])
    with pytest.raises(StorageUnavailable):
        theirs.run_due()
    assert get("pushreport_prune_runs_total", {"outcome": "failure"}) == 1
    assert get("pushreport_prune_last_success_timestamp_seconds") == T0.timestamp()
    # Another process's success (a schedule of its own, no metrics of ours): read
    # from the lock file at the next scrape.
    other = schedule(tmp_path, storage, None, lambda: now[0])
    assert other.run_due() == 0
    assert get("pushreport_prune_last_success_timestamp_seconds") == now[0].timestamp()
    assert get("pushreport_prune_runs_total", {"outcome": "success"}) == 1
    storage.close()
    broken.close()


def test_without_a_prune_schedule_no_prune_gauges():
    registry = PrometheusMetrics().registry([])
    assert registry.get_sample_value("pushreport_prune_last_success_timestamp_seconds") is None
    assert registry.get_sample_value("pushreport_prune_runs_total", {"outcome": "success"}) == 0


def test_an_empty_metrics_file_does_not_break_the_scrape(tmp_path):
    """client_python #1199: a worker killed while creating its file leaves it empty."""
    folder = tmp_path / "multiproc"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"")
    script = textwrap.dedent(
        """
        import logging, sys
        from pushreport._metrics import PrometheusMetrics
        from prometheus_client import generate_latest
        logging.basicConfig(stream=sys.stderr)
        m = PrometheusMetrics()
        m.report_accepted()
        sys.stdout.write(generate_latest(m.registry([])).decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert 'pushreport_reports_total{outcome="accepted",reason=""} 1.0' in done.stdout
    assert "counter_4242.db is empty" in done.stderr


def test_a_removal_on_a_locked_database_is_a_storage_failure(tmp_path):
    """The storage-failure alert sees removals too, not only reports."""
    config = metrics_config(tmp_path)
    config = attrs.evolve(config, storage=make_config(tmp_path, spool=False).storage)
    app = create_app(config)
    try:
        report(app, "alice", SEL_A, msgs="MSGTOKEN-1")
        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            assert Client(app).get(f"/removal/?selector={SEL_A}&username=alice").status_code == 503
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert Client(app).get(f"/removal/?selector={SEL_A}&username=alice").status_code == 200
        samples = scrape(app)
        assert value(samples, "pushreport_backend_failures_total", backend="sqlite") == 1
        assert value(samples, "pushreport_storage_seconds_count", backend="sqlite") == 3
        assert value(samples, "pushreport_removals_total", outcome="removed") == 1
        assert value(samples, "pushreport_reports_total", outcome="refused", reason="storage") == 1
    finally:
        app.close()
