"""Each built-in backend's ``open()`` and ``StorageContext.create`` (issue 14, items 12
and 14): a store that cannot be used is named with the reason, and one opened without
*create* is never created, on real files (PostgreSQL: postgresql/test_postgresql_open.py)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pushreport._service import open_now
from pushreport.storage import StorageStarting
from pushreport_core import StorageUnavailable
from pushreport_files import FilesStorage
from pushreport_sqlite import SQLiteStorage
from pushreport_webhook import WebhookStorage
from pushreport_wsgi import Backend, StorageContext

READER = StorageContext(base_dir=Path("/"), create=False)


def test_sqlite_without_create_never_creates_the_file(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    storage = SQLiteStorage.from_options({"path": str(db)}, READER)
    with pytest.raises(StorageUnavailable) as info:
        storage.open()
    assert str(info.value) == f"sqlite database {db} does not exist (pushreport serve creates it)"
    # Nor does a read that skips open(): mode=rw, no schema, no checkpointer's file.
    with pytest.raises(StorageUnavailable, match="^sqlite database file cannot be opened$"):
        list(storage)
    storage.close()
    assert list(tmp_path.iterdir()) == []


def test_sqlite_without_create_leaves_a_foreign_file_alone(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE mine (x)")
    conn.close()
    storage = SQLiteStorage(db, create=False)
    with pytest.raises(StorageUnavailable) as info:
        storage.open()
    storage.close()
    assert str(info.value) == f"no pushreport data in sqlite database {db}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert names == ["mine"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t: t / "none" / "x.sqlite3", ": its folder {t}/none does not exist"),
        (lambda t: (t / "d.sqlite3").mkdir() or t / "d.sqlite3", ": it is a folder, not a file"),
        (
            lambda t: (t / "f").write_text("x") and t / "f" / "x.sqlite3",
            ": {t}/f is not a folder",
        ),
        (
            lambda t: (t / "c.sqlite3").write_bytes(b"\x01" * 4096) and t / "c.sqlite3",
            ": not a SQLite database file",
        ),
    ],
)
def test_sqlite_open_names_the_path_and_the_reason(tmp_path: Path, make: Any, reason: str) -> None:
    db = make(tmp_path)
    for create in (True, False):
        storage = SQLiteStorage(db, create=create)
        with pytest.raises(StorageUnavailable) as info:
            storage.open()
        storage.close()
        assert str(info.value) == f"cannot open sqlite database {db}" + reason.format(t=tmp_path)


def test_sqlite_open_with_create_creates_and_checks_it_can_write(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite3"
    storage = SQLiteStorage(db)
    storage.open()
    storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()
    reader = SQLiteStorage(db, create=False)
    reader.open()  # now it exists: a reader opens it
    assert list(reader) == []
    reader.close()


def test_files_without_create_never_creates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    storage = FilesStorage.from_options({"path": str(folder)}, READER)
    with pytest.raises(StorageUnavailable) as info:
        storage.open()
    assert str(info.value) == (
        f"files storage folder {folder} does not exist (pushreport serve creates it)"
    )
    with pytest.raises(StorageUnavailable, match="^files storage folder does not exist$"):
        list(storage)
    storage.close()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    storage = FilesStorage(tmp_path / "file", create=False)
    with pytest.raises(StorageUnavailable) as info:
        storage.open()
    assert str(info.value) == (
        f"cannot open files storage folder {tmp_path}/file: it is a file, not a folder"
    )


def test_webhook_outbox_without_create_is_not_created(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    plain = SQLiteStorage(outbox)
    plain.open()  # a SQLite backend's file: registrations, no outbox
    plain.close()
    storage = WebhookStorage(outbox, deliver=False, create=False)
    with pytest.raises(StorageUnavailable) as info:
        storage.open()
    storage.close()
    assert str(info.value) == f"no pushreport data in sqlite database {outbox}"
    with sqlite3.connect(outbox) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "outbox" not in names and "dead_letters" not in names


class Flaky:
    """A backend whose open() raises *errors* in turn, then succeeds."""

    name = "flaky"
    capabilities = frozenset({"open"})

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.opened = 0

    def open(self) -> None:
        self.opened += 1
        if self.errors:
            raise self.errors.pop(0)

    def upsert(self, report: Any, *, now: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_open_now_waits_for_a_backend_that_is_starting() -> None:
    clock = Clock()
    flaky = Flaky(StorageStarting("starting"), StorageStarting("starting"))
    open_now([Backend("flaky", flaky)], wait=10, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert flaky.opened == 3 and 0 < clock.now < 10


def test_open_now_gives_up_after_the_wait_and_says_so() -> None:
    clock = Clock()
    flaky = Flaky(*[StorageStarting("server is unreachable")] * 1000)
    with pytest.raises(StorageStarting) as info:
        open_now([Backend("flaky", flaky)], wait=10, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert str(info.value) == "server is unreachable (waited 10 s)"
    assert 10 <= clock.now < 11


def test_open_now_does_not_wait_for_what_will_not_pass() -> None:
    clock = Clock()
    flaky = Flaky(StorageUnavailable("not a SQLite database file"))
    with pytest.raises(StorageUnavailable, match="^not a SQLite database file$"):
        open_now([Backend("flaky", flaky)], wait=10, sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert clock.now == 0 and flaky.opened == 1


def test_a_best_effort_backend_that_cannot_open_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pushreport")
    good, bad = Flaky(), Flaky(StorageUnavailable("down"))
    open_now([Backend("good", good), Backend("bad", bad, required=False)])  # type: ignore[arg-type]
    assert caplog.messages == ["best-effort storage backend 'bad' cannot be opened: down"]
