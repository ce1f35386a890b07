"""pushreport_wsgi: the WSGI adapter of pushreport, its configuration, plugins and CLI.

- :func:`create_app` — a standalone WSGI app;
- :class:`PushReportMiddleware` — mounts pushreport in front of any WSGI app;
- :class:`Config` / :func:`load_config` — the TOML configuration;
- :class:`Receiver` — the service behind both, usable without HTTP;
- :data:`hookimpl` — the marker for plugin hooks (see :mod:`pushreport_wsgi.hookspecs`);
- :class:`Storage` — the protocol a storage backend implements;
- :class:`Lookup`, :class:`PushClient`, :func:`push` — look registrations up, push them;
- :class:`ThrottledLog` — log a repeated failure once a minute, with a count (plugins too).
"""

from ._app import PushReportMiddleware, create_app, raw_target
from ._config import (
    Config,
    LookupConfig,
    PluginsConfig,
    PruneConfig,
    PushConfig,
    RemovalConfig,
    ReporterConfig,
    ServerConfig,
    StorageConfig,
    load_config,
)
from ._logs import ThrottledLog
from ._lookup import Lookup, LookupApp
from ._plugins import make_plugin_manager
from ._push import PushClient, PushResult, push
from ._service import Backend, Receiver, RemovalOutcome
from .hookspecs import hookimpl
from .storage import Storage, StorageContext, StorageFactory

__all__ = [
    "Backend",
    "Config",
    "PluginsConfig",
    "PushReportMiddleware",
    "Receiver",
    "ReporterConfig",
    "ServerConfig",
    "Storage",
    "StorageConfig",
    "StorageContext",
    "StorageFactory",
    "create_app",
    "hookimpl",
    "load_config",
    "make_plugin_manager",
    "raw_target",
    "RemovalConfig",
    "RemovalOutcome",
    "Lookup",
    "LookupApp",
    "LookupConfig",
    "PruneConfig",
    "PushClient",
    "PushConfig",
    "PushResult",
    "push",
    "ThrottledLog",
]
