"""The configured storage backends: built from ``[storage]`` by name through the
plugins' factories, opened, closed.

Below the receiver, so that what only needs the backends (``pushreport prune``, the
limits' shared state, readiness, metrics) opens them without building a receiver.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import attrs
import pluggy

from pushreport_core import ConfigurationError, StorageUnavailable

from ._batch import Writer, writer_for
from ._config import Config
from ._plugins import collect_storage_factories
from .storage import Capabilities, Storage, StorageContext, StorageStarting

__all__ = ["Backend", "open_backends", "open_now", "close_backends", "STARTUP_WAIT"]

log = logging.getLogger("pushreport")


@attrs.frozen
class Backend:
    """A configured storage backend, whether the app's 200 waits for it, and what it
    declared it can do, checked when the Backend is made (:func:`open_backends`)."""

    name: str
    storage: Storage
    required: bool = True
    #: What the backend declared (:class:`~pushreport.storage.Capabilities`): its
    #: optional methods, bound, read and checked once, here.
    capabilities: Capabilities = attrs.field(
        default=attrs.Factory(
            lambda self: Capabilities.of(self.storage, self.name), takes_self=True
        )
    )
    #: What writes go through: a :class:`GroupCommit` over the storage when it declares
    #: ``upsert_many`` (concurrent reports in one transaction), else its own writes.
    writer: Writer = attrs.field(
        default=attrs.Factory(
            lambda self: writer_for(self.storage, self.capabilities), takes_self=True
        )
    )


def open_backends(
    config: Config, pm: pluggy.PluginManager, *, create: bool = True
) -> list[Backend]:
    """Build the configured backends, in order (each opens its store lazily; see
    :func:`open_now`). *create*: whether a backend may create a missing store
    (:attr:`StorageContext.create`); ``False`` for the commands that only read."""
    factories = collect_storage_factories(pm)
    context = StorageContext(base_dir=config.base_dir, create=create)
    backends: list[Backend] = []
    for name in config.storage.backends:
        factory = factories.get(name)
        if factory is None:
            known = ", ".join(sorted(factories)) or "none"
            raise ConfigurationError(
                f"no storage backend named {name!r} is installed (installed: {known})",
                key="storage.backends",
            )
        options: dict[str, Any] = config.storage.options_for(name)
        required = options.pop("required", True)
        if not isinstance(required, bool):
            raise ConfigurationError("must be true or false", key=f"storage.{name}.required")
        storage = factory(options, context)
        try:
            # What it declares is checked here, once: a capability without its
            # method stops the start, naming both.
            backends.append(Backend(name, storage, required))
        except ConfigurationError:
            _close_all([storage, *(b.storage for b in backends)])
            raise
    if not any(b.required for b in backends):
        raise ConfigurationError("at least one backend must be required", key="storage.backends")
    return backends


#: Seconds ``pushreport serve`` waits at start-up for a backend that is still starting
#: (:class:`~pushreport.storage.StorageStarting`: a PostgreSQL server that refuses
#: connections or says it is starting up), before it gives up.
STARTUP_WAIT = 10.0


def open_now(
    backends: Sequence[Backend],
    *,
    wait: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Open every backend now, in order: its ``open()`` (``ping()`` for one that does
    not declare it),
    so that a store that cannot be used fails here, with a message that names it,
    rather than at the first report or read.

    A *required* backend's failure is raised (``StorageUnavailable``); one that is
    :class:`~pushreport.storage.StorageStarting` is tried again for up to *wait*
    seconds first. A best-effort backend's failure is logged and it stays configured
    (each report tries it again).
    """
    for backend in backends:
        storage = backend.storage
        start = backend.capabilities.open
        deadline = clock() + wait
        while True:
            try:
                if start is not None:
                    start()
                else:
                    storage.ping()
                break
            except StorageStarting as e:
                if backend.required and wait > 0:
                    if clock() < deadline:
                        sleep(min(0.5, max(0.0, deadline - clock())))
                        continue
                    raise StorageStarting(f"{e} (waited {wait:g} s)") from None
                if backend.required:
                    raise
                _open_failed(backend, e)
                break
            except StorageUnavailable as e:
                if backend.required:
                    raise
                _open_failed(backend, e)
                break


def _open_failed(backend: Backend, error: Exception) -> None:
    log.warning("best-effort storage backend %r cannot be opened: %s", backend.name, error)


def close_backends(backends: Sequence[Backend]) -> None:
    """Close every backend; a failure is logged, and the others are still closed."""
    _close_all([b.storage for b in backends])


def _close_all(storages: Sequence[Storage]) -> None:
    for storage in storages:
        try:
            storage.close()
        except Exception:  # pragma: no cover
            log.exception("closing storage backend %r failed", storage.name)
