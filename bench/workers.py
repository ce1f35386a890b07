"""How many sync workers ``pushreport serve`` should run: 2, 3, 4 … on the same load.

Starts ``pushreport serve --workers N`` (``--synchronous normal``, the default, or
``full``) for each N of ``--workers`` (default ``2,3,4``) at the same time, each on its
own free loopback port, in its own session, on its own fresh SQLite file; warms each up,
then drives them one after the other with ``bench/loadgen.py``'s reports (wrk when
installed; 32 connections, ``Connection: close``) for ``--rounds`` rounds, and prints the
median of req/s, p50/p99 latency and the server's CPU time per answer for each N.

Every server is killed at the end, on Ctrl-C and on errors. Traffic stays on 127.0.0.1.

::

    python bench/workers.py --rounds 3          # ~2 min
    python bench/workers.py --quick             # 1 s per setting: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
from load import HOST, _median, install_signal_handlers, pushreport_server  # noqa: E402


def run(
    workers: list[int],
    *,
    rounds: int,
    duration: float,
    warmup: float,
    connections: int,
    tool: str,
    synchronous: str = "normal",
) -> dict[str, Any]:
    loadavg_before = loadgen.machine()["loadavg"]
    per_round: list[dict[int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="pushreport-workers-") as tmp:
        servers = {
            n: pushreport_server(Path(tmp), f"w{n}", workers=n, synchronous=synchronous)
            for n in workers
        }
        ports = {n: server.port for n, server in servers.items()}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            for server in servers.values():
                loadgen.drive(
                    HOST, server.port, duration=warmup, connections=connections, tool=tool
                )
            for _ in range(rounds):
                results: dict[int, dict[str, Any]] = {}
                for n, server in servers.items():
                    cpu = server.cpu_seconds()
                    result = loadgen.drive(
                        HOST, server.port, duration=duration, connections=connections, tool=tool
                    )
                    cpu = server.cpu_seconds() - cpu
                    answered = result.ok + result.errors.get("status", 0)
                    results[n] = {
                        **result.as_dict(),
                        "cpu_us": round(cpu / answered * 1e6, 1) if answered else None,
                    }
                    if server.proc is None or server.proc.poll() is not None:
                        raise RuntimeError(f"workers={n} died:\n{server.output()}")
                per_round.append(results)
        finally:
            for server in servers.values():
                server.stop()
    summary = [
        {
            "workers": n,
            "port": ports[n],
            "rps": _median([r[n]["rps"] for r in per_round]),
            "p50_ms": _median([r[n]["p50_ms"] for r in per_round]),
            "p99_ms": _median([r[n]["p99_ms"] for r in per_round]),
            "errors": sum(r[n]["errors"] for r in per_round),
            "cpu_us": _median([r[n]["cpu_us"] for r in per_round]),
        }
        for n in workers
    ]
    return {
        "machine": loadgen.machine(),
        "loadavg_before": loadavg_before,
        "synchronous": synchronous,
        "rounds": rounds,
        "duration": duration,
        "connections": connections,
        "results": summary,
        "per_round": [{str(k): v for k, v in r.items()} for r in per_round],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers",
        default="2,3,4",
        help="comma-separated worker counts to compare (default 2,3,4)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--duration",
        type=float,
        default=8.0,
        help="seconds each setting is driven per round (default 8)",
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--quick", action="store_true", help="1 s per setting, 1 round")
    parser.add_argument(
        "--synchronous",
        choices=("normal", "full"),
        default="normal",
        help='[storage.sqlite] synchronous of every server (default "normal")',
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.5, 1
    workers = [int(w) for w in args.workers.split(",")]
    if (
        not workers
        or any(not 1 <= w <= 16 for w in workers)
        or not 1 <= args.rounds <= 20
        or not 0 < args.duration <= 600
    ):
        parser.error("--workers in 1..16, --rounds in 1..20, --duration in (0, 600]")
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if loadgen.has_wrk() else "python"
    install_signal_handlers()
    try:
        report = run(
            workers,
            rounds=args.rounds,
            duration=args.duration,
            warmup=args.warmup,
            connections=args.connections,
            tool=tool,
            synchronous=args.synchronous,
        )
    except KeyboardInterrupt:
        print("interrupted; every server is stopped", file=sys.stderr)
        return 130
    report["tool"] = tool
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'workers':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'server CPU µs/req':>19}"
    )
    for r in report["results"]:
        print(
            f"{r['workers']:>7}{r['rps']:>9,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['errors']:>8}{r['cpu_us']:>19,.0f}"
        )
    print(
        f"\n{tool}, {args.connections} connections, {args.duration:g} s per setting, "
        f"{args.rounds} round(s); medians; load average before: "
        f"{report['loadavg_before']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
