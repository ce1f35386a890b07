"""The configuration file: one TOML document.

::

    [reporter]            # the same values the deployer puts into the Account XML
    url = "https://push.example.com/token/?selector=%selector%&token=%pushToken%"
    post_data = ""        # pushTokenReporterPostData
    content_type = ""     # pushTokenReporterContentType
    method = ""           # pushTokenReporterMethod
    max_body = 16384      # bytes; a larger body is answered 413

    [storage]
    backends = ["sqlite"] # tried in order; each must commit before the app gets 200

    [storage.sqlite]
    path = "pushreport.sqlite3"

    [server]              # defaults of `pushreport serve`
    host = "127.0.0.1"
    port = 8080
    access_log = false    # one line per request, credentials masked

    [plugins]
    blocked = []          # entry-point names not to load

Every key is checked at start-up; an error names the key and the reason.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import attrs

from pushreport_core import (DEFAULT_MAX_BODY, DEFAULT_SHAPES, ConfigurationError, Shapes,
                             Template)

__all__ = ["Config", "ReporterConfig", "StorageConfig", "ServerConfig", "load_config",
           "CONFIG_KEYS"]


@attrs.frozen(kw_only=True)
class ReporterConfig:
    """``[reporter]``: the Account XML values the app is configured with."""

    url: str = ""
    post_data: str = ""
    content_type: str = ""
    method: str = ""
    max_body: int = DEFAULT_MAX_BODY

    def shapes(self) -> Shapes:
        """The compiled template, or the default shapes when no ``url`` is set."""
        if not self.url:
            if self.post_data or self.content_type or self.method:
                raise ConfigurationError(
                    "post_data, content_type and method need a url", key="reporter.url")
            return DEFAULT_SHAPES
        return Template.parse(url=self.url, post_data=self.post_data,
                              content_type=self.content_type, method=self.method)


@attrs.frozen(kw_only=True)
class StorageConfig:
    """``[storage]``: which backends, in order, and each one's own table."""

    backends: tuple[str, ...] = ("sqlite",)
    options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def options_for(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))


@attrs.frozen(kw_only=True)
class ServerConfig:
    """``[server]``: defaults of ``pushreport serve`` (command-line options win)."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 1
    timeout: int = 30
    #: One line per request on the ``pushreport.access`` logger, credentials masked.
    #: Off by default under ``serve``, like gunicorn's: it costs about a quarter of a
    #: report's time (bench/README.md), and a proxy in front usually logs already.
    access_log: bool = False


@attrs.frozen(kw_only=True)
class Config:
    """A loaded configuration. ``Config()`` is the embedded default: default shapes,
    SQLite in ``./pushreport.sqlite3``."""

    reporter: ReporterConfig = attrs.field(factory=ReporterConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    server: ServerConfig = attrs.field(factory=ServerConfig)
    blocked_plugins: tuple[str, ...] = ()
    #: Relative paths (``[storage.sqlite] path``) are resolved against this folder.
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: Where it was loaded from, if from a file.
    source: Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None,
                  source: Path | None = None) -> Config:
        """Build and check a configuration from a parsed TOML document."""
        _only(data, "", {"reporter", "storage", "server", "plugins"})
        reporter = _table(data, "reporter")
        _only(reporter, "reporter", {"url", "post_data", "content_type", "method",
                                     "max_body"})
        rc = ReporterConfig(
            url=_str(reporter, "reporter", "url"),
            post_data=_str(reporter, "reporter", "post_data"),
            content_type=_str(reporter, "reporter", "content_type"),
            method=_str(reporter, "reporter", "method"),
            max_body=_int(reporter, "reporter", "max_body", DEFAULT_MAX_BODY, low=256),
        )
        storage = _table(data, "storage")
        backends = storage.get("backends", ["sqlite"])
        if (not isinstance(backends, list) or not backends
                or not all(isinstance(b, str) and b for b in backends)):
            raise ConfigurationError("must be a non-empty list of backend names",
                                     key="storage.backends")
        if len(set(backends)) != len(backends):
            raise ConfigurationError("names a backend twice", key="storage.backends")
        options: dict[str, dict[str, Any]] = {}
        for name, value in storage.items():
            if name == "backends":
                continue
            if not isinstance(value, dict):
                raise ConfigurationError("must be a table", key=f"storage.{name}")
            options[name] = dict(value)
        sc = StorageConfig(backends=tuple(backends), options=options)
        server = _table(data, "server")
        _only(server, "server", {"host", "port", "workers", "threads", "timeout",
                                 "access_log"})
        access_log = server.get("access_log", False)
        if not isinstance(access_log, bool):
            raise ConfigurationError("must be true or false", key="server.access_log")
        sv = ServerConfig(
            host=_str(server, "server", "host", "127.0.0.1") or "127.0.0.1",
            port=_int(server, "server", "port", 8080, low=0, high=65535),
            workers=_int(server, "server", "workers", 2, low=1, high=256),
            threads=_int(server, "server", "threads", 1, low=1, high=1024),
            timeout=_int(server, "server", "timeout", 30, low=1),
            access_log=access_log,
        )
        plugins = _table(data, "plugins")
        _only(plugins, "plugins", {"blocked"})
        blocked = plugins.get("blocked", [])
        if not isinstance(blocked, list) or not all(isinstance(b, str) for b in blocked):
            raise ConfigurationError("must be a list of entry-point names",
                                     key="plugins.blocked")
        config = cls(reporter=rc, storage=sc, server=sv, blocked_plugins=tuple(blocked),
                     base_dir=base_dir or Path.cwd(), source=source)
        config.reporter.shapes()  # a template error is a start-up error
        return config

    def with_sqlite_path(self, path: str | os.PathLike[str]) -> Config:
        """This configuration with ``[storage.sqlite] path`` replaced (``--db``)."""
        options = {k: dict(v) for k, v in self.storage.options.items()}
        options.setdefault("sqlite", {})["path"] = str(Path(path).absolute())
        backends = self.storage.backends
        if "sqlite" not in backends:
            raise ConfigurationError("--db needs the sqlite backend in storage.backends",
                                     key="storage.backends")
        return attrs.evolve(self, storage=StorageConfig(backends=backends, options=options))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the TOML file at *path*."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {str(p)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"{p}: not valid TOML: {e}") from None
    return Config.from_dict(data, base_dir=p.absolute().parent, source=p)


#: Every key the file may hold, for the documentation check.
CONFIG_KEYS = (
    "reporter.url", "reporter.post_data", "reporter.content_type", "reporter.method",
    "reporter.max_body", "storage.backends", "server.host", "server.port",
    "server.workers", "server.threads", "server.timeout", "server.access_log",
    "plugins.blocked",
)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigurationError("must be a table", key=key)
    return value


def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            full = f"{where}.{key}" if where else key
            raise ConfigurationError(
                f"unknown key (expected one of: {', '.join(sorted(allowed))})", key=full)


def _str(table: Mapping[str, Any], where: str, key: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigurationError(f"must be a string, not {type(value).__name__}",
                                 key=f"{where}.{key}")
    return value


def _int(table: Mapping[str, Any], where: str, key: str, default: int, *, low: int = 0,
         high: int | None = None) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"must be an integer, not {type(value).__name__}",
                                 key=f"{where}.{key}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"must be {bound}, not {value}", key=f"{where}.{key}")
    return value
