"""The ``pushreport`` command's conventions (issue 17, item 6): ``--version``,
``PUSHREPORT_CONFIG``, ``--log-level``, ``--json`` on ``push``, ``check`` and
``migrate``, every command's ``--help`` starting with its one line, and ``pushreport
config``: serve's own start checks, the effective configuration printed with every
secret masked."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import tomllib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client

from pushreport._cli import CONFIG_ENV, build_parser, main
from pushreport._config import Config, iter_settings
from pushreport._effective import effective_config
from pushreport._plugins import make_plugin_manager
from pushreport.hookspecs import hookimpl
from pushreport_core import ConfigurationError
from pushreport_wsgi import create_app

from ..e2e.conftest import ENGINE, Server, free_port, pushreport_list
from ..fake_gateway import GONE, FakeGateway, running_gateway
from .conftest import make_config
from .test_migrate import populate

# -- --version ---------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"pushreport {importlib.metadata.version('pushreport')}\n"


# -- every command's --help starts with its one line -------------------------------------


def _commands(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    raise AssertionError("no subcommands")


def test_every_command_help_starts_with_its_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(build_parser())
    # The installed plugins' commands too (the webhook plugin's outbox), and config.
    assert {"serve", "list", "push", "check", "migrate", "config", "outbox"} <= set(commands)
    for name, line in commands.items():
        assert line.strip() and "\n" not in line, name
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        first, blank, usage, *_ = capsys.readouterr().out.splitlines()
        assert (first, blank) == (line, ""), name
        assert usage.startswith(f"usage: pushreport {name} "), name


def test_the_top_level_help_starts_with_what_pushreport_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "Receive, validate and store the push tokens the Acrobits app reports."
    )
    assert "--version" in out and "--log-level" in out


class _Chatty:
    @hookimpl
    def pushreport_add_commands(self, add_command):  # type: ignore[no-untyped-def]
        add_command("chatty", lambda config, args: 0, help="does this\nand also that")


def test_a_plugin_command_needs_a_one_line_help() -> None:
    pm = make_plugin_manager(load_entrypoints=False, plugins=[_Chatty()])
    with pytest.raises(
        ConfigurationError, match=r"^plugin '\w+' added command 'chatty' without a one-line help$"
    ):
        build_parser(pm)


# -- --log-level --------------------------------------------------------------------------


@pytest.fixture
def root_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "loud", "list"],
        ["list", "--log-level", "loud"],
        ["--log-level", "", "list"],
    ],
)
def test_an_unknown_log_level_is_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pushreport: ") and "--log-level" in err
    assert "choose from 'debug', 'info', 'warning', 'error'" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["--log-level", "ERROR", "config"], logging.ERROR),
        (["config", "--log-level", "Debug"], logging.DEBUG),
        # After the command, it wins over the one before it.
        (["--log-level", "error", "config", "--log-level", "warning"], logging.WARNING),
    ],
)
def test_the_log_level_before_or_after_the_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    root_level: None,
    argv: list[str],
    level: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(argv) == 0
    assert logging.getLogger().level == level
    capsys.readouterr()


def _report_target(selector: str = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14") -> bytes:
    target = "/token/?" + urlencode(
        {"username": "alice", "selector": selector, "token_msgs": "QVBBOTFiRzlhcVd2bW54bllC"}
    )
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


@pytest.mark.e2e
@pytest.mark.parametrize("level", ["INFO", "warning"])
def test_serve_logs_at_the_level_given_and_it_wins_over_the_access_log(
    tmp_path: Path, level: str
) -> None:
    server = Server(tmp_path, "--access-log", "--log-level", level, workers=1)
    try:
        assert server.send(_report_target()).startswith(b"HTTP/1.1 200")
        [registration] = pushreport_list(server.db)
        assert registration["username"] == "alice"
    finally:
        server.stop()
    output = (tmp_path / "server.log").read_text("utf-8", "replace")
    booted = "Started server process" if ENGINE == "uvicorn" else "Booting worker"
    info_lines = ("pushreport listening on", booted, '"GET /token/')
    for line in info_lines:
        if level == "INFO":
            assert line in output, line
        else:  # [server] access_log and --access-log too: the level wins
            assert line not in output, line


# -- PUSHREPORT_CONFIG --------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _config_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["config", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_config_variable_names_the_file_and_config_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    by_env = _write(tmp_path / "env.toml", "[server]\nport = 9091\n")
    given = _write(tmp_path / "given.toml", "[server]\nport = 9092\n")
    monkeypatch.setenv(CONFIG_ENV, str(by_env))
    assert _config_json(capsys)["server"]["port"] == 9091
    assert _config_json(capsys, "--config", str(given))["server"]["port"] == 9092
    monkeypatch.setenv(CONFIG_ENV, "")  # empty: unset
    assert _config_json(capsys)["server"]["port"] == 8080


@pytest.mark.parametrize(("command", "status"), [("config", 1), ("list", 2), ("stats", 2)])
def test_a_missing_file_named_by_the_variable_is_one_line_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    status: int,
) -> None:
    missing = tmp_path / "gone.toml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    assert main([command]) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"pushreport: configuration error: {CONFIG_ENV} names {str(missing)!r}, which does "
        "not exist (unset it, or pass --config)\n"
    )


def test_the_config_variable_blocks_plugins_as_config_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocking = _write(tmp_path / "b.toml", '[plugins]\nblocked = ["webhook"]\n')
    monkeypatch.setenv(CONFIG_ENV, str(blocking))
    with pytest.raises(SystemExit) as info:
        main(["outbox"])
    assert info.value.code == 2
    assert "invalid choice: 'outbox'" in capsys.readouterr().err


# -- pushreport config --------------------------------------------------------------------

#: Every secret of a hostile configuration: none may appear in any output.
SECRETS = {
    "auth.secret": "S3CRET-auth-shared-0001",
    "auth.digest_password": "S3CRET-digest-0002",
    "auth.nonce_key": "S3CRET-nonce-key-0003",
    "lookup.token": "S3CRET-lookup-token-0004",
    # A Standard Webhooks secret (the default signature), the base64 of S3CRET-...
    "storage.webhook.secret": "whsec_UzNDUkVULXdlYmhvb2sta2V5LTAwMDUtbG9uZy1lbm91Z2g=",
    "storage.webhook.url": "https://hooks.example.com/S3CRET-webhook-path-0006",
    "storage.postgresql.dsn": "postgresql://u:S3CRET-pg-0007@127.0.0.1/none",
    "storage.files.password": "S3CRET-undocumented-0008",
    "storage.thirdparty.api_key": "S3CRET-unknown-backend-0009",
}


def hostile_config(tmp_path: Path) -> Path:
    s = SECRETS
    return _write(
        tmp_path / "hostile.toml",
        f"""
[reporter]
url = "https://push.example.com/token/?selector=%selector%&token=%pushToken%&k=%account[pushSecret]%&u=%account[username]%"

[auth]
methods = ["secret", "digest"]
secret = "{s["auth.secret"]}"
secret_field = "account[pushSecret]"
digest_username = "app"
digest_password = "{s["auth.digest_password"]}"
nonce_key = "{s["auth.nonce_key"]}"

[lookup]
enabled = true
token = "{s["lookup.token"]}"

[storage]
backends = ["sqlite", "webhook"]

[storage.sqlite]
path = "db.sqlite3"

[storage.webhook]
url = "{s["storage.webhook.url"]}"
secret = "{s["storage.webhook.secret"]}"
deliver = false

[storage.postgresql]
dsn = "{s["storage.postgresql.dsn"]}"

[storage.files]
password = "{s["storage.files.password"]}"

[storage.thirdparty]
api_key = "{s["storage.thirdparty.api_key"]}"
""",
    )


def _assert_no_secret(text: str) -> None:
    for key, value in SECRETS.items():
        assert value not in text, key
        assert "S3CRET" not in text, key


def test_config_masks_every_secret_in_toml_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = hostile_config(tmp_path)
    assert main(["config", "--config", str(config)]) == 0
    toml_out, toml_err = capsys.readouterr()
    assert main(["config", "--config", str(config), "--json"]) == 0
    json_out, json_err = capsys.readouterr()
    for text in (toml_out, toml_err, json_out, json_err):
        _assert_no_secret(text)
    assert toml_err == json_err == ""
    shown = json.loads(json_out)
    # The TOML says the same as the JSON (its first line is a comment).
    assert toml_out.startswith("# pushreport: the effective configuration of ")
    assert tomllib.loads(toml_out) == shown
    for key in SECRETS:
        table = shown
        *path, name = key.split(".")
        for part in path:
            table = table[part]
        assert table[name] == "***", key
    # What is not secret is printed as configured, defaults filled in.
    assert shown["auth"]["digest_username"] == "app"
    assert shown["auth"]["secret_field"] == "account[pushSecret]"
    assert shown["storage"]["webhook"]["deliver"] is False
    assert shown["storage"]["sqlite"] == {"path": "db.sqlite3"}
    assert shown["server"] == {
        "engine": "uvicorn",
        "host": "127.0.0.1",
        "port": 8080,
        "workers": 0,
        "threads": 1,
        "timeout": 30,
        "keepalive": 2,
        "access_log": False,
        "log_format": "text",
    }
    assert shown["auth"]["secret_env"] == "" and shown["limits"]["trusted_proxies"] == []


def test_every_key_the_schema_marks_secret_is_masked() -> None:
    """Whatever key is declared ``secret=True`` (now or later), set to a value that
    nothing else checks, is masked; every other key is printed."""
    config = Config()
    marked = []
    for key, field in iter_settings():
        section_name, _, name = key.partition(".")
        section = getattr(config, section_name)
        if field.metadata.get("secret"):
            marked.append(key)
            # Past the section's checks: only the printing is under test here.
            object.__setattr__(section, name, f"S3CRET-{key}")
    assert {"auth.secret", "auth.digest_password", "auth.nonce_key", "lookup.token"} <= set(marked)
    shown = effective_config(config, backends={})
    assert "S3CRET" not in json.dumps(shown)
    for key, _ in iter_settings():
        section_name, _, name = key.partition(".")
        value = shown[section_name][name]
        assert (value == "***") == (key in marked), key


def test_config_prints_the_name_of_an_env_variable_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLI_TEST_SHARED_SECRET", "S3CRET-from-the-environment")
    monkeypatch.setenv("CLI_TEST_LOOKUP", "S3CRET-lookup-from-the-environment")
    config = _write(
        tmp_path / "env.toml",
        '[auth]\nmethods = ["secret"]\nsecret_env = "CLI_TEST_SHARED_SECRET"\n'
        'secret_field = "key"\n[lookup]\nenabled = true\ntoken_env = "CLI_TEST_LOOKUP"\n',
    )
    shown = _config_json(capsys, "--config", str(config))
    assert shown["auth"]["secret_env"] == "CLI_TEST_SHARED_SECRET"
    assert shown["auth"]["secret"] == ""
    assert shown["lookup"]["token_env"] == "CLI_TEST_LOOKUP"
    assert main(["config", "--config", str(config)]) == 0
    assert "S3CRET" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "env", "line"),
    [
        (
            "[server]\nport = 70000\n",
            {},
            "configuration error: server.port: must be between 0 and 65535, not 70000",
        ),
        (
            # An unset variable: serve reads it at start, so config does too.
            '[auth]\nmethods = ["secret"]\nsecret_env = "CLI_TEST_UNSET"\nsecret_field = "k"\n',
            {},
            "configuration error: auth.secret_env: environment variable 'CLI_TEST_UNSET' is "
            "not set",
        ),
        (
            # A lookup token too short, from the environment (checked as serve reads it).
            '[lookup]\nenabled = true\ntoken_env = "CLI_TEST_SHORT"\n',
            {"CLI_TEST_SHORT": "S3CRET-short"},
            "configuration error: lookup.token_env: the token must be at least 16 characters",
        ),
        (
            # Refused only once the receiver is built: the health path is a report path.
            '[health]\nhealthz = "/token/"\n',
            {},
            "configuration error: health.healthz: /token/ is a report path of the configured "
            "shapes",
        ),
        (
            # A plugin's own option, checked by its factory.
            '[storage.sqlite]\nspool_interval = "soon"\n',
            {},
            "configuration error: storage.sqlite.spool_interval:",
        ),
        (
            '[storage]\nbackends = ["nosuch"]\n',
            {},
            "configuration error: storage.backends: no storage backend named 'nosuch' is "
            "installed",
        ),
    ],
)
def test_config_refuses_what_serve_refuses_with_one_line_and_status_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    env: dict[str, str],
    line: str,
) -> None:
    monkeypatch.delenv("CLI_TEST_UNSET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = _write(tmp_path / "bad.toml", text)
    for extra in ([], ["--json"]):
        assert main(["config", "--config", str(config), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("pushreport: " + line), err
        assert err.count("\n") == 1 and "S3CRET" not in err


def test_config_refuses_a_store_serve_could_not_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-db.sqlite3").write_bytes(b"this is not a SQLite database" * 100)
    config = _write(tmp_path / "c.toml", '[storage.sqlite]\npath = "not-a-db.sqlite3"\n')
    assert main(["config", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pushreport: ") and err.count("\n") == 1
    assert "not-a-db.sqlite3" in err


def test_config_without_a_file_prints_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# pushreport: the effective configuration (the embedded default)")
    shown = tomllib.loads(out)
    assert shown["storage"]["backends"] == ["sqlite"] and shown["reporter"]["url"] == ""


# -- --json on push, check and migrate ----------------------------------------------------

SEL_A = "A" * 40 + ":1"
SEL_B = "B" * 40 + ":2"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    yield from running_gateway()


def test_push_json(
    tmp_path: Path, gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    app = create_app(config)
    try:
        for selector, token in ((SEL_A, "CALLTOKEN-AAAAAAAAAAAA"), (SEL_B, "CALLTOKEN-BBBBBB")):
            query = urlencode(
                {
                    "username": "alice",
                    "selector": selector,
                    "token_calls": token,
                    "appid_calls": "com.example.app.pushkit",
                }
            )
            assert Client(app).get("/token/?" + query).status_code == 200
    finally:
        app.close()
    gateway.plan("CALLTOKEN-AAAAAAAAAAAA", [GONE])
    db = str(tmp_path / "db.sqlite3")
    argv = ["push", "--db", db, "--username", "alice", "--call", "--gateway-url", gateway.url]
    assert main([*argv, "--json"]) == 1  # one failed: the status as without --json
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert err == ""
    assert (document["username"], document["purpose"]) == ("alice", "call")
    assert (document["delivered"], document["failed"]) == (1, 1)
    by_selector = {r["selector"]: r for r in document["results"]}
    assert set(by_selector[SEL_A]) == {
        "selector",
        "also",
        "app_id",
        "token",
        "status",
        "ok",
        "attempts",
        "http_status",
        "code",
        "reason",
        "forgotten",
    }
    assert by_selector[SEL_A]["status"] == "token-removed"
    assert by_selector[SEL_A]["http_status"] == 404 and by_selector[SEL_A]["ok"] is False
    assert by_selector[SEL_A]["forgotten"] == [SEL_A]
    assert by_selector[SEL_B]["status"] == "delivered" and by_selector[SEL_B]["ok"] is True
    assert by_selector[SEL_B]["app_id"] == "com.example.app.pushkit"
    # Tokens shortened, as in the text lines.
    assert "CALLTOKEN-AAAAAAAAAAAA" not in out and by_selector[SEL_A]["token"].endswith("…")
    # No device: still one JSON document, and the status as without --json.
    assert main([*argv, "--json", "--username", "nobody"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["results"] == [] and err.startswith("pushreport: no device")


def test_check_json_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", url, "--json", "--seed", "7", "--timeout", "2"]) == 1
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert err == ""
    assert {k: document[k] for k in ("url", "shapes", "seed", "passed", "failed")} == {
        "url": url,
        "shapes": "default",
        "seed": 7,
        "passed": 0,
        "failed": 1,
    }
    [check] = document["checks"]
    assert check["ok"] is False and "cannot connect" in check["problem"]


def test_check_json_with_an_unusable_url_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "ftp://x", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pushreport: ") and err.count("\n") == 1


@pytest.mark.e2e
def test_check_json_against_pushreport_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Server(tmp_path, workers=1)
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert main(["check", url, "--json", "--sessions", "3", "--seed", "1"]) == 0
    finally:
        server.stop()
    out, err = capsys.readouterr()
    document = json.loads(out)  # one document, nothing else on stdout
    assert err == ""
    assert document["failed"] == 0 and document["passed"] == len(document["checks"]) > 3
    assert document["sessions"] == 3 and document["test_usernames"] == "pushreport-check"
    assert all(c["ok"] and c["problem"] is None for c in document["checks"])


def test_migrate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    populate(source, 5)
    argv = ["migrate", "--from", f"sqlite:{source}", "--to", f"sqlite:{target}", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "from": f"sqlite:{source}",
        "to": f"sqlite:{target}",
        "copied": 5,
    }
    assert err == ""
    # A DSN is masked there as in the line; a failure is one line on stderr, status 2.
    dsn = "postgresql://u:S3CRET-pg@127.0.0.1:1/none"
    assert main(["migrate", "--from", f"sqlite:{source}", "--to", dsn, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "S3CRET" not in err and "postgresql:***" in err
    assert err.count("\n") == 1
