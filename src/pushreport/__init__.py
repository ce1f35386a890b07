"""pushreport: the service layer of the Push Token Reporter's server side.

It ties the pure core (:mod:`pushreport_core`) to configuration, plugins and storage,
and knows nothing of HTTP servers: the adapters (:mod:`pushreport_wsgi`) turn a
request into one call here and its outcome into a response.

- :class:`Config` / :func:`load_config` / :func:`as_config` — the TOML configuration;
- :class:`Receiver` — parse, authenticate, limit and store reports and removals;
  :meth:`Receiver.receive` is an adapter's one call per request, its :class:`Outcome`
  what the adapter answers;
- :class:`Answer`, :func:`outcome_answer` and the rest of ``_http``: what both HTTP
  adapters answer and how they read a request's target and body, decided once;
- :class:`OperatorPaths`, :class:`Readiness`, :class:`LookupEndpoint`,
  :class:`PrometheusMetrics`, :func:`client_address` — what the adapters' other
  endpoints and the client's address are made of, without HTTP;
- :data:`hookimpl` — the marker for plugin hooks (see :mod:`pushreport.hookspecs`);
- :class:`Storage` — the protocol a storage backend implements, and the
  :class:`Capability` values it declares (:mod:`pushreport.storage`);
- :func:`value_or_env` — a secret from the configuration or the environment variable
  its ``*_env`` key names (for plugins' options too);
- :class:`SpooledStorage` — the report spool, around any backend that takes batches;
- :class:`Lookup`, :class:`PushClient`, :func:`push` — look registrations up, push them;
  :func:`openapi_document` — the lookup endpoint's and health checks' OpenAPI document;
- :class:`AdminPage` — the support page (``[admin]``), as HTML answers to parsed requests;
- :class:`ThrottledLog` — log a repeated failure once a minute, with a count (plugins too);
- :mod:`pushreport.outbound` — the one way out: a POST that follows no redirect, bounded
  as a whole by its timeout (push, the ``http`` auth method, plugins' webhooks);
- :mod:`pushreport.testing` — the storage conformance kit.
"""

from ._admin import AdminAnswer, AdminPage, AdminRequest
from ._backends import open_now
from ._config import (
    AdminConfig,
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
    as_config,
    load_config,
    value_or_env,
)
from ._health import OperatorPaths, Readiness
from ._http import (
    SAFE_PATH,
    Answer,
    declared_length,
    log_access,
    lookup_answer,
    method_not_allowed,
    mounted_target,
    origin_form,
    outcome_answer,
    text_answer,
    whole_body,
)
from ._limits import client_address
from ._logs import ThrottledLog
from ._lookup import Lookup, LookupAnswer, LookupEndpoint
from ._metrics import PrometheusMetrics
from ._openapi import openapi_document
from ._plugins import make_plugin_manager
from ._push import PushClient, PushResult, push
from ._service import Backend, Outcome, Receiver, RemovalOutcome
from .hookspecs import hookimpl
from .spool import PendingSyncs, SpooledStorage
from .storage import (
    Capabilities,
    Capability,
    MainOption,
    Storage,
    StorageContext,
    StorageFactory,
)

__all__ = [
    "SAFE_PATH",
    "AdminAnswer",
    "AdminConfig",
    "AdminPage",
    "AdminRequest",
    "Answer",
    "AuthConfig",
    "Backend",
    "Capabilities",
    "Capability",
    "Config",
    "HealthConfig",
    "LimitsConfig",
    "Lookup",
    "LookupAnswer",
    "LookupConfig",
    "LookupEndpoint",
    "MainOption",
    "MetricsConfig",
    "OperatorPaths",
    "openapi_document",
    "Outcome",
    "PluginsConfig",
    "PrometheusMetrics",
    "PruneConfig",
    "PushClient",
    "PushConfig",
    "PushResult",
    "Readiness",
    "Receiver",
    "RemovalConfig",
    "RemovalOutcome",
    "ReporterConfig",
    "ServerConfig",
    "SpooledStorage",
    "PendingSyncs",
    "Storage",
    "StorageConfig",
    "StorageContext",
    "StorageFactory",
    "ThrottledLog",
    "client_address",
    "declared_length",
    "log_access",
    "lookup_answer",
    "method_not_allowed",
    "mounted_target",
    "open_now",
    "origin_form",
    "outcome_answer",
    "text_answer",
    "whole_body",
    "hookimpl",
    "as_config",
    "load_config",
    "make_plugin_manager",
    "push",
    "value_or_env",
]
