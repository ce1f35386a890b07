"""The lookup endpoint's OpenAPI document against a real ``pushreport serve``:
schemathesis reads the document the server serves at ``{lookup path}/openapi.json``,
generates requests from it (a bounded, derandomized run) and checks every answer: never
a 5xx, a documented status, the documented media type, a body its schema accepts.
Without the bearer, every generated lookup request is 401."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Server
from .test_push_e2e import report

pytestmark = pytest.mark.e2e

TOKEN = "e2e-openapi-bearer-token-77"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOKUP = "/internal/lookup"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Bounded and derandomized: the same requests on every run, seconds not minutes.
BOUNDED = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``serve`` with the lookup on at another path than the default, two accounts'
    registrations stored (the document's example account among them)."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    config = tmp_path / "pushreport.toml"
    config.write_text(_config_text())
    server = Server(tmp_path, "--config", str(config), workers=1)
    try:
        report(
            server,
            "alice",
            "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14",
            "ALICE-CALLS-1",
            "ALICE-MSGS-1",
        )
        report(server, "alice", "1" * 40 + ":A1", "ALICE-CALLS-2", "ALICE-MSGS-2+/=")
        report(server, "bob", "3" * 40 + ":C3", "BOB-CALLS-token", "BOB-MSGS-token")
        yield server
    finally:
        server.stop()
        if server.proc.returncode not in (0, -15):
            pytest.fail(f"serve ended with {server.proc.returncode}:\n{server.output()}")


def _config_text() -> str:
    return f'[lookup]\nenabled = true\ntoken = "{TOKEN}"\npath = "{LOOKUP}"\n'


def _document() -> dict:
    """What the server serves at ``{LOOKUP}/openapi.json`` (checked below): built here
    because schemathesis' lazy loading (``from_fixture``) does not run under this
    pytest, and the test functions must exist before the server does."""
    import tomllib

    from pushreport import Config, openapi_document

    return openapi_document(Config.from_dict(tomllib.loads(_config_text())))


schema = schemathesis.openapi.from_dict(_document())


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


@schema.parametrize()
@BOUNDED
def test_every_answer_matches_the_document(live: Server, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=url(live), headers=AUTH, checks=CHECKS, timeout=10)


@schema.include(path_regex=f"^{LOOKUP}/(registrations|targets)$").parametrize()
@BOUNDED
def test_without_the_bearer_every_lookup_is_401(live: Server, case: schemathesis.Case) -> None:
    response = case.call(base_url=url(live), timeout=10)
    assert response.status_code == 401, (case.method, case.path, response.text)
    [challenge] = response.headers["www-authenticate"]  # schemathesis: lower case, lists
    assert challenge.startswith('Bearer realm="pushreport"')
    assert response.json() == {"error": "a valid bearer token is required"}
    case.validate_response(response, checks=CHECKS)


def test_the_served_document_is_the_one_of_the_configuration(live: Server) -> None:
    import json
    import urllib.request

    from pushreport import load_config, openapi_document

    with urllib.request.urlopen(f"{url(live)}{LOOKUP}/openapi.json", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        served = json.loads(resp.read())
    config = load_config(Path(live.db).parent / "pushreport.toml")
    assert served == openapi_document(config) == _document()
    assert f"{LOOKUP}/registrations" in served["paths"] and "/healthz" in served["paths"]
