"""The installed distribution's metadata, as the build backend wrote it (an editable
install and a wheel get the same Requires-Dist): what pip on another machine will read."""

from __future__ import annotations

import importlib.metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

REQUIRES = [Requirement(r) for r in importlib.metadata.requires("pushreport") or []]


def _for_extra(extra: str, name: str) -> list[Requirement]:
    return [
        r
        for r in REQUIRES
        if r.name == name and r.marker is not None and f'extra == "{extra}"' in str(r.marker)
    ]


def test_the_test_extra_asks_for_atheris_only_where_wheels_exist() -> None:
    """``pip install '.[test]'`` on macOS or aarch64 must not try to build atheris: the
    platform marker must survive into the metadata (a self-reference such as
    ``pushreport[fuzz]; <marker>`` loses it)."""
    (atheris,) = _for_extra("test", "atheris")
    assert atheris.marker is not None
    for platform in (
        {"sys_platform": "darwin", "platform_machine": "arm64"},
        {"sys_platform": "linux", "platform_machine": "aarch64"},
        {"sys_platform": "win32", "platform_machine": "AMD64"},
    ):
        env = {**default_environment(), **platform, "extra": "test"}
        assert not atheris.marker.evaluate(env), platform
    linux = {"sys_platform": "linux", "platform_machine": "x86_64", "extra": "test"}
    assert atheris.marker.evaluate({**default_environment(), **linux})


def test_no_extra_refers_to_another_extra_of_this_package() -> None:
    assert not [r for r in REQUIRES if r.name == "pushreport"]


def test_gunicorn_is_at_least_23() -> None:
    """Earlier versions carry CVE-2024-6827 (request smuggling)."""
    (gunicorn,) = [r for r in REQUIRES if r.name == "gunicorn"]
    assert not gunicorn.specifier.contains("22.0")
    assert gunicorn.specifier.contains("23.0")
