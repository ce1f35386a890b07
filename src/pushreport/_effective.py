"""``pushreport config``: the configuration ``serve`` would run with, checked as ``serve``
checks it at start, printed with every secret masked.

What is secret is what the schema says: a key made with ``setting(..., secret=True)``
(``[auth] secret``, ``digest_password``, ``nonce_key``, ``[lookup] token``), and in a
backend's ``[storage.<name>]`` table the options its plugin registered as secret
(``secret_options``, a main option declared secret such as PostgreSQL's ``dsn``), and
any option the plugin does not document, which nothing says is harmless. A ``*_env``
key holds the NAME of a variable, not its value: it is printed.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, TextIO

import attrs
import tomli_w

from ._config import SECTIONS, Config
from ._plugins import RegisteredBackend, collect_storage_backends, make_plugin_manager

__all__ = ["MASK", "effective_config", "run_config"]

#: What a secret's value is printed as. (An empty one is printed empty: unset.)
MASK = "***"


def _plain(value: Any) -> Any:
    """*value* as TOML and JSON types (tuples as lists, tables as dicts)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _masked(value: Any) -> Any:
    return MASK if value not in ("", None) else value


def _backend_table(
    name: str, options: Mapping[str, Any], backend: RegisteredBackend | None
) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key, value in options.items():
        shown = (
            key == "required"
            or backend is not None
            and key in backend.options_doc
            and key not in backend.secret_options
        )
        table[key] = _plain(value) if shown else _masked(value)
    return table


def effective_config(
    config: Config, backends: Mapping[str, RegisteredBackend] | None = None
) -> dict[str, Any]:
    """Every section of *config* with every key, defaults filled in, secrets masked
    (:data:`MASK`); ``[storage.<name>]`` tables as given, masked by what *backends*
    (default: the installed ones) declare."""
    if backends is None:
        backends = collect_storage_backends(make_plugin_manager(blocked=config.blocked_plugins))
    out: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        table: dict[str, Any] = {}
        for field in attrs.fields(type(section)):
            if not field.metadata.get("pushreport.setting"):
                continue
            value = getattr(section, field.name)
            table[field.name] = _masked(value) if field.metadata.get("secret") else _plain(value)
        if name == "storage":
            for backend, options in config.storage.options.items():
                table[backend] = _backend_table(backend, options, backends.get(backend))
        out[name] = table
    return out


def run_config(config: Config, *, as_json: bool, out: TextIO) -> int:
    """Check *config* exactly as ``serve`` does before it listens
    (:func:`~pushreport._server.check_start`), then print it. A failure raises
    (:class:`~pushreport_core.PushReportError`, naming the key or the store)."""
    from ._server import check_start

    check_start(config)
    shown = effective_config(config)
    if as_json:
        # default=str: a TOML date in a backend's table has no JSON type of its own.
        json.dump(shown, out, ensure_ascii=False, indent=2, default=str)
        out.write("\n")
        return 0
    where = f" of {config.source}" if config.source is not None else " (the embedded default)"
    out.write(f"# pushreport: the effective configuration{where}; secrets masked\n")
    out.write(tomli_w.dumps(shown, multiline_strings=False))
    return 0
