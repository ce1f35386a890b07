"""pushreport_files: the built-in storage backend in plain files, in one folder.

This module is the plugin, declared in pushreport's own ``pyproject.toml`` exactly as a
third-party backend would be::

    [project.entry-points.pushreport]
    files = "pushreport_files"

and picked in the configuration by name::

    [storage]
    backends = ["files"]

    [storage.files]
    path = "pushreport-data"   # a folder, relative to the configuration file's folder
    compact_after = 10000      # log lines after which the snapshot is rewritten
    fsync = true               # fsync before answering (false: survives a crash of
                               # the process, not of the machine)
    lock_timeout = 2.0         # seconds the folder's lock may be waited for, then 503

See :mod:`pushreport_files._storage` for the folder's layout and how it stays
consistent across crashes and processes.
"""

from __future__ import annotations

from pushreport.hookspecs import hookimpl
from pushreport.storage import MainOption, RegisterStorage

from ._storage import (
    DEFAULT_COMPACT_AFTER,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PATH,
    FORMAT,
    FilesStorage,
)

__all__ = [
    "FilesStorage",
    "FORMAT",
    "DEFAULT_PATH",
    "DEFAULT_COMPACT_AFTER",
    "DEFAULT_LOCK_TIMEOUT",
    "pushreport_register_storage",
]


@hookimpl
def pushreport_register_storage(register: RegisterStorage) -> None:
    """Register the ``files`` backend; ``files:PATH`` sets its ``path``."""
    register("files", FilesStorage.from_options, main_option=MainOption("path", is_path=True))
