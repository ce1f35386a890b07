"""The storage protocol that every backend implements.

A backend stores one :class:`~pushreport_core.Registration` per ``selector``. The one
write is :meth:`Storage.upsert`: it applies the merge rule of
:func:`pushreport_core.merge` atomically (a token the report does not know never
erases a stored one) and returns only once the result is durable. A backend that cannot
do that now raises :class:`~pushreport_core.StorageUnavailable`; it never returns as if
it had stored.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import attrs

from pushreport_core import Registration, Report

__all__ = ["Storage", "StorageContext", "StorageFactory"]


@attrs.frozen(kw_only=True)
class StorageContext:
    """What a backend factory may need besides its own options."""

    #: The folder relative paths in the configuration are resolved against (the
    #: configuration file's folder, or the working directory).
    base_dir: Path = attrs.field(factory=Path.cwd)


@runtime_checkable
class Storage(Protocol):
    """What pushreport needs of a storage backend."""

    #: The name the backend was registered under.
    name: str

    def upsert(self, report: Report, *, now: datetime) -> Registration:
        """Merge *report* into the stored registration of its selector, durably.

        Atomic against concurrent upserts of the same selector (several threads,
        processes or hosts). Returns the registration as stored. Raises
        ``StorageUnavailable`` when it cannot commit within a short bound.
        """
        ...

    def get(self, selector: str) -> Registration | None:
        """The registration of *selector*, or ``None``."""
        ...

    def find(self, *, username: str | None = None) -> list[Registration]:
        """Registrations of *username* (all of them when ``None``), by selector."""
        ...

    def __iter__(self) -> Iterator[Registration]:
        """Every registration, in selector order."""
        ...

    def remove(self, selector: str) -> bool:
        """Delete the registration of *selector*; ``False`` when there was none."""
        ...

    def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend can serve now."""
        ...

    def close(self) -> None:
        """Release connections and files. The object is not used afterwards."""
        ...


StorageFactory = Callable[[Mapping[str, Any], StorageContext], Storage]
