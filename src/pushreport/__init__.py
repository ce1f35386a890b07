"""pushreport: the service layer of the Push Token Reporter's server side.

It ties the pure core (:mod:`pushreport_core`) to configuration, plugins and storage,
and knows nothing of HTTP servers: the adapters (:mod:`pushreport_wsgi`) turn a
request into one call here and its outcome into a response.

- :class:`Config` / :func:`load_config` — the TOML configuration;
- :class:`Receiver` — parse, authenticate, limit and store reports and removals;
- :data:`hookimpl` — the marker for plugin hooks (see :mod:`pushreport.hookspecs`);
- :class:`Storage` — the protocol a storage backend implements, and the
  :class:`Capability` values it declares (:mod:`pushreport.storage`);
- :func:`value_or_env` — a secret from the configuration or the environment variable
  its ``*_env`` key names (for plugins' options too);
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
    value_or_env,
)
from ._logs import ThrottledLog
from ._lookup import Lookup
from ._plugins import make_plugin_manager
from ._push import PushClient, PushResult, push
from ._service import Backend, Receiver, RemovalOutcome
from .hookspecs import hookimpl
from .storage import (
    Capabilities,
    Capability,
    MainOption,
    Storage,
    StorageContext,
    StorageFactory,
)

__all__ = [
    "AuthConfig",
    "Backend",
    "Capabilities",
    "Capability",
    "Config",
    "HealthConfig",
    "LimitsConfig",
    "Lookup",
    "LookupConfig",
    "MainOption",
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
    "Storage",
    "StorageConfig",
    "StorageContext",
    "StorageFactory",
    "ThrottledLog",
    "hookimpl",
    "load_config",
    "make_plugin_manager",
    "push",
    "value_or_env",
]
