"""The storage conformance suite itself: it passes on a correct backend, catches broken
ones, skips with a reason, and the differential check finds backends that disagree."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from pushreport.spool import SpooledStorage
from pushreport.testing import (
    MemoryStorage,
    MemoryStore,
    Operation,
    SpoolTargetConformance,
    StorageConformance,
    assert_backends_agree,
    installed_backends,
    storage_operations,
)
from pushreport_sqlite import SQLiteStorage

from .broken_backends import DroppingStorage, ErasingStorage

HERE = Path(__file__).parent


class TestMemoryStorageConformance(StorageConformance):
    """The reference backend runs the suite in-process (no processes: it is memory)."""

    supports_processes = False
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self):
        store = MemoryStore()
        return lambda: MemoryStorage(store)

    def make_unavailable(self, storage):
        return storage.store.unavailable()


class TestMemorySpoolTargetConformance(SpoolTargetConformance):
    """The reference backend offers the report spool's capability too."""

    supports_unavailable = True

    @pytest.fixture
    def make_storage(self):
        store = MemoryStore()
        return lambda: MemoryStorage(store)

    def make_unavailable(self, storage):
        return storage.store.unavailable()


class TestSpooledMemoryStorageConformance(StorageConformance):
    """The report spool in front of the reference backend is a correct storage: the
    spool is about no backend in particular."""

    supports_processes = False
    supports_unavailable = True

    @pytest.fixture
    def make_storage(self, tmp_path):
        store = MemoryStore()
        return lambda: SpooledStorage(MemoryStorage(store), folder=tmp_path / "spool")

    def make_unavailable(self, storage):
        return storage.storage.store.unavailable()


def test_the_base_class_is_not_collected_but_subclasses_are() -> None:
    assert StorageConformance.__test__ is False
    assert TestMemoryStorageConformance.__test__ is True


@pytest.fixture(scope="module")
def junit(tmp_path_factory: pytest.TempPathFactory) -> ET.Element:
    """The JUnit report of the suite run against each backend of
    ``suite_on_broken_backends.py``."""
    report = tmp_path_factory.mktemp("junit") / "report.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "suite_on_broken_backends.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
        ],
        cwd=HERE.parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return ET.parse(report).getroot()


@pytest.fixture(scope="module")
def broken_results(junit: ET.Element) -> dict[str, dict[str, str]]:
    """Outcome of every test of the suite against each backend, by class then test."""
    results: dict[str, dict[str, str]] = {}
    for case in junit.iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        results.setdefault(cls, {})[case.get("name", "")] = outcome
    return results


def test_the_reference_passes_the_suite(broken_results: dict[str, dict[str, str]]) -> None:
    outcomes = broken_results["TestReference"]
    assert len(outcomes) >= 19
    assert {n for n, o in outcomes.items() if o == "failed"} == set()
    assert outcomes["test_concurrent_processes_on_the_same_selectors"] == "skipped"


@pytest.mark.parametrize(
    ("backend", "caught_by"),
    [
        (
            "TestErasing",
            {
                "test_ios_delay_never_erases_a_known_value",
                "test_state_machine_against_a_dict_model",
            },
        ),
        (
            "TestDropping",
            {
                "test_ios_delay_never_erases_a_known_value",
                "test_state_machine_against_a_dict_model",
            },
        ),
        ("TestEagerAck", {"test_acknowledged_is_visible_to_another_handle_at_once"}),
        (
            "TestSwallowing",
            {"test_unavailable_raises_and_leaves_no_trace", "test_recovers_after_unavailable"},
        ),
        ("TestRacy", {"test_concurrent_threads_on_the_same_selectors"}),
        # A declaration it does not hold is refused as it would be at open, not skipped.
        (
            "TestOverclaiming",
            {
                "test_declared_capabilities_hold",
                "test_batch_upsert_is_the_merges_in_order",
                "test_put_many_stores_registrations_exactly",
            },
        ),
        ("TestQuietlyWrong", {"test_quiet_upsert_stores_what_upsert_would"}),
        ("TestInclusivePrune", {"test_prune_deletes_what_was_last_seen_before"}),
        (
            "TestGreedyForget",
            {"test_forget_token_everywhere_but_keep", "test_forget_token_in_one_registration"},
        ),
    ],
)
def test_a_broken_backend_fails_the_suite(
    broken_results: dict[str, dict[str, str]], backend: str, caught_by: set[str]
) -> None:
    failed = {n for n, o in broken_results[backend].items() if o == "failed"}
    assert caught_by <= failed, f"{backend}: the suite let it pass ({failed=})"


def test_what_a_backend_does_not_declare_is_skipped_with_the_reason(junit: ET.Element) -> None:
    """The reference declares count, find_token and forget_token only: each test of
    another capability is skipped, saying which and why; the declared ones run."""
    reasons = {
        case.get("name"): skipped.get("message", "")
        for case in junit.iter("testcase")
        if case.get("classname", "").endswith(".TestReference")
        for skipped in case.findall("skipped")
    }
    expected = {
        "test_quiet_upsert_stores_what_upsert_would": "'quiet_upsert': the receiver always "
        "reads the row back",
        "test_batch_upsert_is_the_merges_in_order": "'upsert_many': the receiver writes one "
        "report at a time",
        "test_put_many_stores_registrations_exactly": "'put_many': pushreport migrate cannot "
        "copy into it",
        "test_upsert_if_writes_only_what_allowed_lets_it": "'upsert_if': the receiver decides",
        "test_remove_if_deletes_only_what_allowed_lets_it": "'remove_if': the receiver decides",
    }
    for name, reason in expected.items():
        assert f"TestReference's backend does not declare {reason}" in reasons[name], name
    for declared in (
        "test_count_is_the_number_of_registrations",
        "test_find_token",
        "test_forget_token_everywhere_but_keep",
    ):
        assert declared not in reasons


# -- the differential check ---------------------------------------------------------------


def test_installed_backends_include_sqlite(tmp_path: Path) -> None:
    skipped: dict[str, str] = {}
    backends = installed_backends(tmp_path, skipped=skipped)
    assert "sqlite" in backends, skipped
    storage = backends["sqlite"]()
    try:
        # As configured by default: behind the report spool.
        assert isinstance(storage, SpooledStorage)
        assert isinstance(storage.storage, SQLiteStorage)
        assert storage.storage.path.parent == tmp_path
    finally:
        storage.close()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=storage_operations())
def test_every_installed_backend_agrees_with_the_reference(operations: list[Operation]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"reference": MemoryStorage, **installed_backends(Path(tmp))}
        assert_backends_agree(backends, operations)


@pytest.mark.parametrize("broken", [ErasingStorage, DroppingStorage])
def test_the_differential_check_finds_a_backend_that_disagrees(broken: type) -> None:
    # The iOS delay: a full report, then one without tokens, then a read.
    from pushreport.testing._suite import BARE, FULL, SELECTOR, T0

    operations = [
        Operation(kind="upsert", selector=SELECTOR, report=FULL, now=T0),
        Operation(kind="upsert", selector=SELECTOR, report=BARE, now=T0),
        Operation(kind="get", selector=SELECTOR),
    ]
    with pytest.raises(
        AssertionError, match="^backends 'reference' and 'broken' disagree on operation [12] "
    ):
        assert_backends_agree({"reference": MemoryStorage, "broken": broken}, operations)
    with pytest.raises(ValueError, match="at least two"):
        assert_backends_agree({"reference": MemoryStorage}, operations)
