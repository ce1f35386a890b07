"""The lookup endpoint's OpenAPI document: valid, served without the bearer at
``{lookup path}/openapi.json`` for the configured paths, and true to what the endpoint
and the health checks answer (checked here answer by answer, in process, with the
answers a live fuzzing run cannot provoke: a storage failure, a wrong method).
tests/e2e/test_openapi.py runs schemathesis against a real ``pushreport serve``."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

import attrs
import jsonschema
import pytest
import referencing
from openapi_spec_validator import validate
from werkzeug.test import Client, TestResponse

from pushreport import Config, HealthConfig, LookupConfig, openapi_document
from pushreport._docs import DOCS_DIR
from pushreport.testing import MemoryStorage, MemoryStore
from pushreport_core import REGISTRATION_FIELDS, Secret
from pushreport_wsgi import Lookup, LookupApp, create_app

from .conftest import SPEC_GET
from .test_health import Locked, health_config
from .test_lookup import AUTH, TOKEN, lookup_config
from .test_push import SEL_A, SEL_C, report

JSON = "application/json; charset=utf-8"


def conforms(document: dict[str, Any], path: str, method: str, resp: TestResponse) -> None:
    """Fail unless *resp* is an answer *document* describes for *method* on *path*:
    a documented status, its media type, a body its schema accepts, its required
    headers with values their schemas accept."""
    operation = document["paths"][path][method.lower()]
    assert str(resp.status_code) in operation["responses"], (
        f"{method} {path}: {resp.status_code} is not documented"
    )
    described = _resolved(document, operation["responses"][str(resp.status_code)])
    [(media_type, content)] = described["content"].items()
    assert resp.mimetype == media_type, (method, path, resp.status_code)
    body: Any = resp.get_data(as_text=True)
    if media_type == "application/json":
        body = json.loads(body)
    _validator(document, content["schema"]).validate(body)
    for name, header in described.get("headers", {}).items():
        header = _resolved(document, header)
        if header.get("required"):
            assert name in resp.headers, (method, path, resp.status_code, name)
        if name in resp.headers:
            _validator(document, header["schema"]).validate(resp.headers[name])


def _resolved(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = document
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:openapi", resource)
    return jsonschema.Draft202012Validator(
        _rebased(schema),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _rebased(schema: Any) -> Any:
    """*schema* with its local ``$ref``s pointing into the registered document."""
    if isinstance(schema, dict):
        return {k: ("urn:openapi" + v if k == "$ref" else _rebased(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebased(v) for v in schema]
    return schema


@pytest.fixture
def app(tmp_path):
    application = create_app(lookup_config(tmp_path))
    report(application, "alice", SEL_A, calls="CALLTOKEN-A", msgs="MSGTOKEN-A")
    report(application, "bob", SEL_C, calls="CALLTOKEN-C")
    yield application
    application.close()


def test_the_document_is_valid_openapi_3_1():
    document = openapi_document(Config())
    assert document["openapi"].startswith("3.1.")
    validate(document)
    shipped = json.loads((DOCS_DIR / "openapi.json").read_text(encoding="utf-8"))
    validate(shipped)
    assert shipped == document  # docs/openapi.json is the default one (test_docs: current)


def test_served_without_the_bearer_for_the_configured_paths(tmp_path):
    config = lookup_config(tmp_path, path="/internal/tokens")
    config = attrs.evolve(config, health=HealthConfig(healthz="/live", readyz="/ready"))
    application = create_app(config)
    try:
        report(application, "zoe", SEL_A, calls="CALLTOKEN-ZOE", msgs="MSGTOKEN-ZOE")
        resp = Client(application).get("/internal/tokens/openapi.json")
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == JSON
        assert resp.headers["Cache-Control"] == "no-store"
        assert "WWW-Authenticate" not in resp.headers
        document = resp.json
        assert document == openapi_document(config)
        validate(document)
        assert sorted(document["paths"]) == [
            "/internal/tokens/openapi.json",
            "/internal/tokens/registrations",
            "/internal/tokens/targets",
            "/live",
            "/ready",
        ]
        # Nothing of this server beyond its paths: no token, no data, no software version.
        assert TOKEN not in resp.get_data(as_text=True)
        assert "zoe" not in resp.get_data(as_text=True)
        assert "TOKEN-ZOE" not in resp.get_data(as_text=True)
        assert metadata.version("pushreport") not in resp.get_data(as_text=True)
        # HEAD: the same, without a body; any other method is refused, still tokenless.
        head = Client(application).head("/internal/tokens/openapi.json")
        assert (head.status_code, head.data) == (200, b"")
        post = Client(application).post("/internal/tokens/openapi.json")
        assert (post.status_code, post.headers["Allow"]) == (405, "GET, HEAD")
        conforms(document, "/internal/tokens/openapi.json", "POST", post)
        # The data still needs the bearer.
        assert Client(application).get("/internal/tokens/targets").status_code == 401
    finally:
        application.close()


def test_without_health_checks_the_document_has_only_the_lookup_paths(tmp_path):
    config = attrs.evolve(lookup_config(tmp_path), health=HealthConfig(enabled=False))
    assert sorted(openapi_document(config)["paths"]) == [
        "/pushreport/lookup/openapi.json",
        "/pushreport/lookup/registrations",
        "/pushreport/lookup/targets",
    ]
    validate(openapi_document(config))


def test_an_endpoint_built_by_hand_describes_its_own_paths():
    app = LookupApp(Lookup(MemoryStorage()), token=Secret(TOKEN), path="/mine")
    resp = Client(app).get("/mine/openapi.json")
    assert resp.status_code == 200
    assert sorted(resp.json["paths"]) == [
        "/mine/openapi.json",
        "/mine/registrations",
        "/mine/targets",
    ]
    validate(resp.json)


def test_the_schemas_name_exactly_the_fields_the_answers_carry():
    schemas = openapi_document(Config())["components"]["schemas"]
    registration = schemas["Registration"]
    assert tuple(registration["properties"]) == REGISTRATION_FIELDS
    assert registration["required"] == list(REGISTRATION_FIELDS)
    assert registration["additionalProperties"] is False
    for name in ("Error", "Registrations", "Targets", "Target"):
        assert schemas[name]["additionalProperties"] is False, name
        assert sorted(schemas[name]["required"]) == sorted(schemas[name]["properties"]), name


@pytest.mark.parametrize(
    "method, url, headers, status",
    [
        ("GET", "/pushreport/lookup/registrations?username=alice", AUTH, 200),
        ("GET", f"/pushreport/lookup/registrations?selector={SEL_C}", AUTH, 200),
        ("GET", "/pushreport/lookup/registrations?username=nobody", AUTH, 200),
        ("GET", "/pushreport/lookup/registrations", AUTH, 400),
        ("GET", "/pushreport/lookup/registrations?username=a&username=b", AUTH, 400),
        ("GET", "/pushreport/lookup/registrations?username=alice", {}, 401),
        (
            "GET",
            "/pushreport/lookup/registrations?username=alice",
            {"Authorization": "Bearer not-the-token-at-all"},
            401,
        ),
        ("POST", "/pushreport/lookup/registrations?username=alice", AUTH, 405),
        ("DELETE", "/pushreport/lookup/registrations?username=alice", {}, 401),
        ("GET", "/pushreport/lookup/targets?username=alice&purpose=call", AUTH, 200),
        ("GET", "/pushreport/lookup/targets?username=alice&purpose=message", AUTH, 200),
        ("GET", "/pushreport/lookup/targets?username=alice&purpose=sms", AUTH, 400),
        ("GET", "/pushreport/lookup/targets?purpose=call", AUTH, 400),
        ("GET", "/pushreport/lookup/targets?username=alice&purpose=call", {}, 401),
        ("PUT", "/pushreport/lookup/targets", AUTH, 405),
        ("PATCH", "/pushreport/lookup/targets", {}, 401),
        ("GET", "/pushreport/lookup/openapi.json", {}, 200),
        ("GET", "/healthz", {}, 200),
        ("DELETE", "/healthz", {}, 405),
        ("GET", "/readyz", {}, 200),
        ("POST", "/readyz", {}, 405),
    ],
)
def test_every_answer_is_one_the_document_describes(app, method, url, headers, status):
    document = Client(app).get("/pushreport/lookup/openapi.json").json
    resp = Client(app).open(url, method=method, headers=headers)
    assert resp.status_code == status
    conforms(document, url.partition("?")[0], method, resp)


def test_a_storage_failure_is_the_documented_503():
    store = MemoryStore()
    app = LookupApp(Lookup(MemoryStorage(store)), token=Secret(TOKEN), path="/lookup")
    document = Client(app).get("/lookup/openapi.json").json
    with store.unavailable():
        for url in (
            "/lookup/registrations?username=alice",
            "/lookup/targets?username=a&purpose=call",
        ):
            resp = Client(app).get(url, headers=AUTH)
            assert (resp.status_code, resp.json) == (503, {"error": "storage unavailable"})
            conforms(document, url.partition("?")[0], "GET", resp)
    # The document itself is served whatever the storage's state.
    with store.unavailable():
        assert Client(app).get("/lookup/openapi.json").status_code == 200


def test_readyz_failing_is_the_documented_503(tmp_path):
    config = attrs.evolve(health_config(tmp_path), lookup=LookupConfig(enabled=True, token=TOKEN))
    app = create_app(config)
    try:
        document = Client(app).get("/pushreport/lookup/openapi.json").json
        assert Client(app).get(SPEC_GET).status_code == 200  # the database exists
        lock = Locked(tmp_path / "db.sqlite3")
        try:
            resp = Client(app).get("/readyz")
        finally:
            lock.release()
        assert resp.status_code == 503
        conforms(document, "/readyz", "GET", resp)
    finally:
        app.close()


def test_the_checker_catches_an_undocumented_answer(app):
    """conforms() itself can fail: a wrong body, a missing header, an unknown status."""
    document = Client(app).get("/pushreport/lookup/openapi.json").json
    path = "/pushreport/lookup/registrations"
    refused = Client(app).get(path + "?username=alice")
    assert refused.status_code == 401
    del refused.headers["WWW-Authenticate"]
    with pytest.raises(AssertionError):
        conforms(document, path, "GET", refused)
    ok = Client(app).get(path + "?username=alice", headers=AUTH)
    ok.set_data(json.dumps({"registrations": [{"selector": "x", "stolen": True}]}))
    with pytest.raises(jsonschema.ValidationError):
        conforms(document, path, "GET", ok)
    ok.status_code = 418
    with pytest.raises(AssertionError, match="418 is not documented"):
        conforms(document, path, "GET", ok)
