"""``examples/pushreport.toml`` (issue 17, item 7) cannot rot: ``pushreport config``
passes with it, and a live ``serve`` with it answers a report made the way the app makes
it (its template substituted) with 200 and stores it; a wrong secret stores nothing."""

from __future__ import annotations

import shutil
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pushreport_core import Template, render_request
from pushreport_core.testing import SPEC_VALUES, values_variables

from .conftest import Server, pushreport_list, run_pushreport

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pushreport.toml"
SHARED_SECRET = "example-shared-secret-e2e-7Hq2"
LOOKUP_TOKEN = "example-lookup-token-e2e-0123456789"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example, as shipped, in a folder of its own (its relative paths land
    there), with the variables it names set."""
    monkeypatch.setenv("PUSHREPORT_SECRET", SHARED_SECRET)
    monkeypatch.setenv("PUSHREPORT_LOOKUP_TOKEN", LOOKUP_TOKEN)
    monkeypatch.delenv("PUSHREPORT_CONFIG", raising=False)
    return Path(shutil.copy(EXAMPLE, tmp_path / "pushreport.toml"))


def test_the_example_covers_the_common_case() -> None:
    data = tomllib.loads(EXAMPLE.read_text("utf-8"))
    assert "%account[pushSecret]%" in data["reporter"]["url"]
    assert "%account[password]%" not in data["reporter"]["url"]
    assert data["auth"]["methods"] == ["secret"] and data["auth"]["secret_env"]
    assert data["storage"]["backends"] == ["sqlite"]
    assert data["metrics"]["enabled"] is True
    assert data["lookup"]["enabled"] is True and data["lookup"]["token_env"]
    assert data["admin"]["enabled"] is False  # off, and shown how to turn on
    sdist = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "examples" in sdist["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_pushreport_config_passes_with_the_example(example: Path) -> None:
    done = run_pushreport(example.parent, "config", "--config", str(example))
    assert (done.returncode, done.stderr) == (0, "")
    assert SHARED_SECRET not in done.stdout and LOOKUP_TOKEN not in done.stdout
    assert 'secret_env = "PUSHREPORT_SECRET"' in done.stdout


def test_pushreport_config_names_a_variable_the_example_needs(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUSHREPORT_SECRET")
    done = run_pushreport(example.parent, "config", "--config", str(example))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        "pushreport: configuration error: auth.secret_env: environment variable "
        "'PUSHREPORT_SECRET' is not set\n"
    )


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_with_the_example_stores_what_the_app_reports(example: Path) -> None:
    template = Template.parse(url=tomllib.loads(example.read_text("utf-8"))["reporter"]["url"])
    variables = values_variables(SPEC_VALUES)
    server = Server(example.parent, "--config", str(example), workers=1, db=False)
    try:
        base = f"http://127.0.0.1:{server.port}"

        def report(secret: str) -> int:
            request = render_request(template, {**variables, "account[pushSecret]": secret})
            return _get(base + request.target)[0]

        assert report("not-the-secret") == 403
        assert not (example.parent / "pushreport.sqlite3").exists() or not pushreport_list(
            example.parent / "pushreport.sqlite3"
        )
        assert report(SHARED_SECRET) == 200
        [stored] = pushreport_list(example.parent / "pushreport.sqlite3")
        assert stored["selector"] == SPEC_VALUES["selector"]
        assert stored["token_calls"] == SPEC_VALUES["token_calls"]
        assert stored["username"] == SPEC_VALUES["username"]
        assert SHARED_SECRET not in str(stored)
        # The lookup and the metrics it turns on answer too.
        status, body = _get(
            f"{base}/pushreport/lookup/registrations?username={SPEC_VALUES['username']}",
            {"Authorization": f"Bearer {LOOKUP_TOKEN}"},
        )
        assert status == 200 and SPEC_VALUES["selector"].encode() in body
        status, body = _get(f"{base}/metrics")
        assert status == 200 and b'pushreport_reports_total{outcome="accepted"' in body
    finally:
        server.stop()
    log = (example.parent / "server.log").read_text("utf-8", "replace")
    assert "authentication: secret" in log
    assert SHARED_SECRET not in log and LOOKUP_TOKEN not in log
