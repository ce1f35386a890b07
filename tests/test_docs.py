"""The reference in docs/ is generated from the code and must be up to date.

When this fails after a change: ``python -m pushreport._docs`` rewrites docs/, then
review and commit the diff.
"""

from __future__ import annotations

import argparse

import pytest

from pushreport import _docs
from pushreport._cli import build_parser
from pushreport._config import CONFIG_KEYS


@pytest.mark.parametrize("name", sorted(_docs.render_all()))
def test_generated_reference_is_committed_and_current(name):
    path = _docs.DOCS_DIR / name
    assert path.exists(), f"docs/{name} is missing: run python -m pushreport._docs"
    assert path.read_text(encoding="utf-8") == _docs.render_all()[name], (
        f"docs/{name} is stale: run python -m pushreport._docs"
    )


def test_every_key_option_and_hook_has_its_own_text():
    assert _docs.undocumented() == []


def test_every_config_key_is_in_the_reference():
    text = _docs.configuration_reference()
    for key in CONFIG_KEYS:
        section, _, name = key.partition(".")
        block = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        assert f"| `{name}` |" in block, key


def test_every_cli_option_is_in_the_reference():
    text = _docs.cli_reference()
    before = text.split("## Before the command", 1)[1].split("\n## ", 1)[0]
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                block = text.split(f"## `pushreport {name}`", 1)[1].split("\n## ", 1)[0]
                for option in sub._actions:
                    if isinstance(option, argparse._HelpAction):
                        continue
                    for flag in option.option_strings:
                        # One hidden from the command's help (--log-level after the
                        # command) is documented before the command.
                        where = before if option.help == argparse.SUPPRESS else block
                        assert flag in where, (name, flag)
        elif not isinstance(action, argparse._HelpAction):
            for flag in action.option_strings:  # --version, --log-level
                assert f"`{flag}`" in before, flag


def test_a_missing_help_text_is_reported(monkeypatch):
    real = build_parser

    def parser_with_a_silent_option() -> argparse.ArgumentParser:
        parser = real()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.choices["list"].add_argument("--silent")
        return parser

    monkeypatch.setattr("pushreport._cli.build_parser", parser_with_a_silent_option)
    assert _docs.undocumented() == ["option list --silent"]


def test_check_mode_names_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_docs, "DOCS_DIR", tmp_path)
    assert _docs.main(["--check"]) == 1
    assert (
        "stale: docs/configuration.md, docs/hooks.md, docs/cli.md, docs/openapi.json"
    ) in capsys.readouterr().err
    assert _docs.main([]) == 0
    assert _docs.main(["--check"]) == 0


def _documented_config_example() -> str:
    text = (_docs.DOCS_DIR / "operations.md").read_text(encoding="utf-8")
    section = text.split("## The configuration file", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_documented_configuration_example_loads_and_shows_every_key(tmp_path):
    """docs/operations.md's hand-written example is checked too: it must load as it stands
    (no unknown key, no wrong value), and it must show every key of the schema."""
    import tomllib

    from pushreport_wsgi import Config

    data = tomllib.loads(_documented_config_example())
    Config.from_dict(data, base_dir=tmp_path)
    missing = [
        key
        for key in CONFIG_KEYS
        if key.partition(".")[2] not in data.get(key.partition(".")[0], {})
    ]
    assert missing == [], f"docs/operations.md's configuration example lacks {missing}"
    # Backends' options: set in their table, or shown in a comment there (an option
    # that excludes another, like webhook's secret and secret_env).
    example = _documented_config_example()
    for backend, options in _docs._backend_options().items():
        table = example.split(f"[storage.{backend}]", 1)[1].split("\n[", 1)[0]
        unshown = [o for o in options if f"{o} =" not in table]
        assert unshown == [], f"docs/operations.md's [storage.{backend}] example lacks {unshown}"
