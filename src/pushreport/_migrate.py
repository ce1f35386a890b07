"""``pushreport migrate``: copy every registration from one backend to another.

A backend is named by a SPEC: ``NAME:VALUE`` sets the main option the backend declared
when it was registered (:class:`~pushreport.storage.MainOption`: ``path`` for
``sqlite`` and ``files``, ``dsn`` for ``postgresql``) on top of its ``[storage.NAME]``
table of ``--config``; a bare ``NAME`` is that backend exactly as ``--config``
configures it. The copy goes through the target's ``put_many`` (it must declare it):
each registration is stored exactly as the source holds it (``first_seen``,
``last_seen``, ``reports``), replacing the target's registration of the same selector,
so running it twice gives the same target. A main option declared secret (a DSN, which
may hold a password) is never printed (``postgresql:***``).
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import attrs

from pushreport_core import ConfigurationError, Registration, StorageUnavailable

from ._config import Config
from ._plugins import RegisteredBackend, collect_storage_backends, make_plugin_manager
from ._service import Backend, open_now
from .storage import Capabilities, MainOption, Storage, StorageContext

__all__ = ["BackendSpec", "parse_spec", "parse_option", "migrate", "run_migrate", "DEFAULT_BATCH"]

DEFAULT_BATCH = 500


@attrs.frozen
class BackendSpec:
    """A backend named on the command line, and how to show it without secrets."""

    name: str
    value: str | None = None  # the VALUE of NAME:VALUE; None for a bare NAME
    options: tuple[tuple[str, Any], ...] = ()  # --from-option / --to-option

    def display(self, main: MainOption | None = None) -> str:
        if self.value is None:
            return self.name
        if main is None or main.secret:
            return f"{self.name}:***"
        return f"{self.name}:{self.value}"


def parse_spec(text: str, options: Iterable[tuple[str, Any]] = ()) -> BackendSpec:
    """``NAME:VALUE`` or ``NAME`` (the name is everything before the first colon)."""
    name, sep, value = text.partition(":")
    if not name or (sep and not value):
        raise ConfigurationError(
            f"{'a backend' if not name else repr(name)}: a backend is "
            "NAME:PATH, NAME:DSN or a NAME configured in --config"
        )
    return BackendSpec(name=name, value=value if sep else None, options=tuple(options))


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE as TOML when it parses (``5``, ``true``, ``"x"``), else text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigurationError(f"backend option {key or text!r} must be KEY=VALUE")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _open(
    spec: BackendSpec,
    config: Config,
    registered: dict[str, RegisteredBackend],
    *,
    source: bool,
) -> tuple[Storage, str]:
    """Build the backend *spec* names (opening nothing yet); return it and how to show
    it."""
    backend = registered.get(spec.name)
    if backend is None:
        known = ", ".join(sorted(registered)) or "none"
        raise ConfigurationError(
            f"no storage backend named {spec.name!r} is installed (installed: {known})"
        )
    options = config.storage.options_for(spec.name)
    options.pop("required", None)
    # The source is only read: it is never created (a missing one is an error).
    context = StorageContext(base_dir=config.base_dir, create=not source)
    if spec.value is None:
        options.update(spec.options)
        return backend.factory(options, context), spec.display()
    main = backend.main_option
    if main is None:
        raise ConfigurationError(
            f"backend {spec.name!r} declares no main option (a path or a dsn); name "
            "it alone and configure it in --config"
        )
    value = spec.value
    if main.is_path:
        # Relative to where the command runs. (A source that does not exist is the
        # backend's open() to name: it is opened without creating.)
        value = str(Path(value).absolute())
    options[main.key] = value
    options.update(spec.options)
    return backend.factory(options, context), spec.display(main)


class Progress:
    """A progress bar on *err*: redrawn with ``\\r`` on a terminal, else a line every
    *interval* seconds. Nothing for a copy shorter than *delay* seconds."""

    def __init__(
        self,
        total: int,
        err: TextIO,
        *,
        interval: float | None = None,
        delay: float = 0.5,
        width: int = 30,
    ) -> None:
        self.total, self.err, self.width = total, err, width
        self.tty = bool(getattr(err, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.start = time.monotonic()
        self.delay = delay
        self.last = self.start
        self.drawn = False

    def _line(self, done: int) -> str:
        total = max(self.total, done)
        fraction = done / total if total else 1.0
        filled = int(fraction * self.width)
        return (
            f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction:4.0%} "
            f"{done}/{total} registrations"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or now - self.last < self.interval:
            return
        self.last = now
        self.drawn = True
        if self.tty:
            self.err.write("\r" + self._line(done))
        else:
            self.err.write(self._line(done) + "\n")
        self.err.flush()

    def finish(self, done: int) -> None:
        if not self.drawn:
            return
        self.err.write(("\r" + self._line(done) + "\n") if self.tty else self._line(done) + "\n")
        self.err.flush()


def _put_many(target: Storage, name: str) -> Callable[[Sequence[Registration]], None]:
    put_many = Capabilities.of(target, name).put_many
    if put_many is None:
        raise ConfigurationError(
            f"storage backend {name!r} has no put_many: pushreport migrate cannot copy into it"
        )
    return put_many


def migrate(
    source: Storage,
    target: Storage,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> int:
    """Copy every registration of *source* into *target* with ``put_many`` (which it
    must declare), *batch* at a time; return how many."""
    put_many = _put_many(target, target.name)
    done = 0
    pending: list[Registration] = []
    for registration in source:
        pending.append(registration)
        if len(pending) >= batch:
            put_many(pending)
            done += len(pending)
            pending = []
            if progress is not None:
                progress.update(done)
    if pending:
        put_many(pending)
        done += len(pending)
    if progress is not None:
        progress.finish(done)
    return done


def run_migrate(
    source_spec: BackendSpec,
    target_spec: BackendSpec,
    config: Config,
    *,
    batch: int = DEFAULT_BATCH,
    out: TextIO | None = None,
    err: TextIO | None = None,
    interval: float | None = None,
    delay: float = 0.5,
    as_json: bool = False,
) -> int:
    """The ``migrate`` command: the exit status (2 for an unknown or unreachable
    backend, with one line on *err*). *as_json*: print one JSON object instead,
    ``{"from", "to", "copied"}`` (the backends shown as in the text, secrets masked)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if batch < 1:
        raise ConfigurationError(f"--batch must be at least 1, not {batch}")
    registered = collect_storage_backends(make_plugin_manager(blocked=config.blocked_plugins))
    opened: list[Storage] = []
    try:
        source, shown_from = _open(source_spec, config, registered, source=True)
        opened.append(source)
        target, shown_to = _open(target_spec, config, registered, source=False)
        opened.append(target)
        # What each declares is checked before anything is opened or copied.
        backends = [Backend(source_spec.name, source), Backend(target_spec.name, target)]
        _put_many(target, target_spec.name)
        try:
            # Both opened before the copy: a source that is missing, or that is not a
            # database, fails here with a message that names it, and creates nothing.
            open_now(backends)
        except StorageUnavailable as e:
            print(f"pushreport: migrate from {shown_from} to {shown_to}: {e}", file=err)
            return 2
        try:
            total = sum(1 for _ in source)
            progress = Progress(total, err, interval=interval, delay=delay)
            count = migrate(source, target, batch=batch, progress=progress)
        except StorageUnavailable as e:
            print(
                f"pushreport: migrate from {shown_from} to {shown_to} failed: {e}"
                " (what was copied stays; running it again is safe)",
                file=err,
            )
            return 2
        except OSError as e:
            print(
                f"pushreport: migrate from {shown_from} to {shown_to} failed: "
                f"{e.strerror or type(e).__name__} (what was copied stays; running it "
                "again is safe)",
                file=err,
            )
            return 2
        except Exception as e:
            # Only the kind of error: a driver's message may quote the DSN.
            print(
                f"pushreport: migrate from {shown_from} to {shown_to} failed: "
                f"{type(e).__name__} (what was copied stays; running it again is safe)",
                file=err,
            )
            return 2
    finally:
        for storage in reversed(opened):
            try:
                storage.close()
            except Exception:  # pragma: no cover
                pass
    if as_json:
        json.dump({"from": shown_from, "to": shown_to, "copied": count}, out, ensure_ascii=False)
        out.write("\n")
        return 0
    print(f"copied {count} registrations from {shown_from} to {shown_to}", file=out)
    return 0


def options_of(values: Sequence[str] | None) -> list[tuple[str, Any]]:
    """The parsed ``--from-option`` / ``--to-option`` values."""
    return [parse_option(v) for v in values or ()]
