"""Plugins add subcommands through ``pushreport_add_commands`` (issue 15); ``pushreport
outbox`` is the webhook plugin's, and the host names no plugin to have it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from pushreport import Config, hookimpl, make_plugin_manager
from pushreport._cli import build_parser, main, with_db
from pushreport_core import ConfigurationError, StorageUnavailable


class Hello:
    """A plugin with one command, which reports what it was given."""

    def __init__(self, name: str = "hello") -> None:
        self.name = name
        self.ran: list[tuple[Config, argparse.Namespace]] = []

    @hookimpl
    def pushreport_add_commands(self, add_command: Any) -> None:
        command = add_command(self.name, self.run, help="say hello")
        command.add_argument("--loud", action="store_true", help="louder")

    def run(self, config: Config, args: argparse.Namespace) -> int:
        self.ran.append((config, args))
        if args.loud:
            raise StorageUnavailable("too loud")
        return 7


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_a_plugin_command_runs_with_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = Hello()
    monkeypatch.setattr(
        "pushreport._cli.make_plugin_manager",
        lambda **kw: make_plugin_manager(load_entrypoints=False, plugins=[plugin]),
    )
    config = tmp_path / "c.toml"
    config.write_text("[reporter]\nmax_body = 1234\n")
    assert main(["hello", "--config", str(config)]) == 7
    [(given, args)] = plugin.ran
    assert given.reporter.max_body == 1234 and args.loud is False
    assert main(["hello"]) == 7  # no --config: the embedded default
    assert plugin.ran[-1][0] == Config()
    # Its errors are printed as pushreport's own.
    assert main(["hello", "--loud"]) == 1
    assert capsys.readouterr().err == "pushreport: too loud\n"
    help_text = build_parser(make_plugin_manager(load_entrypoints=False, plugins=[plugin]))
    assert commands(help_text)["hello"].format_usage() == (
        "usage: pushreport hello [-h] [--config FILE] [--loud]\n"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("list", "command 'list' is added twice, by pushreport and by plugin 'p1'"),
        ("--x", "plugin 'p1' added a command with an invalid name '--x'"),
    ],
)
def test_a_command_that_cannot_be_added_names_the_plugin(name: str, message: str) -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Hello(name), name="p1")
    with pytest.raises(ConfigurationError) as caught:
        build_parser(pm)
    assert str(caught.value) == message


def test_two_plugins_adding_one_name_are_both_named(capsys: pytest.CaptureFixture[str]) -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Hello(), name="first")
    pm.register(Hello(), name="second")
    with pytest.raises(ConfigurationError) as caught:
        build_parser(pm)
    # pluggy calls the last registered first.
    assert str(caught.value) == (
        "command 'hello' is added twice, by plugin 'second' and by plugin 'first'"
    )


def test_outbox_is_the_webhook_plugins_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the webhook plugin there is no ``outbox``; a configuration that blocks
    it takes the command away too."""
    assert "outbox" not in commands(build_parser(make_plugin_manager(load_entrypoints=False)))
    assert "outbox" in commands(build_parser())
    config = tmp_path / "c.toml"
    config.write_text('[plugins]\nblocked = ["webhook"]\n')
    with pytest.raises(SystemExit):
        main(["outbox", "--config", str(config)])
    assert "invalid choice: 'outbox'" in capsys.readouterr().err


def test_src_names_no_plugin() -> None:
    """The host imports no plugin: what it knows of one comes through the hooks."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src"
    plugins = {p.name for p in (src.parent / "plugins").iterdir() if p.is_dir()}
    plugins.discard("__pycache__")
    assert {"pushreport_sqlite", "pushreport_webhook"} <= plugins
    found = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in plugins]
    assert found == []


def test_db_sets_the_main_option_of_the_first_backend_that_declares_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushreport_wsgi import StorageConfig

    monkeypatch.chdir(tmp_path)
    config = Config(storage=StorageConfig(backends=("webhook", "files", "sqlite")))
    # webhook declares no main option: files, first of the others, gets it.
    assert with_db(config, "data").storage.options == {"files": {"path": str(tmp_path / "data")}}
    with pytest.raises(ConfigurationError) as caught:
        with_db(Config(storage=StorageConfig(backends=("webhook",))), "x")
    assert str(caught.value) == (
        "storage.backends: --db needs a backend with a main option (a file, a folder or a "
        "database) in storage.backends"
    )
