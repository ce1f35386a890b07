"""What a limit costs per report: the whole WSGI app in-process, without and with limits.

For each store of the shared limit state (``pushreport.limitstate``): SQLite (the
``sqlite`` backend's ``<db>.limits`` file) and PostgreSQL (the ``postgresql`` backend's
``<table>_limits`` table, when a server is reachable), the same reports
(``bench/inprocess.py``'s: the default shape, a pool of registrations stored before)
go through ``create_app`` with

- ``none``: no limit (the state is not even opened);
- ``per_client``: one token bucket per client address (each report from its own);
- ``per_client+per_username``: and one per username (two takes per report);
- ``secret``: ``[auth] methods = ["secret"]``, the right secret, no limit (the base of
  the next line);
- ``secret+lockout``: and the lock-out (a read of the client's failures before the
  check, and one after the success);

at rates no report reaches, so every report is answered 200 and the figure is the cost
of counting. It prints wall-clock and CPU µs per report (medians of *--runs* runs of
*--count* reports) and the difference to ``none`` of the same store (``secret`` for
``secret+lockout``), then each operation of the state timed alone (*--count* calls)::

    python bench/limits.py                    # ~1 min
    python bench/limits.py --quick            # a few seconds
    python bench/limits.py --processes 2      # and 2 processes sharing the state at once
    python bench/limits.py --pg-dsn "host=127.0.0.1 dbname=test user=postgres"

The PostgreSQL server is ``--pg-dsn``, else ``$PUSHREPORT_TEST_DATABASE_URL``, else the
local one at 127.0.0.1:5432 (database ``test``) when it answers; ``--no-pg`` skips it.
Its tables (``pushreport_bench_<random>*``) are dropped at the end. Nothing here asserts
a timing; ``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inprocess import environ_for, prefill  # noqa: E402

from pushreport._config import AuthConfig, LimitsConfig, StorageConfig  # noqa: E402
from pushreport_wsgi import Config, create_app  # noqa: E402

SECRET = "bench-shared-secret-value"
#: Never reached in a run: every report is counted and answered 200.
RATE = "1000000/minute"
#: Each variant's [limits], and whether reports carry a shared secret (``[auth]``).
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "none": ({}, False),
    "per_client": ({"per_client": RATE}, False),
    "per_client+per_username": ({"per_client": RATE, "per_username": RATE}, False),
    "secret": ({}, True),
    "secret+lockout": ({"auth_failures": 10}, True),
}
LOCAL_PG = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def find_pg(args: argparse.Namespace) -> str | None:
    if args.no_pg:
        return None
    dsn = args.pg_dsn or os.environ.get("PUSHREPORT_TEST_DATABASE_URL") or LOCAL_PG
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # no driver, no server: measured without it
        print(f"PostgreSQL skipped: {type(e).__name__}", file=sys.stderr)
        return None
    return dsn


def config_for(store: str, where: Any, variant: str) -> Config:
    limits, secret = VARIANTS[variant]
    limits = {"auth_failures": 0, **limits}
    auth = AuthConfig()
    if secret:
        auth = AuthConfig(methods=("secret",), secret=SECRET, secret_field="pushsecret")
    if store == "sqlite":
        base = Config(limits=LimitsConfig(**limits), auth=auth, base_dir=where.parent)
        return base.with_storage_option("sqlite", "path", str(where))
    dsn, table = where
    return Config(
        storage=StorageConfig(
            backends=("postgresql",),
            options={"postgresql": {"dsn": dsn, "table": table, "timeout": 10.0}},
        ),
        limits=LimitsConfig(**limits),
        auth=auth,
    )


def environs(pool: int, secret: bool) -> list[dict[str, Any]]:
    """Each report from its own client address (``10.x.y.z``)."""
    out = []
    for i in range(pool):
        env = environ_for(i)
        env["REMOTE_ADDR"] = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        if secret:
            env["RAW_URI"] += f"&pushsecret={SECRET}"
            env["QUERY_STRING"] += f"&pushsecret={SECRET}"
        out.append(env)
    return out


def time_app(app: Any, envs: list[dict[str, Any]], chunks: list[list[int]]) -> dict[str, Any]:
    bad: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if not status.startswith("200"):
            bad.append(status)

    def call(i: int) -> None:
        env = envs[i].copy()
        env["wsgi.input"] = io.BytesIO(b"")
        app(env, start_response)

    for i in chunks[0][:500]:  # warm-up: connections opened, tables created
        call(i)
    wall, cpu = [], []
    for chunk in chunks:
        w, c = time.perf_counter(), time.process_time()
        for i in chunk:
            call(i)
        wall.append((time.perf_counter() - w) / len(chunk) * 1e6)
        cpu.append((time.process_time() - c) / len(chunk) * 1e6)
    if bad:
        raise RuntimeError(f"{len(bad)} reports answered {bad[0]!r}")
    return {
        "wall_us": statistics.median(wall),
        "cpu_us": statistics.median(cpu),
        "runs_wall_us": [round(x, 1) for x in wall],
    }


def _sharer(config: Config, envs: Any, chunks: Any, barrier: Any, out: Any) -> None:
    try:
        app = create_app(config)
        try:
            barrier.wait(timeout=120)
            out.put(time_app(app, envs, chunks))
        finally:
            app.close()
    except BaseException as e:  # reported by the parent
        out.put({"error": repr(e)})


def shared(config: Config, envs: Any, chunks: list[list[int]], n: int) -> dict[str, Any]:
    """The app in *n* processes at once on the same stores, each every n-th report."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_sharer,
            args=(config, envs, [c[p::n] for c in chunks], barrier, out),
            daemon=True,
        )
        for p in range(n)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    return {
        "wall_us": statistics.median(r["wall_us"] for r in results),
        "cpu_us": statistics.median(r["cpu_us"] for r in results),
    }


def run_store(
    store: str, where: Any, args: argparse.Namespace, order: list[int]
) -> dict[str, Any]:
    chunks = [order[r * args.count : (r + 1) * args.count] for r in range(args.runs)]
    results: dict[str, Any] = {}
    first = create_app(config_for(store, where, "none"))
    try:
        prefill(first.receiver.storage, args.pool)
    finally:
        first.close()
    for variant in VARIANTS:
        config = config_for(store, where, variant)
        envs = environs(args.pool, secret=VARIANTS[variant][1])
        app = create_app(config)
        try:
            results[variant] = time_app(app, envs, chunks)
        finally:
            app.close()
        if args.processes > 1:
            results[variant][f"{args.processes} processes"] = shared(
                config, envs, chunks, args.processes
            )
    return results


def time_ops(state: Any, n: int) -> dict[str, float]:
    """Wall µs per call of each operation of *state* alone, over *n* keys."""
    now = time.time()
    ops: dict[str, Callable[[int], object]] = {
        "take": lambda i: state.take(f"client:{i}", count=10**6, period=60, now=now),
        "locked": lambda i: state.locked(f"fail:{i}", limit=10, now=now),
        "clear (none)": lambda i: state.clear(f"fail:{i}"),
        "fail": lambda i: state.fail(f"fail:{i}", limit=10**6, window=60, now=now),
        "claim": lambda i: state.claim(f"nonce:{i}", expires=now + 300, now=now),
    }
    out = {}
    for name, op in ops.items():
        for i in range(min(200, n)):  # warm-up
            op(n + i)
        started = time.perf_counter()
        for i in range(n):
            op(i)
        out[name] = (time.perf_counter() - started) / n * 1e6
    return out


def ops_of(store: str, where: Any, n: int) -> dict[str, float]:
    app = create_app(config_for(store, where, "per_client"))
    try:
        return time_ops(app.receiver.limiter.state, n)
    finally:
        app.close()


def drop_pg(dsn: str, table: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in (table, f"{table}_schema", f"{table}_limits"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pool", type=int, default=20_000, help="registrations (20,000)")
    parser.add_argument("--count", type=int, default=5_000, help="reports per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1, help="also N processes at once")
    parser.add_argument("--pg-dsn", default="")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="1,000 rows, 2 x 500 reports")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.pool, args.count, args.runs = 1_000, 500, 2
    stride = 7_919 if args.pool > 7_919 else 1
    order = [(k * stride) % args.pool for k in range(args.count * args.runs)]
    dsn = find_pg(args)
    report: dict[str, Any] = {
        "pool": args.pool,
        "count": args.count,
        "runs": args.runs,
        "processes": args.processes,
        "python": sys.version.split()[0],
        "stores": {},
    }
    report["ops"] = {}
    with tempfile.TemporaryDirectory(prefix="pushreport-limits-bench-") as tmp:
        where: Any = Path(tmp, "bench.sqlite3")
        report["stores"]["sqlite"] = run_store("sqlite", where, args, order)
        report["ops"]["sqlite"] = ops_of("sqlite", where, args.count)
    if dsn is not None:
        table = f"pushreport_bench_{uuid.uuid4().hex[:12]}"
        try:
            where = (dsn, table)
            report["stores"]["postgresql"] = run_store("postgresql", where, args, order)
            report["ops"]["postgresql"] = ops_of("postgresql", where, args.count)
        finally:
            drop_pg(dsn, table)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"Python {report['python']}; {args.pool:,} registrations; {args.runs} runs x "
        f"{args.count:,} reports; µs per report through the WSGI app (median)"
    )
    # "limit": the difference to the same store without the limit ("none"; for
    # secret+lockout, "secret").
    cols = ["wall", "CPU", "limit wall", "limit CPU"]
    if args.processes > 1:
        cols += [f"wall x{args.processes}", f"limit x{args.processes}"]
    print(f"{'store':<12}{'limits':<26}" + "".join(f"{c:>12}" for c in cols))
    for store, results in report["stores"].items():
        for variant, r in results.items():
            base = results["secret" if variant == "secret+lockout" else "none"]
            row = [r["wall_us"], r["cpu_us"], r["wall_us"] - base["wall_us"]]
            row.append(r["cpu_us"] - base["cpu_us"])
            if args.processes > 1:
                key = f"{args.processes} processes"
                row += [r[key]["wall_us"], r[key]["wall_us"] - base[key]["wall_us"]]
            print(f"{store:<12}{variant:<26}" + "".join(f"{x:>12.1f}" for x in row))
    names = list(next(iter(report["ops"].values())))
    print("\nOne operation of the state alone, wall µs per call:")
    print(f"{'store':<12}" + "".join(f"{n:>14}" for n in names))
    for store, ops in report["ops"].items():
        print(f"{store:<12}" + "".join(f"{ops[n]:>14.1f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
