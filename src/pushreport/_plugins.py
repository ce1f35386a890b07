"""The plugin manager: built by a factory, never a global (tox's ``plugin/manager.py``).

:func:`make_plugin_manager` builds a :class:`pluggy.PluginManager` for the
``pushreport`` project: the hookspecs of :mod:`pushreport.hookspecs`, the plugin
objects the caller passes, and the plugins installed under the ``pushreport``
entry-point group (the built-in storage backends among them, declared in our own
``pyproject.toml`` exactly as a third party would). The helpers below call the hooks
whose semantics pluggy does not give by itself: registration by name, a chained
transform, and a veto.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Callable, Iterable, Iterator, Mapping

import attrs
import pluggy

from pushreport_core import ConfigurationError, Report, Request

from . import hookspecs
from .hookspecs import PROJECT, RunCommand
from .storage import MainOption, StorageFactory

__all__ = [
    "make_plugin_manager",
    "RegisteredBackend",
    "collect_storage_backends",
    "collect_storage_factories",
    "options_doc",
    "main_option_backend",
    "add_plugin_commands",
    "transform_report",
    "authenticate",
    "authentication",
    "Verdict",
]


def make_plugin_manager(
    *, load_entrypoints: bool = True, blocked: Iterable[str] = (), plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A new plugin manager with every pushreport plugin registered.

    :param load_entrypoints: load the plugins installed under the ``pushreport``
        entry-point group (``False`` for tests and embedders that pass their own).
    :param blocked: entry-point names (``"sqlite"``) or plugin names that must not be
        loaded, e.g. a broken third-party plugin. Blocked before anything is loaded.
    :param plugins: plugin objects (modules, instances) to register, before the
        installed ones; since pluggy calls the most recently registered plugin first,
        installed plugins run before these. A module that is also an installed entry
        point must not be passed here too: block its name or pass
        ``load_entrypoints=False``.
    :raises pluggy.PluginValidationError: a plugin implements a hook that does not
        exist (``check_pending``) or with an unknown argument.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for plugin in plugins:
        pm.register(plugin)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(PROJECT)
    # A misspelled hook (pushreport_report_sotred) fails here, at start-up, not silently.
    pm.check_pending()
    return pm


def _impls_in_call_order(pm: pluggy.PluginManager, hook_name: str) -> Iterator[Any]:
    """The plain (non-wrapper) implementations of *hook_name*, in pluggy's call order."""
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        yield impl


def _call(impl: Any, **kwargs: Any) -> Any:
    # pluggy calls an implementation with the arguments it asked for, by position.
    return impl.function(*[kwargs[name] for name in impl.argnames])


@attrs.frozen
class RegisteredBackend:
    """A storage backend as a plugin registered it (``pushreport_register_storage``)."""

    name: str
    factory: StorageFactory
    #: The option ``migrate``'s ``NAME:VALUE`` and ``--db`` set (``None``: it has none).
    main_option: MainOption | None = None
    #: The plugin that registered it.
    plugin: str = ""
    #: Options of ``[storage.<name>]`` whose values are secret (a signing key, a
    #: password), the main option too when it is declared secret: ``pushreport
    #: config`` prints ``"***"`` for them.
    secret_options: frozenset[str] = frozenset()
    #: ``{option: meaning}`` the factory documents (:func:`options_doc`).
    options_doc: Mapping[str, str] = attrs.field(factory=dict)


def collect_storage_backends(pm: pluggy.PluginManager) -> dict[str, RegisteredBackend]:
    """Every storage backend the plugins register, by name.

    Calls each implementation of ``pushreport_register_storage`` in turn (pluggy's
    order), so that a clash names both plugins.

    :raises ConfigurationError: a name is registered twice, is not a non-empty string,
        or comes with something that is not callable, or a main option that is not a
        :class:`~pushreport.storage.MainOption`.
    """
    backends: dict[str, RegisteredBackend] = {}
    for impl in _impls_in_call_order(pm, "pushreport_register_storage"):
        plugin_name = impl.plugin_name

        def register(
            name: str,
            factory: StorageFactory,
            *,
            main_option: MainOption | None = None,
            secret_options: Iterable[str] = (),
            _plugin: str = plugin_name,
        ) -> None:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"plugin {_plugin!r} registered a storage backend with an invalid "
                    f"name {name!r}"
                )
            if not callable(factory):
                raise ConfigurationError(
                    f"plugin {_plugin!r} registered storage backend {name!r} with a "
                    f"factory that is not callable"
                )
            if main_option is not None and not isinstance(main_option, MainOption):
                raise ConfigurationError(
                    f"plugin {_plugin!r} registered storage backend {name!r} with a "
                    f"main_option that is not a MainOption: {main_option!r}"
                )
            if isinstance(secret_options, str) or not all(
                isinstance(o, str) and o for o in secret_options
            ):
                raise ConfigurationError(
                    f"plugin {_plugin!r} registered storage backend {name!r} with "
                    "secret_options that are not a list of option names"
                )
            if name in backends:
                raise ConfigurationError(
                    f"storage backend {name!r} is registered twice, by plugin "
                    f"{backends[name].plugin!r} and by plugin {_plugin!r}"
                )
            secrets = set(secret_options)
            if main_option is not None and main_option.secret:
                secrets.add(main_option.key)
            backends[name] = RegisteredBackend(
                name, factory, main_option, _plugin, frozenset(secrets), options_doc(factory)
            )

        _call(impl, register=register)
    return backends


def options_doc(factory: StorageFactory) -> dict[str, str]:
    """``{option: meaning}`` of a backend's ``[storage.<name>]`` table, as its factory
    documents it: a factory function's ``options_doc``, or a ``from_options``
    classmethod's class's ``OPTIONS_DOC`` (empty: undocumented)."""
    options = getattr(factory, "options_doc", None) or getattr(
        getattr(factory, "__self__", None), "OPTIONS_DOC", None
    )
    return dict(options) if options else {}


def collect_storage_factories(pm: pluggy.PluginManager) -> dict[str, StorageFactory]:
    """Every storage backend's factory, by name (:func:`collect_storage_backends`)."""
    return {name: b.factory for name, b in collect_storage_backends(pm).items()}


def main_option_backend(
    config_backends: Iterable[str], registered: Mapping[str, RegisteredBackend]
) -> RegisteredBackend | None:
    """The first of *config_backends* (``[storage] backends``, in order) whose backend
    declares a main option: the one ``--db`` sets; ``None`` when none does."""
    for name in config_backends:
        backend = registered.get(name)
        if backend is not None and backend.main_option is not None:
            return backend
    return None


def add_plugin_commands(
    pm: pluggy.PluginManager,
    add: Callable[[str, RunCommand, str], argparse.ArgumentParser],
    *,
    taken: Iterable[str] = (),
) -> None:
    """Call every ``pushreport_add_commands`` implementation with an ``add_command``
    that checks the command and hands it to *add* ``(name, run, help)``, which builds
    its parser. *taken*: the names pushreport's own commands have.

    :raises ConfigurationError: a name that is not a word, is taken (the message names
        both owners), or comes with a *run* that is not callable or a *help* that is
        not one line.
    """
    owners = dict.fromkeys(taken, "pushreport")
    for impl in _impls_in_call_order(pm, "pushreport_add_commands"):
        plugin_name = impl.plugin_name

        def add_command(
            name: str, run: RunCommand, *, help: str, _plugin: str = plugin_name
        ) -> argparse.ArgumentParser:
            if not isinstance(name, str) or not _COMMAND_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"plugin {_plugin!r} added a command with an invalid name {name!r}"
                )
            if not callable(run):
                raise ConfigurationError(
                    f"plugin {_plugin!r} added command {name!r} with a run that is not callable"
                )
            if not isinstance(help, str) or not help.strip() or "\n" in help.strip():
                # The first line of the command's --help, and its row in the list.
                raise ConfigurationError(
                    f"plugin {_plugin!r} added command {name!r} without a one-line help"
                )
            if name in owners:
                first = owners[name]
                first = first if first == "pushreport" else f"plugin {first!r}"
                raise ConfigurationError(
                    f"command {name!r} is added twice, by {first} and by plugin {_plugin!r}"
                )
            owners[name] = _plugin
            return add(name, run, help)

        _call(impl, add_command=add_command)


#: A command's name: what a shell passes as one word, no option.
_COMMAND_NAME = re.compile(r"[a-z][a-z0-9-]*")


def transform_report(pm: pluggy.PluginManager, report: Report, request: Request) -> Report:
    """Run ``pushreport_transform_report`` as a chain and return the final report.

    Each implementation, in pluggy's call order (last registered first, ``tryfirst``
    and ``trylast`` honoured), sees the report as the previous one returned it;
    ``None`` keeps it. Hook wrappers are not part of the chain. An
    :class:`~pushreport_core.InvalidReport` raised by a plugin propagates.

    :raises TypeError: a plugin returned something that is neither a ``Report`` nor
        ``None`` (a plugin bug, not the client's fault).
    """
    if not pm.hook.pushreport_transform_report.get_hookimpls():
        return report  # the usual case: no transform plugin, nothing to walk
    for impl in _impls_in_call_order(pm, "pushreport_transform_report"):
        result = _call(impl, report=report, request=request)
        if result is None:
            continue
        if not isinstance(result, Report):
            raise TypeError(
                f"plugin {impl.plugin_name!r} returned "
                f"{type(result).__name__} from pushreport_transform_report; "
                "expected a Report or None"
            )
        report = result
    return report


@attrs.frozen
class Verdict:
    """What the ``pushreport_authenticate`` implementations answered, together."""

    #: No implementation refused (``True`` when none has an opinion: opt-in).
    accepted: bool
    #: The request names a username and one of them vouched for it (``True``): it
    #: comes from that account's user, who may change only what is theirs
    #: (:func:`pushreport_core.may_write`). ``None`` answers (a shared secret that
    #: matched, HTTP Digest) accept without saying who asks; a request that names no
    #: username identifies nobody.
    identified: bool = False


def authentication(
    pm: pluggy.PluginManager, report: Report, request: Request, *, kind: str = "report"
) -> Verdict:
    """Ask every ``pushreport_authenticate`` implementation (see :class:`Verdict`).

    Refused if any refuses; a plugin that answers anything but ``True`` or ``None``
    counts as a refusal: a credential check fails closed. *kind* is ``"report"`` or
    ``"removal"`` (then *report* is ``removal.as_report()``).
    """
    caller = pm.hook.pushreport_authenticate
    if not caller.get_hookimpls():
        # Nobody to ask (the default): what the call would answer, without the call.
        return Verdict(accepted=True)
    answers: list[Any] = caller(
        report=report,
        username=report.username,
        password=report.password,
        request=request,
        kind=kind,
    )
    accepted = all(answer is True for answer in answers)
    identified = accepted and bool(answers) and bool(report.username)
    return Verdict(accepted=accepted, identified=identified)


def authenticate(
    pm: pluggy.PluginManager, report: Report, request: Request, *, kind: str = "report"
) -> bool:
    """Whether no ``pushreport_authenticate`` implementation refuses
    (:func:`authentication`'s ``accepted``)."""
    return authentication(pm, report, request, kind=kind).accepted
