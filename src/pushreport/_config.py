"""The configuration file: one TOML document.

::

    [reporter]            # the same values the deployer puts into the Account XML
    url = "https://push.example.com/token/?selector=%selector%&token=%pushToken%"
    post_data = ""        # pushTokenReporterPostData
    content_type = ""     # pushTokenReporterContentType
    method = ""           # pushTokenReporterMethod
    max_body = 16384      # bytes; a larger body is answered 413

    [removal]             # the Account Removal Reporter: accountRemovalReporter* values
    enabled = true        # url empty: the default removal shapes (/removal/, DELETE /token/)

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

The schema is declarative: each section is an attrs class listed in :data:`SECTIONS`, each
key one field made with :func:`setting` (its default, its bounds and the sentence that
documents it). Loading, :data:`CONFIG_KEYS` and the generated configuration reference
(``docs/configuration.md``) all read the same fields, so a key cannot exist undocumented.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import attrs

from pushreport_core import (
    DEFAULT_GATEWAY_URL,
    DEFAULT_MAX_BODY,
    DEFAULT_REMOVAL_SHAPES,
    DEFAULT_SHAPES,
    TOKEN_OWNERS,
    ConfigurationError,
    Secret,
    Shapes,
    Template,
    parse_duration,
    removal_template,
    shapes_overlap,
)

__all__ = [
    "Config",
    "ReporterConfig",
    "StorageConfig",
    "ServerConfig",
    "PluginsConfig",
    "AuthConfig",
    "LimitsConfig",
    "RemovalConfig",
    "MetricsConfig",
    "HealthConfig",
    "PruneConfig",
    "PushConfig",
    "LookupConfig",
    "AdminConfig",
    "load_config",
    "value_or_env",
    "CONFIG_KEYS",
    "SECTIONS",
    "setting",
    "iter_settings",
]


def setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    what: str = "",
    secret: bool = False,
) -> Any:
    """One key of a section: an attrs field whose metadata documents and bounds it.

    The TOML type is the default's type: ``str``, ``int``, ``float``, ``bool``, or
    ``tuple`` (a TOML list of strings). *choices* limits a string (case-insensitive,
    stored lower-case); *low*/*high* bound a number; *what* describes the value in errors
    and docs (e.g. "a path"). A *secret* (a password, a shared secret) is left out of
    the section's repr.

    The field's converter (:func:`_checked`) enforces all of it whichever way the
    section is built: by the TOML loader, or in Python (``ServerConfig(port=70000)``
    raises the same error as the file would).
    """
    meta = {
        "doc": doc,
        "low": low,
        "high": high,
        "choices": choices,
        "what": what,
        "pushreport.setting": True,
    }
    checked = attrs.Converter(_checked, takes_self=True, takes_field=True)
    if secret:
        meta["secret"] = True
        return attrs.field(default=default, converter=checked, metadata=meta, repr=False)
    return attrs.field(default=default, converter=checked, metadata=meta)


def _checked(value: Any, section: Any, field: attrs.Attribute[Any]) -> Any:
    """*value* for the :func:`setting` *field* of *section*, checked against the type of
    its default and its bounds: ``section.key: reason`` otherwise. Strings with
    *choices* come back lower-cased, lists as tuples."""
    key = f"{_section_name(type(section))}.{field.name}"
    meta = field.metadata
    default = field.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError("must be true or false", key=key)
        return value
    if isinstance(default, (int, float)):
        kinds: tuple[type, ...] = (int,) if isinstance(default, int) else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool):
            noun = "an integer" if isinstance(default, int) else "a number"
            raise ConfigurationError(f"must be {noun}, not {type(value).__name__}", key=key)
        low, high = meta["low"], meta["high"]
        if (low is not None and value < low) or (high is not None and value > high):
            bound = (
                f"between {_num(low)} and {_num(high)}"
                if low is not None and high is not None
                else f"at least {_num(low)}"
                if low is not None
                else f"at most {_num(high)}"
            )
            raise ConfigurationError(f"must be {bound}, not {value}", key=key)
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(f"must be {meta['what'] or 'a list of strings'}", key=key)
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigurationError(f"must be a string, not {type(value).__name__}", key=key)
        if meta["choices"]:
            if value.lower() not in meta["choices"]:
                raise ConfigurationError(
                    "must be "
                    + " or ".join(f'"{c}"' for c in meta["choices"])
                    + f", not {value!r}",
                    key=key,
                )
            return value.lower()
        return value
    raise AssertionError(f"{key}: unsupported setting type")  # pragma: no cover


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _section_name(cls: type) -> str:
    """The TOML name of a section class (``ServerConfig`` -> ``server``)."""
    for klass in cls.__mro__:
        for name, section_cls in SECTIONS.items():
            if section_cls is klass:
                return name
    return cls.__name__.lower()  # pragma: no cover - every section is in SECTIONS


@attrs.frozen(kw_only=True)
class ReporterConfig:
    """``[reporter]``: the Account XML values the app is configured with."""

    url: str = setting(
        "",
        "pushTokenReporterUrl, with its %variables% (%selector% and a push token "
        "required; a misspelt one is refused); empty: the default shapes (see README)",
    )
    post_data: str = setting("", "pushTokenReporterPostData: the body template")
    content_type: str = setting(
        "", "pushTokenReporterContentType; empty means application/x-www-form-urlencoded"
    )
    method: str = setting("", "pushTokenReporterMethod; empty: GET without post_data, else POST")
    max_body: int = setting(
        DEFAULT_MAX_BODY, "largest body accepted, in bytes; a larger one is answered 413", low=256
    )
    token_owner: str = setting(
        "shared",
        "a token reported under another username: "
        '"shared" keeps it on both accounts, "newest" moves it '
        "to the one that reported it last",
        choices=TOKEN_OWNERS,
    )

    def shapes(self) -> Shapes:
        """The compiled template, or the default shapes when no ``url`` is set."""
        if not self.url:
            if self.post_data or self.content_type or self.method:
                raise ConfigurationError(
                    "post_data, content_type and method need a url", key="reporter.url"
                )
            return DEFAULT_SHAPES
        return Template.parse(
            url=self.url,
            post_data=self.post_data,
            content_type=self.content_type,
            method=self.method,
            require_token=True,  # a reporter template without a token stores nothing
        )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        self.shapes()  # a template error is a start-up error


@attrs.frozen(kw_only=True)
class RemovalConfig:
    """``[removal]``: the Account Removal Reporter's Account XML values (the app calls it
    on logout or account removal; the registration of its selector is deleted)."""

    enabled: bool = setting(
        True,
        "accept removals (logout, account removal); false: the "
        "removal shapes are not claimed and pass through",
    )
    url: str = setting(
        "",
        "accountRemovalReporterUrl, with its %variables% (%selector% "
        "required); empty: the default removal shapes (see README)",
    )
    post_data: str = setting("", "accountRemovalReporterPostData: the body template")
    content_type: str = setting(
        "", "accountRemovalReporterContentType; empty means application/x-www-form-urlencoded"
    )
    method: str = setting(
        "", "accountRemovalReporterMethod; empty: GET without post_data, else POST"
    )

    def shapes(self, reporter: Shapes | None = None) -> Shapes | None:
        """The compiled removal template, the default removal shapes when no ``url`` is
        set, or ``None`` when removals are disabled. With the *reporter*'s shapes, a
        removal shape that would take the reporter's requests is refused."""
        if not self.enabled:
            return None
        if not self.url:
            if self.post_data or self.content_type or self.method:
                raise ConfigurationError(
                    "post_data, content_type and method need a url", key="removal.url"
                )
            shapes: Shapes = DEFAULT_REMOVAL_SHAPES
        else:
            shapes = removal_template(
                url=self.url,
                post_data=self.post_data,
                content_type=self.content_type,
                method=self.method,
            )
        if reporter is not None:
            overlap = shapes_overlap(reporter, shapes)
            if overlap is not None:
                method, path = overlap
                raise ConfigurationError(
                    f"the removal shapes would take the reporter's {method} {path}: give "
                    "the removal another path or method (or enabled = false)",
                    key="removal.url" if self.url else "removal.enabled",
                )
        return shapes

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        self.shapes()  # a template error is a start-up error


@attrs.frozen(kw_only=True)
class StorageConfig:
    """``[storage]``: which backends, in order, and each one's own table."""

    backends: tuple[str, ...] = setting(
        ("sqlite",),
        "storage backends by name, in order; a report is acknowledged once "
        "every required one committed. Each backend's options live in its own "
        "[storage.NAME] table (with `required = false` for a best-effort one)",
        what="a non-empty list of backend names",
    )
    options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not self.backends or not all(self.backends):
            raise ConfigurationError(
                "must be a non-empty list of backend names", key="storage.backends"
            )
        if len(set(self.backends)) != len(self.backends):
            raise ConfigurationError("names a backend twice", key="storage.backends")
        for name, value in self.options.items():
            if not isinstance(value, Mapping):
                raise ConfigurationError("must be a table", key=f"storage.{name}")

    def options_for(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))


@attrs.frozen(kw_only=True)
class ServerConfig:
    """``[server]``: defaults of ``pushreport serve`` (command-line options win)."""

    engine: str = setting(
        "uvicorn",
        "the HTTP server `pushreport serve` runs: uvicorn (an event loop per worker, uvloop "
        "and httptools: a slow client costs a socket) or gunicorn (pre-fork sync or "
        "threaded WSGI workers)",
        choices=("gunicorn", "uvicorn"),
    )
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "port to listen on", low=0, high=65535)
    workers: int = setting(
        0,
        "worker processes; 0: under gunicorn twice the cores plus one (measured best with "
        "the SQLite report spool, bench/README.md), under uvicorn one per core",
        low=0,
        high=256,
    )
    threads: int = setting(
        1,
        "threads per worker: under gunicorn its gthread worker's, under uvicorn those "
        "that run the service's calls (storage) off the event loop",
        low=1,
        high=1024,
    )
    timeout: int = setting(
        30, "seconds a worker may spend on one request before it is restarted", low=1
    )
    #: gunicorn's keepalive: how long an idle kept-alive connection is held (threaded
    #: workers only; sync workers close after each answer, as the app asks).
    keepalive: int = setting(
        2,
        "seconds an idle kept-alive connection is held open "
        "(threads > 1 only); 0: close after each answer",
        low=0,
        high=300,
    )
    #: Off by default under ``serve``, like gunicorn's: it costs about a quarter of a
    #: report's time (bench/README.md), and a proxy in front usually logs already.
    access_log: bool = setting(
        False,
        "one line per request on the pushreport.access "
        "logger, credentials masked, tokens shortened",
    )
    log_format: str = setting(
        "text",
        "format of the log lines `pushreport serve` writes "
        "to stderr: one text line, or one JSON object per line",
        choices=("text", "json"),
    )

    def worker_count(self, engine: str | None = None) -> int:
        """``workers``, or with 0: under gunicorn twice the cores plus one (a sync
        worker waits on the network and, ``synchronous = "full"``, on the disk, so more
        than the cores keep them busy; measured on 2 cores, 5 served more than 2,
        ``bench/workers.py``); under uvicorn one per core (an event loop never waits
        on a client)."""
        if self.workers:
            return self.workers
        cores = os.cpu_count() or 1
        return cores if (engine or self.engine) == "uvicorn" else 2 * cores + 1


@attrs.frozen(kw_only=True)
class PluginsConfig:
    """``[plugins]``: which installed plugins to load."""

    blocked: tuple[str, ...] = setting(
        (),
        "entry-point names (group `pushreport`) not to load",
        what="a list of entry-point names",
    )


@attrs.frozen(kw_only=True)
class AuthConfig:
    """``[auth]``: the built-in authenticators (see ``pushreport._auth``)."""

    methods: tuple[str, ...] = setting(
        (),
        'built-in authentication, all of which must pass: "secret", "digest", '
        '"callable", "http"; empty: none (plugins may still authenticate)',
        what='a list of "secret", "digest", "callable" or "http"',
    )
    secret: str = setting("", "the shared secret the template carries", secret=True)
    secret_env: str = setting(
        "", "environment variable holding the shared secret (instead of secret)"
    )
    secret_field: str = setting(
        "",
        "the template variable (e.g. account[pushSecret]) "
        "or, with the default shapes, the parameter that "
        "carries the shared secret; never stored",
    )
    realm: str = setting("pushreport", "HTTP Digest realm")
    digest_username: str = setting("", "pushTokenReporterAuthUsername, as in the Account XML")
    digest_password: str = setting(
        "", "pushTokenReporterAuthPassword, as in the Account XML", secret=True
    )
    digest_password_env: str = setting(
        "", "environment variable holding the digest password (instead of digest_password)"
    )
    digest_algorithms: tuple[str, ...] = setting(
        ("MD5",),
        "algorithms offered, preferred first: MD5, MD5-sess, SHA-256, SHA-256-sess",
        what="a list of digest algorithms",
    )
    nonce_ttl: int = setting(300, "seconds a digest nonce is accepted", low=5, high=86400)
    nonce_key: str = setting(
        "",
        "key that signs digest nonces, shared by every process "
        "and host (empty: a random key per `serve`, shared by its "
        "workers)",
        secret=True,
    )
    nonce_key_env: str = setting("", "environment variable holding nonce_key")
    callable: str = setting(
        "",
        "module:function called as function(username, "
        "password) -> bool, e.g. a check against your user table",
    )
    http_url: str = setting(
        "",
        "the http method's provider: the account's username and password are POSTed "
        "there as a form; 2xx accepts, 401 and 403 refuse, anything else is a 503",
        what="an http or https URL",
    )
    http_timeout: float = setting(
        3.0, "seconds the http method waits for the provider's whole answer", low=0.1, high=10
    )
    cache_size: int = setting(
        1024, "successful callable or http checks remembered (0: none)", low=0, high=1_000_000
    )
    cache_ttl: int = setting(
        300, "seconds a successful callable or http check is remembered", low=0, high=86400
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        check_auth_config(self)


@attrs.frozen(kw_only=True)
class LimitsConfig:
    """``[limits]``: rate limits, lock-out and request size limits (``_limits.py``)."""

    per_client: str = setting(
        "",
        'reports per client address, e.g. "600/minute" (burst: the whole count); empty: no limit',
        what="a rate such as 60/minute",
    )
    per_username: str = setting(
        "",
        'authenticated reports per username, e.g. "30/minute"; empty: no limit',
        what="a rate such as 30/minute",
    )
    auth_failures: int = setting(
        10,
        "failed authentications of one username before it is locked out (0: never)",
        low=0,
        high=1_000_000,
    )
    lockout: int = setting(
        300,
        "seconds a username stays locked out, and the window failures are counted in",
        low=1,
        high=86400,
    )
    client_header: str = setting(
        "",
        "request header your proxies put the client address in (e.g. X-Forwarded-For), "
        "believed only from trusted_proxies; empty: the peer address",
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "addresses or networks (CIDR, e.g. 10.0.0.0/8, ::1) of the proxies in front that "
        "may set client_header: the client is the right-most address in it that is not "
        "one of them; needed by client_header",
        what="a list of addresses or networks such as 10.0.0.0/8",
    )
    state_path: str = setting(
        "",
        "SQLite file the limits of every worker and restart share, relative to the "
        "configuration file's folder; empty: what the first storage backend provides "
        "(sqlite: a file beside its database, postgresql: a table in it, shared by every "
        "host), else pushreport-limits.sqlite3 in that folder (docs/limits.md)",
        what="a path",
    )
    max_url: int = setting(
        8192, "longest request target, in characters (414 above)", low=64, high=8192
    )
    max_field: int = setting(
        4096,
        "longest value of one field, password included, in characters (413 above)",
        low=64,
        high=65536,
    )
    max_header: int = setting(
        8190,
        "longest request header, in bytes (431 above; under serve gunicorn refuses it)",
        low=256,
        high=65536,
    )
    max_headers: int = setting(
        100, "most request headers (serve: gunicorn refuses more)", low=10, high=32768
    )
    max_tracked: int = setting(
        100_000,
        "rate buckets and failure counts the shared limit state keeps at most (those "
        "nearest their expiry dropped first)",
        low=100,
        high=10_000_000,
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        check_limits(self)


def value_or_env(
    value: str | None,
    env: str | None,
    key: str,
    *,
    error: Callable[[str, str], Exception],
    needed_by: str | None = None,
) -> str | None:
    """A secret given as *key* in the configuration, or by the environment variable
    that ``<key>_env`` names: one or the other, never both; an ``_env`` naming an unset
    (or empty) variable is an error. With neither, ``None``, or the error "*needed_by*
    needs ...". *error* builds the exception for an option name and a reason, so that
    each caller names its own section (``auth.``, ``lookup.``, ``storage.webhook.``).
    Never quotes the value.

    Only what uses the secret calls this (the authenticators and the lookup endpoint,
    when they are built to serve): a configuration's own checks call
    :func:`check_value_or_env`, which reads no environment, so that ``pushreport list``
    does not need a variable only ``serve`` reads."""
    check_value_or_env(value, env, key, error=error, needed_by=needed_by)
    if env:
        found = os.environ.get(env)
        if not found:
            raise error(f"{key}_env", f"environment variable {env!r} is not set")
        return found
    if value:
        return value
    if needed_by is not None:
        raise error(key, f"{needed_by} needs {key} or {key}_env")
    return None


def check_value_or_env(
    value: str | None,
    env: str | None,
    key: str,
    *,
    error: Callable[[str, str], Exception],
    needed_by: str | None = None,
) -> None:
    """The checks of :func:`value_or_env` that need no environment: not both, and with
    *needed_by*, one of the two."""
    if value and env:
        raise error(key, f"set {key} or {key}_env, not both")
    if not value and not env and needed_by is not None:
        raise error(key, f"{needed_by} needs {key} or {key}_env")


def section_error(section: str) -> Callable[[str, str], ConfigurationError]:
    """:func:`value_or_env`'s *error* for a ``[section]`` of the configuration."""
    return lambda key, reason: ConfigurationError(reason, key=f"{section}.{key}")


# --- the checks of [auth] and [limits] ----------------------------------------------------
# Here, not in the modules that use the sections: the configuration is checked with
# nothing above it imported (no import cycle), and each rule is written once.

#: The built-in authentication methods of ``[auth] methods``.
AUTH_METHODS = ("secret", "digest", "callable", "http")

#: RFC 7616's algorithms: the hash and whether the session variant (``-sess``) is used.
DIGEST_ALGORITHMS: dict[str, tuple[str, bool]] = {
    "MD5": ("md5", False),
    "MD5-sess": ("md5", True),
    "SHA-256": ("sha256", False),
    "SHA-256-sess": ("sha256", True),
}


def _given(value: str, env: str, key: str, what: str) -> None:
    """:func:`value_or_env`'s checks that read no environment variable (configuration
    checks: only the authenticators, built to serve, read it)."""
    check_value_or_env(value, env, key, error=section_error("auth"), needed_by=what)


def check_auth_config(auth: AuthConfig) -> None:
    """The checks of ``[auth]`` that need no template (``AuthConfig.check``). They read
    no environment variable: ``secret_env`` and the like are read by
    :func:`build_authenticators`, when the receiver is built to serve."""
    for method in auth.methods:
        if method not in AUTH_METHODS:
            raise ConfigurationError(
                'must list "secret", "digest", "callable" or "http", not ' + repr(method),
                key="auth.methods",
            )
    if len(set(auth.methods)) != len(auth.methods):
        raise ConfigurationError("names a method twice", key="auth.methods")
    if "secret" in auth.methods:
        _given(auth.secret, auth.secret_env, "secret", "the secret method")
        if not auth.secret_field:
            raise ConfigurationError(
                "the secret method needs the variable that carries it, e.g. account[pushSecret]",
                key="auth.secret_field",
            )
    if "digest" in auth.methods:
        if not auth.digest_username:
            raise ConfigurationError(
                "the digest method needs a username", key="auth.digest_username"
            )
        _given(
            auth.digest_password, auth.digest_password_env, "digest_password", "the digest method"
        )
        if not auth.digest_algorithms:
            raise ConfigurationError(
                "must name at least one algorithm", key="auth.digest_algorithms"
            )
        for name in auth.digest_algorithms:
            if name not in DIGEST_ALGORITHMS:
                raise ConfigurationError(
                    f"unknown algorithm {name!r} (known: {', '.join(DIGEST_ALGORITHMS)})",
                    key="auth.digest_algorithms",
                )
        if auth.nonce_key or auth.nonce_key_env:
            _given(auth.nonce_key, auth.nonce_key_env, "nonce_key", "digest")
        if '"' in auth.realm or "\\" in auth.realm:
            raise ConfigurationError("must not contain a quote or a backslash", key="auth.realm")
    if "callable" in auth.methods:
        load_callable(auth.callable)
    if "http" in auth.methods and not auth.http_url:
        raise ConfigurationError("the http method needs the provider's URL", key="auth.http_url")
    if auth.http_url:
        check_provider_url(auth.http_url)


def check_provider_url(url: str) -> None:
    """``[auth] http_url``: http or https, a host, no user or password in it (urllib
    would take ``user:pw@host`` for a host name; and the URL's host is logged)."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise ConfigurationError(
            "must not contain spaces or control characters", key="auth.http_url"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        raise ConfigurationError("is not a valid URL", key="auth.http_url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("must be an http or https URL with a host", key="auth.http_url")
    if "@" in parts.netloc:
        raise ConfigurationError("must not carry a user or password", key="auth.http_url")


def load_callable(spec: str) -> Callable[[str, str], object]:
    """Import ``module:function`` (the function may be dotted: ``module:Class.check``)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigurationError(
            "the callable method needs module:function, e.g. portal.users:check_password",
            key="auth.callable",
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module failing as it loads
        raise ConfigurationError(
            f"cannot import {module_name!r}: {type(e).__name__}", key="auth.callable"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"{module_name!r} has no {attr!r}", key="auth.callable"
            ) from None
    if not callable(obj):
        raise ConfigurationError(f"{spec!r} is not callable", key="auth.callable")
    return obj  # type: ignore[no-any-return]


_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]*\.?[0-9]*)\s*([a-z]+?)s?\s*", re.I)


@attrs.frozen
class Rate:
    """``count`` requests per ``period`` seconds, as a token bucket: a burst of up to
    ``count``, refilled at ``count / period`` per second."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str, *, key: str) -> Rate | None:
        """``"60/minute"``, ``"10/second"``, ``"1000/hour"``, ``"5/10s"``; empty: no
        limit (``None``)."""
        if not text.strip():
            return None
        m = _RATE.fullmatch(text)
        unit = _UNITS.get(m.group(3).lower()) if m else None
        if m is None or unit is None:
            raise ConfigurationError(
                f'must be a rate such as "60/minute" (units: second, minute, hour, day), '
                f"not {text!r}",
                key=key,
            )
        count = int(m.group(1))
        period = float(m.group(2)) * unit if m.group(2) else unit
        if count < 1 or period <= 0:
            raise ConfigurationError(f"must allow at least one request, not {text!r}", key=key)
        return cls(count, period)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def trusted_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """``[limits] trusted_proxies`` as networks (an address alone is a network of one).

    :raises ConfigurationError: one is not an address or a network, naming
        ``limits.trusted_proxies``.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip()))
        except ValueError:
            raise ConfigurationError(
                f"must be addresses or networks such as 10.0.0.0/8 or ::1, not {value!r}",
                key="limits.trusted_proxies",
            ) from None
    return tuple(networks)


def check_limits(limits: LimitsConfig) -> None:
    """The checks of ``[limits]`` (``LimitsConfig.check``, and every receiver built).

    :raises ConfigurationError: naming the key.
    """
    for key in ("per_client", "per_username"):
        Rate.parse(getattr(limits, key), key=f"limits.{key}")
    trusted_networks(limits.trusted_proxies)
    if limits.client_header and not limits.trusted_proxies:
        raise ConfigurationError(
            "needs limits.trusted_proxies: the addresses of the proxies allowed to set it "
            "(from anyone else the header is the client's own to forge)",
            key="limits.client_header",
        )
    if limits.trusted_proxies and not limits.client_header:
        raise ConfigurationError(
            "has no effect without limits.client_header, the header those proxies set",
            key="limits.trusted_proxies",
        )


def _check_path(value: str, key: str) -> None:
    if not value.startswith("/") or any(c in value for c in "?# "):
        raise ConfigurationError(f"must be a path starting with /, not {value!r}", key=key)


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics (``pip install 'pushreport[metrics]'``)."""

    enabled: bool = setting(
        False,
        "expose Prometheus metrics (needs the `metrics` extra: pip install 'pushreport[metrics]')",
    )
    path: str = setting(
        "/metrics", "path of the metrics endpoint; must not be a report path", what="a path"
    )
    count_interval: float = setting(
        60.0,
        "seconds a process reuses its count of stored "
        "registrations (pushreport_registrations) between "
        "scrapes; 0: count on every scrape",
        low=0,
        high=86400,
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        _check_path(self.path, "metrics.path")


@attrs.frozen(kw_only=True)
class HealthConfig:
    """``[health]``: health checks for a load balancer, off the report paths."""

    enabled: bool = setting(True, "answer the two health check paths below")
    healthz: str = setting("/healthz", "path answered 200 while the process is up", what="a path")
    readyz: str = setting(
        "/readyz",
        "path answered 200 when every required storage "
        "backend answers, else 503 naming the failing ones",
        what="a path",
    )
    timeout: float = setting(
        1.0, "seconds /readyz waits for a backend's answer", low=0.01, high=60
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        _check_path(self.healthz, "health.healthz")
        _check_path(self.readyz, "health.readyz")
        if self.healthz == self.readyz:
            raise ConfigurationError("must differ from health.healthz", key="health.readyz")


@attrs.frozen(kw_only=True)
class PushConfig:
    """``[push]``: the Acrobits push gateway ``pushreport push`` sends through."""

    gateway_url: str = setting(
        DEFAULT_GATEWAY_URL, "the JSON gateway's address (POST)", what="an http or https URL"
    )
    timeout: float = setting(10.0, "seconds to wait for the gateway's answer", low=0.1, high=300)
    attempts: int = setting(
        3, "tries per device before giving up on 5xx, 429 and timeouts", low=1, high=20
    )
    backoff: float = setting(
        0.5, "seconds before the 2nd try; doubled each time, jittered", low=0, high=60
    )
    max_delay: float = setting(
        30.0,
        "longest wait between tries, in seconds (a longer Retry-After is cut to it)",
        low=0,
        high=3600,
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        if not self.gateway_url.lower().startswith(("http://", "https://")):
            raise ConfigurationError("must be an http or https URL", key="push.gateway_url")


#: Bearer tokens shorter than this are refused: the lookup endpoint hands out tokens,
#: the support page shows and forgets registrations.
MIN_BEARER_TOKEN = 16
MIN_LOOKUP_TOKEN = MIN_BEARER_TOKEN  # the name earlier versions exported


def check_bearer_token(value: str, key: str) -> None:
    """Refuse a bearer token shorter than :data:`MIN_BEARER_TOKEN`, naming *key*
    (``lookup.token``, or ``admin.token_env`` for one from the environment)."""
    if len(value) < MIN_BEARER_TOKEN:
        raise ConfigurationError(
            f"the token must be at least {MIN_BEARER_TOKEN} characters", key=key
        )


check_lookup_token = check_bearer_token  # the name earlier versions used


def _check_mount(path: str, key: str) -> None:
    if not path.startswith("/") or path.endswith("/") or "?" in path:
        raise ConfigurationError("must start with / and not end with /", key=key)


class _BearerSection:
    """What ``[lookup]`` and ``[admin]`` share: ``enabled``, ``path``, and a bearer
    ``token`` or ``token_env`` of at least :data:`MIN_BEARER_TOKEN` characters."""

    #: The section's TOML name, and what needs the token (for errors).
    section: str
    needed_by: str
    enabled: bool
    path: str
    token: str
    token_env: str

    def bearer_token(self) -> Secret:
        """The configured token (from ``token_env`` when that is set: read now, by the
        endpoint being built, and checked like one in the file)."""
        value = value_or_env(
            self.token,
            self.token_env,
            "token",
            error=section_error(self.section),
            needed_by=self.needed_by,
        )
        assert value is not None  # needed_by: none is an error
        key = f"{self.section}.token_env" if self.token_env else f"{self.section}.token"
        check_bearer_token(value, key)
        return Secret(value)

    def check_bearer(self) -> None:
        _check_mount(self.path, f"{self.section}.path")
        if not self.enabled:
            return
        check_value_or_env(
            self.token,
            self.token_env,
            "token",
            error=section_error(self.section),
            needed_by=self.needed_by,
        )
        if self.token:  # one from token_env is checked when the endpoint reads it
            check_bearer_token(self.token, f"{self.section}.token")


@attrs.frozen(kw_only=True)
class LookupConfig(_BearerSection):
    """``[lookup]``: the HTTP lookup endpoint (off by default)."""

    section = "lookup"
    needed_by = "the lookup endpoint"

    enabled: bool = setting(False, "serve the lookup endpoint (needs token or token_env)")
    path: str = setting(
        "/pushreport/lookup",
        "where it is mounted: {path}/registrations and {path}/targets; "
        "{path}/openapi.json describes them, without a token",
        what="a path",
    )
    token: str = setting(
        "", "the bearer token callers must send (at least 16 characters)", secret=True
    )
    token_env: str = setting(
        "", "name of an environment variable holding the token instead", what="a variable name"
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        self.check_bearer()


@attrs.frozen(kw_only=True)
class AdminConfig(_BearerSection):
    """``[admin]``: the support page (off by default; ``docs/admin.md``)."""

    section = "admin"
    needed_by = "the support page"

    enabled: bool = setting(False, "serve the support page (needs token or token_env)")
    path: str = setting("/pushreport/admin", "where the page is mounted", what="a path")
    token: str = setting(
        "",
        "the token that logs in (a login form, or an Authorization: Bearer header; "
        "at least 16 characters)",
        secret=True,
    )
    token_env: str = setting(
        "", "name of an environment variable holding the token instead", what="a variable name"
    )
    session: str = setting("8h", "how long a login lasts (units s, m, h, d, w)", what="a duration")

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        self.check_bearer()
        self.session_delta()

    def session_delta(self) -> timedelta:
        return parse_duration(self.session, key="admin.session")


@attrs.frozen(kw_only=True)
class PruneConfig:
    """``[prune]``: delete registrations the app stopped reporting, while serving."""

    older_than: str = setting(
        "",
        "while serving, delete registrations whose last report "
        "is older than this (e.g. 90d; units s, m, h, d, w); empty: "
        "never",
        what="a duration",
    )
    interval: str = setting(
        "1d", "how often the server prunes (one process at a time)", what="a duration"
    )

    def __attrs_post_init__(self) -> None:
        self.check()  # however the section is built

    def check(self) -> None:
        self.older_than_delta()
        self.interval_delta()

    def older_than_delta(self) -> timedelta | None:
        """``older_than`` as a timedelta; ``None`` when pruning is off."""
        if not self.older_than:
            return None
        return parse_duration(self.older_than, key="prune.older_than")

    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval, key="prune.interval")


#: Every section of the file: its TOML name and the class holding its keys, in the order
#: the reference documents them. ``Config`` has one attribute per section, of that name.
SECTIONS: dict[str, type] = {
    "reporter": ReporterConfig,
    "removal": RemovalConfig,
    "storage": StorageConfig,
    "server": ServerConfig,
    "plugins": PluginsConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "metrics": MetricsConfig,
    "health": HealthConfig,
    "prune": PruneConfig,
    "push": PushConfig,
    "lookup": LookupConfig,
    "admin": AdminConfig,
}


@attrs.frozen(kw_only=True)
class Config:
    """A loaded configuration. ``Config()`` is the embedded default: default shapes,
    SQLite in ``./pushreport.sqlite3``."""

    reporter: ReporterConfig = attrs.field(factory=ReporterConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    server: ServerConfig = attrs.field(factory=ServerConfig)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    auth: AuthConfig = attrs.field(factory=AuthConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    removal: RemovalConfig = attrs.field(factory=RemovalConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    health: HealthConfig = attrs.field(factory=HealthConfig)
    prune: PruneConfig = attrs.field(factory=PruneConfig)
    push: PushConfig = attrs.field(factory=PushConfig)
    lookup: LookupConfig = attrs.field(factory=LookupConfig)
    admin: AdminConfig = attrs.field(factory=AdminConfig)
    #: Relative paths (``[storage.sqlite] path``) are resolved against this folder.
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: Where it was loaded from, if from a file.
    source: Path | None = None

    def __attrs_post_init__(self) -> None:
        # Each section checked itself when it was built; what involves two is here.
        self.removal.shapes(self.reporter.shapes())  # the two kept apart
        if self.admin.enabled and self.lookup.enabled:
            a, b = self.admin.path + "/", self.lookup.path + "/"
            if a.startswith(b) or b.startswith(a):
                raise ConfigurationError(
                    f"{self.admin.path} overlaps lookup.path {self.lookup.path}",
                    key="admin.path",
                )

    @property
    def blocked_plugins(self) -> tuple[str, ...]:
        return self.plugins.blocked

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, source: Path | None = None
    ) -> Config:
        """Build and check a configuration from a parsed TOML document (the checks are
        those of construction: the same for a configuration built in Python)."""
        _only(data, "", set(SECTIONS))
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            table = _table(data, name)
            if section_cls is StorageConfig:
                sections[name] = _storage(table)
            else:
                sections[name] = _section(section_cls, name, table)
        return cls(**sections, base_dir=base_dir or Path.cwd(), source=source)

    def with_storage_option(self, backend: str, key: str, value: Any) -> Config:
        """This configuration with ``[storage.<backend>] <key>`` set to *value* (what
        ``--db`` does to the backend that declares a main option)."""
        options = {k: dict(v) for k, v in self.storage.options.items()}
        options.setdefault(backend, {})[key] = value
        return attrs.evolve(
            self, storage=StorageConfig(backends=self.storage.backends, options=options)
        )


def as_config(config: Config | str | os.PathLike[str] | None) -> Config:
    """What an adapter's *config* argument names: a :class:`Config` as it is, a path's
    TOML file read and checked (:func:`load_config`), ``None`` the defaults."""
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    return load_config(config)


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


def iter_settings() -> list[tuple[str, attrs.Attribute[Any]]]:
    """``(section.key, field)`` for every documented key, in reference order."""
    out = []
    for name, section_cls in SECTIONS.items():
        for field in attrs.fields(section_cls):
            if field.metadata.get("pushreport.setting"):
                out.append((f"{name}.{field.name}", field))
    return out


#: Every key the file may hold (besides the backends' own ``[storage.NAME]`` tables),
#: for the documentation check.
CONFIG_KEYS: tuple[str, ...] = tuple(key for key, _ in iter_settings())


def _section(section_cls: type, where: str, table: Mapping[str, Any]) -> Any:
    fields = {f.name for f in attrs.fields(section_cls) if f.metadata.get("pushreport.setting")}
    _only(table, where, fields)
    # Each setting's converter checks its value; the section's check() runs on
    # construction: the same checks as for a section built in Python.
    return section_cls(**table)


def _storage(table: Mapping[str, Any]) -> StorageConfig:
    options = {name: value for name, value in table.items() if name != "backends"}
    if "backends" not in table:
        return StorageConfig(options=options)
    return StorageConfig(backends=table["backends"], options=options)


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
                f"unknown key (expected one of: {', '.join(sorted(allowed))})", key=full
            )
