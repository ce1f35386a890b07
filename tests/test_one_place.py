"""Every rule in one place: the source of src/ and plugins/ does not write again what
the core declares once (the field list, the merge rule, the default paths, "no
Content-Type is a form", the back-off formula).

Each check reads the code as Python (ast), so that a comment or a docstring that
quotes a rule is not taken for a second copy of it, and each is shown to catch the
copy it is about (the ``_caught`` tests).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

from pushreport_core import REGISTRATION_FIELDS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p
    for top in ("src", "plugins")
    for p in (ROOT / top).rglob("*.py")
    if "egg-info" not in p.parts
)
_NAMES = "|".join(REGISTRATION_FIELDS)
#: Five field names or more in a row, comma-separated, as an SQL column or parameter
#: list writes them (``selector, username, …``, ``:selector, :username``,
#: ``%(selector)s, %(username)s``).
_SQL_FIELD_LIST = re.compile(
    rf"(?:[:%(]*\b(?:{_NAMES})\b\)?s?\s*,\s*){{4,}}[:%(]*\b(?:{_NAMES})\b"
)
#: A literal sequence with this many field names is a field list written again.
_FIELD_LIST_SIZE = 5
FORM = "application/x-www-form-urlencoded"


def _strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string constants of *tree* that are code, not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node


def field_lists(source: str) -> list[str]:
    """Field lists written out in *source*: literal tuples, lists and sets of five or
    more registration field names, and SQL column lists of as many."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = [
                e.value
                for e in node.elts
                if isinstance(e, ast.Constant) and e.value in REGISTRATION_FIELDS
            ]
            if len(names) >= _FIELD_LIST_SIZE:
                found.append(f"line {node.lineno}: {names}")
    for node in _strings(tree):
        match = _SQL_FIELD_LIST.search(node.value)
        if match is not None:
            found.append(f"line {node.lineno}: {match.group(0)!r}")
    return found


def merge_rules(source: str) -> list[str]:
    """Places *source* writes the iOS-delay rule in SQL (``COALESCE`` of the report's
    value and the stored one)."""
    return [
        f"line {node.lineno}"
        for node in _strings(ast.parse(source))
        if "COALESCE(" in node.value.upper()
    ]


def path_patterns(source: str) -> list[str]:
    """The patterns of the default paths that *source* compiles."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "compile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and re.match(r"/(token|pushToken|removal)\b", node.args[0].value)
        ):
            found.append(node.args[0].value)
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_sources_are_found() -> None:
    names = {_where(p) for p in SOURCES}
    assert "src/pushreport_core/_values.py" in names
    assert "plugins/pushreport_sqlite/_storage.py" in names


def test_no_field_list_is_written_again() -> None:
    """The fields are declared once, by the classes of pushreport_core._values; every
    list of them (REGISTRATION_FIELDS, the SQL columns, a spool line) derives from it."""
    found = {_where(p): lists for p in SOURCES if (lists := field_lists(_read(p)))}
    assert found == {}


def test_the_merge_rule_is_written_once_per_sql_dialect() -> None:
    """In SQL, the iOS-delay rule is one entry of each dialect's policy mapping."""
    found = {_where(p): len(rules) for p in SOURCES if (rules := merge_rules(_read(p)))}
    assert found == {
        "plugins/pushreport_postgresql/_storage.py": 1,
        "plugins/pushreport_sqlite/_storage.py": 1,
    }


def test_each_default_path_is_compiled_once() -> None:
    compiled = [pattern for p in SOURCES for pattern in path_patterns(_read(p))]
    assert sorted(compiled) == sorted(set(compiled))
    assert {c.split("(")[0].rstrip("/") for c in compiled} == {"/token", "/pushToken", "/removal"}


def test_the_form_default_is_spelled_once() -> None:
    """ "If not specified, the app will default to application/x-www-form-urlencoded":
    one constant, used through request_content_type() and body_format()."""
    spelled = [
        f"{_where(p)}:{node.lineno}"
        for p in SOURCES
        for node in _strings(ast.parse(_read(p)))
        if node.value == FORM
    ]
    assert [where.split(":")[0] for where in spelled] == ["src/pushreport_core/_templates.py"]


def test_one_backoff_formula() -> None:
    """Only pushreport_core.backoff draws a jittered delay."""
    draws = [
        f"{_where(p)}:{node.lineno}"
        for p in SOURCES
        for node in ast.walk(ast.parse(_read(p)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "uniform"
    ]
    assert [d.split(":")[0] for d in draws] == ["src/pushreport_core/_gateway.py"]


def test_core_modules_import_no_underscored_name_of_another() -> None:
    found = []
    for path in SOURCES:
        if "pushreport_core" not in path.parts:
            continue
        for node in ast.walk(ast.parse(_read(path))):
            # (``from . import _grammar`` names a module of the package: fine.)
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                found += [
                    f"{_where(path)}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert found == []


# -- each check catches the copy it is about ------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        'FIELDS = ("selector", "username", "token_calls", "token_msgs", "user_agent")',
        'UPSERT = "INSERT INTO r (selector, username, token_calls, appid_calls, token_msgs)"',
        'VALUES = "(:selector, :username, :token_calls, :appid_calls, :token_msgs, :extra)"',
        'VALUES = "(%(selector)s, %(username)s, %(token_calls)s, %(appid_calls)s, '
        '%(token_msgs)s)"',
    ],
)
def test_a_field_list_is_caught(source: str) -> None:
    assert field_lists(source)


def test_a_subset_is_not_a_field_list() -> None:
    assert field_lists('TOKEN_FIELDS = ("token_calls", "appid_calls", "token_msgs")') == []
    assert field_lists('def f():\n    """selector, username, token_calls, a, b, c."""') == []


def test_a_merge_rule_and_a_path_pattern_are_caught() -> None:
    assert merge_rules('SET = "username = COALESCE(excluded.username, r.username)"')
    assert merge_rules('"""COALESCE(new, old): the rule, quoted in a docstring"""') == []
    assert path_patterns('P = re.compile(r"/token(?:/([^/]*)/?)?")') == [r"/token(?:/([^/]*)/?)?"]
