"""Hook specifications: how plugins extend pushreport.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names are
the hooks below. Installed plugins are found through the ``pushreport`` entry-point
group, the same way the built-in storage backends are::

    [project.entry-points.pushreport]
    mybackend = "my_package.pushreport_plugin"

Every hook takes keyword arguments only; an implementation may accept any subset of
them, in any order (pluggy's rule).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable, Protocol

import pluggy

if TYPE_CHECKING:
    from pushreport_core import Registration, Removal, Report, Request, Secret

    from ._config import Config
    from .storage import RegisterStorage

__all__ = ["hookspec", "hookimpl", "PROJECT", "AddCommand", "RunCommand"]

PROJECT = "pushreport"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark a plugin function as a pushreport hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)


#: Runs a plugin's command: ``run(config, args)`` with the configuration ``--config``
#: names and the parsed arguments; returns the exit status.
RunCommand = Callable[["Config", argparse.Namespace], int]


class AddCommand(Protocol):
    """The ``add_command`` callable of :func:`pushreport_add_commands`."""

    def __call__(self, name: str, run: RunCommand, *, help: str) -> argparse.ArgumentParser: ...


@hookspec
def pushreport_register_storage(register: RegisterStorage) -> None:
    """Register storage backends by name.

    Called once, when the plugin manager is set up, before the configuration picks its
    backends by name (``[storage] backends = ["sqlite"]``).

    :param register: call ``register(name, factory)`` for each backend this plugin
        provides (:class:`pushreport.storage.RegisterStorage`). ``factory(options,
        context)`` gets the backend's own table of the configuration
        (``[storage.<name>]``, a dict) and a :class:`StorageContext` (``base_dir`` for
        relative paths; ``create`` false when a command only reads: a missing store is
        then an error, and nothing is created), and returns an object that implements
        :class:`pushreport.storage.Storage`, opening nothing yet, and declares its
        capabilities (:class:`pushreport.storage.Capability`; ``open()`` opens it).
        ``main_option=MainOption("path", is_path=True)`` names the option that
        ``pushreport migrate NAME:VALUE`` and ``--db`` set
        (:class:`pushreport.storage.MainOption`; without it, the backend is named alone
        there and configured in ``--config``). ``secret_options=("secret",)`` names
        the options whose values are secret (a key, a password): ``pushreport config``
        prints ``"***"`` for them, and for the main option when it is declared secret,
        and for any option the factory does not document (``OPTIONS_DOC``). Registering
        a name twice is a configuration error.
    """


@hookspec
def pushreport_add_commands(add_command: AddCommand) -> None:
    """Add subcommands to the ``pushreport`` command.

    Called once each time the command line is parsed (and when ``docs/cli.md`` is
    generated), before the configuration is read: only the plugins installed under
    the ``pushreport`` entry-point group, less those the ``[plugins] blocked`` of
    ``--config`` names, add commands.

    :param add_command: call ``add_command(name, run, help="...")`` for each command
        (:class:`AddCommand`); *help*, one line, is the first line of the command's
        ``--help`` and its entry in ``pushreport --help``. It returns the command's
        :class:`argparse.ArgumentParser`, which already has ``--config FILE``, for the
        command's own options. When the command is given, ``run(config, args)`` is
        called (:data:`RunCommand`) with the configuration ``--config`` names (the
        embedded default without it) and the parsed arguments, and returns the exit
        status. A :class:`~pushreport_core.ConfigurationError` it raises is printed
        as ``pushreport: configuration error: …`` (status 2), any other
        :class:`~pushreport_core.PushReportError` as ``pushreport: …`` (status 1). A
        name that pushreport or another plugin already has is a configuration error
        that names both.
    """


@hookspec
def pushreport_authenticate(
    report: Report, username: str | None, password: Secret | None, request: Request, kind: str
) -> bool | None:
    """Decide whether a parsed report may be stored, or a removal may delete.

    Called for every valid report, before it is stored, and for every valid removal
    (Account Removal Reporter), before anything is deleted. Every implementation is
    called. An implementation that does not take *kind* judges both alike, which is
    what a credential check wants: a removal deletes what a report stored.

    :param report: the validated report; for a removal, the removal as a report
        (:meth:`pushreport_core.Removal.as_report`: selector, username, the tokens it
        names, password; no app ids).
    :param username: the account username the request carries (``report.username``).
    :param password: the account password from ``%account[password]%``, as a
        :class:`~pushreport_core.Secret` (``None`` when the request carries none). Call
        ``password.reveal()`` or ``password.matches(expected)``; never log it.
    :param request: the raw request, for plugins that authenticate on the target or on
        HTTP headers (``request.authorization``, ``request.client``).
    :param kind: ``"report"`` (Push Token Reporter) or ``"removal"`` (Account Removal
        Reporter).
    :return: ``False`` to refuse (the app gets ``403`` and nothing is stored or
        deleted), ``True`` to vouch for it, ``None`` for no opinion. One ``False``
        refuses the request.
        ``True`` vouches for the *username*: the request comes from that account's
        user. Then a selector stored under another username is that user's, and the
        report or removal is refused (``403``, nothing changes: see
        :func:`pushreport_core.may_write`; a request without a username identifies
        nobody). A check that does not tell who asks (a
        secret or an address shared by every account) returns ``None`` when it
        passes, as the built-in ``secret`` and ``digest`` methods do; the built-in
        ``callable`` and ``http`` return ``True``.
        Raise :class:`~pushreport_core.AuthenticationRequired` with the
        ``WWW-Authenticate`` challenges to ask for HTTP credentials instead (``401``: the
        client retries with them). Refusals count against the ``[limits]`` lock-out.
        The built-in ``[auth]`` methods are implementations of this hook.
    """


@hookspec
def pushreport_transform_report(report: Report, request: Request) -> Report | None:
    """Validate or rewrite a report before it is stored.

    Called for every authenticated report. Implementations are called in turn, each
    seeing the report as the previous one returned it.

    :return: a new :class:`~pushreport_core.Report` (make one with ``attrs.evolve``) to
        replace it, or ``None`` to keep it. Raise
        :class:`~pushreport_core.InvalidReport` to refuse it (``400``, nothing stored).
    """


@hookspec
def pushreport_report_stored(registration: Registration, report: Report) -> None:
    """Notification that a report was committed by every required backend.

    Called after the commit and before the app's ``200``. Every implementation is called.
    An exception here is logged and does not change the answer: the report is stored.

    :param registration: the registration as stored after the merge.
    :param report: the report that was merged.
    """


@hookspec
def pushreport_registration_removed(registration: Registration, removal: Removal) -> None:
    """Notification that an Account Removal Reporter call deleted a registration, or
    the support page's "forget this registration" did (``[admin]``; its removal names
    only the selector, and its ``shape`` is ``"admin"``).

    Called after every required backend has deleted it (or found it already gone) and
    before the app's ``200``; not called when nothing was deleted (the selector was
    unknown, or a newer registration was kept: see
    :meth:`pushreport_core.Removal.applies_to`). Every implementation is called. An
    exception here is logged and does not change the answer: the removal is done.

    :param registration: the registration as it was stored before the removal (from
        the first backend that held it).
    :param removal: the validated removal (its ``password`` is a
        :class:`~pushreport_core.Secret`; never log it).
    """
