"""pushreport: the service layer of the Push Token Reporter's server side.

It ties the pure core (:mod:`pushreport_core`) to configuration, plugins and storage,
and knows nothing of HTTP servers: the adapters (:mod:`pushreport_wsgi`) turn a
request into one call here and its outcome into a response.

- :class:`Config` / :func:`load_config` — the TOML configuration;
- :class:`Receiver` — parse, authenticate, limit and store reports and removals;
- :data:`hookimpl` — the marker for plugin hooks (see :mod:`pushreport.hookspecs`);
- :class:`Storage` — the protocol a storage backend implements;
- :class:`SpooledStorage` — the report spool, around any backend that takes batches;
- :class:`Lookup`, :class:`PushClient`, :func:`push` — look registrations up, push them;
- :class:`ThrottledLog` — log a repeated failure once a minute, with a count (plugins too);
- :mod:`pushreport.testing` — the storage conformance kit.
"""

from ._config import (
    AuthConfig,
    Config,
    HealthConfig,
    LimitsConfig,
    LookupConfig,
    MetricsConfig,
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
from ._lookup import Lookup
from ._plugins import make_plugin_manager
from ._push import PushClient, PushResult, push
from ._service import Backend, Receiver, RemovalOutcome
from .hookspecs import hookimpl
from .spool import SpooledStorage
from .storage import Storage, StorageContext, StorageFactory

__all__ = [
    "AuthConfig",
    "Backend",
    "Config",
    "HealthConfig",
    "LimitsConfig",
    "Lookup",
    "LookupConfig",
    "MetricsConfig",
    "PluginsConfig",
    "PruneConfig",
    "PushClient",
    "PushConfig",
    "PushResult",
    "Receiver",
    "RemovalConfig",
    "RemovalOutcome",
    "ReporterConfig",
    "ServerConfig",
    "SpooledStorage",
    "Storage",
    "StorageConfig",
    "StorageContext",
    "StorageFactory",
    "ThrottledLog",
    "hookimpl",
    "load_config",
    "make_plugin_manager",
    "push",
]
