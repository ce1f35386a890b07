"""The middleware is a composition: the operator endpoints and the lookup are small apps
of their own in front of the report paths, chosen by a path dispatcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from werkzeug.test import Client

import pushreport_wsgi
from pushreport import MetricsConfig, Receiver
from pushreport._server import ADAPTER, load_adapter
from pushreport_wsgi import PathDispatcher, PushReportMiddleware, ReportMiddleware

from .conftest import SPEC_GET, make_config


def named(name: str) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name}:{environ['PATH_INFO']}".encode()]

    return app


def test_exact_paths_then_prefixes_then_the_default() -> None:
    dispatch = PathDispatcher(
        named("default"),
        exact={"/healthz": named("health"), "/lookup/x": named("exact")},
        prefixes={"/lookup": named("lookup")},
    )
    c = Client(dispatch)
    assert c.get("/healthz").data == b"health:/healthz"
    assert c.get("/healthz/more").data == b"default:/healthz/more"
    assert c.get("/lookup").data == b"lookup:/lookup"
    assert c.get("/lookup/registrations").data == b"lookup:/lookup/registrations"
    assert c.get("/lookup/x").data == b"exact:/lookup/x"
    assert c.get("/lookups").data == b"default:/lookups"  # a prefix is a whole segment
    assert c.get("/token/").data == b"default:/token/"


def test_the_middleware_routes_each_endpoint_to_its_own_app(tmp_path: Path) -> None:
    config = attrs.evolve(make_config(tmp_path), metrics=MetricsConfig(enabled=True))
    app = PushReportMiddleware(named("portal"), config)
    assert isinstance(app, PathDispatcher)
    assert set(app.exact) == {"/healthz", "/readyz", "/metrics"}
    assert isinstance(app.default, ReportMiddleware)
    assert Client(app).get(SPEC_GET).status_code == 200
    assert Client(app).get("/elsewhere").data == b"portal:/elsewhere"
    app.close()


def test_the_report_middleware_alone_answers_report_paths_only(tmp_path: Path) -> None:
    receiver = Receiver.from_config(make_config(tmp_path))
    reports = ReportMiddleware(named("portal"), receiver)
    c = Client(reports)
    assert c.get("/healthz").data == b"portal:/healthz"
    assert c.get("/readyz").data == b"portal:/readyz"
    assert c.get(SPEC_GET).status_code == 200
    receiver.close()


def test_the_server_loads_the_adapter_by_name() -> None:
    assert ADAPTER == "pushreport_wsgi"
    assert load_adapter(ADAPTER) is pushreport_wsgi.create_app
