"""The outbox's figures reach ``/metrics`` of a real app: the gauges docs/operations.md and
``_metrics.py`` promise (``pushreport_webhook_outbox_pending`` and ``…_dead``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from pushreport._config import MetricsConfig, StorageConfig
from pushreport_wsgi import Config, create_app

from .conftest import SECRET, Receiver

pytest.importorskip("prometheus_client", reason="needs the metrics extra")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"


def gauges(app: Any) -> dict[str, float]:
    resp = Client(app).get("/metrics")
    assert resp.status_code == 200, resp.data
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name.startswith("pushreport_webhook_outbox_"):
                assert sample.labels == {"backend": "webhook"}
                out[sample.name] = sample.value
    return out


@pytest.mark.parametrize("deliver", [False, True])
def test_pending_and_dead_events_are_exported(
    tmp_path: Path, receiver: Receiver, deliver: bool
) -> None:
    """Without a deliverer the three events wait; with one and a receiver that fails,
    each is dead-lettered after its single attempt."""
    receiver.mode = "fail"
    webhook: dict[str, Any] = {
        "url": receiver.url,
        "secret": SECRET,
        "outbox": str(tmp_path / "outbox.sqlite3"),
        "deliver": deliver,
        "max_attempts": 1,
        "poll_interval": 0.05,
    }
    config = Config(
        storage=StorageConfig(backends=("webhook",), options={"webhook": webhook}),
        metrics=MetricsConfig(enabled=True, count_interval=0),
        base_dir=tmp_path,
    )
    app = create_app(config)
    try:
        client = Client(app)
        for i in range(3):
            r = client.get(
                f"/token/?selector={SELECTOR[:-1]}{i}&token_msgs=QVBBOTFiRzlh{i}&appid_msgs=com.x.app"
            )
            assert r.status_code == 200, r.data
        expected = {
            "pushreport_webhook_outbox_pending": 0.0 if deliver else 3.0,
            "pushreport_webhook_outbox_dead": 3.0 if deliver else 0.0,
        }
        deadline = time.monotonic() + 10
        while (figures := gauges(app)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert figures == expected
    finally:
        app.close()
