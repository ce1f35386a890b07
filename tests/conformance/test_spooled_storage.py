"""The report spool as a wrapper (pushreport.spool.SpooledStorage): what it accepts to
wrap, what it passes through, and the spool line, on the reference backend in memory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pushreport import Receiver
from pushreport._batch import GroupCommit
from pushreport._spool import FIELDS, STORED, decode, encode_report
from pushreport.spool import SpooledStorage
from pushreport.storage import SpoolTarget
from pushreport.testing import MemoryStorage, MemoryStore
from pushreport_core import REGISTRATION_FIELDS, Report, Secret
from pushreport_files import FilesStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = "0123456789abcdef0123456789abcdef01234567:c0f"
FULL = Report(
    selector=SELECTOR,
    username="alice",
    token_calls="Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    appid_calls="com.cloudsoftphone.app.pushkit",
    token_msgs="QVBBOTFiRzlhcVd2",
    appid_msgs="com.cloudsoftphone.app",
    extra={"installid": "i-1", "zone": "Zürich\n"},
    user_agent="CloudSoftphone/1.5.6",
    password=Secret("hunter2"),
)


def spooled(tmp_path: Path, store: MemoryStore | None = None) -> SpooledStorage:
    return SpooledStorage(
        MemoryStorage(store or MemoryStore()), folder=tmp_path / "spool", interval=10
    )


def test_a_backend_without_the_capability_is_refused_by_name(tmp_path: Path) -> None:
    files = FilesStorage(tmp_path / "files")
    assert not isinstance(files, SpoolTarget)
    with pytest.raises(TypeError) as e:
        SpooledStorage(files, folder=tmp_path / "spool")  # type: ignore[arg-type]
    assert str(e.value) == (
        "storage backend 'files' cannot be spooled: it has no spool_marks() and "
        "apply_spooled() (pushreport.storage.SpoolTarget)"
    )


def test_a_spooled_storage_is_not_spooled_again(tmp_path: Path) -> None:
    storage = spooled(tmp_path)
    assert not isinstance(storage, SpoolTarget)  # its target's capability is not its own
    with pytest.raises(TypeError, match="^a spooled storage cannot be spooled again$"):
        SpooledStorage(storage, folder=tmp_path / "again")  # type: ignore[arg-type]


def test_it_has_the_optional_methods_of_what_it_wraps_and_no_others(tmp_path: Path) -> None:
    storage = spooled(tmp_path)
    assert storage.name == "memory"
    for name in ("count", "find_token"):  # MemoryStorage has these ...
        assert callable(getattr(storage, name))
    for name in ("upsert_many", "put_many", "upsert_if", "remove_if", "open"):
        assert not hasattr(storage, name), name  # ... and not these
    # metrics() is the spool's own (its backlog), whatever the wrapped backend has.
    assert set(storage.metrics()) == {
        "spool_backlog_lines",
        "spool_backlog_bytes",
        "spool_max_bytes",
        "spool_oldest_age_seconds",
    }
    assert storage.store is storage.storage.store  # plain attributes pass through
    with pytest.raises(AttributeError):
        storage._check  # noqa: B018 - private names never pass through


def test_a_passed_through_method_sees_every_report_answered(tmp_path: Path) -> None:
    storage = spooled(tmp_path)
    try:
        storage.upsert(FULL, now=T0, read_back=False)
        assert storage.storage.count() == 0  # spooled, not applied yet
        assert storage.count() == 1  # count() is MemoryStorage's, after the spool
        assert [r.selector for r in storage.find_token(FULL.token_msgs)] == [SELECTOR]
    finally:
        storage.close()


def test_a_spool_line_round_trips_every_stored_field_and_never_the_password() -> None:
    """The line's fields are the report's stored fields: a field added to Report and
    ``stored_fields()`` reaches the spool without another list to update."""
    assert STORED == tuple(FULL.stored_fields())
    assert FIELDS == (*STORED, "now")
    assert set(STORED) < set(REGISTRATION_FIELDS)
    now = T0 + timedelta(microseconds=7)
    line = encode_report(FULL, now)
    assert b"hunter2" not in line and line.endswith(b"\n") and line.count(b"\n") == 1
    report, at = decode(line.decode())
    assert report == FULL and report.password is None
    assert report.stored_fields() == FULL.stored_fields()
    assert at == now
    with pytest.raises(ValueError, match="aware"):
        encode_report(FULL, datetime(2024, 5, 1))


@pytest.mark.parametrize(
    "line",
    [
        "[]",
        '{"selector": "x"}',
        '["x", null, null, null, null, null, "{}", null]',  # no time
        '["x", null, null, null, null, null, "[1]", null, "2024-05-01T12:00:00Z"]',
        '["x", null, null, null, null, null, "{}", null, "yesterday"]',
        '[1, null, null, null, null, null, "{}", null, "2024-05-01T12:00:00Z"]',
    ],
)
def test_what_is_no_spool_line_is_refused(line: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode(line)


def test_the_receiver_appends_without_batching_and_batches_reads_back(tmp_path: Path) -> None:
    """The default configuration serves SQLite behind the spool: the writer is a group
    commit that passes a quiet write straight to the spool's append; without the spool
    it batches them."""
    from pushreport import Config, StorageConfig

    def writer(spool: bool) -> GroupCommit:
        config = Config(
            storage=StorageConfig(
                backends=("sqlite",),
                options={"sqlite": {"path": str(tmp_path / "db.sqlite3"), "spool": spool}},
            ),
            base_dir=tmp_path,
        )
        receiver = Receiver.from_config(config, serving=False)
        try:
            (backend,) = receiver.backends
            assert isinstance(backend.storage, SpooledStorage) is spool
            assert isinstance(backend.writer, GroupCommit)
            return backend.writer
        finally:
            receiver.close()

    spooled_writer, plain_writer = writer(True), writer(False)
    assert spooled_writer._spools is True  # each quiet write is an append of its own
    assert plain_writer._spools is False
