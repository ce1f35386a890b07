"""The storage contract (issue 15): a backend declares what it can do beyond the
required protocol; the declaration is checked once, when the backend is opened, and the
host calls only what was declared, never finding a method by ``getattr``."""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pushreport.storage import Capabilities, Capability
from pushreport.testing import MemoryStorage
from pushreport_core import ConfigurationError, Registration, Report
from pushreport_wsgi import (
    Backend,
    Config,
    Receiver,
    StorageConfig,
    hookimpl,
    make_plugin_manager,
)

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
SRC = Path(__file__).resolve().parents[2] / "src" / "pushreport"


class Declaring(MemoryStorage):
    """The reference backend declaring whatever a test says."""

    name = "declaring"
    declared: Any = frozenset()

    @property
    def capabilities(self) -> Any:  # type: ignore[override]
        return self.declared


def plugin_for(storage_class: type) -> object:
    class Plugin:
        @hookimpl
        def pushreport_register_storage(self, register: Any) -> None:
            register("declaring", lambda options, context: storage_class())

    return Plugin()


def receiver_for(storage_class: type, tmp_path: Path) -> Receiver:
    config = Config(storage=StorageConfig(backends=("declaring",)), base_dir=tmp_path)
    pm = make_plugin_manager(load_entrypoints=False, plugins=[plugin_for(storage_class)])
    return Receiver.from_config(config, plugin_manager=pm)


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (
            {"put_many"},
            "storage backend 'declaring' declares 'put_many' but has no put_many() method",
        ),
        (
            {Capability.OPEN},
            "storage backend 'declaring' declares 'open' but has no open() method",
        ),
        (
            {"count", "upsert_if"},
            "storage backend 'declaring' declares 'upsert_if' but has no upsert_if() method",
        ),
        (
            {"quiet_upsert"},
            "storage backend 'declaring' declares 'quiet_upsert' but its upsert() takes no "
            "read_back argument",
        ),
        (
            {"spools"},
            "storage backend 'declaring' declares 'spools' without 'quiet_upsert'",
        ),
        (
            {"path"},
            "storage backend 'declaring' declares 'path' but has no path attribute (a file "
            "or folder)",
        ),
        (
            {"count", "cout"},
            "storage backend 'declaring' declares an unknown capability 'cout' (the "
            "capabilities are " + ", ".join(c.value for c in Capability) + ")",
        ),
        (
            "count",
            "storage backend 'declaring' declares capabilities that are not a set of "
            "Capability values: 'count'",
        ),
    ],
)
def test_a_capability_declared_without_what_it_needs_stops_the_start(
    tmp_path: Path, declared: Any, message: str
) -> None:
    class Lacking(Declaring):
        pass

    Lacking.declared = declared
    with pytest.raises(ConfigurationError) as caught:
        receiver_for(Lacking, tmp_path)
    assert str(caught.value) == message


def test_a_declaration_that_holds_is_bound_once(tmp_path: Path) -> None:
    class Counting(Declaring):
        declared = frozenset({"count", Capability.FORGET_TOKEN})

    receiver = receiver_for(Counting, tmp_path)
    try:
        [backend] = receiver.backends
        capabilities = backend.capabilities
        assert capabilities.declared == {Capability.COUNT, Capability.FORGET_TOKEN}
        assert capabilities.count is not None and capabilities.count() == 0
        assert capabilities.forget_token is not None
        for undeclared in ("find_token", "upsert_if", "put_many", "open", "metrics"):
            # MemoryStorage has find_token: not declared, it is not used.
            assert getattr(capabilities, undeclared) is None, undeclared
    finally:
        receiver.close()


class Spying(MemoryStorage):
    """Has every optional method, declares none: the host must call none of them."""

    name = "spying"
    capabilities = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name in {c.value for c in Capability} - {"path"} or name == "upsert_many":
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)

    def open(self) -> None:  # pragma: no cover - must not be called
        raise AssertionError("open() called without being declared")

    def upsert_many(self, items: Any) -> list[Registration]:  # pragma: no cover
        raise AssertionError("upsert_many() called without being declared")


def test_the_host_never_looks_up_what_is_not_declared(tmp_path: Path) -> None:
    """A backend with more methods than it declares: opening it, writing through it
    and taking its figures touch none of them."""
    from pushreport._service import open_now

    storage = Spying()
    backend = Backend("spying", storage)
    open_now([backend])  # ping(), not the undeclared open()
    assert backend.writer.upsert(Report(selector="a" * 40 + ":1"), now=T0) is not None
    assert backend.writer.upsert(Report(selector="a" * 40 + ":1"), now=T0, read_back=False)
    assert storage.calls == [], f"looked up undeclared {storage.calls}"


def _probes(tree: ast.AST) -> list[tuple[int, str]]:
    """``getattr(x, "name", ...)`` / ``hasattr(x, "name")`` of a capability's name."""
    names = {c.value for c in Capability} | {"upsert_quiet", "spooling", "capabilities"}
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in names
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def test_the_host_finds_no_storage_method_by_getattr() -> None:
    """Only ``pushreport.storage`` reads a declaration (``Capabilities.of``); no other
    module of the service probes a backend for a capability's method."""
    probes = {}
    for path in sorted(SRC.rglob("*.py")):
        found = _probes(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            probes[str(path.relative_to(SRC))] = found
    assert set(probes) == {"storage.py"}, probes
    # storage.py: the declaration itself, and the methods of what is declared.
    assert {name for _, name in probes["storage.py"]} <= {"capabilities", "path", "name"}


def test_the_probe_finder_finds_a_probe() -> None:
    tree = ast.parse('f = getattr(storage, "count", None)\nok = hasattr(s, "upsert_quiet")')
    assert _probes(tree) == [(1, "count"), (2, "upsert_quiet")]


def test_capabilities_compare_equal_to_their_names() -> None:
    # A plugin may declare them as text; each value is also the method's name where
    # there is one.
    assert Capability("count") is Capability.COUNT
    assert Capabilities.of(MemoryStorage()).declared == {
        "count",
        "find_token",
        "forget_token",
    }
