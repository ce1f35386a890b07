"""pushreport_wsgi: the WSGI adapter of pushreport.

- :func:`create_app` — a standalone WSGI app;
- :class:`PushReportMiddleware` — mounts pushreport in front of any WSGI app;
- :func:`raw_target` — the request target as it came over the wire;
- :class:`PathDispatcher`, :class:`LookupApp`, :class:`AdminApp`,
  :class:`ReportMiddleware` — the parts the middleware composes.

The service behind it (configuration, the receiver, plugins, storage, lookup and push)
is :mod:`pushreport`; its names are re-exported here for code written against earlier
versions.
"""

from pushreport import (
    Backend,
    Config,
    Lookup,
    LookupConfig,
    PluginsConfig,
    PruneConfig,
    PushClient,
    PushConfig,
    PushResult,
    Receiver,
    RemovalConfig,
    RemovalOutcome,
    ReporterConfig,
    ServerConfig,
    Storage,
    StorageConfig,
    StorageContext,
    StorageFactory,
    ThrottledLog,
    hookimpl,
    load_config,
    make_plugin_manager,
    push,
)

from ._app import PushReportMiddleware, create_app
from ._endpoints import AdminApp, LookupApp, PathDispatcher
from ._reports import ReportMiddleware, raw_target

__all__ = [
    "AdminApp",
    "Backend",
    "Config",
    "PluginsConfig",
    "PathDispatcher",
    "PushReportMiddleware",
    "ReportMiddleware",
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
