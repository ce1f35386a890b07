"""Plugins stand alone (issue 15): a plugin imports no other plugin, and of pushreport
and pushreport_core only their public names, never an underscored module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())
PACKAGES = {p.name for p in PLUGINS} | {"pushreport", "pushreport_core", "pushreport_wsgi"}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module *path* imports, absolute, with its line (``from . import x`` and
    ``from ._x import y`` resolve inside the plugin)."""
    package = path.parent.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = f"{package}.{module}" if module else package
            found.append((node.lineno, module))
            # "from pushreport import _config" imports a private module too.
            found += [
                (node.lineno, f"{module}.{a.name}") for a in node.names if a.name.startswith("_")
            ]
    return found


def violations(path: Path, root: Path = ROOT) -> list[str]:
    own = path.parent.name
    out = []
    for line, module in imports(path):
        parts = module.split(".")
        top = parts[0]
        if top not in PACKAGES or top == own:
            continue
        if top.startswith("pushreport_") and top not in {"pushreport_core", "pushreport_wsgi"}:
            out.append(f"{path.relative_to(root)}:{line}: imports the plugin {module}")
        elif any(part.startswith("_") for part in parts[1:]):
            out.append(f"{path.relative_to(root)}:{line}: imports the private {module}")
    return out


def test_no_plugin_imports_another_plugin_or_a_private_module() -> None:
    assert len(PLUGINS) >= 4
    found = [v for plugin in PLUGINS for path in plugin.rglob("*.py") for v in violations(path)]
    assert found == []


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    plugin = tmp_path / "pushreport_sample"
    plugin.mkdir()
    module = plugin / "_storage.py"
    module.write_text(
        "from pushreport._config import value_or_env\n"
        "from pushreport_sqlite._storage import UPSERT\n"
        "import pushreport_files\n"
        "from pushreport import _service\n"
        "from pushreport.storage import Capability\n"
        "from ._db import x\n"
    )
    found = [v.split(": ", 1)[1] for v in violations(module, tmp_path)]
    assert found == [
        "imports the private pushreport._config",
        "imports the plugin pushreport_sqlite._storage",
        "imports the plugin pushreport_files",
        "imports the private pushreport._service",
    ]
