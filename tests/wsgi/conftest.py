from __future__ import annotations

from pathlib import Path

import pytest

from pushreport._config import ReporterConfig, StorageConfig
from pushreport_wsgi import Config, make_plugin_manager

# The PostgreSQL fixtures, for the tests here that run against the real server.
from ..plugins.postgresql.conftest import pg_dsn, pg_table  # noqa: E402, F401

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="

# The spec's GET example, byte for byte.
SPEC_GET = (
    "/token/?username=johndow&password=12345678&selector="
    "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14&token_msgs="
    "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J&appid_msgs="
    "com.cloudsoftphone.app&token_calls=Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
    "&appid_calls=com.cloudsoftphone.app.pushkit"
)


def make_config(tmp_path: Path, *, spool: bool = True, **reporter: object) -> Config:
    """*spool* False: each report is its own SQLite transaction (tests of that path)."""
    sqlite = {"path": str(tmp_path / "db.sqlite3"), "busy_timeout": 0.3, "spool": spool}
    return Config(
        reporter=ReporterConfig(**reporter),  # type: ignore[arg-type]
        storage=StorageConfig(backends=("sqlite",), options={"sqlite": sqlite}),
        base_dir=tmp_path,
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def plugin_manager():
    return make_plugin_manager()
