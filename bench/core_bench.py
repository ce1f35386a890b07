"""Micro-benchmark of the core's per-report hot path: ``parse_request`` + ``merge``.

Stand-alone (no pytest)::

    python bench/core_bench.py           # about twenty seconds
    python bench/core_bench.py --quick   # a couple of seconds

For each shape it prints the microseconds per report and, measured in the same run, a
baseline that does the least any receiver must do with the same bytes (``parse_qs`` or
``json.loads`` and a dict build), and the ratio between the two. The target is < 20 µs
per report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import parse_qs, unquote

from pushreport_core import (
    DEFAULT_ACCOUNT_XML,
    Registration,
    Request,
    Template,
    merge,
    parse_request,
    render_request,
)

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
VALUES = {
    "account[username]": "johndow",
    "selector": SEL,
    "pushTokenIncomingCall": "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    "pushappid_incoming_call": "com.cloudsoftphone.app.pushkit",
    "pushTokenOther": "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",
    "pushappid_other": "com.cloudsoftphone.app",
}
NOW = datetime(2025, 3, 15, 0, 46, 17, tzinfo=timezone.utc)

QUERY_T = Template.parse(
    url=DEFAULT_ACCOUNT_XML["pushTokenReporterUrl"].format(base_url="https://example.com")
)
JSON_T = Template.parse(
    url="https://example.com/token/",
    content_type="application/json",
    post_data=(
        '{ "username" : "%account[username]%", "token_calls" : '
        '"%pushTokenIncomingCall%", "token_msgs" : "%pushTokenOther%", "selector" : '
        '"%selector%", "appId_calls": "%pushappid_incoming_call%", "appId_msgs" : '
        '"%pushappid_other%" }'
    ),
)
FORM_T = Template.parse(
    url="https://example.com/token/",
    post_data=(
        "username=%account[username]%&selector=%selector%&token_calls=%pushTokenIncomingCall%"
        "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
        "&appid_msgs=%pushappid_other%"
    ),
)
PATH_T = Template.parse(
    url="https://example.com/pushToken/%account[username]%/%selector%/"
    "%pushToken%&appid=%pushappid%"
)


def _query_baseline(request: Request) -> Callable[[], object]:
    query = request.query
    return lambda: {k: v[0] for k, v in parse_qs(query).items()}


def _form_baseline(request: Request) -> Callable[[], object]:
    body = request.body
    return lambda: {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}


def _json_baseline(request: Request) -> Callable[[], object]:
    body = request.body
    return lambda: {k.lower(): v for k, v in json.loads(body).items()}


def _path_baseline(request: Request) -> Callable[[], object]:
    path = request.path

    def baseline() -> object:
        user, selector, rest = path.split("/")[2:]
        token, _, appid = rest.partition("&appid=")
        return {
            "username": unquote(user),
            "selector": unquote(selector),
            "token_msgs": unquote(token),
            "appid_msgs": unquote(appid),
        }

    return baseline


# (name, template given to parse_request (None: default shapes), the request, baseline)
CASES = [
    ("GET query, template", QUERY_T, render_request(QUERY_T, VALUES), _query_baseline),
    ("GET query, default shapes", None, render_request(QUERY_T, VALUES), _query_baseline),
    ("JSON POST, template", JSON_T, render_request(JSON_T, VALUES), _json_baseline),
    ("JSON POST, default shapes", None, render_request(JSON_T, VALUES), _json_baseline),
    ("form POST, default shapes", None, render_request(FORM_T, VALUES), _form_baseline),
    (
        "path, default shapes",
        None,
        render_request(
            PATH_T,
            {
                **VALUES,
                "pushToken": VALUES["pushTokenOther"],
                "pushappid": VALUES["pushappid_other"],
            },
        ),
        _path_baseline,
    ),
]


def _per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best of *repeat* runs, in microseconds per call.

    CPU time of this process, not wall time: on a shared machine the figures then do not
    count the time spent waiting for a CPU.
    """
    return (
        min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time))
        / number
        * 1e6
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (~2 s)")
    args = parser.parse_args(argv)
    # Many short runs, best kept: robust against other load on a shared machine.
    number, repeat = (500, 8) if args.quick else (1_000, 40)

    # A machine reference, so that figures from different machines can be compared.
    reference = _per_call(lambda: sum(range(1000)), number, repeat)
    print(
        f"Python {sys.version.split()[0]}, best of {repeat} x {number} calls; "
        f"reference sum(range(1000)) = {reference:.1f} µs"
    )
    print(f"{'shape':<28}{'µs/report':>11}{'baseline µs':>13}{'ratio':>8}")
    worst = 0.0
    for name, template, request, baseline in CASES:
        stored = merge(None, parse_request(request, template), now=NOW)

        def report(
            request: Request = request,
            template: Template | None = template,
            stored: Registration = stored,
        ) -> None:
            merge(stored, parse_request(request, template), now=NOW)

        ours = _per_call(report, number, repeat)
        base = _per_call(baseline(request), number, repeat)
        worst = max(worst, ours)
        print(f"{name:<28}{ours:>11.2f}{base:>13.2f}{ours / base:>7.1f}x")
    verdict = "OK" if worst < 20 else "over target"
    print(f"slowest: {worst:.2f} µs per report (target < 20 µs): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
