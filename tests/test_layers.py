"""The shape of the code: what import-linter (``[tool.importlinter]``, run by
``.ci/run``) cannot say.

- No module imports another package's underscored module or name
  (``from pushreport._config import Config`` in ``pushreport_wsgi``): each package
  offers a public surface, and the others use it.
- No import cycle among the modules of ``src/`` and ``plugins/``, counting every import:
  at module level, inside functions (a deferred import hides a cycle, it does not
  break it) and under ``TYPE_CHECKING`` (two modules that need each other's types are
  one module in two files). A package's implicit import of its parent package is not
  an edge: a submodule always imports its package's ``__init__``.
- The adapters stay thin: at most 600 lines of code each outside ``testing/``.

Each check reads the source with :mod:`ast` and fails listing every offending line.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Iterator

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "src", ROOT / "plugins")

#: Violations in other branches' areas, removed as they land. Each entry names the
#: branch fixing it; an entry that no longer matches anything fails the test, so the
#: list only ever shrinks.
ALLOWED_PRIVATE_IMPORTS: dict[str, str] = {}
ALLOWED_CYCLE_EDGES: dict[str, str] = {}


@attrs.frozen
class Import:
    """One import statement's edge: *importer* imports *imported* (a module of ours,
    or one of our packages), at *where* (``path:line``)."""

    importer: str
    imported: str
    where: str
    #: The name imported from *imported*, for ``from X import name``.
    name: str | None = None


@attrs.frozen
class Tree:
    """Our modules, by dotted name: their file, and whether each is a package."""

    files: dict[str, Path]
    packages: frozenset[str]
    root: Path

    @classmethod
    def scan(cls, *folders: Path, root: Path = ROOT) -> Tree:
        files: dict[str, Path] = {}
        packages: set[str] = set()
        for folder in folders:
            for path in sorted(folder.rglob("*.py")):
                parts = list(path.relative_to(folder).with_suffix("").parts)
                if any(p.startswith(".") for p in parts):
                    continue
                if parts[-1] == "__init__":
                    parts.pop()
                    packages.add(".".join(parts))
                files[".".join(parts)] = path
        return cls(files, frozenset(packages), root)

    @property
    def top_level(self) -> frozenset[str]:
        return frozenset(name.partition(".")[0] for name in self.files)

    def imports(self) -> Iterator[Import]:
        """Every import of one of our modules, wherever it stands in the file."""
        for module, path in self.files.items():
            package = module if module in self.packages else module.rpartition(".")[0]
            where = path.relative_to(self.root)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.partition(".")[0] in self.top_level:
                            yield Import(module, alias.name, f"{where}:{node.lineno}")
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        source = ".".join(base + ([node.module] if node.module else []))
                    else:
                        source = node.module or ""
                    if source.partition(".")[0] not in self.top_level:
                        continue
                    for alias in node.names:
                        yield Import(module, source, f"{where}:{node.lineno}", alias.name)

    def edges(self) -> dict[str, dict[str, str]]:
        """importer → {imported module: where}; ``from X import y`` is an edge to the
        module ``X.y`` when there is one, else to ``X``."""
        graph: dict[str, dict[str, str]] = {m: {} for m in self.files}
        for imp in self.imports():
            target = imp.imported
            if imp.name is not None and f"{target}.{imp.name}" in self.files:
                target = f"{target}.{imp.name}"
            while target not in self.files and "." in target:
                target = target.rpartition(".")[0]
            if target in self.files and target != imp.importer:
                graph[imp.importer].setdefault(target, imp.where)
        return graph


def private_imports(tree: Tree) -> dict[str, list[str]]:
    """Every import that reaches into another top-level package's underscored module or
    name (dunders excepted), as ``importer -> imported`` with the lines that do it."""

    def private(part: str) -> bool:
        return part.startswith("_") and not part.endswith("__")

    found: dict[str, list[str]] = {}
    for imp in tree.imports():
        if imp.imported.partition(".")[0] == imp.importer.partition(".")[0]:
            continue
        path = imp.imported.split(".")[1:] + ([imp.name] if imp.name else [])
        if any(private(part) for part in path):
            shown = imp.imported + (f" import {imp.name}" if imp.name else "")
            key = f"{imp.importer} -> {imp.imported}"
            if not any(private(part) for part in imp.imported.split(".")[1:]):
                key += f".{imp.name}"  # from package import _private
            found.setdefault(key, []).append(f"{imp.where}: {shown}")
    return dict(sorted(found.items()))


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, without
    recursion), each as the edges that stay inside it: ``a -> b (where)``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return sorted(
        sorted(
            f"{a} -> {b} ({where})"
            for a in component
            for b, where in graph[a].items()
            if b in component
        )
        for component in components
    )


def without(graph: dict[str, dict[str, str]], edges: dict[str, str]) -> dict[str, dict[str, str]]:
    pruned = {a: dict(targets) for a, targets in graph.items()}
    for edge in edges:
        a, _, b = edge.partition(" -> ")
        pruned[a].pop(b, None)
    return pruned


def code_lines(path: Path) -> int:
    """Lines that hold code: not blank, not a comment, not part of a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree.scan(*SOURCES)


# --- the tree as it is ------------------------------------------------------------------


def test_no_module_imports_another_packages_private_modules(tree: Tree) -> None:
    found = private_imports(tree)
    stale = [key for key in ALLOWED_PRIVATE_IMPORTS if key not in found]
    assert not stale, f"fixed: remove from ALLOWED_PRIVATE_IMPORTS: {stale}"
    left = [
        line
        for key, lines in found.items()
        if key not in ALLOWED_PRIVATE_IMPORTS
        for line in lines
    ]
    assert not left, "use the package's public names:\n" + "\n".join(left)


def test_no_import_cycle_among_modules(tree: Tree) -> None:
    graph = tree.edges()
    missing = [
        e
        for e in ALLOWED_CYCLE_EDGES
        if e.partition(" -> ")[2] not in graph.get(e.partition(" -> ")[0], {})
    ]
    assert not missing, f"gone: remove from ALLOWED_CYCLE_EDGES: {missing}"
    found = cycles(without(graph, ALLOWED_CYCLE_EDGES))
    assert not found, "import cycles:\n" + "\n\n".join("\n".join(c) for c in found)


@pytest.mark.parametrize("adapter", ["pushreport_wsgi", "pushreport_asgi"])
def test_the_adapters_stay_thin(tree: Tree, adapter: str) -> None:
    sizes = {
        str(path.relative_to(ROOT)): code_lines(path)
        for name, path in tree.files.items()
        if name.partition(".")[0] == adapter and ".testing" not in name
    }
    assert sizes, f"no module of {adapter}"
    assert sum(sizes.values()) <= 600, sizes


def test_the_import_contracts_cover_every_package(tree: Tree) -> None:
    """A package added to src/ or plugins/ is one import-linter checks too, and CI runs
    the contracts."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    linter = config["tool"]["importlinter"]
    assert set(linter["root_packages"]) == tree.top_level
    plugins = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    by_type = {c["type"]: c for c in linter["contracts"]}
    assert set(by_type["independence"]["modules"]) == plugins
    assert by_type["layers"]["layers"] == [
        "pushreport_wsgi | pushreport_asgi",
        "pushreport",
        "pushreport_core",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/lint-imports" in ci


# --- the checks themselves --------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Tree:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Tree.scan(root, root=root)


def test_a_private_import_across_packages_is_found_however_written(tmp_path: Path) -> None:
    tree = write(
        tmp_path,
        {
            "a/__init__.py": "from ._x import public\n",
            "a/_x.py": "public = 1\n_hidden = 2\n",
            "b/__init__.py": "",
            "b/_own.py": "",
            "b/m.py": (
                "import a._x\n"
                "from a._x import public\n"
                "from a import _x\n"
                "from a import public\n"  # fine: the public surface
                "from ._own import *\n"  # fine: its own package
                "def f():\n"
                "    from a._x import _hidden\n"
            ),
        },
    )
    assert private_imports(tree) == {
        "b.m -> a._x": [
            "b/m.py:1: a._x",
            "b/m.py:2: a._x import public",
            "b/m.py:3: a import _x",
            "b/m.py:7: a._x import _hidden",
        ],
    }


def test_a_cycle_is_found_through_deferred_and_type_checking_imports(tmp_path: Path) -> None:
    tree = write(
        tmp_path,
        {
            "p/__init__.py": "from .one import x\n",  # the package importing its own: fine
            "p/one.py": "from . import two\nx = 1\n",
            "p/two.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .three import T\n"
            ),
            "p/three.py": "def f():\n    from p.one import x\n",
            "p/four.py": "import p.one\n",  # into the cycle, not part of it
        },
    )
    assert cycles(tree.edges()) == [
        [
            "p.one -> p.two (p/one.py:1)",
            "p.three -> p.one (p/three.py:2)",
            "p.two -> p.three (p/two.py:3)",
        ]
    ]
    assert cycles(without(tree.edges(), {"p.two -> p.three": "test"})) == []


def test_code_lines_leave_docstrings_comments_and_blanks_out(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        '"""Doc.\n\nMore."""\n\n# note\nx = 1\n\n\ndef f():\n    """D."""\n    return x\n'
    )
    assert code_lines(path) == 3
