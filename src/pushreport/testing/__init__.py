"""The conformance kit, server part: a storage conformance suite for backend authors, a
reference backend in memory, a state machine against a dict model, the differential
check across backends, a conformance suite for limit states
(:class:`LimitStateConformance`, for a backend that provides ``limit_state()``) and one
for the report spool's capability (:class:`SpoolTargetConformance`, for a backend that
offers ``spool_marks()`` and ``apply_spooled()``).

Needs pytest and hypothesis (``pip install 'pushreport[testing]'``). A plugin author
runs the whole suite against a backend with a few lines::

    import functools, pytest
    from pushreport.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def make_storage(self, tmp_path):
            return functools.partial(MyStorage, tmp_path / "db")

What the backend declares (its ``capabilities``, :class:`pushreport.storage.Capability`)
decides what else is tested: the declaration must hold, each declared capability is
tested, and the tests of the others are skipped with the reason.

The app side (the app model, strategies, sessions) is :mod:`pushreport_core.testing`.
"""

from ._limitsuite import LimitStateConformance, LimitStateOpener
from ._memory import MemoryStorage, MemoryStore
from ._model import (
    Operation,
    StorageMachine,
    StorageOpener,
    assert_backends_agree,
    installed_backends,
    run_operations,
    storage_operations,
)
from ._spoolsuite import SpoolTargetConformance
from ._suite import (
    CONCURRENT_SELECTORS,
    StorageConformance,
    check_linearizable,
    concurrent_now,
    concurrent_report,
)

__all__ = [
    "LimitStateConformance",
    "LimitStateOpener",
    "MemoryStorage",
    "MemoryStore",
    "Operation",
    "SpoolTargetConformance",
    "StorageConformance",
    "StorageOpener",
    "StorageMachine",
    "assert_backends_agree",
    "installed_backends",
    "run_operations",
    "storage_operations",
    "CONCURRENT_SELECTORS",
    "check_linearizable",
    "concurrent_now",
    "concurrent_report",
]
