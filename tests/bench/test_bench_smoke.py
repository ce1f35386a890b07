"""The bench scripts still run: a second or two each, no timing assertion.

Each script runs as a user runs it (``python bench/<script>.py --quick``) and must exit 0
with every column and a ratio; ``load.py`` must also leave none of its servers behind.
How fast anything is, is for ``bench/README.md``, not for the suite.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def run_script(name: str, *args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
    )
    assert out.returncode == 0, f"{name} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize(
    "tool",
    [
        "python",
        pytest.param(
            "wrk",
            marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
        ),
    ],
)
def test_load_quick_prints_the_table_and_stops_its_servers(tool: str, tmp_path: Path):
    out = run_script(
        "load.py",
        "--quick",
        "--tool",
        tool,
        "--prefill",
        "2000",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert re.search(
        r"^target\s+req/s\s+p50 ms\s+p99 ms\s+errors\s+ratio"
        r"\s+server CPU µs/req$",
        out,
        re.M,
    ), out
    rows = {}
    for label in (
        "bare WSGI app",
        "pushreport serve (synchronous=normal)",
        "pushreport serve (synchronous=full)",
        "floor: least durable receiver",
    ):
        m = re.search(
            rf"^{re.escape(label)}.*?\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})"
            rf"\s+(\d+)\s+({NUMBER})\s+({NUMBER})$",
            out,
            re.M,
        )
        assert m, f"no row for {label!r}:\n{out}"
        rows[label] = [float(g.replace(",", "")) for g in m.groups()]
    assert rows["bare WSGI app"][4] == 1.0
    for label, (rps, p50, p99, _errors, ratio, cpu_us) in rows.items():
        # Every target answered reports, and the ratio is the one of the req/s column.
        assert rps > 0 and p50 <= p99 and cpu_us > 0, (label, out)
        assert ratio == pytest.approx(rps / rows["bare WSGI app"][0], abs=0.011), (label, out)
    assert re.search(
        rf"^normal: ratio {NUMBER} vs target >= 0\.70: (met|MISSED); "
        rf"p99 {NUMBER} ms vs target < 15 ms: (met|MISSED)$",
        out,
        re.M,
    ), out
    assert re.search(rf"^full: ratio {NUMBER} vs target >= 0\.50: (met|MISSED)$", out, re.M), out
    assert re.search(
        rf"^floor \(least durable receiver, uvicorn ×\d+\): {NUMBER} x bare ASGI, "
        rf"CPU [+-]{NUMBER} µs/answer over bare ASGI; pushreport normal is {NUMBER} x "
        rf"the floor, [+-]{NUMBER} µs/answer over it$",
        out,
        re.M,
    ), out
    assert f"{tool}, 32 connections" in out
    assert "; 2,000 registrations stored before" in out

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tool"] == tool and report["prefill"] == 2_000
    targets = [r["target"] for r in report["results"]]
    # bare_same: the bare app with serve's worker count, when that is not 2.
    # bare_asgi: the bare ASGI app under uvicorn (installed with the test extras), and the
    # floor (bench/floor_asgi.py) right after it.
    assert [t for t in targets if t not in ("bare_asgi", "floor")] in (
        ["bare", "normal", "full"],
        ["bare", "bare_same", "normal", "full"],
    )
    assert targets[targets.index("bare_asgi") + 1] == "floor"
    by_name = {r["target"]: r for r in report["results"]}
    # The floor answered every report it was sent (its validation took them all) and
    # stands in the ratios of the others.
    floor = by_name["floor"]
    assert floor["errors"] == 0 and floor["rps"] > 0 and floor["cpu_us"] > 0, floor
    assert floor["label"] == f"floor: least durable receiver (uvicorn, {floor['workers']} workers)"
    assert floor["ratio_floor"] == 1.0
    normal = by_name["normal"]
    assert normal["ratio_floor"] == pytest.approx(normal["rps"] / floor["rps"], abs=0.011)
    for r in report["results"]:
        assert set(r) >= {"rps", "p50_ms", "p99_ms", "errors", "ratio", "cpu_us", "port"}
        assert refused(r["port"]), f"{r['target']} still listens on {r['port']}"
    assert report["machine"]["nproc"] and report["machine"]["sqlite"]


def test_growth_quick_prints_sizes_and_ratio():
    out = run_script("growth.py", "--quick")
    assert re.search(
        r"^\s*stored\s+update µs\s+insert µs\s+spooled µs\s+find p50 ms\s+find p99 ms"
        r"\s+db MiB\s+fill s$",
        out,
        re.M,
    ), out
    assert re.search(rf"^\s*1,000(\s+{NUMBER}){{7}}$", out, re.M), out
    assert re.search(rf"^\s*20,000(\s+{NUMBER}){{7}}$", out, re.M), out
    assert re.search(
        rf"^ratio \(20,000 / 1,000\): update {NUMBER}, insert {NUMBER}, spooled {NUMBER}$",
        out,
        re.M,
    ), out
    assert re.search(r"^find\(username\) at 20,000: .*: (met|MISSED)$", out, re.M), out


def test_memory_quick_prints_the_series_and_growth():
    report = json.loads(run_script("memory.py", "--quick", "--json"))
    assert len(report["samples"]) >= 2
    assert all(s["rss_kib"] > 0 for s in report["samples"])
    assert report["growth_kib"] == (
        report["samples"][-1]["rss_kib"] - report["samples"][0]["rss_kib"]
    )
    # Every report sent was answered 2xx: the server stored them all.
    assert report["load"]["ok"] == 2_000 and report["load"]["errors"] == 0


def test_inprocess_quick_times_the_app_and_its_parts():
    report = json.loads(run_script("inprocess.py", "--quick", "--json"))
    assert set(report["results"]) == {"app", "receiver.handle", "storage write", "parse_request"}
    for name, r in report["results"].items():
        assert len(r["runs_us"]) == report["runs"] == 2, name
        assert 0 < r["min_us"] <= r["median_us"] <= r["max_us"], (name, r)
    # Every report of the pool was stored once before the runs; the runs only update.
    assert report["prefilled"] == report["rows_after"] == report["pool"] == 2_000


def test_workers_quick_compares_worker_counts_and_stops_its_servers():
    report = json.loads(run_script("workers.py", "--quick", "--workers", "1,2", "--json"))
    assert [r["workers"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        # Every setting answered reports (no error) and used CPU for them.
        assert r["rps"] > 0 and r["errors"] == 0 and r["cpu_us"] > 0, r
        assert r["p50_ms"] <= r["p99_ms"], r
        assert refused(r["port"]), f"workers={r['workers']} still listens on {r['port']}"


def test_limits_quick_times_each_limit_on_each_store():
    report = json.loads(run_script("limits.py", "--quick", "--json"))
    stores = report["stores"]
    assert "sqlite" in stores  # postgresql too when a server answers
    for store, results in stores.items():
        assert list(results) == [
            "none",
            "per_client",
            "per_client+per_username",
            "secret",
            "secret+lockout",
        ], store
        for variant, r in results.items():
            assert len(r["runs_wall_us"]) == report["runs"] == 2, (store, variant)
            assert r["wall_us"] > 0 and r["cpu_us"] > 0, (store, variant, r)
        ops = report["ops"][store]
        assert set(ops) == {"take", "locked", "clear (none)", "fail", "claim"}, store
        assert all(us > 0 for us in ops.values()), (store, ops)


def test_group_sync_quick_prints_every_round_and_the_ratios(tmp_path: Path):
    out = run_script("group_sync.py", "--quick", "--json", str(tmp_path / "g.json"))
    for threads in (1, 4):
        assert re.search(
            rf"^\s+1\s+{threads}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M
        ), out
    assert "medians" in out
    rows = json.loads((tmp_path / "g.json").read_text())
    assert [r["threads"] for r in rows] == [1, 4]
    for r in rows:
        assert r["normal"]["appends_per_s"] > 0 and r["full"]["appends_per_s"] > 0
        # One thread: a sync per append; the full runs synced at all.
        assert r["full"]["syncs_per_append"] > 0
    assert rows[0]["full"]["syncs_per_append"] == 1.0


def test_group_sync_serve_quick_prints_normal_and_full_per_thread_count(tmp_path: Path):
    out = run_script(
        "group_sync.py",
        "--serve",
        "--quick",
        "--workers",
        "2",
        "--serve-threads",
        "1,4",
        "--tool",
        "python",
        "--json",
        str(tmp_path / "s.json"),
    )
    assert "pushreport serve, 2 workers" in out
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["threads"] for r in rows] == [1, 4]
    for r in rows:
        assert r["normal"]["errors"] == 0 and r["full"]["errors"] == 0, out
        assert r["ratio"] == r["full"]["rps"] / r["normal"]["rps"]
