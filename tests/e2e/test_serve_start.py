"""``pushreport serve`` starting where it cannot: one line naming the address or the
store and the reason, a non-zero exit, and "listening" only once it listens (issue 14,
items 12 and 16)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .conftest import Server, free_port, run_pushreport

pytestmark = pytest.mark.e2e


def one_line(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return str(lines[0])


def test_a_port_in_use_is_one_line_and_nothing_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_pushreport(tmp_path, "serve", "--port", str(port), timeout=15)
    assert one_line(proc) == (
        f"pushreport: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(is another server listening there?)"
    )
    assert proc.returncode == 1
    assert list(tmp_path.iterdir()) == [], "the database was created before the bind"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("999.1.1.1", "999.1.1.1 is not an IPv4 address"),
        # TEST-NET-1 (RFC 5737): an address, but none of this machine's.
        ("192.0.2.1", "no network interface of this machine has that address"),
    ],
)
def test_a_host_it_cannot_listen_on_is_one_line(tmp_path: Path, host: str, reason: str) -> None:
    port = free_port()
    proc = run_pushreport(tmp_path, "serve", "--host", host, "--port", str(port), timeout=15)
    assert one_line(proc) == f"pushreport: cannot listen on {host}:{port}: {reason}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--workers", "-1"],
            "pushreport: serve: argument --workers: must be a whole number from 0 to 256, "
            "not '-1' (see pushreport serve --help)",
        ),
        (
            ["--port", "70000"],
            "pushreport: serve: argument --port: must be a whole number from 0 to 65535, "
            "not '70000' (see pushreport serve --help)",
        ),
        (
            ["--port", "http"],
            "pushreport: serve: argument --port: must be a whole number from 0 to 65535, "
            "not 'http' (see pushreport serve --help)",
        ),
    ],
)
def test_our_own_validation_refuses_bad_options(
    tmp_path: Path, args: list[str], line: str
) -> None:
    proc = run_pushreport(tmp_path, "serve", *args, timeout=15)
    assert one_line(proc) == line
    assert proc.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_listening_is_logged_after_the_storage_is_open(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=1)
    try:
        lines = server.output().splitlines()
    finally:
        server.stop()
    [listening] = [i for i, line in enumerate(lines) if "pushreport listening on" in line]
    [backend] = [i for i, line in enumerate(lines) if "storage backend 'sqlite'" in line]
    assert backend < listening
    assert lines[listening].endswith(f"pushreport listening on http://127.0.0.1:{server.port}")


def postgresql_config(tmp_path: Path, dsn: str, table: str) -> Path:
    config = tmp_path / "pg.toml"
    config.write_text(
        f'[storage]\nbackends = ["postgresql"]\n[storage.postgresql]\ndsn = "{dsn}"\n'
        f'table = "{table}"\ntimeout = 0.5\n'
    )
    return config


def test_serve_waits_for_an_unreachable_postgresql_then_names_it(tmp_path: Path) -> None:
    dsn = "host=127.0.0.1 port=1 dbname=pushdb user=secretuser password=hunter2"
    config = postgresql_config(tmp_path, dsn, "t")
    proc = run_pushreport(
        tmp_path, "serve", "--config", str(config), "--port", str(free_port()), timeout=40
    )
    assert one_line(proc) == (
        "pushreport: cannot connect to table t of postgresql database pushdb on "
        "127.0.0.1:1: server is unreachable (waited 10 s)"
    )
    assert "hunter2" not in proc.stderr and "secretuser" not in proc.stderr


def test_read_commands_create_no_postgresql_table(
    tmp_path: Path, pg_dsn: str, pg_table: str
) -> None:
    import psycopg

    config = postgresql_config(tmp_path, pg_dsn, pg_table)
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    where = f"table {pg_table} of postgresql database {info['dbname']} on {info['host']}:5432"
    for command in (["list"], ["stats"], ["prune", "--older-than", "1d"]):
        proc = run_pushreport(tmp_path, *command, "--config", str(config))
        assert one_line(proc) == f"pushreport: no pushreport data in {where}"
    with psycopg.connect(pg_dsn) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (pg_table,)).fetchone()
    assert found == (None,), "a read command created the table"
    # serve creates it; then the same commands read it.
    server = Server(tmp_path, "--config", str(config), workers=1, db=False)
    server.stop()
    proc = run_pushreport(tmp_path, "list", "--config", str(config))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "no registrations\n", "")


def test_a_limit_state_it_cannot_use_stops_serve_before_it_listens(tmp_path: Path) -> None:
    """A `[limits] state_path` naming the registrations database (another file's data)
    is one line at start-up, not a 503 for every report."""
    config = tmp_path / "pushreport.toml"
    config.write_text(
        '[limits]\nper_client = "60/minute"\nstate_path = "pushreport.sqlite3"\n',
        encoding="utf-8",
    )
    port = free_port()
    proc = run_pushreport(tmp_path, "serve", "--config", str(config), "--port", str(port))
    assert one_line(proc) == (
        f"pushreport: cannot open the limit state {tmp_path / 'pushreport.sqlite3'}: "
        "limit state file holds other data"
    )
