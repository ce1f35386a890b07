"""The plugin manager: discovery through entry points, block list, hook semantics."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pluggy
import pytest

import pushreport_sqlite
from pushreport._plugins import (
    authenticate,
    collect_storage_factories,
    make_plugin_manager,
    transform_report,
)
from pushreport.hookspecs import hookimpl
from pushreport.storage import Storage, StorageContext
from pushreport_core import ConfigurationError, InvalidReport, Report, Request, Secret

REQUEST = Request(method="GET", target="/token/?selector=s")

# The built-in backends, as our own pyproject.toml declares them: exactly the way a third
# party declares theirs.
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
ENTRY_POINTS: dict[str, str] = tomllib.loads(_PYPROJECT.read_text())["project"]["entry-points"][
    "pushreport"
]
BUILT_IN = sorted(ENTRY_POINTS)


# -- discovery -----------------------------------------------------------------------


def test_builtin_sqlite_is_discovered_through_the_entry_point(tmp_path: Path) -> None:
    pm = make_plugin_manager()
    assert pm.get_plugin("sqlite") is pushreport_sqlite
    dists = {plugin: dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    assert dists.get(pushreport_sqlite) == "pushreport"
    factories = collect_storage_factories(pm)
    assert factories["sqlite"] == pushreport_sqlite.SQLiteStorage.from_options
    storage = factories["sqlite"]({"path": "x.db"}, StorageContext(base_dir=tmp_path))
    assert isinstance(storage, Storage) and storage.name == "sqlite"
    storage.close()


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_backend_is_discovered_by_its_entry_point(name: str) -> None:
    pm = make_plugin_manager()
    module = importlib.import_module(ENTRY_POINTS[name])
    assert pm.get_plugin(name) is module
    assert name in collect_storage_factories(pm)


def test_without_entry_points_nothing_is_loaded() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    assert pm.get_plugin("sqlite") is None
    assert collect_storage_factories(pm) == {}


def test_block_list_prevents_loading() -> None:
    pm = make_plugin_manager(blocked=["sqlite"])
    assert pm.is_blocked("sqlite")
    assert pm.get_plugin("sqlite") is None
    assert "sqlite" not in collect_storage_factories(pm)


def test_given_plugins_are_registered() -> None:
    class Memory:
        @hookimpl
        def pushreport_register_storage(self, register):
            register("memory", lambda options, context: None)

    plugin = Memory()
    pm = make_plugin_manager(plugins=[plugin])
    assert pm.is_registered(plugin)
    assert sorted(collect_storage_factories(pm)) == sorted(["memory", *BUILT_IN])


def test_unknown_hook_fails_at_start_up() -> None:
    class Typo:
        @hookimpl
        def pushreport_report_sotred(self, registration):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="pushreport_report_sotred"):
        make_plugin_manager(plugins=[Typo()], load_entrypoints=False)


# -- storage registration ------------------------------------------------------------


class Registers:
    def __init__(self, *names: str, factory: object = None) -> None:
        self.names = names
        self.factory = factory if factory is not None else (lambda options, context: None)

    @hookimpl
    def pushreport_register_storage(self, register):
        for name in self.names:
            register(name, self.factory)


def test_duplicate_backend_name_is_a_configuration_error() -> None:
    clash = Registers("sqlite")
    pm = make_plugin_manager(plugins=[clash])
    with pytest.raises(ConfigurationError) as info:
        collect_storage_factories(pm)
    assert str(info.value) == (
        "storage backend 'sqlite' is registered twice, by plugin 'sqlite' and by plugin "
        f"{pm.get_name(clash)!r}"
    )


def test_duplicate_within_one_plugin_is_a_configuration_error() -> None:
    twice = Registers("a", "a")
    pm = make_plugin_manager(plugins=[twice], load_entrypoints=False)
    name = pm.get_name(twice)
    with pytest.raises(
        ConfigurationError,
        match=(
            f"^storage backend 'a' is registered twice, by plugin '{name}' and by plugin '{name}'$"
        ),
    ):
        collect_storage_factories(pm)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (Registers(""), "registered a storage backend with an invalid name ''"),
        (
            Registers("x", factory=42),
            "registered storage backend 'x' with a factory that is not callable",
        ),
    ],
)
def test_bad_registration_is_a_configuration_error(plugin: Registers, message: str) -> None:
    pm = make_plugin_manager(plugins=[plugin], load_entrypoints=False)
    with pytest.raises(ConfigurationError) as info:
        collect_storage_factories(pm)
    assert str(info.value) == f"plugin {pm.get_name(plugin)!r} {message}"


# -- transform_report ----------------------------------------------------------------


class Tag:
    """Appends its tag to extra["trail"]: the trail is the order of the chain."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    @hookimpl
    def pushreport_transform_report(self, report):
        trail = report.extra.get("trail", "") + self.tag
        return attrs.evolve(report, extra={**report.extra, "trail": trail})


class Watch:
    """Keeps the report as it saw it, returns None (keep)."""

    def __init__(self) -> None:
        self.seen: list[Report] = []

    @hookimpl
    def pushreport_transform_report(self, report, request):
        assert request is REQUEST
        self.seen.append(report)


class First:
    @hookimpl(tryfirst=True)
    def pushreport_transform_report(self, report):
        return attrs.evolve(report, extra={**report.extra, "trail": "!"})


class Wrapper:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(wrapper=True)
    def pushreport_transform_report(self, report):
        self.calls += 1
        return (yield)


def test_transform_chains_in_call_order() -> None:
    watch = Watch()
    # Registered a, watch, b, first: pluggy calls b, watch, a (last registered
    # first), with tryfirst ahead of all.
    plugins = [Tag("a"), watch, Tag("b"), First()]
    pm = make_plugin_manager(plugins=plugins, load_entrypoints=False)
    result = transform_report(pm, Report(selector="s", extra={"k": "v"}), REQUEST)
    assert result.extra == {"k": "v", "trail": "!ba"}
    assert [r.extra["trail"] for r in watch.seen] == ["!b"]  # saw the previous result
    order = [impl.plugin for impl in reversed(pm.hook.pushreport_transform_report.get_hookimpls())]
    assert order == [plugins[3], plugins[2], watch, plugins[0]]


def test_transform_without_plugins_keeps_the_report() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    report = Report(selector="s", token_msgs="tok12345")
    assert transform_report(pm, report, REQUEST) is report


def test_transform_ignores_wrappers() -> None:
    wrapper = Wrapper()
    pm = make_plugin_manager(plugins=[Tag("a"), wrapper], load_entrypoints=False)
    result = transform_report(pm, Report(selector="s"), REQUEST)
    assert result.extra == {"trail": "a"}
    assert wrapper.calls == 0


def test_transform_refusal_stops_the_chain() -> None:
    class Refuse:
        @hookimpl
        def pushreport_transform_report(self, report):
            raise InvalidReport("username is not allowed")

    after = Watch()
    pm = make_plugin_manager(plugins=[after, Refuse()], load_entrypoints=False)
    with pytest.raises(InvalidReport, match="^username is not allowed$"):
        transform_report(pm, Report(selector="s"), REQUEST)
    assert after.seen == []


def test_transform_returning_something_else_is_a_plugin_bug() -> None:
    class Wrong:
        @hookimpl
        def pushreport_transform_report(self, report):
            return {"selector": report.selector}

    wrong = Wrong()
    pm = make_plugin_manager(plugins=[wrong], load_entrypoints=False)
    with pytest.raises(TypeError) as info:
        transform_report(pm, Report(selector="s"), REQUEST)
    assert str(info.value) == (
        f"plugin {pm.get_name(wrong)!r} returned dict from "
        "pushreport_transform_report; expected a Report or None"
    )


# -- authenticate --------------------------------------------------------------------


class Answer:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls: list[tuple[object, ...]] = []

    @hookimpl
    def pushreport_authenticate(self, report, username, password, request):
        self.calls.append((report, username, password, request))
        return self.answer


@pytest.mark.parametrize(
    ("answers", "allowed"),
    [
        ([], True),
        ([None], True),
        ([True], True),
        ([True, None, True], True),
        ([False], False),
        ([True, False, None], False),
        ([None, False], False),
        (["yes"], False),  # not True: fails closed
        ([0], False),
    ],
)
def test_authenticate_any_false_refuses(answers: list[object], allowed: bool) -> None:
    plugins = [Answer(a) for a in answers]
    pm = make_plugin_manager(plugins=plugins, load_entrypoints=False)
    password = Secret("s3cret")
    report = Report(selector="s", username="alice", password=password)
    assert authenticate(pm, report, REQUEST) is allowed
    for plugin in plugins:  # every implementation is asked, with what it needs
        assert plugin.calls == [(report, "alice", password, REQUEST)]
        assert plugin.calls[0][2] is password


# -- a third-party plugin, installed by pip --------------------------------------------

TINY_PLUGIN = '''
"""A third-party pushreport plugin: an in-memory backend and a stored hook."""
from pushreport_core import merge
from pushreport.hookspecs import hookimpl

STORED = []


class TinyStorage:
    name = "tiny"

    def __init__(self, options):
        self.options = dict(options)
        self.rows = {}

    def upsert(self, report, *, now):
        self.rows[report.selector] = merge(self.rows.get(report.selector), report, now=now)
        return self.rows[report.selector]

    def get(self, selector):
        return self.rows.get(selector)

    def find(self, *, username=None):
        return [r for r in self if username is None or r.username == username]

    def __iter__(self):
        return iter([self.rows[k] for k in sorted(self.rows)])

    def remove(self, selector):
        return self.rows.pop(selector, None) is not None

    def ping(self):
        pass

    def close(self):
        pass


@hookimpl
def pushreport_register_storage(register):
    register("tiny", lambda options, context: TinyStorage(options))


@hookimpl
def pushreport_report_stored(registration, report):
    STORED.append([registration.selector, registration.token_msgs, registration.reports])
'''

# A PEP 517 backend in the package itself (stdlib only), for when neither hatchling
# nor setuptools with wheel is importable: it builds a plain wheel from [project].
INTREE_BACKEND = """
import base64, hashlib, os, tomllib, zipfile


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    files = {}
    for root, _, names in os.walk("tiny_plugin"):
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                files[os.path.join(root, n).replace(os.sep, "/")] = f.read()
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\\nGenerator: intree\\n"
                              b"Root-Is-Purelib: true\\nTag: py3-none-any\\n")
    lines = []
    for group, eps in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    files[f"{info}/entry_points.txt"] = ("\\n".join(lines) + "\\n").encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel
"""


def _build_system() -> tuple[str, str]:
    """The [build-system] (and tool table) for the tiny package, by what is importable."""
    if importlib.util.find_spec("hatchling"):
        return (
            'requires = ["hatchling"]\nbuild-backend = "hatchling.build"\n',
            '[tool.hatch.build.targets.wheel]\npackages = ["tiny_plugin"]\n',
        )
    if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
        return (
            'requires = ["setuptools>=61", "wheel"]\nbuild-backend = "setuptools.build_meta"\n',
            '[tool.setuptools]\npackages = ["tiny_plugin"]\n',
        )
    return ('requires = []\nbuild-backend = "intree_backend"\nbackend-path = ["."]\n', "")


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A third-party plugin package, pip-installed into its own folder."""
    root = tmp_path_factory.mktemp("tiny")
    pkg = root / "tiny-plugin"
    (pkg / "tiny_plugin").mkdir(parents=True)
    (pkg / "tiny_plugin" / "__init__.py").write_text(TINY_PLUGIN)
    build_system, tool = _build_system()
    if "intree_backend" in build_system:
        (pkg / "intree_backend.py").write_text(INTREE_BACKEND)
    (pkg / "pyproject.toml").write_text(
        f"[build-system]\n{build_system}\n"
        '[project]\nname = "tiny-plugin"\nversion = "0.1"\n\n'
        '[project.entry-points.pushreport]\ntiny = "tiny_plugin"\n\n' + tool
    )
    site = root / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(pkg),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    yield site


_PROBE = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from pushreport_core import Report
    from pushreport._plugins import collect_storage_factories, make_plugin_manager
    from pushreport.storage import StorageContext

    pm = make_plugin_manager(blocked=sys.argv[1:])
    factories = collect_storage_factories(pm)
    out = {"backends": sorted(factories), "imported": "tiny_plugin" in sys.modules,
           "dists": sorted(d.project_name for _, d in pm.list_plugin_distinfo())}
    if "tiny" in factories:
        storage = factories["tiny"]({"opt": 1}, StorageContext())
        report = Report(selector="sel", token_msgs="tinyTOKEN1")
        registration = storage.upsert(report, now=datetime(2024, 1, 1, tzinfo=timezone.utc))
        pm.hook.pushreport_report_stored(registration=registration, report=report)
        import tiny_plugin
        out["stored"] = tiny_plugin.STORED
        out["options"] = storage.options
    print(json.dumps(out))
""")


def _probe(site: Path, *blocked: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *blocked],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_third_party_plugin_is_discovered(tiny_site: Path) -> None:
    assert list(tiny_site.glob("tiny_plugin-0.1.dist-info/entry_points.txt"))
    out = _probe(tiny_site)
    assert out["backends"] == sorted([*BUILT_IN, "tiny"])
    assert sorted(set(out["dists"])) == ["pushreport", "tiny-plugin"]
    assert out["options"] == {"opt": 1}
    assert out["stored"] == [["sel", "tinyTOKEN1", 1]]


def test_blocked_third_party_plugin_is_not_even_imported(tiny_site: Path) -> None:
    out = _probe(tiny_site, "tiny")
    assert out["backends"] == BUILT_IN
    assert out["imported"] is False
    assert sorted(set(out["dists"])) == ["pushreport"]
