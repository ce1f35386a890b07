"""The ``pushreport`` command."""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import attrs
import pluggy

from pushreport_core import (
    DEFAULT_SHAPES,
    PUSH_VERBS,
    ConfigurationError,
    InvalidPush,
    Purpose,
    PushReportError,
    Registration,
    Template,
    account_xml,
    calls_loopback,
    check_base_url,
    default_template,
    removal_account_xml,
)

from ._config import Config, ServerConfig, load_config
from ._logs import LOG_LEVELS, TEXT_FORMAT, level_number
from ._plugins import (
    add_plugin_commands,
    collect_storage_backends,
    main_option_backend,
    make_plugin_manager,
)
from ._redact import shorten
from ._service import open_reader
from .hookspecs import RunCommand

__all__ = ["main", "build_parser", "with_db", "CONFIG_ENV"]

log = logging.getLogger("pushreport")


class _Parser(argparse.ArgumentParser):
    """argparse, failing with one ``pushreport: …`` line (the usage is one ``--help``
    away) instead of the usage and a second line."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("pushreport").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"pushreport: {where}{message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        # What the command does first, its one line, then the usage and the options.
        description, self.description = self.description, None
        try:
            text = super().format_help()
        finally:
            self.description = description
        return f"{description}\n\n{text}" if description else text


def _bounded(section: type, name: str, option: str) -> Callable[[str], int]:
    """An argparse type for *option*: a whole number within the bounds of the setting
    *name* of *section* (one rule: the configuration's), refused naming the option."""
    meta = attrs.fields_dict(section)[name].metadata
    low, high = int(meta["low"]), int(meta["high"])

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            # ArgumentTypeError's message is printed as is, after the option's name.
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, not {text!r}"
            )
        return value

    parse.__name__ = option  # what argparse names in "invalid <name> value"
    return parse


def build_parser(plugin_manager: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    """The command line: pushreport's commands and those the plugins of
    *plugin_manager* add (``pushreport_add_commands``; default: every installed one)."""
    parser = _Parser(
        prog="pushreport",
        description="Receive, validate and store the push tokens the Acrobits app reports.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pushreport {_version()}",
        help="print the version and exit",
    )
    log_level_option(parser)
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, *, help: str) -> argparse.ArgumentParser:
        """A subcommand whose ``--help`` starts with its one line, *help*, and that
        takes ``--log-level`` after its name too."""
        new = subparsers.add_parser(name, help=help, description=help)
        log_level_option(new, shown=False)
        return new

    def config_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="FILE",
            help=f"TOML configuration file (default: ${CONFIG_ENV} if set, else the "
            "embedded default: default shapes, SQLite in ./pushreport.sqlite3)",
        )

    def db_option(p: argparse.ArgumentParser, default: str = "") -> None:
        p.add_argument(
            "--db",
            metavar="PATH",
            help="overrides the main option of the first backend in [storage] backends "
            f"that has one (sqlite: its file, [storage.sqlite] path{default})",
        )

    serve = command(
        "serve", help="run the receiver under a production HTTP server (uvicorn or gunicorn)"
    )
    config_option(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_bounded(ServerConfig, "port", "--port"),
        help="port to listen on (default 8080)",
    )
    db_option(serve, ", default ./pushreport.sqlite3")
    serve.add_argument(
        "--workers",
        type=_bounded(ServerConfig, "workers", "--workers"),
        help="worker processes, up to 256 (default: [server] workers, else under gunicorn "
        "twice the cores plus one, under uvicorn one per core)",
    )
    serve.add_argument(
        "--engine",
        choices=("gunicorn", "uvicorn"),
        help="the HTTP server to run; default: [server] engine, uvicorn",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per request (credentials masked, tokens "
        "shortened); default: [server] access_log, off",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object per line; default: [server] log_format, text",
    )

    lst = command("list", help="print the stored registrations")
    config_option(lst)
    db_option(lst)
    lst.add_argument("--username", metavar="U", help="only this username's registrations")
    lst.add_argument("--selector", metavar="S", help="only this selector's registration")
    lst.add_argument(
        "--json", action="store_true", help="print a JSON array of objects, for scripts"
    )
    lst.add_argument(
        "--limit",
        type=_positive,
        metavar="N",
        help="print at most N registrations, and say how many more there are",
    )

    stats = command(
        "stats",
        help="summarise the stored registrations: app ids, platforms, app "
        "versions, age of the last report",
    )
    config_option(stats)
    db_option(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object, for scripts")

    axml = command("account-xml", help="print the Account XML keys for the configured shapes")
    config_option(axml)
    axml.add_argument(
        "--base-url",
        metavar="URL",
        help="scheme and host the app should call, e.g. https://push.example.com",
    )
    check = command(
        "check", help="check a running receiver (ours or another) against the app model over HTTP"
    )
    check.add_argument(
        "url", metavar="URL", help="where the receiver listens, e.g. http://127.0.0.1:8080"
    )
    check.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration whose [reporter] template the app uses "
        f"(default: ${CONFIG_ENV} if set, else the spec's examples, for the default shapes)",
    )
    check.add_argument(
        "--sessions",
        type=int,
        default=20,
        metavar="N",
        help="generated app sessions to run (default 20)",
    )
    check.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the generated sessions (default: random, printed)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per connection (default 10)",
    )
    json_option(
        check,
        "print one JSON object (url, shapes, sessions, seed, passed, failed, checks, "
        "test_usernames) instead of the lines",
    )

    mig = command("migrate", help="copy every registration from one storage backend to another")
    mig.add_argument(
        "--from",
        dest="from_spec",
        required=True,
        metavar="SPEC",
        help="sqlite:PATH, files:PATH, postgresql:DSN, or a backend NAME "
        "as configured in --config",
    )
    mig.add_argument(
        "--to",
        dest="to_spec",
        required=True,
        metavar="SPEC",
        help="where to copy to, in the same form",
    )
    config_option(mig)
    mig.add_argument(
        "--batch",
        type=int,
        default=500,
        metavar="N",
        help="registrations per transaction (default 500)",
    )
    mig.add_argument(
        "--from-option",
        action="append",
        metavar="KEY=VALUE",
        help="an option of the source backend (e.g. table=NAME); repeatable",
    )
    mig.add_argument(
        "--to-option",
        action="append",
        metavar="KEY=VALUE",
        help="an option of the target backend (e.g. table=NAME); repeatable",
    )
    json_option(mig, "print one JSON object (from, to, copied) instead of the line")

    psh = command("push", help="push every device of a username through the Acrobits push gateway")
    config_option(psh)
    db_option(psh)
    psh.add_argument("--username", required=True, metavar="U", help="the account to push")
    psh.add_argument("--message", metavar="TEXT", help="the text to show (Message)")
    psh.add_argument(
        "--call", action="store_true", help="an incoming call: push through the PushKit pair"
    )
    psh.add_argument(
        "--verb",
        choices=PUSH_VERBS,
        help="default: NotifyTextMessage for --call or without --message, "
        "else NotifyGenericTextMessage",
    )
    psh.add_argument(
        "--gateway-url",
        metavar="URL",
        help="overrides [push] gateway_url (default: the public "
        "https://pnm.cloudsoftphone.com/pnm2/send)",
    )
    json_option(
        psh,
        "print one JSON object (username, purpose, delivered, failed, results: one "
        "per device) instead of the lines",
    )
    prune = command("prune", help="delete registrations whose last report is older than a limit")
    config_option(prune)
    db_option(prune)
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="e.g. 90d, 12h, 30m, 2w, 45s: registrations last seen longer ago are deleted",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="only say what would be deleted; delete nothing"
    )
    prune.add_argument(
        "--verbose",
        action="store_true",
        help="also print one line per registration deleted (default: the count only)",
    )
    prune.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object (before, dry_run, count, registrations)",
    )

    cfg = command(
        "config",
        help="check the configuration as serve does at start and print it, secrets masked",
    )
    config_option(cfg)
    json_option(cfg, "print it as one JSON object instead of TOML")

    def plugin_command(name: str, run: RunCommand, help: str) -> argparse.ArgumentParser:
        added = command(name, help=help)
        config_option(added)
        added.set_defaults(pushreport_run=run)
        return added

    pm = plugin_manager if plugin_manager is not None else make_plugin_manager()
    add_plugin_commands(pm, plugin_command, taken=tuple(subparsers.choices))
    return parser


def json_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def log_level_option(parser: argparse.ArgumentParser, *, shown: bool = True) -> None:
    """``--log-level``: given before the command (*shown*, in ``pushreport --help``)
    or after it (accepted by every command, not repeated in each one's help)."""
    parser.add_argument(
        "--log-level",
        type=str.lower,  # any case
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,  # after the command, it leaves one before it alone
        metavar="LEVEL",
        help="the least severe log line written: "
        + ", ".join(LOG_LEVELS)
        + " (any case; serve: default info, and it wins over [server] access_log, "
        "whose lines are info); also accepted after the command"
        if shown
        else argparse.SUPPRESS,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("pushreport")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


#: The environment variable naming the configuration file when ``--config`` is absent.
CONFIG_ENV = "PUSHREPORT_CONFIG"


def _config_path(given: str | None) -> str | None:
    """``--config``'s file, else the one ``$PUSHREPORT_CONFIG`` names (``None``: the
    embedded default)."""
    return given or os.environ.get(CONFIG_ENV) or None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _read_config(given: str | None) -> Config:
    """``--config``'s file, else ``$PUSHREPORT_CONFIG``'s (the embedded default without
    either); a file that cannot be read is a configuration error that names it (and the
    variable, when it named the file)."""
    path = _config_path(given)
    if not path:
        return Config()
    if not given and not os.path.exists(path):
        raise ConfigurationError(
            f"{CONFIG_ENV} names {path!r}, which does not exist (unset it, or pass --config)"
        )
    try:
        return load_config(path)
    except IsADirectoryError:
        raise ConfigurationError(f"configuration file {path!r} is a folder") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not valid TOML: it is not UTF-8 text") from None
    except OSError as e:
        raise ConfigurationError(
            f"configuration file {path!r} cannot be read: {e.strerror or e}"
        ) from None


def with_db(
    config: Config, value: str, *, plugin_manager: pluggy.PluginManager | None = None
) -> Config:
    """*config* with ``--db VALUE``: the main option of the first backend in
    ``[storage] backends`` that declares one (:class:`~pushreport.storage.MainOption`)
    set to *value* (a path is made absolute against the working directory)."""
    pm = plugin_manager or make_plugin_manager(blocked=config.blocked_plugins)
    backend = main_option_backend(config.storage.backends, collect_storage_backends(pm))
    if backend is None or backend.main_option is None:
        raise ConfigurationError(
            "--db needs a backend with a main option (a file, a folder or a database) "
            "in storage.backends",
            key="storage.backends",
        )
    main = backend.main_option
    return config.with_storage_option(
        backend.name, main.key, str(Path(value).absolute()) if main.is_path else value
    )


def _load(args: argparse.Namespace) -> Config:
    config = _read_config(args.config)
    db = vars(args).get("db")
    if db:
        config = with_db(config, db)
    return config


def _blocked_plugins(argv: Sequence[str] | None) -> tuple[str, ...]:
    """``[plugins] blocked`` of the ``--config`` on the command line, read before the
    parser is built: a blocked plugin adds no command. A file that cannot be read
    blocks nothing here; the command says why when it reads it."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    if not _config_path(known.config):
        return ()
    try:
        return tuple(_read_config(known.config).blocked_plugins)
    except PushReportError:
        return ()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser(make_plugin_manager(blocked=_blocked_plugins(argv)))
    except ConfigurationError as e:  # a plugin's command clashes with another
        print(_error_line(e), file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = vars(args).get("log_level")
    if level is not None and args.command != "serve":  # serve configures its own
        logging.basicConfig(format=TEXT_FORMAT, stream=sys.stderr)  # unless configured
        logging.getLogger().setLevel(level_number(level))
    try:
        run: RunCommand | None = vars(args).get("pushreport_run")
        if run is not None:  # a plugin's command
            return run(_read_config(args.config), args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "list":
            return _list(args)
        if args.command == "stats":
            return _stats(args)
        if args.command == "account-xml":
            return _account_xml(args)
        if args.command == "check":
            return _check(args)
        if args.command == "migrate":
            return _migrate(args)
        if args.command == "push":
            return _push(args)
        if args.command == "prune":
            return _prune(args)
        if args.command == "config":
            return _config(args)
    except PushReportError as e:
        print(_error_line(e), file=sys.stderr)
        return 2 if isinstance(e, ConfigurationError) else 1
    except BrokenPipeError:
        # `pushreport list --json | head`: the reader left; that is not an error. Point
        # stdout at nothing so that the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # Ctrl-C (while serve waits for a database, or list prints a million rows).
        print(f"pushreport: {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"pushreport: {e.strerror or type(e).__name__}{where}", file=sys.stderr)
        return 1
    except Exception as e:
        # A bug: one line all the same (only the type: a message might quote a DSN).
        print(
            f"pushreport: {args.command} failed: internal error ({type(e).__name__}); "
            "please report it",
            file=sys.stderr,
        )
        return 70
    raise AssertionError(args.command)  # pragma: no cover


def _error_line(error: PushReportError) -> str:
    """The one line a command that fails with *error* prints. (A StorageUnavailable's
    message names the store, a path or a database and its host, never a password, and
    why.)"""
    if isinstance(error, ConfigurationError):
        return f"pushreport: configuration error: {error}"
    return f"pushreport: {error}"


def _serve(args: argparse.Namespace) -> int:
    from ._server import ListenError, serve

    config = _load(args)
    server = config.server
    engine = args.engine or server.engine
    try:
        return serve(
            config,
            host=args.host or server.host,
            port=args.port if args.port is not None else server.port,
            workers=args.workers or server.worker_count(engine),
            access_log=args.access_log,
            log_format=args.log_format,
            engine=engine,
            log_level=vars(args).get("log_level"),
        )
    except ListenError as e:
        print(f"pushreport: {e}", file=sys.stderr)
        return 1


def _list(args: argparse.Namespace) -> int:
    config = _load(args)
    receiver = open_reader(config)
    more = 0
    try:
        storage = receiver.storage
        registrations: list[Registration]
        if args.selector:
            one = storage.get(args.selector)
            registrations = [one] if one is not None else []
            if args.username:
                registrations = [r for r in registrations if r.username == args.username]
        elif args.username:
            registrations = storage.find(username=args.username)
        elif args.limit is not None:
            # Keyset pages: the first N are read, the rest only counted.
            found = iter(storage)
            registrations = list(itertools.islice(found, args.limit))
            more = sum(1 for _ in found)
        else:
            registrations = list(storage)
        if args.limit is not None and len(registrations) > args.limit:
            more += len(registrations) - args.limit
            registrations = registrations[: args.limit]
    finally:
        receiver.close()
    not_shown = f"{more} more registration{'' if more == 1 else 's'} (--limit {args.limit})"
    if args.json:
        json.dump([r.to_json() for r in registrations], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        if more:  # on stderr: stdout stays JSON that a script can read
            print(f"pushreport: list: not shown: {not_shown}", file=sys.stderr)
        return 0
    if not registrations:
        print("no registrations")
        return 0
    header = ("SELECTOR", "USERNAME", "TOKEN_MSGS", "TOKEN_CALLS", "LAST_SEEN", "REPORTS")
    rows = [header] + [
        (
            r.selector,
            r.username or "-",
            shorten(r.token_msgs or "-", 12),
            shorten(r.token_calls or "-", 12),
            r.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
            str(r.reports),
        )
        for r in registrations
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if more:
        print(f"… {not_shown}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from ._stats import run_stats

    return run_stats(_load(args), as_json=args.json, out=sys.stdout)


def _account_xml(args: argparse.Namespace) -> int:
    base_url = check_base_url(args.base_url, key="--base-url") if args.base_url else None
    config = _read_config(args.config)
    shapes = config.reporter.shapes()
    template = None if shapes is DEFAULT_SHAPES else shapes
    sys.stdout.write(account_xml(template, base_url=base_url))  # type: ignore[arg-type]
    removal = config.removal.shapes(shapes)
    if removal is not None:
        # The Account Removal Reporter's keys: the default removal shape, or [removal].
        sys.stdout.write(
            removal_account_xml(
                removal if isinstance(removal, Template) else None, base_url=base_url
            )
        )
    printed = template if isinstance(template, Template) else default_template()
    if base_url is None and calls_loopback(printed):
        sys.stdout.flush()  # the keys first, then the warning, in a terminal
        origin = re.match(r"[^:]+://[^/?#]*", printed.url)
        print(
            f"pushreport: warning: these keys call {origin.group(0) if origin else printed.url}, "
            "a loopback address no phone can reach; pass --base-url https://your.server",
            file=sys.stderr,
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from ._migrate import options_of, parse_spec, run_migrate

    config = _read_config(args.config)
    return run_migrate(
        parse_spec(args.from_spec, options_of(args.from_option)),
        parse_spec(args.to_spec, options_of(args.to_option)),
        config,
        batch=args.batch,
        as_json=args.json,
    )


def _prune(args: argparse.Namespace) -> int:
    from ._prune import run_prune

    return run_prune(
        _load(args),
        args.older_than,
        dry_run=args.dry_run,
        as_json=args.json,
        verbose=args.verbose,
        out=sys.stdout,
    )


def _check(args: argparse.Namespace) -> int:
    from ._check import run_check

    given = _config_path(args.config)
    shapes = _read_config(args.config).reporter.shapes() if given else DEFAULT_SHAPES
    template = None if shapes is DEFAULT_SHAPES else shapes
    return run_check(
        args.url,
        template=template,  # type: ignore[arg-type]
        sessions=args.sessions,
        seed=args.seed,
        timeout=args.timeout,
        out=sys.stdout,
        err=sys.stderr if args.json else sys.stdout,
        as_json=args.json,
    )


def _config(args: argparse.Namespace) -> int:
    """``pushreport config``: status 1 and one line for any configuration that would
    not start (a configuration error, a store that cannot be opened)."""
    from ._effective import run_config

    try:
        return run_config(_read_config(args.config), as_json=args.json, out=sys.stdout)
    except PushReportError as e:
        print(_error_line(e), file=sys.stderr)
        return 1


def _push(args: argparse.Namespace) -> int:
    import attrs

    from ._push import push

    config = _load(args)
    if args.gateway_url:
        section = attrs.evolve(config.push, gateway_url=args.gateway_url)
        section.check()
        config = attrs.evolve(config, push=section)
    purpose: Purpose = "call" if args.call else "message"
    receiver = open_reader(config)  # creates nothing: a missing store is an error
    try:
        results = push(
            receiver, username=args.username, purpose=purpose, message=args.message, verb=args.verb
        )
    except InvalidPush as e:
        print(f"pushreport: {e}", file=sys.stderr)
        return 2
    finally:
        receiver.close()
    if args.json:
        delivered = sum(r.ok for r in results)
        document = {
            "username": args.username,
            "purpose": purpose,
            "delivered": delivered,
            "failed": len(results) - delivered,
            "results": [r.to_json() for r in results],
        }
        json.dump(document, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    if not results:
        print(
            f"pushreport: no device to push: no registration of {args.username!r} "
            f"has a {purpose} token and app id",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        for result in results:
            print(result.line())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
