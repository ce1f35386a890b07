"""``pushreport migrate``: every registration copied exactly, idempotently, secrets masked."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs

from pushreport._cli import main
from pushreport._config import Config
from pushreport._migrate import Progress, migrate, parse_spec, run_migrate
from pushreport.hookspecs import hookimpl
from pushreport.storage import MainOption
from pushreport_core import Registration, Report
from pushreport_files._storage import FilesStorage
from pushreport_sqlite._storage import SQLiteStorage

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def sqlite(path: Path) -> SQLiteStorage:
    return SQLiteStorage(path, checkpoint_interval=0)


def populate(path: Path, n: int = 7) -> list[Registration]:
    """*n* selectors, some reported several times (with and without token_msgs)."""
    storage = sqlite(path)
    try:
        for i in range(n):
            selector = f"{i:040X}:C0F{i}"
            for k in range(i % 3 + 1):
                storage.upsert(
                    Report(
                        selector=selector,
                        username=f"user{i % 2}",
                        token_calls=f"call{i}x{k}" if k != 1 else None,
                        appid_calls="com.example.app.voip",
                        token_msgs=f"msg{i}x{k}" if k != 2 else None,
                        appid_msgs="com.example.app",
                        extra={f"k{k}": str(i)},
                        user_agent="CloudSoftphone/1.5.6",
                    ),
                    now=T0 + timedelta(seconds=i, microseconds=k * 7),
                )
        return list(storage)
    finally:
        storage.close()


def contents(storage) -> list[Registration]:
    try:
        return list(storage)
    finally:
        storage.close()


def test_sqlite_to_files_to_sqlite_round_trip(tmp_path: Path, capsys) -> None:
    source = tmp_path / "a.sqlite3"
    original = populate(source)
    assert {r.reports for r in original} == {1, 2, 3}
    folder, back = tmp_path / "files", tmp_path / "b.sqlite3"

    assert main(["migrate", "--from", f"sqlite:{source}", "--to", f"files:{folder}"]) == 0
    out = capsys.readouterr().out
    assert out == f"copied 7 registrations from sqlite:{source} to files:{folder}\n"
    assert contents(FilesStorage(folder)) == original

    # Again: the same target, nothing merged as a new report.
    assert (
        main(["migrate", "--from", f"sqlite:{source}", "--to", f"files:{folder}", "--batch", "2"])
        == 0
    )
    assert "copied 7 registrations" in capsys.readouterr().out
    assert contents(FilesStorage(folder)) == original

    assert (
        main(["migrate", "--from", f"files:{folder}", "--to", f"sqlite:{back}", "--batch", "3"])
        == 0
    )
    assert capsys.readouterr().out == (
        f"copied 7 registrations from files:{folder} to sqlite:{back}\n"
    )
    assert contents(sqlite(back)) == original
    assert main(["migrate", "--from", f"files:{folder}", "--to", f"sqlite:{back}"]) == 0
    assert contents(sqlite(back)) == original


def test_a_registration_in_the_target_is_replaced_not_merged(tmp_path: Path, capsys) -> None:
    source, target = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    original = populate(source, 3)
    t = sqlite(target)
    t.upsert(
        Report(
            selector=original[0].selector, token_msgs="stale", username="old", extra={"old": "1"}
        ),
        now=T0 - timedelta(days=3),
    )
    t.upsert(Report(selector="only-in-target"), now=T0)
    t.close()
    assert main(["migrate", "--from", f"sqlite:{source}", "--to", f"sqlite:{target}"]) == 0
    copied = {r.selector: r for r in contents(sqlite(target))}
    assert [copied[r.selector] for r in original] == original
    assert copied["only-in-target"].reports == 1  # a copy adds, it deletes nothing


def test_relative_paths_and_a_backend_named_in_the_config(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    original = populate(tmp_path / "a.sqlite3", 4)
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "pushreport.toml"
    config.write_text('[storage]\nbackends = ["files"]\n[storage.files]\npath = "data"\n')
    assert (
        main(["migrate", "--from", "sqlite:a.sqlite3", "--to", "files", "--config", str(config)])
        == 0
    )
    assert capsys.readouterr().out == "copied 4 registrations from sqlite:a.sqlite3 to files\n"
    assert contents(FilesStorage(tmp_path / "conf" / "data")) == original


def test_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    original = populate(tmp_path / "a.sqlite3", 6)
    out, err = io.StringIO(), io.StringIO()
    assert (
        run_migrate(
            parse_spec(f"sqlite:{tmp_path / 'a.sqlite3'}"),
            parse_spec(f"files:{tmp_path / 'f'}"),
            Config(base_dir=tmp_path),
            batch=2,
            out=out,
            err=err,
            interval=0,
            delay=0,
        )
        == 0
    )
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[-1] == "[" + "#" * 30 + "] 100% 6/6 registrations"
    assert any("2/6" in line for line in lines)
    assert contents(FilesStorage(tmp_path / "f")) == original


def test_progress_bar_is_redrawn_on_a_terminal(tmp_path: Path) -> None:
    populate(tmp_path / "a.sqlite3", 5)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Terminal()
    source, target = sqlite(tmp_path / "a.sqlite3"), FilesStorage(tmp_path / "f")
    try:
        assert (
            migrate(source, target, batch=2, progress=Progress(5, err, interval=0, delay=0)) == 5
        )
    finally:
        source.close()
        target.close()
    text = err.getvalue()
    assert text.startswith("\r[") and text.endswith("100% 5/5 registrations\n")
    assert text.count("\n") == 1 and text.count("\r") == 3


def test_a_short_copy_draws_no_progress(tmp_path: Path) -> None:
    populate(tmp_path / "a.sqlite3", 2)
    err = io.StringIO()
    assert (
        run_migrate(
            parse_spec(f"sqlite:{tmp_path / 'a.sqlite3'}"),
            parse_spec(f"files:{tmp_path / 'f'}"),
            Config(base_dir=tmp_path),
            batch=1,
            out=io.StringIO(),
            err=err,
        )
        == 0
    )
    assert err.getvalue() == ""


def test_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    source = tmp_path / "a.sqlite3"
    populate(source, 1)
    assert main(["migrate", "--from", "nosuch:x", "--to", f"files:{tmp_path}/f"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no storage backend named 'nosuch'" in err
    assert (
        main(["migrate", "--from", f"sqlite:{tmp_path}/missing.db", "--to", f"files:{tmp_path}/f"])
        == 2
    )
    err = capsys.readouterr().err
    assert err == (
        f"pushreport: migrate from sqlite:{tmp_path}/missing.db to files:{tmp_path}/f: "
        f"sqlite database {tmp_path}/missing.db does not exist (pushreport serve creates it)\n"
    )
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "f").exists()
    assert main(["migrate", "--from", f"sqlite:{source}", "--to", "sqlite:"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unreachable_postgresql_is_exit_2_and_the_dsn_is_never_printed(
    tmp_path: Path, capsys
) -> None:
    source = tmp_path / "a.sqlite3"
    populate(source, 2)
    dsn = "host=127.0.0.1 port=1 dbname=nothing user=secretuser password=hunter2"
    assert (
        main(
            [
                "migrate",
                "--from",
                f"sqlite:{source}",
                "--to",
                f"postgresql:{dsn}",
                "--to-option",
                "timeout=0.5",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "postgresql:***" in captured.err
    assert "hunter2" not in captured.err and "secretuser" not in captured.err


def test_sqlite_to_postgresql_and_back(tmp_path: Path, capsys, pg_dsn: str, pg_table: str) -> None:
    from pushreport_postgresql._storage import PostgreSQLStorage

    source, back = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    original = populate(source, 9)
    args = [
        "migrate",
        "--from",
        f"sqlite:{source}",
        "--to",
        f"postgresql:{pg_dsn}",
        "--to-option",
        f"table={pg_table}",
        "--batch",
        "4",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out == f"copied 9 registrations from sqlite:{source} to postgresql:***\n"
    assert pg_dsn not in out
    target = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    assert contents(target) == original
    assert main(args) == 0  # idempotent
    capsys.readouterr()
    target = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    assert contents(target) == original

    # A report after the copy merges on top of the copied registration.
    target = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        later = target.upsert(Report(selector=original[0].selector), now=T0 + timedelta(1))
    finally:
        target.close()
    assert later == attrs.evolve(
        original[0], last_seen=T0 + timedelta(1), reports=original[0].reports + 1
    )

    config = tmp_path / "pg.toml"
    config.write_text(f'[storage.postgresql]\ndsn = "{pg_dsn}"\ntable = "{pg_table}"\n')
    assert (
        main(
            ["migrate", "--from", "postgresql", "--config", str(config), "--to", f"sqlite:{back}"]
        )
        == 0
    )
    assert capsys.readouterr().out == f"copied 9 registrations from postgresql to sqlite:{back}\n"
    assert contents(sqlite(back)) == [later] + original[1:]


class ThirdParty:
    """A plugin with two backends of its own: one declares a secret main option
    (``token``), the other none."""

    def __init__(self) -> None:
        self.options: list[dict[str, object]] = []

    @hookimpl
    def pushreport_register_storage(self, register) -> None:  # type: ignore[no-untyped-def]
        def factory(options, context):  # type: ignore[no-untyped-def]
            self.options.append(dict(options))
            return FilesStorage(context.base_dir / "third", create=context.create)

        register("vault", factory, main_option=MainOption("token", secret=True))
        register("plain", factory)


def test_a_third_party_main_option_is_what_it_declared(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``NAME:VALUE`` sets the option the backend declared (and hides it when declared
    secret); a backend that declares none is named alone."""
    from pushreport import _migrate

    plugin = ThirdParty()
    real = _migrate.make_plugin_manager
    monkeypatch.setattr(_migrate, "make_plugin_manager", lambda **kw: real(plugins=[plugin]))
    source = tmp_path / "a.sqlite3"
    populate(source, 2)
    config = tmp_path / "c.toml"
    config.write_text("[storage.vault]\nmode = 1\n")
    assert (
        main(
            [
                "migrate",
                "--from",
                f"sqlite:{source}",
                "--to",
                "vault:s3cr3t",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    assert plugin.options == [{"mode": 1, "token": "s3cr3t"}]
    assert capsys.readouterr().out == f"copied 2 registrations from sqlite:{source} to vault:***\n"
    assert main(["migrate", "--from", f"sqlite:{source}", "--to", "plain:x"]) == 2
    assert capsys.readouterr().err == (
        "pushreport: configuration error: backend 'plain' declares no main option (a path "
        "or a dsn); name it alone and configure it in --config\n"
    )
