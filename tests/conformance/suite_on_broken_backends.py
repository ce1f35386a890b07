"""Run by test_storage_suite.py in a pytest subprocess (not collected by itself): the
conformance suite against the broken backends, and against the reference as a control."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings

from pushreport.testing import MemoryStorage, MemoryStore, StorageConformance

from .broken_backends import (
    DroppingStorage,
    EagerAckStorage,
    ErasingStorage,
    GreedyForgetStorage,
    InclusivePruneStorage,
    OverclaimingStorage,
    QuietlyWrongStorage,
    RacyStorage,
    SwallowingStorage,
)


class MemoryConformance(StorageConformance):
    __test__ = False  # a base, not a suite
    storage_class: type[MemoryStorage] = MemoryStorage
    supports_processes = False
    supports_unavailable = True
    # A broken backend fails the state machine at once; shrinking the failure to a
    # minimal example would only cost time here.
    machine_settings = settings(
        max_examples=20,
        deadline=None,
        stateful_step_count=30,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )

    @pytest.fixture
    def make_storage(self):
        store = MemoryStore()
        return lambda: self.storage_class(store)

    def make_unavailable(self, storage):
        return storage.store.unavailable()


class TestReference(MemoryConformance):
    storage_class = MemoryStorage


class TestErasing(MemoryConformance):
    storage_class = ErasingStorage


class TestDropping(MemoryConformance):
    storage_class = DroppingStorage


class TestEagerAck(MemoryConformance):
    storage_class = EagerAckStorage


class TestSwallowing(MemoryConformance):
    storage_class = SwallowingStorage


class TestRacy(MemoryConformance):
    storage_class = RacyStorage


class TestInclusivePrune(MemoryConformance):
    storage_class = InclusivePruneStorage


class TestGreedyForget(MemoryConformance):
    storage_class = GreedyForgetStorage


class TestOverclaiming(MemoryConformance):
    storage_class = OverclaimingStorage


class TestQuietlyWrong(MemoryConformance):
    storage_class = QuietlyWrongStorage
