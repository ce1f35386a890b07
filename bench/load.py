"""Throughput of ``pushreport serve`` against a bare WSGI app, in the same run.

Starts, each on its own free loopback port and in its own session:

- ``bare``: ``bench/bare_app.py`` (200, empty body, reads nothing) under gunicorn with
  2 sync workers (the issue's baseline) and the other settings of ``pushreport serve``
  (same timeouts and limits);
- ``normal``: ``pushreport serve`` as shipped (its default worker count: twice the
  cores plus one) on a fresh SQLite file, the default ``synchronous = "normal"`` (a
  report answered survives a process crash);
- ``full``: the same with ``[storage.sqlite] synchronous = "full"`` (fsync before the
  answer; survives a power loss);
- ``bare_same``: when serve's worker count is not 2, the bare app under gunicorn with
  that many workers too, so that the run also shows how much of the ratio is the
  worker count (the ratios against it are printed under the table);
- ``bare_asgi``: ``bench/bare_asgi.py`` under uvicorn (uvloop, httptools) with the
  worker count of ``pushreport serve --engine uvicorn`` (one per core): the ceiling of
  the event-loop engine (``--engine uvicorn`` runs ``normal`` and ``full`` on it; the
  ratios against it are printed under the table);
- ``floor`` (unless ``--no-floor``): ``bench/floor_asgi.py`` under uvicorn exactly as
  ``bare_asgi``, the least work a durable receiver can do per report (validate, append a
  line to a file of its process's own, a thread that applies the lines to an SQLite file
  of its own in batches): how far pushreport is from the cheapest durable receiver on
  the same machine in the same run (the line under the table);

warms each up, then drives them one after the other from a second process (wrk if
installed, else ``bench/loadgen.py``'s generator) with reports whose selectors vary over
a pool of 100,000, and prints req/s, p50/p99 latency, errors, the ratio to ``bare``, and
the CPU time the server's processes used per answer (from ``/proc/<pid>/stat``).
With ``--rounds N`` the three are driven in turn N times and the median of each figure
is printed, with the ratio taken within each round, so that a noisy neighbour slows
both sides of a ratio alike.

Every server is killed at the end, on Ctrl-C and on errors. Traffic stays on 127.0.0.1.

::

    python bench/load.py                 # 10 s per target, 32 connections
    python bench/load.py --rounds 3      # the figures in bench/README.md
    python bench/load.py --quick         # 1 s per target: a smoke run
    python bench/load.py --prefill 100000    # every report updates a stored row
    python bench/load.py --json              # JSON instead of the table
    python bench/load.py --json out.json     # the table, and JSON into out.json
    python bench/load.py --engine uvicorn    # serve on uvicorn, beside the bare ASGI app
    python bench/load.py --no-floor          # without the floor (bench/floor_asgi.py)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

__all__ = [
    "Server",
    "bare_server",
    "bare_asgi_server",
    "floor_server",
    "pushreport_server",
    "free_port",
    "main",
    "TARGETS",
]

HOST = "127.0.0.1"
#: Targets the issue sets: ratio to bare, and p99 for the crash-safe setting.
TARGETS = {"normal": {"ratio": 0.70, "p99_ms": 15.0}, "full": {"ratio": 0.50}}
LABELS = {
    "bare": "bare WSGI app (gunicorn, 2 sync)",
    "bare_same": "bare WSGI app (gunicorn, {n} sync)",
    "bare_asgi": "bare ASGI app (uvicorn, {n} workers)",
    "floor": "floor: least durable receiver (uvicorn, {n} workers)",
    "normal": "pushreport serve (synchronous=normal)",
    "full": "pushreport serve (synchronous=full)",
    "postgresql": "pushreport serve (PostgreSQL, spool)",
}
#: Issue 16's targets on the uvicorn engine: ratios to the bare ASGI app under the same
#: server and worker count (and normal's to the bare WSGI app too), p99, and the server
#: CPU per answer over the bare ASGI app's.
ASGI_TARGETS = {
    "normal": {"ratio_asgi": 0.65, "ratio": 1.2, "p99_ms": 15.0, "cpu_over_us": 80.0},
    "full": {"ratio_asgi": 0.55, "p99_ms": 15.0},
    "postgresql": {"ratio_asgi": 0.40, "p99_ms": 15.0},
}
#: The references other than ``bare``: the key of the ratio to each (taken per round,
#: then the median) and the target it is taken to.
REFERENCES = {"ratio_same": "bare_same", "ratio_asgi": "bare_asgi", "ratio_floor": "floor"}

# The gunicorn settings of `pushreport serve` (src/pushreport/_server.py), as flags.
GUNICORN_FLAGS = [
    "--worker-class",
    "sync",
    "--threads",
    "1",
    "--timeout",
    "30",
    "--graceful-timeout",
    "10",
    "--keep-alive",
    "2",
    "--limit-request-line",
    "8190",
    "--error-logfile",
    "-",
    "--log-level",
    "info",
]

_started: list[Server] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    stat = f.read()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                kids.append(int(entry))
    return kids


class Server:
    """A server on a loopback port, in its own session; ``stop()`` kills all of it.

    *env*: variables set for it on top of this process's environment."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        workdir: Path,
        workers: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.workers_expected = workers
        self.env = dict(env or {})
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
        env.update(self.env)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        _started.append(self)
        return self

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-tail:]
        except OSError:
            return ""

    def workers(self) -> list[int]:
        assert self.proc is not None
        return _children(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far by the master and its live workers."""
        assert self.proc is not None
        total = 0
        for pid in [self.proc.pid, *self.workers()]:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every worker is forked and one report is answered (any status)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        request = loadgen.request_bytes(loadgen.POOL, f"{HOST}:{self.port}")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.sendall(request)
                    answer = s.recv(64)
                if answer.startswith(b"HTTP/1.") and len(self.workers()) >= self.workers_expected:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready in {timeout:g} s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any straggler of the session
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._log.close()
        if self in _started:
            _started.remove(self)


def _stop_all() -> None:
    for server in list(_started):
        server.stop()


atexit.register(_stop_all)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so every ``finally`` stops servers."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)


def bare_server(workdir: Path, *, workers: int = 2, name: str = "bare") -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--pythonpath",
        str(BENCH),
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        *GUNICORN_FLAGS,
        "bare_app:app",
    ]
    return Server(name, argv, port, workdir, workers)


def bare_asgi_server(workdir: Path, *, workers: int, name: str = "bare_asgi") -> Server:
    port = free_port()
    return Server(name, _uvicorn_argv("bare_asgi:app", port, workers), port, workdir, workers)


def floor_server(workdir: Path, *, workers: int, name: str = "floor") -> Server:
    """``bench/floor_asgi.py`` under uvicorn as :func:`bare_asgi_server` runs the bare
    ASGI app, with the lifespan on, its files in ``<workdir>/<name>``."""
    port = free_port()
    files = workdir / name
    files.mkdir()
    argv = _uvicorn_argv("floor_asgi:app", port, workers, lifespan="on")
    env = {"PUSHREPORT_FLOOR_DIR": str(files)}
    return Server(name, argv, port, workdir, workers, env=env)


def _uvicorn_argv(app: str, port: int, workers: int, *, lifespan: str = "off") -> list[str]:
    """uvicorn serving *app* of ``bench/`` as the bench's ASGI references are run."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        lifespan,
        "--no-access-log",
        "--no-server-header",
        app,
    ]


def pushreport_server(
    workdir: Path,
    name: str,
    *,
    synchronous: str = "normal",
    workers: int | None = None,
    threads: int = 1,
    engine: str = "gunicorn",
    postgresql: str | None = None,
) -> Server:
    """``pushreport serve`` on *engine* with *workers* (``None``: its default) of
    *threads* threads each (gunicorn); with *postgresql* (a DSN), the PostgreSQL
    backend behind its report spool, in a table of the run's own (dropped by
    :func:`drop_table`)."""
    if workers is None:
        from pushreport._config import ServerConfig

        workers = ServerConfig().worker_count(engine)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "pushreport._cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--engine",
        engine,
    ]
    settings = ""
    if synchronous != "normal":
        settings += f'[storage.sqlite]\nsynchronous = "{synchronous}"\n'
    if threads != 1:
        settings += f"[server]\nthreads = {threads}\n"
    if postgresql is not None:
        settings += (
            '[storage]\nbackends = ["postgresql"]\n[storage.postgresql]\n'
            f"dsn = {json.dumps(postgresql)}\ntable = {json.dumps(pg_table(workdir))}\n"
            f"spool = true\nspool_dir = {json.dumps(str(workdir / 'pg.spool'))}\n"
        )
    else:
        argv += ["--db", str(workdir / f"{name}.sqlite3")]
    if settings:
        config = workdir / f"{name}.toml"
        config.write_text(settings, encoding="utf-8")
        argv += ["--config", str(config)]
    return Server(name, argv, port, workdir, workers)


def pg_table(workdir: Path) -> str:
    """The run's own PostgreSQL table (named after its temporary folder)."""
    return "bench_" + "".join(c for c in workdir.name.lower() if c.isalnum())[-12:]


def drop_table(dsn: str, table: str) -> None:
    """Drop the run's table and those named after it (its spool marks, tombstones)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename = %s OR tablename LIKE %s",
            (table, table + "\\_%"),
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')


def prefill_databases(workdir: Path, n: int, names: Sequence[str]) -> None:
    """Store reports 0 … n-1 of the pool in ``<name>.sqlite3`` for each of *names*, with
    the real SQLite backend, so that the servers' reports update stored rows (as most
    reports in the field do: every app start) instead of inserting them."""
    import shutil

    from inprocess import prefill

    from pushreport_sqlite import SQLiteStorage

    first = workdir / f"{names[0]}.sqlite3"
    storage = SQLiteStorage(first, checkpoint_interval=0)
    try:
        prefill(storage, n)
        storage._run("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        storage.close()
    for name in names[1:]:
        shutil.copyfile(first, workdir / f"{name}.sqlite3")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    loadavg_before = loadgen.machine()["loadavg"]
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if loadgen.has_wrk() else "python"
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="pushreport-bench-") as tmp:
        workdir = Path(tmp)
        if args.prefill:
            _say(args, f"storing {args.prefill:,} registrations of the pool first")
            prefill_databases(workdir, args.prefill, ("normal", "full"))
        from pushreport._config import ServerConfig

        servers = {"bare": bare_server(workdir)}
        normal = pushreport_server(workdir, "normal", engine=args.engine)
        if normal.workers_expected != 2:
            servers["bare_same"] = bare_server(
                workdir, workers=normal.workers_expected, name="bare_same"
            )
        if _has_uvicorn():
            servers["bare_asgi"] = bare_asgi_server(
                workdir, workers=ServerConfig().worker_count("uvicorn")
            )
            if args.floor:
                servers["floor"] = floor_server(
                    workdir, workers=ServerConfig().worker_count("uvicorn")
                )
        servers["normal"] = normal
        servers["full"] = pushreport_server(
            workdir, "full", synchronous="full", engine=args.engine
        )
        if args.postgresql:
            servers["postgresql"] = pushreport_server(
                workdir, "postgresql", engine=args.engine, postgresql=args.postgresql
            )
        ports = {name: server.port for name, server in servers.items()}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            for name, server in servers.items():
                _say(args, f"warming up {name} for {args.warmup:g} s")
                loadgen.drive(
                    HOST,
                    server.port,
                    duration=args.warmup,
                    connections=args.connections,
                    threads=args.threads,
                    tool=tool,
                )
            for n in range(args.rounds):
                results: dict[str, dict[str, Any]] = {}
                for name, server in servers.items():
                    cpu = server.cpu_seconds()
                    result = loadgen.drive(
                        HOST,
                        server.port,
                        duration=args.duration,
                        connections=args.connections,
                        threads=args.threads,
                        tool=tool,
                    )
                    cpu = server.cpu_seconds() - cpu
                    results[name] = result.as_dict()
                    answered = result.ok + result.errors.get("status", 0)
                    # The server's own CPU per answer: a figure that other work on the
                    # machine disturbs far less than req/s.
                    results[name]["cpu_us"] = round(cpu / answered * 1e6, 1) if answered else None
                    _say(args, f"round {n + 1}/{args.rounds} {name}: {result.line()}")
                    if server.proc is None or server.proc.poll() is not None:
                        raise RuntimeError(f"{name} died during the run:\n{server.output()}")
                bare_rps = results["bare"]["rps"]
                reference_rps = {
                    key: results.get(name, {}).get("rps") for key, name in REFERENCES.items()
                }
                for r in results.values():
                    r["ratio"] = round(r["rps"] / bare_rps, 3) if bare_rps else None
                    for key, rps in reference_rps.items():
                        if rps:
                            r[key] = round(r["rps"] / rps, 3)
                rounds.append(results)
        finally:
            for server in servers.values():
                server.stop()
            if args.postgresql:
                drop_table(args.postgresql, pg_table(workdir))
    summary = []
    for name in servers:
        per_round = [r[name] for r in rounds]
        summary.append(
            {
                "target": name,
                "label": LABELS[name].format(n=servers[name].workers_expected),
                "workers": servers[name].workers_expected,
                "port": ports[name],
                "rps": round(_median([r["rps"] for r in per_round]) or 0.0, 1),
                "p50_ms": _median([r["p50_ms"] for r in per_round]),
                "p99_ms": _median([r["p99_ms"] for r in per_round]),
                "errors": sum(r["errors"] for r in per_round),
                "ratio": _median([r["ratio"] for r in per_round]),
                **{key: _median([r.get(key) for r in per_round]) for key in REFERENCES},
                "cpu_us": _median([r["cpu_us"] for r in per_round]),
            }
        )
    return {
        "machine": loadgen.machine(),
        "loadavg_before": loadavg_before,
        "tool": tool,
        "engine": args.engine,
        "prefill": args.prefill,
        "duration": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "rounds": args.rounds,
        "per_round": rounds,
        "results": summary,
        "verdicts": verdicts(summary),
    }


def verdicts(summary: list[dict[str, Any]]) -> list[str]:
    by_name = {r["target"]: r for r in summary}
    lines = []
    for name, goal in TARGETS.items():
        r = by_name[name]
        ratio = r["ratio"]
        ok = ratio is not None and ratio >= goal["ratio"]
        text = f"{name}: ratio {_f(ratio, 2)} vs target >= {goal['ratio']:.2f}: " + (
            "met" if ok else "MISSED"
        )
        if "p99_ms" in goal:
            p99 = r["p99_ms"]
            ok99 = p99 is not None and p99 < goal["p99_ms"]
            text += f"; p99 {_f(p99, 1)} ms vs target < {goal['p99_ms']:g} ms: " + (
                "met" if ok99 else "MISSED"
            )
        lines.append(text)
    if "bare_same" in by_name:
        lines.append(
            f"against the bare app with {by_name['bare_same']['workers']} sync workers too: "
            + ", ".join(f"{name} {_f(by_name[name]['ratio_same'], 2)}" for name in TARGETS)
        )
    if "bare_asgi" in by_name:
        lines.append(
            f"against the bare ASGI app under uvicorn with {by_name['bare_asgi']['workers']} "
            "workers: "
            + ", ".join(f"{name} {_f(by_name[name]['ratio_asgi'], 2)}" for name in TARGETS)
        )
        lines.extend(asgi_verdicts(by_name))
        if "floor" in by_name:
            lines.append(floor_verdict(by_name))
    return lines


def asgi_verdicts(by_name: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 16's targets (:data:`ASGI_TARGETS`), for the targets that ran."""
    lines = []
    for name, goals in ASGI_TARGETS.items():
        r = by_name.get(name)
        if r is None:
            continue
        parts = []
        for key, goal in goals.items():
            if key == "ratio_asgi":
                value, text = r["ratio_asgi"], "x bare ASGI"
                ok = value is not None and value >= goal
                parts.append(f"{_f(value, 2)} {text} (>= {goal:.2f}: {_met(ok)})")
            elif key == "ratio":
                value = r["ratio"]
                ok = value is not None and value >= goal
                parts.append(f"{_f(value, 2)} x bare WSGI (>= {goal:.2f}: {_met(ok)})")
            elif key == "p99_ms":
                value = r["p99_ms"]
                ok = value is not None and value < goal
                parts.append(f"p99 {_f(value, 1)} ms (< {goal:g}: {_met(ok)})")
            else:
                over = _cpu_over(r, by_name["bare_asgi"])
                ok = over is not None and over <= goal
                parts.append(
                    f"CPU +{_f(over, 0)} µs/answer over bare ASGI (<= {goal:g}: {_met(ok)})"
                )
        lines.append(f"issue 16, {name}: " + "; ".join(parts))
    return lines


def floor_verdict(by_name: dict[str, dict[str, Any]]) -> str:
    """Where the floor stands against the bare ASGI app, and pushreport against it: the
    ratios taken per round, CPU per answer over the reference as in :func:`asgi_verdicts`."""
    floor, normal = by_name["floor"], by_name["normal"]
    return (
        f"floor (least durable receiver, uvicorn ×{floor['workers']}): "
        f"{_f(floor['ratio_asgi'], 2)} x bare ASGI, "
        f"CPU {_signed(_cpu_over(floor, by_name['bare_asgi']))} µs/answer over bare ASGI; "
        f"pushreport normal is {_f(normal['ratio_floor'], 2)} x the floor, "
        f"{_signed(_cpu_over(normal, floor))} µs/answer over it"
    )


def _cpu_over(r: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """The server CPU per answer of *r* over *reference*'s (µs), if both were measured."""
    if r["cpu_us"] is None or reference["cpu_us"] is None:
        return None
    return float(r["cpu_us"] - reference["cpu_us"])


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _has_uvicorn() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvicorn") is not None


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _say(args: argparse.Namespace, text: str) -> None:
    if args.json != "-":
        print(text, flush=True)


def table(report: dict[str, Any]) -> str:
    header = ("target", "req/s", "p50 ms", "p99 ms", "errors", "ratio", "server CPU µs/req")
    rows = [header] + [
        (
            r["label"],
            f"{r['rps']:,.0f}",
            _f(r["p50_ms"], 2),
            _f(r["p99_ms"], 2),
            str(r["errors"]),
            _f(r["ratio"], 2),
            _f(r["cpu_us"], 0),
        )
        for r in report["results"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        )
        for row in rows
    ]
    m = report["machine"]
    lines.append("")
    lines.append(
        f"{report['tool']}, {report['connections']} connections, "
        f"{report['threads']} threads, {report['duration']:g} s per target, "
        f"{report['rounds']} round(s); medians"
        + (f"; {report['prefill']:,} registrations stored before" if report.get("prefill") else "")
    )
    lines.append(
        f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, gunicorn {m['gunicorn']}, wrk {m['wrk']}; "
        f"load average before: {report['loadavg_before']}"
    )
    lines.extend(report["verdicts"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds each target is driven per round (default 10)",
    )
    parser.add_argument(
        "--connections", "-c", type=int, default=32, help="concurrent connections (default 32)"
    )
    parser.add_argument(
        "--threads", "-t", type=int, default=2, help="wrk threads or load processes (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="drive the three targets in turn N times (default 1)"
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="N",
        help="store the pool's first N registrations in each pushreport "
        "database before the run (default 0: the run inserts first "
        "and only updates once the pool has gone round)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up per target (default 2)"
    )
    parser.add_argument(
        "--tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (default: wrk if installed)",
    )
    parser.add_argument(
        "--engine",
        choices=("gunicorn", "uvicorn"),
        default=None,
        help="the engine of pushreport serve for normal and full (default: serve's, uvicorn)",
    )
    parser.add_argument(
        "--postgresql",
        metavar="DSN",
        default=None,
        help="also drive pushreport serve on the PostgreSQL backend behind its report "
        "spool, in a table of the run's own on this server (dropped at the end)",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive the floor, bench/floor_asgi.py under uvicorn as the bare ASGI "
        "app: the least work a durable receiver can do per report (--no-floor: skip it)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s per target, 1 round: a smoke run"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="print one JSON document instead of the table, or with "
        "FILE write it there and print the table too",
    )
    args = parser.parse_args(argv)
    if args.engine is None:
        from pushreport._config import ServerConfig

        args.engine = ServerConfig().engine
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.5, 1
    if args.duration <= 0 or args.duration > 600 or args.rounds < 1 or args.rounds > 20:
        parser.error("--duration must be in (0, 600] and --rounds in [1, 20]")
    if not 0 <= args.prefill <= loadgen.POOL:
        parser.error(f"--prefill must be in [0, {loadgen.POOL}]")
    install_signal_handlers()
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted; every server is stopped", file=sys.stderr)
        return 130
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    print()
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
