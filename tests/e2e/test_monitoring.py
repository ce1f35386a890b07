"""The dashboard and alert rules in ``monitoring/`` against a live ``pushreport serve``:
every metric their PromQL names is one the server exports, the rules load
(``promtool check rules``) and fire as their unit tests say (``promtool test rules``),
and the dashboard is one Grafana imports into any Prometheus data source."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Server, free_port
from .test_ops import get, split
from .test_prune_e2e import seed

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "prometheus-alerts.yml"
RULE_TESTS = MONITORING / "prometheus-alerts.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

#: Series Prometheus makes itself for every target: no server exports them.
PROMETHEUS_OWN = {"up"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
#: A histogram's and a counter's samples, by the suffix a query names them with.
_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords,
    label names or Grafana variables)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)  # ranges and subqueries
    expr = _GROUPING.sub(" ", expr)  # by (job, le), on (instance), group_left (x)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # $job, ${datasource}, $__rate_interval
    return {
        m.group(1)
        for m in _NAME.finditer(expr)
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS
    }


def test_metric_names_reads_promql():
    expr = (
        'sum by (le, job) (rate(a_seconds_bucket{job=~"$job",x="b(c) d"}[$__rate_interval]))'
        " / on (instance) group_left (backend) b_total offset 5m > 2 * time() and bool 1e3"
        " unless absent(up{job='p'}) or max without (x) (c_gauge)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up", "c_gauge"}


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target, rows' nested panels included, and the
    metric of every ``label_values(metric, label)`` variable."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        for metric in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", str(query)):
            yield f"variable {var['name']}", metric


def rule_exprs(rules: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def load_rules() -> dict[str, Any]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def load_dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# -- the live server ------------------------------------------------------------------


def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A server with SQLite (and its spool), a webhook outbox that gives every event
    up at once (no receiver listens), metrics and a prune schedule; a few reports, a
    refusal and a removal; then what ``/metrics`` exports: each sample name's family
    type, and the samples."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    seed(tmp_path / "pushreport.sqlite3")  # OLD: pruned when the server starts
    secret = webhook_secret()
    config = tmp_path / "pushreport.toml"
    config.write_text(
        '[storage]\nbackends = ["sqlite", "webhook"]\n'
        "[storage.webhook]\n"
        f'url = "http://127.0.0.1:{free_port()}/hook"\n'
        f'secret = "{secret}"\n'
        f'outbox = "{tmp_path / "outbox.sqlite3"}"\n'
        "max_attempts = 1\npoll_interval = 0.05\nrequired = false\n"
        "[metrics]\nenabled = true\ncount_interval = 0\n"
        '[prune]\nolder_than = "90d"\ninterval = "1h"\n'
    )
    server = Server(tmp_path, "--config", str(config), workers=2)
    try:
        selector = "C" * 40 + ":00000003"
        for i in range(3):
            answer = server.send(
                get(f"/token/?selector={selector[:-1]}{i}&username=u{i}&token_msgs=QVBBOTFi{i}")
            )
            assert split(answer)[0] == 200, answer
        assert split(server.send(get("/token/?selector=bad")))[0] == 400
        assert (
            split(server.send(get(f"/removal/?selector={selector[:-1]}0&username=u0")))[0] == 200
        )
        # Wait for what the background threads do: the prune at start, the webhook's
        # dead letters, the spool applied.
        deadline = time.monotonic() + 30
        while True:
            status, body = split(server.send(get("/metrics")))
            assert status == 200, body
            families = list(text_string_to_metric_families(body.decode()))
            samples = {
                (s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples
            }
            done = (
                samples.get(("pushreport_pruned_total", frozenset())) == 1
                and samples.get(
                    ("pushreport_webhook_outbox_dead", frozenset({("backend", "webhook")}))
                )
                == 4  # three reports and a removal
                and samples.get(
                    ("pushreport_spool_backlog_lines", frozenset({("backend", "sqlite")}))
                )
                == 0
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        output = server.output()
        assert secret not in body.decode() and secret not in output
    finally:
        server.stop()
    return {
        "types": {s.name: f.type for f in families for s in f.samples},
        "samples": samples,
        "output": output,
    }


def test_the_server_exports_what_it_did(exported: dict[str, Any]):
    samples = exported["samples"]
    label = frozenset
    assert samples[("pushreport_removals_total", label({("outcome", "removed")}))] == 1
    assert samples[("pushreport_removals_total", label({("outcome", "gone")}))] == 0
    # Three reports, a refusal, a removal: five requests timed.
    assert samples[("pushreport_request_seconds_count", label())] == 5
    assert samples[("pushreport_request_seconds_bucket", label({("le", "+Inf")}))] == 5
    assert samples[("pushreport_prune_runs_total", label({("outcome", "success")}))] == 1
    assert samples[("pushreport_prune_runs_total", label({("outcome", "failure")}))] == 0
    assert samples[("pushreport_pruned_total", label())] == 1, exported["output"]
    last = samples[("pushreport_prune_last_success_timestamp_seconds", label())]
    assert abs(last - time.time()) < 3600, last
    assert samples[("pushreport_prune_interval_seconds", label())] == 3600
    sqlite = label({("backend", "sqlite")})
    assert samples[("pushreport_spool_backlog_lines", sqlite)] == 0
    assert samples[("pushreport_spool_backlog_bytes", sqlite)] == 0
    assert samples[("pushreport_spool_oldest_age_seconds", sqlite)] == 0
    assert samples[("pushreport_spool_max_bytes", sqlite)] == 16 << 20
    webhook = label({("backend", "webhook")})
    assert samples[("pushreport_webhook_outbox_dead", webhook)] == 4, exported["output"]
    assert samples[("pushreport_webhook_outbox_pending", webhook)] == 0
    for outcome in ("delivered", "token_invalid", "retry", "failed"):
        assert samples[("pushreport_pushes_total", label({("outcome", outcome)}))] == 0


def _check_exported(where: str, exprs: Iterator[tuple[str, str]], types: dict[str, str]) -> int:
    missing, checked = [], 0
    for name, expr in exprs:
        for metric in sorted(metric_names(expr)):
            checked += 1
            if metric in PROMETHEUS_OWN:
                continue
            if metric not in types:
                missing.append(f"{name}: {metric}")
            elif metric.endswith("_bucket"):
                assert types[metric] == "histogram", f"{name}: {metric} is a {types[metric]}"
    assert not missing, f"{where} name metrics the server does not export: {missing}"
    return checked


def test_every_metric_of_the_dashboard_is_exported(exported: dict[str, Any]):
    assert _check_exported("the dashboard", dashboard_exprs(load_dashboard()), exported["types"])


def test_every_metric_of_the_alert_rules_is_exported(exported: dict[str, Any]):
    assert _check_exported("the alert rules", rule_exprs(load_rules()), exported["types"])


def test_every_exported_metric_is_documented(exported: dict[str, Any]):
    """docs/operations.md lists each family (by its name without the sample suffix)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    families = set()
    for sample in exported["types"]:
        family = sample
        for suffix in _SUFFIXES:
            if sample.endswith(suffix) and exported["types"][sample] in ("counter", "histogram"):
                family = sample[: -len(suffix)]
        families.add(family)
    undocumented = sorted(f for f in families if f.startswith("pushreport_") and f not in text)
    assert not undocumented, f"docs/operations.md does not list {undocumented}"


# -- the files themselves -------------------------------------------------------------

_DURATION = re.compile(r"\A(\d+(ms|s|m|h|d|w|y))+\Z")


def test_the_alert_rules_have_prometheus_shape():
    """What ``promtool check rules`` checks of the structure, for machines without it."""
    rules = load_rules()
    assert set(rules) == {"groups"}
    names: set[str] = set()
    alerts: set[str] = set()
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group.keys()
        assert isinstance(group["name"], str) and group["name"] not in names
        names.add(group["name"])
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_]\w*", rule["alert"])
            assert rule["alert"] not in alerts
            alerts.add(rule["alert"])
            expr = rule["expr"]
            assert isinstance(expr, str) and expr.strip()
            assert expr.count("(") == expr.count(")"), rule["alert"]
            assert expr.count("{") == expr.count("}"), rule["alert"]
            assert _DURATION.match(str(rule.get("for", "0s"))), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # What the brief of issue 17 asks the rules to watch.
    expected = {
        "PushreportStorageFailures",
        "PushreportHigh503Ratio",
        "PushreportSpoolBacklogOld",
        "PushreportWebhookDeadLetters",
        "PushreportPruneNotSucceeding",
        "PushreportMetricsAbsent",
    }
    assert expected <= alerts


def test_the_dashboard_imports_into_any_prometheus():
    dashboard = load_dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    ids = set()
    targets = 0
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for ds in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            # No data source of one Grafana's: the variable picks it.
            assert ds == {"type": "prometheus", "uid": f"${{{source['name']}}}"}, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
            targets += 1
    assert targets >= 20
    # What the brief asks the dashboard to show.
    text = json.dumps(dashboard)
    for metric in (
        "pushreport_reports_total",
        "pushreport_request_seconds_bucket",
        "pushreport_backend_failures_total",
        "pushreport_spool_backlog_lines",
        "pushreport_webhook_outbox_pending",
        "pushreport_webhook_outbox_dead",
        "pushreport_prune_runs_total",
        "pushreport_pushes_total",
    ):
        assert metric in text, metric


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return found


def test_promtool_checks_the_rules():
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(1 for _ in rule_exprs(load_rules()))
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_runs_the_rules_unit_tests():
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=MONITORING,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
