"""bench/group_sync.py --postgresql still runs (a couple of seconds, no timing
assertion); needs the PostgreSQL server the backend's tests use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..plugins.postgresql.conftest import pg_dsn  # noqa: F401
from .test_bench_smoke import run_script

pytestmark = pytest.mark.e2e


def test_group_sync_postgresql_quick_stores_through_both_paths(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811 (the fixture)
):
    out = run_script(
        "group_sync.py", "--postgresql", pg_dsn, "--quick", "--json", str(tmp_path / "p.json")
    )
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["threads"] for r in rows] == [1, 4], out
    for r in rows:
        assert r["direct"]["stored_per_s"] > 0 and r["spooled"]["stored_per_s"] > 0
