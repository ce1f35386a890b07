"""Does a serving process keep its memory flat over many reports?

Runs ``pushreport serve --workers 1`` on a fresh SQLite file, warms it up, then sends N
reports (default 200,000; ``--quick``: 2,000) with the bundled load generator
(``bench/loadgen.py``, selectors cycling over a pool of 100,000: inserts first, then
updates) while sampling the worker's resident memory (``VmRSS`` in
``/proc/<pid>/status``) every few seconds. Prints the series and the growth from the
first sample after the warm-up to the last one, after the load. Flat means a growth
under 2 MiB: more than that over a few hundred thousand reports is a leak, not a cache.

::

    python bench/memory.py            # 200,000 reports, a minute or two
    python bench/memory.py --quick    # 2,000 reports: a smoke run
    python bench/memory.py --json
"""

from __future__ import annotations

import argparse
import json
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
from load import HOST, install_signal_handlers, pushreport_server  # noqa: E402

__all__ = ["rss_kib", "main"]

#: Growth of the worker's RSS over the run that still counts as flat.
FLAT_KIB = 2048


def rss_kib(pid: int) -> int:
    """Resident memory of *pid* in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _send(
    port: int, requests: int, connections: int, first: int, timeout: float
) -> subprocess.Popen[str]:
    # A second process, as a real client would be.
    return subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--host",
            HOST,
            "--port",
            str(port),
            "--requests",
            str(requests),
            "--connections",
            str(connections),
            "--json",
            "--first",
            str(first),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"the load generator did not finish in {timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="pushreport-memory-") as tmp:
        server = pushreport_server(Path(tmp), "memory", workers=1)
        try:
            server.start()
            server.wait_ready()
            (worker,) = server.workers()
            before_warmup = rss_kib(worker)
            warm = _finish(
                _send(server.port, args.warmup, args.connections, 0, args.timeout), args.timeout
            )
            start = time.monotonic()
            samples.append((0.0, rss_kib(worker)))
            proc = _send(server.port, args.requests, args.connections, args.warmup, args.timeout)
            deadline = start + args.timeout
            next_sample = start + args.interval
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, next_sample - time.monotonic())))
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - start, rss_kib(worker)))
                    next_sample += args.interval
            load = _finish(proc, max(1.0, deadline - time.monotonic()))
            time.sleep(min(1.0, args.interval))
            samples.append((time.monotonic() - start, rss_kib(worker)))
            if server.workers() != [worker]:
                raise RuntimeError("the worker was replaced during the run:\n" + server.output())
        finally:
            server.stop()
    first, last = samples[0][1], samples[-1][1]
    growth = last - first
    return {
        "machine": loadgen.machine(),
        "reports": args.requests,
        "warmup": args.warmup,
        "rss_before_warmup_kib": before_warmup,
        "samples": [{"t": round(t, 2), "rss_kib": kib} for t, kib in samples],
        "growth_kib": growth,
        "growth_pct": round(100.0 * growth / first, 2),
        "peak_kib": max(kib for _, kib in samples),
        "load": load,
        "warmup_load": warm,
        "verdict": (
            f"RSS {first:,} -> {last:,} KiB over {load['ok']:,} reports: "
            f"{growth:+,} KiB ({100.0 * growth / first:+.1f}%) vs flat (< "
            f"{FLAT_KIB:,} KiB growth): " + ("met" if growth < FLAT_KIB else "MISSED")
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        "-n",
        type=int,
        default=200_000,
        help="reports to send after the warm-up (default 200,000)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="reports sent before the first "
        "sample (default a tenth of --requests, at most 10,000)",
    )
    parser.add_argument("--connections", "-c", type=int, default=16)
    parser.add_argument(
        "--interval", type=float, default=3.0, help="seconds between samples (default 3)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="give up after this many seconds (default 900)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 reports: a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.interval = 2_000, 0.2
    if args.warmup is None:
        args.warmup = min(args.requests // 10, 10_000)
    if args.requests < 1 or args.warmup < 1 or args.interval <= 0:
        parser.error("--requests, --warmup and --interval must be positive")
    install_signal_handlers()
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted; every server is stopped", file=sys.stderr)
        return 130
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"worker RSS before warm-up: {report['rss_before_warmup_kib']:,} KiB; "
        f"warm-up: {args.warmup:,} reports"
    )
    print(f"{'t s':>8}  {'RSS KiB':>10}")
    for s in report["samples"]:
        print(f"{s['t']:8.1f}  {s['rss_kib']:10,}")
    load = report["load"]
    print(
        f"load: {load['ok']:,} ok, {load['errors']} errors, {load['rps']:,.0f} req/s, "
        f"p99 {load['p99_ms']} ms"
    )
    m = report["machine"]
    print(
        f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, gunicorn {m['gunicorn']}"
    )
    print(report["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
