"""Group commit of the report spool: appends per second with ``synchronous = "normal"``
against ``"full"``, with N threads of one process appending at once.

Each measurement is the path a report takes in a worker (``SpooledStorage.upsert(...,
read_back=False)`` over the SQLite backend, its background applier running): with
``full`` every append returns only once an ``fdatasync`` that began after its write has
returned, and concurrent appends share one (``pushreport._spool.SpoolFiles``). So the
ratio full/normal says what group commit buys at each thread count; one thread is the
old cost, a sync per report.

Rounds alternate normal and full for every thread count, the ratio is taken within a
round, and every round is printed with the medians::

    python bench/group_sync.py                      # ~1 min: 3 rounds, 1/4/16/32 threads
    python bench/group_sync.py --quick              # a couple of seconds
    python bench/group_sync.py --dir /var/tmp       # on the disk the spool will be on

The spool is put in *--dir* (default: the system's temp dir, which may be a tmpfs where
fdatasync costs nothing: then pass a directory on a real disk). Nothing here asserts a
timing; ``--json`` writes the figures.

``--postgresql DSN`` measures the PostgreSQL backend in-process the same way: each
report its own write (``GroupCommit``: threads that wait together share a transaction,
as the receiver writes) against the report spool in front of it (``spool = true``,
``spool_fsync = true``), the spool's time including what it takes to apply everything
appended (reports stored per second, not only answered), in a table of its own that is
dropped at the end::

    python bench/group_sync.py --postgresql "host=127.0.0.1 dbname=test user=postgres"

``--serve`` measures the same under ``pushreport serve`` instead (its default worker
count, or ``--workers``): a server per (synchronous, threads per worker) for each of
``--serve-threads`` (default ``1,8``), driven one after the other by
``bench/loadgen.py`` (32 connections, ``Connection: close``) each round; it prints
req/s, p99 and full/normal for each thread count, every round and the medians::

    python bench/group_sync.py --serve --rounds 3 --duration 6
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pushreport.spool import SpooledStorage
from pushreport_core import Report
from pushreport_sqlite import SQLiteStorage

NOW = datetime(2025, 3, 15, 0, 46, 17, tzinfo=timezone.utc)


def _report(t: int, i: int) -> Report:
    return Report(
        selector=f"{t:08x}{i:032x}:c0f",
        username=f"user{t}",
        token_msgs=f"QVBBOTFiRzlhcVd2{i:012d}",
        appid_msgs="com.cloudsoftphone.app",
        user_agent="CloudSoftphone/1.5.6",
    )


def measure(folder: Path, *, full: bool, threads: int, duration: float) -> dict[str, float]:
    """Appends per second of *threads* threads for *duration* seconds, and fdatasync
    calls per append."""
    db = folder / f"bench-{'full' if full else 'normal'}-{threads}-{time.monotonic_ns()}.db"
    storage = SpooledStorage(
        SQLiteStorage(db, synchronous="full" if full else "normal"),
        folder=Path(f"{db}.spool"),
        fsync=full,
        max_bytes=1 << 40,
    )
    storage.upsert(_report(999, 0), now=NOW, read_back=False)  # opens it, starts the applier
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        i = 0
        while not stop.is_set():
            storage.upsert(_report(t, i), now=NOW, read_back=False)
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    syncs_before = storage._files.syncs
    start.wait()
    began = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    syncs = storage._files.syncs - syncs_before
    storage.close()
    total = sum(counts)
    return {"appends_per_s": total / elapsed, "syncs_per_append": syncs / max(1, total)}


def measure_postgresql(
    dsn: str, table: str, folder: Path, *, spooled: bool, threads: int, duration: float
) -> dict[str, float]:
    """Reports stored per second by *threads* threads in *duration* seconds: each its
    own write through ``GroupCommit``, or through the spool (then until all of it is
    applied)."""
    from pushreport._batch import GroupCommit
    from pushreport_postgresql import PostgreSQLStorage

    backend = PostgreSQLStorage(dsn=dsn, table=table, pool_max=max(4, threads), spool_host="b")
    storage: Any
    if spooled:
        storage = SpooledStorage(
            backend,
            folder=folder / f"pg-{threads}-{time.monotonic_ns()}",
            fsync=True,
            max_bytes=1 << 40,
        )
        write = functools.partial(storage.upsert, read_back=False)
    else:
        storage = backend
        write = GroupCommit(backend).upsert
    write(_report(999, 0), now=NOW)
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        i = 0
        while not stop.is_set():
            write(_report(t, i), now=NOW)
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for w in workers:
        w.join()
    answered = time.perf_counter() - began
    if spooled:
        storage.apply_spool()  # what is left: stored only once applied
    elapsed = time.perf_counter() - began
    storage.close()
    total = sum(counts)
    return {"stored_per_s": total / elapsed, "answered_per_s": total / answered}


def postgresql(args: argparse.Namespace) -> int:
    """The ``--postgresql`` measurement (see the module's documentation)."""
    import uuid

    import psycopg
    from psycopg import sql

    table = f"bench_group_sync_{uuid.uuid4().hex[:12]}"
    counts = [int(n) for n in args.threads.split(",")]
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="group-sync-pg-", dir=args.dir) as tmp:
            print(f"PostgreSQL, table {table}, {args.duration:g} s each")
            print(
                f"{'round':>5} {'threads':>7} {'direct/s':>10} {'spooled/s':>10} "
                f"{'ratio':>6} {'answered/s':>10}"
            )
            for r in range(1, args.rounds + 1):
                for n in counts:
                    kw = {"threads": n, "duration": args.duration}
                    direct = measure_postgresql(
                        args.postgresql, table, Path(tmp), spooled=False, **kw
                    )
                    spool = measure_postgresql(
                        args.postgresql, table, Path(tmp), spooled=True, **kw
                    )
                    ratio = spool["stored_per_s"] / direct["stored_per_s"]
                    results.append(
                        {
                            "round": r,
                            "threads": n,
                            "direct": direct,
                            "spooled": spool,
                            "ratio": ratio,
                        }
                    )
                    print(
                        f"{r:>5} {n:>7} {direct['stored_per_s']:>10,.0f} "
                        f"{spool['stored_per_s']:>10,.0f} {ratio:>6.2f} "
                        f"{spool['answered_per_s']:>10,.0f}",
                        flush=True,
                    )
    finally:
        with psycopg.connect(args.postgresql, autocommit=True) as conn:
            for suffix in ("", "_schema", "_spool", "_removed", "_limits"):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table + suffix))
                )
    print("\nmedians")
    print(f"{'threads':>7} {'direct/s':>10} {'spooled/s':>10} {'ratio':>6}")
    for n in counts:
        rows = [x for x in results if x["threads"] == n]
        print(
            f"{n:>7} {statistics.median(x['direct']['stored_per_s'] for x in rows):>10,.0f} "
            f"{statistics.median(x['spooled']['stored_per_s'] for x in rows):>10,.0f} "
            f"{statistics.median(x['ratio'] for x in rows):>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def serve(args: argparse.Namespace) -> int:
    """The ``--serve`` measurement (see the module's documentation)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loadgen
    from load import HOST, install_signal_handlers, pushreport_server

    install_signal_handlers()
    counts = [int(n) for n in args.serve_threads.split(",")]
    setups = [(sync, n) for n in counts for sync in ("normal", "full")]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="group-sync-serve-", dir=args.dir) as tmp:
        servers = {
            (sync, n): pushreport_server(
                Path(tmp), f"{sync}-{n}", synchronous=sync, workers=args.workers, threads=n
            )
            for sync, n in setups
        }
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            workers = next(iter(servers.values())).workers_expected
            print(f"pushreport serve, {workers} workers, {args.duration:g} s each")
            print(
                f"{'round':>5} {'threads':>7} {'normal/s':>10} {'p99 ms':>7} "
                f"{'full/s':>10} {'p99 ms':>7} {'ratio':>6} {'errors':>6}"
            )
            for server in servers.values():
                loadgen.drive(HOST, server.port, duration=args.warmup, tool=args.tool)
            for r in range(1, args.rounds + 1):
                for n in counts:
                    got = {}
                    for sync in ("normal", "full"):
                        server = servers[(sync, n)]
                        got[sync] = loadgen.drive(
                            HOST, server.port, duration=args.duration, tool=args.tool
                        ).as_dict()
                        if server.proc is None or server.proc.poll() is not None:
                            raise RuntimeError(f"{sync}-{n} died:\n{server.output()}")
                    ratio = got["full"]["rps"] / got["normal"]["rps"]
                    errors = got["full"]["errors"] + got["normal"]["errors"]
                    rounds.append({"round": r, "threads": n, **got, "ratio": ratio})
                    print(
                        f"{r:>5} {n:>7} {got['normal']['rps']:>10,.0f} "
                        f"{got['normal']['p99_ms']:>7.2f} {got['full']['rps']:>10,.0f} "
                        f"{got['full']['p99_ms']:>7.2f} {ratio:>6.2f} {errors:>6}",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
    print("\nmedians")
    print(f"{'threads':>7} {'normal/s':>10} {'full/s':>10} {'ratio':>6}")
    for n in counts:
        rows = [x for x in rounds if x["threads"] == n]
        print(
            f"{n:>7} {statistics.median(x['normal']['rps'] for x in rows):>10,.0f} "
            f"{statistics.median(x['full']['rps'] for x in rows):>10,.0f} "
            f"{statistics.median(x['ratio'] for x in rows):>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rounds, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,4,16,32", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where the spool is written")
    parser.add_argument("--quick", action="store_true", help="one short round, 1 and 4 threads")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--serve", action="store_true", help="under pushreport serve")
    parser.add_argument("--serve-threads", default="1,8", help="threads per worker, --serve")
    parser.add_argument("--workers", type=int, default=None, help="--serve: worker count")
    parser.add_argument("--warmup", type=float, default=2.0, help="--serve: seconds")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--postgresql", metavar="DSN", default=None, help="PostgreSQL instead")
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.rounds, args.duration = "1,4", 1, 0.3
        args.warmup = 0.3
    if args.serve:
        return serve(args)
    if args.postgresql:
        return postgresql(args)
    counts = [int(n) for n in args.threads.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="group-sync-", dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"spool in {folder} ({os.cpu_count()} cores), {args.duration:g} s each")
        print(
            f"{'round':>5} {'threads':>7} {'normal/s':>10} {'full/s':>10} "
            f"{'ratio':>6} {'syncs/append':>12}"
        )
        for r in range(1, args.rounds + 1):
            for n in counts:
                normal = measure(folder, full=False, threads=n, duration=args.duration)
                full = measure(folder, full=True, threads=n, duration=args.duration)
                ratio = full["appends_per_s"] / normal["appends_per_s"]
                results.append(
                    {"round": r, "threads": n, "normal": normal, "full": full, "ratio": ratio}
                )
                print(
                    f"{r:>5} {n:>7} {normal['appends_per_s']:>10,.0f} "
                    f"{full['appends_per_s']:>10,.0f} {ratio:>6.2f} "
                    f"{full['syncs_per_append']:>12.3f}",
                    flush=True,
                )
    print("\nmedians")
    print(f"{'threads':>7} {'normal/s':>10} {'full/s':>10} {'ratio':>6}")
    for n in counts:
        rows = [x for x in results if x["threads"] == n]
        print(
            f"{n:>7} {statistics.median(x['normal']['appends_per_s'] for x in rows):>10,.0f} "
            f"{statistics.median(x['full']['appends_per_s'] for x in rows):>10,.0f} "
            f"{statistics.median(x['ratio'] for x in rows):>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
