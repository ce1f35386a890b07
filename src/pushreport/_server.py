"""``pushreport serve``: the receiver under gunicorn, or under uvicorn
(``[server] engine``).

gunicorn is the well-kept pre-fork WSGI server of the Python ecosystem: it passes the
raw request target (``RAW_URI``) so that ``%2F`` inside a token survives, restarts a
crashed worker, and its sync workers were the fastest plain setup measured for this
workload (see ``bench/README.md``). uvicorn serves the ASGI adapter on an event loop
per worker (``_uvicorn.py``): a slow or idle client costs a socket, not a worker.
"""

from __future__ import annotations

import errno
import importlib
import ipaddress
import logging
import re
import secrets
import socket
from typing import Any, Callable

import attrs

from pushreport_core import (
    BODY_METHODS,
    DEFAULT_REMOVAL_SHAPES,
    DEFAULT_SHAPES,
    ConfigurationError,
    StorageUnavailable,
    Template,
)

from ._config import Config
from ._health import OperatorPaths
from ._logs import JsonFormatter, configure_logging
from ._metrics import prepare_multiprocess
from ._redact import filter_server_log
from ._service import STARTUP_WAIT, Receiver, open_now
from .limitstate import state_errors

__all__ = [
    "serve",
    "check_start",
    "describe",
    "bind",
    "load_adapter",
    "ListenError",
    "BACKLOG",
    "ADAPTER",
]

log = logging.getLogger("pushreport")


def open_limit_state_now(receiver: Receiver) -> None:
    """Open the limits' shared state (when a limit uses one) before listening, so that a
    state that cannot be used (a ``state_path`` naming another file, a folder that is
    not there) stops ``serve`` with one line instead of answering every report 503."""
    state = receiver.limiter.state if receiver.limiter is not None else None
    if state is None:
        return
    try:
        with state_errors():
            state.count()
    except StorageUnavailable as e:
        where = f" {state.where}" if state.where else ""
        raise StorageUnavailable(f"cannot open the limit state{where}: {e.msg}") from None


def describe(receiver: Receiver) -> list[str]:
    """Human-readable lines: which shapes are accepted and which backends are on."""
    shapes = receiver.shapes
    lines = []
    if shapes is DEFAULT_SHAPES:
        lines.append(
            "accepting the default shapes: GET/POST/PUT " + ", ".join(DEFAULT_SHAPES.paths)
        )
    elif isinstance(shapes, Template):
        line = f"accepting {shapes.method} {shapes.path_template}"
        if shapes.post_data and shapes.method in BODY_METHODS:
            line += f" with a {shapes.request_content_type} body"
        lines.append(line)
    removal = receiver.removal_shapes
    if removal is DEFAULT_REMOVAL_SHAPES:
        lines.append(
            "accepting removals by the default removal shapes: "
            + ", ".join(DEFAULT_REMOVAL_SHAPES.paths)
        )
    elif isinstance(removal, Template):
        lines.append(f"accepting removals by {removal.method} {removal.path_template}")
    for backend in receiver.backends:
        where = backend.capabilities.path
        extra = f" at {where}" if where is not None else ""
        kind = "required" if backend.required else "best-effort"
        lines.append(f"storage backend {backend.name!r} ({kind}){extra}")
    methods = receiver.config.auth.methods
    if methods:
        lines.append("authentication: " + ", ".join(methods))
    if receiver.config.admin.enabled:
        lines.append(f"support page at {receiver.config.admin.path}/ (docs/admin.md)")
    return lines


def shared_nonce_key(config: Config) -> Config:
    """*config* with a random ``[auth] nonce_key`` when digest needs one and none is
    configured: made once in the master, it reaches every worker (forked with this
    configuration, restarted ones too), so they all accept each other's nonces."""
    auth = config.auth
    if "digest" not in auth.methods or auth.nonce_key or auth.nonce_key_env:
        return config
    return attrs.evolve(config, auth=attrs.evolve(auth, nonce_key=secrets.token_urlsafe(32)))


def check_start(
    config: Config, *, wait: float = STARTUP_WAIT, engine: str | None = None
) -> tuple[Callable[[Config], Any], list[str]]:
    """Everything that can refuse ``serve``'s start but the socket (``pushreport config``
    runs it too): return the adapter's ``create_app`` and the lines :func:`describe` says.

    The adapter of *engine* (default: ``[server] engine``'s) is imported here, before
    the socket listens: a missing one fails the
    start, and nothing is imported after the "listening" line. Everything is checked
    once in the master, so a bad configuration fails at start-up instead of in every
    worker: the plugins and their options, ``[auth]`` (its ``*_env`` variables read),
    the lookup token, the templates; every backend is opened (created when missing,
    checked to be writable), waiting up to *wait* seconds for one that is still
    starting, and closed again (workers open their own after the fork); the limits'
    shared state; the operator paths clear of the report paths.

    :raises PushReportError: a :class:`~pushreport_core.ConfigurationError` or a
        :class:`~pushreport_core.StorageUnavailable` that names the key or the store.
    """
    create_app = load_adapter(ADAPTERS[engine or config.server.engine])
    receiver = Receiver.from_config(config)
    try:
        open_now(receiver.backends, wait=wait)
        open_limit_state_now(receiver)
        OperatorPaths.of(receiver)  # health and metrics paths clear of the report paths
        lines = describe(receiver)
    finally:
        receiver.close()
    return create_app, lines


#: The soft limit of open files wanted when the hard limit is "unlimited" (Linux refuses
#: more than ``fs.nr_open``, 1,048,576 by default).
OPEN_FILES_UNLIMITED = 1 << 20


def raise_open_files_limit() -> str | None:
    """Raise this process's soft limit of open files (``RLIMIT_NOFILE``) to its hard
    limit, which the workers inherit: each idle or slow connection holds a descriptor,
    and the common soft default (1,024) is too few for a thousand of them. What was done,
    for the log; ``None`` when there was nothing to do (already at the hard limit, or no
    such limit on this system). Never raises: a limit that cannot be raised is said."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as exc:
        return f"open files: the soft limit ({soft}) could not be raised: {exc}"
    return f"open files: soft limit raised from {soft} to {want}"


def _configure_logging(
    access_log: bool, log_format: str = "text", level: str | None = None
) -> None:
    configure_logging(access_log=access_log, log_format=log_format, level=level)
    filter_server_log()  # gunicorn quotes the requests it refuses


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    workers: int,
    access_log: bool | None = None,
    log_format: str | None = None,
    log_level: str | None = None,
    engine: str | None = None,
) -> int:
    """Serve *config* under *engine* (``[server] engine``: uvicorn or gunicorn) until it
    is stopped. *access_log* and *log_format* override ``[server]``'s; *log_level*
    (``--log-level``) is the least severe line logged, the engine's included (default:
    info), and wins over the access log."""
    engine = engine or config.server.engine
    if engine == "uvicorn":
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "engine uvicorn needs uvicorn: pip install 'pushreport[asgi]'",
                key="server.engine",
            ) from None
    log_access = config.server.access_log if access_log is None else access_log
    fmt = config.server.log_format if log_format is None else log_format
    _configure_logging(log_access, fmt, log_level)
    # Said with the other start lines, once it is sure to start (a failed start is
    # one line).
    raised = raise_open_files_limit()
    # The address first (bound, not yet listening): a port in use or an address this
    # machine does not have fails here, before anything is opened or created.
    sock = bind(host, port)
    try:
        # Workers' counters meet in one folder; it must be set before prometheus_client
        # is first imported, so before anything builds the metrics.
        child_exit = prepare_multiprocess() if config.metrics.enabled else None
        config = shared_nonce_key(config)
        create_app, lines = check_start(config, engine=engine)
        for line in lines:
            log.info("%s", line)
        if config.prune.older_than:
            log.info(
                "pruning registrations last seen more than %s ago, every %s",
                config.prune.older_than,
                config.prune.interval,
            )
        bound_host, bound_port = sock.getsockname()[:2]
        where = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        if raised is not None:
            log.info("%s", raised)
        log.info("serving with %s: %d worker processes", engine, workers)
        # Said just before the socket listens, so that whoever can connect can read it.
        log.info("pushreport listening on http://%s", where)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    if engine == "uvicorn":
        return _serve_uvicorn(
            config, sock, workers, create_app, child_exit, (log_access, fmt, log_level)
        )
    return _serve_gunicorn(
        config, sock, workers, create_app, child_exit, (log_access, fmt, log_level)
    )


def _serve_uvicorn(
    config: Config,
    sock: socket.socket,
    workers: int,
    create_app: Callable[[Config], Any],
    child_exit: Callable[[int], None] | None,
    logging_options: tuple[bool, str, str | None],
) -> int:
    log_access, fmt, log_level = logging_options
    from ._uvicorn import BOOT_FAILED, run_workers, serve_worker

    def worker(sock: socket.socket) -> int:
        _configure_logging(log_access, fmt, log_level)
        app = create_app(config)
        # In every worker, after the fork; a lock file elects the one that prunes.
        app.receiver.start_pruning()
        try:
            started = serve_worker(app, sock, server=config.server, limits=config.limits)
        finally:
            app.close()  # after a failed start-up; closing twice is harmless
        return 0 if started else BOOT_FAILED

    return run_workers(sock, workers, worker, child_exit=child_exit)


def _serve_gunicorn(
    config: Config,
    sock: socket.socket,
    workers: int,
    create_app: Callable[[Config], Any],
    child_exit: Callable[[int], None] | None,
    logging_options: tuple[bool, str, str | None],
) -> int:
    log_access, fmt, log_level = logging_options
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    # gunicorn takes the socket over (and closes this descriptor once it has its own).
    fd = sock.detach()

    options: dict[str, Any] = {
        "bind": f"fd://{fd}",
        "backlog": BACKLOG,
        "workers": workers,
        "threads": config.server.threads,
        "worker_class": "gthread" if config.server.threads > 1 else "sync",
        "timeout": config.server.timeout,
        "graceful_timeout": 10,
        "keepalive": config.server.keepalive,
        # Our own access log redacts credentials; gunicorn's would log the raw URL.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": log_level or "info",
        "limit_request_line": 8190,
        # The header limits of [limits], enforced by gunicorn before the app sees them.
        "limit_request_field_size": config.limits.max_header,
        "limit_request_fields": config.limits.max_headers,
        "proc_name": "pushreport",
        # gunicorn >= 24 opens a control socket at one fixed path per user: two
        # servers on one machine would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }
    if fmt == "json":
        from gunicorn.glogging import Logger  # type: ignore[import-untyped]

        class JsonLogger(Logger):  # type: ignore[misc]
            """gunicorn's own lines (start, workers booting, timeouts) in JSON too."""

            def setup(self, cfg: Any) -> None:
                super().setup(cfg)
                for handler in self.error_log.handlers:
                    handler.setFormatter(JsonFormatter())

        options["logger_class"] = JsonLogger
    if child_exit is not None:

        def on_child_exit(server: Any, worker: Any) -> None:
            child_exit(worker.pid)

        options["child_exit"] = on_child_exit

    apps: list[Any] = []  # this worker's app, once loaded

    def worker_exit(server: Any, worker: Any) -> None:
        # A worker that stops (graceful shutdown, max requests, reload) applies what
        # its SQLite report spool holds and closes its storage. (One that is killed
        # leaves its spool file to the other workers' and the next start's spool.)
        for app in apps:
            app.close()

    options["worker_exit"] = worker_exit

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            _configure_logging(log_access, fmt, log_level)
            app = create_app(config)
            apps.append(app)
            # In every worker, after the fork; a lock file elects the one that prunes.
            app.receiver.start_pruning()
            return app

    Application().run()
    return 0


#: Connections the kernel queues before a worker accepts them (gunicorn's default).
BACKLOG = 2048

#: The module whose ``create_app(config)`` builds the app gunicorn serves. The service
#: knows no adapter statically: it loads this one by name, as gunicorn loads an app
#: from its ``module:name`` string.
ADAPTER = "pushreport_wsgi"
#: The adapter each engine serves.
ADAPTERS = {"gunicorn": ADAPTER, "uvicorn": "pushreport_asgi"}


def load_adapter(name: str) -> Callable[[Config], Any]:
    """The ``create_app`` of the adapter module *name*: called with a configuration, it
    returns the app, which has ``receiver`` and ``close()``."""
    module = importlib.import_module(name)
    create_app: Callable[[Config], Any] = module.create_app
    return create_app


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to *host*:*port*, not yet listening, for gunicorn to take over.

    :raises ListenError: the address cannot be used; the message names it and why (in
        use, not an address of this machine, not an address at all, permission).
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if _DOTTED.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ListenError(f"cannot listen on {shown}: {host} is not an IPv4 address") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(
            f"cannot listen on {shown}: the host name does not resolve ({e.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        sock.bind(address)
    except OSError as e:
        sock.close()
        reason = _BIND_REASONS.get(e.errno or 0, e.strerror or str(e))
        raise ListenError(f"cannot listen on {shown}: {reason}") from None
    sock.set_inheritable(True)
    return sock


_DOTTED = re.compile(r"[0-9.]+")
_BIND_REASONS = {
    errno.EADDRINUSE: "the address is already in use (is another server listening there?)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "permission denied (a port below 1024 needs privileges)",
}


class ListenError(Exception):
    """``pushreport serve`` cannot listen where it was told to (``--host``, ``--port``,
    ``[server]``); the message names the address and why."""
