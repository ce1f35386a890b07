"""In-process cost of one report through the whole WSGI app, without a server.

Builds ``create_app(Config().with_storage_option("sqlite", "path", <tmp>))`` (the
default configuration: SQLite, ``synchronous = "normal"``, the default shapes), stores
*--prefill* registrations, then calls the app directly with the environ a server (gunicorn) hands
it for the report ``bench/loadgen.py`` sends: ``GET /token/?username=…&selector=…
&token_calls=…&appid_calls=…&token_msgs=…&appid_msgs=…`` with the app's headers, the
selectors cycling over the pool (100,000 by default), so most reports update a stored
row and none hits the same row twice in a row.

It prints the CPU time of this process per report (``time.process_time``: on a shared
machine, waiting for a CPU does not count; the WAL checkpoint thread does), the median
and the spread of *--runs* runs of *--count* reports, and the same for the parts of the
path measured alone on the same pool::

    python bench/inprocess.py                 # ~1 min: 100,000 rows, 5 x 20,000 reports
    python bench/inprocess.py --quick         # a few seconds
    python bench/inprocess.py --profile       # and cProfile's top functions (own time)
    python bench/inprocess.py --processes 2   # and 2 processes sharing the file at once

With ``--processes 2`` each process's page cache is emptied by every commit of the other
(SQLite resets it when the WAL changed under it), as with ``serve --workers 2``; one
process alone keeps its cache warm, which flatters the storage.

Nothing here asserts a timing; ``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import POOL, USER_AGENT, report_target  # noqa: E402

from pushreport_core import Registration, Request, parse_request  # noqa: E402
from pushreport_wsgi import Config, create_app  # noqa: E402

NOW = datetime(2025, 3, 15, 0, 46, 17, tzinfo=timezone.utc)


def environ_for(i: int) -> dict[str, Any]:
    """The environ gunicorn's sync worker builds for report *i* of the pool."""
    target = report_target(i)
    path, _, query = target.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": target,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_CONNECTION": "close",
        "HTTP_CACHE_CONTROL": "max-age=0",
        "HTTP_USER_AGENT": USER_AGENT,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.input_terminated": True,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
    }


def prefill(storage: Any, n: int) -> None:
    """Store reports 0 … n-1 of the pool as registrations, in batches."""
    batch: list[Registration] = []
    for i in range(n):
        r = parse_request(Request(method="GET", target=report_target(i)))
        batch.append(
            Registration(
                selector=r.selector,
                username=r.username,
                token_calls=r.token_calls,
                appid_calls=r.appid_calls,
                token_msgs=r.token_msgs,
                appid_msgs=r.appid_msgs,
                user_agent=USER_AGENT,
                first_seen=NOW,
                last_seen=NOW,
                reports=1,
            )
        )
        if len(batch) == 5_000 or i == n - 1:
            storage.put_many(batch)
            batch = []


def per_call(fn: Callable[[int], object], indices: list[int]) -> float:
    """CPU µs per call of ``fn(i)`` over *indices*."""
    started = time.process_time()
    for i in indices:
        fn(i)
    return (time.process_time() - started) / len(indices) * 1e6


def measure(fn: Callable[[int], object], indices: Iterable[list[int]]) -> dict[str, Any]:
    runs = [per_call(fn, chunk) for chunk in indices]
    return {
        "median_us": statistics.median(runs),
        "min_us": min(runs),
        "max_us": max(runs),
        "runs_us": [round(r, 2) for r in runs],
    }


def _sharer(db: Path, chunks: list[list[int]], barrier: Any, out: Any) -> None:
    """One of --processes: its own app on the shared file, timed like the main one."""
    app = create_app(Config().with_storage_option("sqlite", "path", str(db)))
    try:
        environs = {i: environ_for(i) for chunk in chunks for i in chunk}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if not status.startswith("200"):
                raise RuntimeError(f"a report was answered {status!r}")

        def call_app(i: int) -> object:
            env = environs[i].copy()
            env["wsgi.input"] = io.BytesIO(b"")
            return app(env, start_response)

        per_call(call_app, chunks[0][:1_000])  # warm-up
        barrier.wait(timeout=120)
        out.put(measure(call_app, chunks))
    except BaseException as e:  # reported by the parent
        out.put({"error": repr(e)})
    finally:
        app.close()


def shared(db: Path, chunks: list[list[int]], processes: int) -> dict[str, Any]:
    """Time the app in *processes* processes at once on one database file, as the
    workers of ``pushreport serve --workers N`` share it: each takes every N-th report
    of each run. The figures are the medians over the processes."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_sharer,
            args=(db, [chunk[p::processes] for chunk in chunks], barrier, out),
            daemon=True,
        )
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    runs = [statistics.median(values) for values in zip(*(r["runs_us"] for r in results))]
    return {
        "median_us": statistics.median(runs),
        "min_us": min(runs),
        "max_us": max(runs),
        "runs_us": [round(r, 2) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pool",
        type=int,
        default=POOL,
        help="distinct registrations the reports cycle over (100,000)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=None,
        help="registrations stored before the runs (default: the pool)",
    )
    parser.add_argument("--count", type=int, default=20_000, help="reports per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--parts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the parts (parse, receiver, storage) alone",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also time the app in N processes sharing the database "
        "at once, as serve's N workers do (default 1: not at all)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions of one more run"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 rows, 2 x 2,000 reports (a few seconds)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.pool, args.count, args.runs = 2_000, 2_000, 2
    prefilled = args.pool if args.prefill is None else min(args.prefill, args.pool)

    with tempfile.TemporaryDirectory(prefix="pushreport-inprocess-") as tmp:
        app = create_app(
            Config().with_storage_option("sqlite", "path", str(Path(tmp, "bench.sqlite3")))
        )
        receiver = app.receiver
        storage = receiver.storage
        try:
            fill_started = time.perf_counter()
            prefill(storage, prefilled)
            fill_s = time.perf_counter() - fill_started
            environs = [environ_for(i) for i in range(args.pool)]
            requests = [
                Request(
                    method="GET", target=e["RAW_URI"], user_agent=USER_AGENT, client="127.0.0.1"
                )
                for e in environs
            ]
            statuses: list[str] = []

            def start_response(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Any:
                statuses.append(status)

            def call_app(i: int) -> object:
                env = environs[i].copy()
                env["wsgi.input"] = io.BytesIO(b"")
                return app(env, start_response)

            def call_receiver(i: int) -> object:
                return receiver.handle(requests[i])

            def call_parse(i: int) -> object:
                return parse_request(requests[i], receiver.shapes)

            reports = [parse_request(r) for r in requests]
            writer = receiver.backends[0].writer
            clock = receiver.clock

            def call_storage(i: int) -> object:
                # The write the app does: without reading the row back when it can.
                return writer.upsert(reports[i], now=clock(), read_back=False)

            # One index sequence shared by every run: a stride through the pool, so
            # that consecutive reports touch distinct rows (as concurrent apps do).
            stride = 7_919 if args.pool > 7_919 else 1
            total = args.count * args.runs
            order = [(k * stride) % args.pool for k in range(total)]
            chunks = [order[r * args.count : (r + 1) * args.count] for r in range(args.runs)]
            per_call(call_app, order[: min(2_000, len(order))])  # warm-up
            statuses.clear()

            results: dict[str, Any] = {"app": measure(call_app, chunks)}
            bad = [s for s in statuses if not s.startswith("200")]
            if bad:
                print(f"error: {len(bad)} reports answered {bad[0]!r}", file=sys.stderr)
                return 1
            if args.parts:
                results["receiver.handle"] = measure(call_receiver, chunks)
                results["storage write"] = measure(call_storage, chunks)
                results["parse_request"] = measure(call_parse, chunks)
            profile_text = ""
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for i in chunks[0]:
                    call_app(i)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
                profile_text = out.getvalue()
            rows = storage.count()
        finally:
            app.close()
        if args.processes > 1:
            results[f"app, {args.processes} processes"] = shared(
                Path(tmp, "bench.sqlite3"), chunks, args.processes
            )

    report = {
        "pool": args.pool,
        "prefilled": prefilled,
        "rows_after": rows,
        "count": args.count,
        "runs": args.runs,
        "fill_s": round(fill_s, 1),
        "python": sys.version.split()[0],
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"Python {report['python']}; {prefilled:,} registrations stored "
            f"({fill_s:.1f} s), pool {args.pool:,}; {args.runs} runs x {args.count:,} "
            "reports; CPU µs per report (this process)"
        )
        print(f"{'path':<20}{'median':>9}{'min':>9}{'max':>9}")
        for name, r in results.items():
            print(f"{name:<20}{r['median_us']:>9.1f}{r['min_us']:>9.1f}{r['max_us']:>9.1f}")
    if profile_text:
        print(profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
