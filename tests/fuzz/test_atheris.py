"""The coverage-guided fuzz target ``fuzz/fuzz_parse.py``, run for a bounded time.

libFuzzer (through atheris) mutates the seed corpus (the spec's requests and the app's
request for every template kind) for about 20 seconds; any exception other than a 4xx
``PushReportError``, an invalid report or a slow input is a crash and fails the run.
Skipped where atheris has no wheel (see pyproject's ``fuzz`` extra), never under
``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pushreport_core import parse_request
from pushreport_core.testing import SPEC_REQUESTS, SPEC_SELECTOR

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGET = FUZZ / "fuzz_parse.py"
#: Seconds of fuzzing; the run stops earlier after RUNS inputs.
SECONDS = 20
RUNS = 2_000_000
#: Measured here: about 14 000 inputs a second on one idle core. Far fewer means the
#: harness is broken (or the machine is very loaded), not that the parser is fine.
MIN_EXECUTED = 10_000


def _target() -> ModuleType:
    if importlib.util.find_spec("atheris") is None:
        reason = (
            "atheris is not installed (pip install -e '.[fuzz]'; wheels exist for "
            "CPython 3.11-3.14 on x86_64 Linux)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    spec = importlib.util.spec_from_file_location("fuzz_parse", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_decode_to_the_requests_they_were_made_from() -> None:
    target = _target()
    seeds = target.seeds()
    assert len(seeds) == 2 + len(target.SHAPES) - 1
    for name, request in SPEC_REQUESTS.items():
        shape, decoded = target.request_from(seeds[f"spec-{name.replace(' ', '-').lower()}"])
        assert (shape, decoded) == (0, request)
    for name, data in seeds.items():
        shape, request = target.request_from(data)
        # Each seed is a valid report for its shape: the fuzzer starts from the inside.
        assert parse_request(request, target.SHAPES[shape]).selector == SPEC_SELECTOR, name
        target.TestOneInput(data)


def test_fuzz_target_runs_without_a_crash(tmp_path: Path) -> None:
    target = _target()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in target.seeds().items():
        (corpus / name).write_bytes(data)
    proc = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-runs={RUNS}",
            f"-max_total_time={SECONDS}",
            "-max_len=4096",
            "-timeout=10",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
            f"-dict={FUZZ / 'parse.dict'}",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SECONDS + 100,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert proc.returncode == 0, f"{crashes}\n{proc.stderr[-4000:]}"
    assert crashes == []
    executed = int(
        re.search(r"^stat::number_of_executed_units: *(\d+)$", proc.stderr, re.M).group(1)
    )  # type: ignore[union-attr]
    done = re.search(r"^#(\d+)\s+DONE\s+cov: (\d+)", proc.stderr, re.M)
    assert done is not None, proc.stderr[-2000:]
    assert int(done.group(1)) == executed
    assert executed >= MIN_EXECUTED, proc.stderr[-2000:]
    # Coverage feedback really comes from the instrumented core (a run without it
    # stays at a few dozen edges).
    assert int(done.group(2)) >= 150, proc.stderr[-2000:]
    print(f"atheris: {executed} inputs executed, {done.group(2)} edges covered, 0 crashes")
