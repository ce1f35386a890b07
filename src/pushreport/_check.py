"""``pushreport check URL``: the app model pointed at a running receiver, over HTTP.

It replays the spec's examples, sends reports the receiver must refuse, and runs app
sessions generated from a seed (starts, the late iOS ``pushTokenOther``, connections
dropped mid-request and the retries after them), judging every answer the way the app
does. Storage cannot be seen over HTTP, so only what HTTP shows is checked: a valid
report is answered with a success as the app judges it (2xx, body matching its
Content-Type), an invalid one with a non-2xx status, and a retry after a failure gets
through.

It needs nothing but the standard library and the pure core (no hypothesis): sessions
come from ``random.Random(seed)``.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import socket
import ssl
from datetime import datetime, timezone
from typing import Any, Callable, TextIO
from urllib.parse import urlsplit

import attrs

from pushreport_core import Request, Template, render_request, response_problem, to_http_bytes
from pushreport_core.testing import (
    SPEC_REQUESTS,
    SPEC_SELECTOR,
    SPEC_TEMPLATES,
    SPEC_VALUES,
    Answer,
    random_session,
    run_session,
    values_variables,
)

__all__ = [
    "Target",
    "CheckResult",
    "parse_target",
    "exchange",
    "run_checks",
    "run_check",
    "USERNAME_PREFIX",
    "DEFAULT_SESSIONS",
    "check_json",
]

#: Usernames of the registrations the generated sessions store start with this.
USERNAME_PREFIX = "pushreport-check"
DEFAULT_SESSIONS = 20
#: The most of an answer's body that is read.
MAX_ANSWER = 1024 * 1024
_VIRTUAL_START = datetime(2024, 1, 1, tzinfo=timezone.utc)
_SPEC_NAMES = {"query": "query string", "path": "path", "form": "form body", "json": "JSON body"}


@attrs.frozen(kw_only=True)
class Target:
    """Where the receiver listens: the URL given on the command line."""

    scheme: str
    host: str
    port: int
    #: A path the receiver is mounted under, put in front of every request target.
    prefix: str = ""

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    """``http://127.0.0.1:8080`` → :class:`Target`; ``ValueError`` when it is not an
    http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the receiver's base URL, without a query")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return Target(
        scheme=parts.scheme, host=parts.hostname, port=port, prefix=parts.path.rstrip("/")
    )


def exchange(
    target: Target, request: Request, *, timeout: float = 10.0, drop: bool = False
) -> Answer:
    """Send *request* over a new connection; return ``(status, headers, body)``, or why
    no answer came. With *drop*, the connection is closed halfway through the request,
    as when the phone loses its network: the app sees no answer."""
    raw = to_http_bytes(
        attrs.evolve(request, target=target.prefix + request.target), target.host_header
    )
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as e:
        return f"cannot connect to {target.host_header}: {e.strerror or e}"
    try:
        if target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
        if drop:
            # The method alone: no server can act on that, however lenient.
            sock.sendall(raw[: len(request.method)])
            return "the connection was dropped mid-request"
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=request.method)
        try:
            response.begin()
            body = response.read(MAX_ANSWER)
        finally:
            response.close()
        return response.status, response.getheaders(), body
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        sock.close()


@attrs.frozen(kw_only=True)
class CheckResult:
    name: str
    #: Why it does not conform; ``None`` when it does.
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"PASS  {self.name}" if self.ok else f"FAIL  {self.name}: {self.problem}"


def _judge(answer: Answer, method: str) -> str | None:
    if answer is None or isinstance(answer, str):
        return f"no answer ({answer or 'the connection failed'})"
    status, headers, body = answer
    return response_problem(status, headers, body, method=method)


def _refused(answer: Answer) -> str | None:
    if answer is None or isinstance(answer, str):
        return f"no answer ({answer or 'the connection failed'})"
    status = answer[0]
    if 200 <= status <= 299:
        return (
            f"answered {status}: an invalid report must be refused with a non-2xx "
            "status, or nothing tells the provider its Account XML is broken"
        )
    return None


def _spec_templates() -> dict[str, Template]:
    # (The Account XML values only: **xml never holds require or require_token.)
    return {kind: Template.parse(**xml) for kind, xml in SPEC_TEMPLATES.items()}  # type: ignore[arg-type]


def run_checks(
    target: Target,
    *,
    template: Template | None = None,
    sessions: int = DEFAULT_SESSIONS,
    seed: int = 0,
    timeout: float = 10.0,
    report: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check against *target*; *report* is called with each result as it
    comes. *template* is the configured reporter (``None``: the default shapes, checked
    with the spec's examples)."""
    results: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        if report is not None:
            report(result)

    def send(request: Request) -> Answer:
        return exchange(target, request, timeout=timeout)

    spec_variables = values_variables(SPEC_VALUES)
    templates = {"configured": template} if template is not None else _spec_templates()
    # 1. The spec's examples: each must be answered with a success.
    if template is None:
        for name, request in SPEC_REQUESTS.items():
            record(
                CheckResult(
                    name=f"spec request example: {name}",
                    problem=_judge(send(request), request.method),
                )
            )
        for kind, tpl in templates.items():
            request = render_request(tpl, spec_variables)
            record(
                CheckResult(
                    name=f"spec Account XML example: {_SPEC_NAMES[kind]}",
                    problem=_judge(send(request), request.method),
                )
            )
    else:
        request = render_request(template, spec_variables)
        record(
            CheckResult(
                name="the spec's values through the configured template",
                problem=_judge(send(request), request.method),
            )
        )
    # 2. Reports the receiver must refuse.
    invalid = {
        "no selector": None,
        "a selector that is not a SHA1 hash with a suffix": "not-a-selector",
    }
    for kind, tpl in templates.items():
        for what, selector in invalid.items():
            request = render_request(tpl, {**spec_variables, "selector": selector})
            where = "" if template is not None else f" ({_SPEC_NAMES[kind]})"
            record(
                CheckResult(
                    name=f"refuses a report with {what}{where}", problem=_refused(send(request))
                )
            )
    # 3. App sessions.
    rng = random.Random(seed)
    kinds = list(templates)

    def deliver(request: Request, *, fail: bool, now: datetime) -> Answer:
        return exchange(target, request, timeout=timeout, drop=fail)

    for n in range(1, sessions + 1):
        session = random_session(rng, username_prefix=USERNAME_PREFIX)
        kind = kinds[(n - 1) % len(kinds)]
        run = run_session(session, templates[kind], deliver, start=_VIRTUAL_START)
        label = f"session {n} [{kind}, {session.platform}]: {session.describe()}"
        record(
            CheckResult(
                name=label,
                problem=None if run.conforms else run.first_problem() or "did not conform",
            )
        )
    return results


def run_check(
    url: str,
    *,
    template: Template | None = None,
    sessions: int = DEFAULT_SESSIONS,
    seed: int | None = None,
    timeout: float = 10.0,
    out: TextIO,
    err: TextIO | None = None,
    as_json: bool = False,
) -> int:
    """The ``pushreport check`` command: print one line per check and a summary; return
    0 when everything conforms, 1 otherwise, 2 for an unusable URL (one line, on *err*
    with *as_json*). *as_json*: print one JSON object instead (:func:`check_json`)."""
    err = out if err is None else err
    try:
        target = parse_target(url)
    except ValueError as e:
        print(f"pushreport: {e}", file=err)
        return 2
    if sessions < 0:
        print("pushreport: --sessions must be 0 or more", file=err)
        return 2
    if seed is None:
        seed = secrets.randbelow(2**31)
    shapes = "the configured template" if template is not None else "the default shapes"

    def finish(results: list[CheckResult]) -> int:
        failed = sum(not r.ok for r in results)
        if as_json:
            document = check_json(url, template is not None, sessions, seed, results)
            json.dump(document, out, ensure_ascii=False, indent=2)
            out.write("\n")
        return 0 if failed == 0 else 1

    if not as_json:
        print(
            f"checking {url} against the app model ({shapes}; {sessions} sessions, seed {seed})",
            file=out,
        )
    # One probe first: when nothing listens, one line says so.
    probe = exchange(
        target,
        render_request(template or _spec_templates()["query"], values_variables(SPEC_VALUES)),
        timeout=timeout,
    )
    if isinstance(probe, str) and probe.startswith("cannot connect"):
        if not as_json:
            print(f"FAIL  {probe}", file=out)
            print("0 checks passed, 1 failed", file=out)
        return finish([CheckResult(name="connect", problem=probe)])

    def show(result: CheckResult) -> None:
        print(result.line(), file=out, flush=True)

    results = run_checks(
        target,
        template=template,
        sessions=sessions,
        seed=seed,
        timeout=timeout,
        report=None if as_json else show,
    )
    if as_json:
        return finish(results)
    failed = sum(not r.ok for r in results)
    print(
        f"{len(results)} checks: {len(results) - failed} passed, {failed} failed"
        + (f" (rerun with --seed {seed})" if failed else ""),
        file=out,
    )
    print(
        f"note: the checks stored test registrations (usernames starting with "
        f"{USERNAME_PREFIX!r}, and the spec example's selector {SPEC_SELECTOR})",
        file=out,
    )
    return 0 if failed == 0 else 1


def check_json(
    url: str, configured: bool, sessions: int, seed: int, results: list[CheckResult]
) -> dict[str, Any]:
    """``pushreport check --json``'s object: ``url``, ``shapes`` (``"configured"`` or
    ``"default"``), ``sessions``, ``seed``, ``passed``, ``failed``, ``checks`` (each
    ``name``, ``ok``, ``problem``: ``null`` when it passed) and ``test_usernames``,
    the prefix of the usernames the checks stored."""
    failed = sum(not r.ok for r in results)
    return {
        "url": url,
        "shapes": "configured" if configured else "default",
        "sessions": sessions,
        "seed": seed,
        "passed": len(results) - failed,
        "failed": failed,
        "checks": [{"name": r.name, "ok": r.ok, "problem": r.problem} for r in results],
        "test_usernames": USERNAME_PREFIX,
    }
