"""The conformance kit, pure part: the spec's examples, what a receiver must store, and
whole app sessions run through the app model (:class:`pushreport_core.AppModel`).

Like the core, nothing here opens a socket, reads a clock or needs hypothesis: a
session is generated from a ``random.Random`` (:func:`random_session`) and run against
any ``deliver`` callable (:func:`run_session`), so ``pushreport check`` uses it on a
plain install. The hypothesis strategies live in
:mod:`pushreport_core.testing.strategies` (install the ``testing`` extra); the storage
suite in :mod:`pushreport.testing`.
"""

from __future__ import annotations

import base64
import enum
import random
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import attrs

from .._client import (
    DEFAULT_BACKOFF,
    AppEvent,
    AppModel,
    AppState,
    app_variables,
    response_problem,
    transition,
)
from .._errors import AppModelError
from .._fields import PASSWORD_VARIABLE, REPORT_FIELDS, VARIABLE_FIELDS
from .._grammar import is_unknown
from .._templates import Template
from .._values import Report, Request, Secret

__all__ = [
    "SPEC_SELECTOR",
    "SPEC_VALUES",
    "SPEC_TEMPLATES",
    "SPEC_REQUESTS",
    "ROUNDTRIP_TEMPLATES",
    "DEFAULT_COMPATIBLE",
    "expected_report",
    "values_variables",
    "StepKind",
    "Step",
    "Session",
    "Exchange",
    "SessionRun",
    "Answer",
    "build_session",
    "random_session",
    "random_values",
    "random_token",
    "run_session",
]

# -- the specification's own examples ---------------------------------------------------

SPEC_SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"

#: The values of the spec's examples, by report field.
SPEC_VALUES: Mapping[str, str] = {
    "selector": SPEC_SELECTOR,
    "username": "johndow",
    "password": "12345678",
    "token_msgs": "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",
    "appid_msgs": "com.cloudsoftphone.app",
    "token_calls": "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    "appid_calls": "com.cloudsoftphone.app.pushkit",
}

_SPEC_PAIRS = (
    "username=%account[username]%&selector=%selector%"
    "&token_calls=%pushTokenIncomingCall%&appid_calls=%pushappid_incoming_call%"
    "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
)

#: The spec's Account XML examples (unescaped), one per shape the default shapes read.
SPEC_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    # "Example (with query-string and both token/appid pairs)"
    "query": {"url": f"https://example.com/token/?{_SPEC_PAIRS}"},
    # "Example (without query-string and with just non-incoming-call token/appid)"
    "path": {
        "url": "https://example.com/pushToken/%account[username]%/%selector%/"
        "%pushToken%&appid=%pushappid%"
    },
    # "Example ( for application/x-www-form-urlencoded )"
    "form": {"url": "https://example.com/token/", "post_data": _SPEC_PAIRS},
    # "Example ( for application/json )", sent where the spec's request example goes.
    "json": {
        "url": "https://example.com/token/%account[username]%/",
        "content_type": "application/json",
        "post_data": '{ "username" : "%account[username]%", "token_calls" : '
        '"%pushTokenIncomingCall%", "token_msgs" : "%pushTokenOther%", '
        '"selector" : "%selector%", "appId_calls": '
        '"%pushappid_incoming_call%", "appId_msgs" : "%pushappid_other%" }',
    },
}

_SPEC_JSON_BODY = (
    b"{\n"
    b'    "token_msgs"    : "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",\n'
    b'    "appid_msgs"    : "com.cloudsoftphone.app",\n'
    b'    "token_calls"   : "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",\n'
    b'    "appid_calls"   : "com.cloudsoftphone.app.pushkit",\n'
    b'    "selector"      : "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"\n'
    b"}"
)

#: The spec's two request examples, as the app sends them ("GET method", "POST method,
#: JSON"); the default shapes must accept both.
SPEC_REQUESTS: Mapping[str, Request] = {
    "GET": Request(
        method="GET",
        target="/token/?username=johndow&password=12345678&selector="
        "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14&token_msgs="
        "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J&appid_msgs="
        "com.cloudsoftphone.app&token_calls=Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wx"
        "krY%3D&appid_calls=com.cloudsoftphone.app.pushkit",
        user_agent="CloudSoftphone/1.5.6",
    ),
    "POST JSON": Request(
        method="POST",
        target="/token/johndow/",
        body=_SPEC_JSON_BODY,
        content_type="application/json",
        user_agent="CloudSoftphone/1.5.6",
    ),
}

_BASE = "https://push.example.com"

#: Every kind of template the core supports, as Account XML values (unescaped).
ROUNDTRIP_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "query": {
        "url": (
            f"{_BASE}/token/?username=%account[username]%&password=%account[password]%"
            "&selector=%selector%&token_calls=%pushTokenIncomingCall%"
            "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
            "&appid_msgs=%pushappid_other%"
        )
    },
    "path": {
        "url": f"{_BASE}/pushToken/%account[username]%/%selector%/%pushToken%&appid=%pushappid%"
    },
    "form": {
        "url": f"{_BASE}/token/",
        "post_data": (
            "username=%account[username]%&selector=%selector%&token_calls=%pushTokenIncomingCall%"
            "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%"
            "&appid_msgs=%pushappid_other%"
        ),
    },
    "json": {
        "url": f"{_BASE}/token/%account[username]%/",
        "content_type": "application/json",
        "post_data": (
            '{ "username" : "%account[username]%", "token_calls" : '
            '"%pushTokenIncomingCall%", "token_msgs" : "%pushTokenOther%", "selector" : '
            '"%selector%", "appId_calls": "%pushappid_incoming_call%", "appId_msgs" : '
            '"%pushappid_other%" }'
        ),
    },
    "nested-json": {
        "url": f"{_BASE}/v2/register",
        "content_type": "application/json",
        "method": "PUT",
        "post_data": (
            '{"account": {"user": "%account[username]%", "id": "%selector%",'
            ' "secret": "%account[password]%"},'
            ' "devices": [{"kind": "voip", "token": "%pushTokenIncomingCall%",'
            ' "app": "%pushappid_incoming_call%"},'
            ' {"kind": "remote", "token": "%pushTokenOther%",'
            ' "app": "%pushappid_other%"}],'
            ' "install": %installid%, "version": 2, "debug": false}'
        ),
    },
    "text": {
        "url": f"{_BASE}/text/?selector=%selector%&user=%account[username]%",
        "content_type": "text/plain; charset=utf-8",
        "post_data": (
            "calls %pushTokenIncomingCall% %pushappid_incoming_call%;\n"
            "msgs %pushTokenOther% %pushappid_other%;\n"
        ),
    },
    "xml": {
        "url": f"{_BASE}/xml/",
        "content_type": "application/xml",
        "post_data": (
            "<push><selector>%selector%</selector><user>%account[username]%</user>"
            "<calls app='%pushappid_incoming_call%'>%pushTokenIncomingCall%</calls>"
            "<msgs app='%pushappid_other%'>%pushTokenOther%</msgs></push>"
        ),
    },
}

#: The templates whose requests the default shapes (no template configured) also read.
DEFAULT_COMPATIBLE = ("query", "path", "form", "json")


# -- what a receiver must make of a request ------------------------------------------------


def values_variables(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """The template variables for report-field *values* (``selector``, ``username``,
    ``token_msgs``, ..., ``password``; any other key is a variable of its own, such as
    ``installid``)."""
    fields = (*REPORT_FIELDS, "password")
    return app_variables(
        **{f: values.get(f) for f in fields},
        extra={k: v for k, v in values.items() if k not in fields},
    )


def expected_report(
    template: Template, variables: Mapping[str, str | None], *, user_agent: str | None = None
) -> Report:
    """The report a receiver configured with *template* must read from the request the
    app renders with *variables*: the fields the template carries take their values; a
    value that is not known (``None``, empty, ``null``...) is ``None``."""
    fields: dict[str, str] = {}
    extra: dict[str, str] = {}
    password: str | None = None
    for variable in sorted(template.variables):
        value = variables.get(variable)
        if is_unknown(value):
            continue
        assert value is not None
        field = VARIABLE_FIELDS.get(variable)
        if field is not None:
            fields[field] = value
        elif variable == PASSWORD_VARIABLE:
            password = value
        else:
            extra[variable] = value
    return Report(
        selector=fields.pop("selector"),
        extra=extra,
        user_agent=user_agent,
        password=None if password is None else Secret(password),
        **fields,
    )


# -- app sessions ----------------------------------------------------------------------------


class StepKind(enum.Enum):
    """One step of an app session."""

    #: The app is newly started (it reports).
    START = "start"
    #: A token arrives: the late iOS ``pushTokenOther``, or a rotated one.
    TOKEN = "token"
    #: The next exchange fails (the harness injects it: a storage failure, a dropped
    #: connection); the app backs off.
    FAIL_NEXT = "fail"
    #: The back-off timer fires: the app retries.
    RETRY = "retry"
    #: The app is closed.
    STOP = "stop"
    #: Time passes.
    WAIT = "wait"


@attrs.frozen(kw_only=True)
class Step:
    kind: StepKind
    #: For ``TOKEN``: the token that arrives.
    token: str | None = None
    #: For ``START`` (iOS): ``pushTokenOther`` is not known yet at this start.
    token_delayed: bool = False
    #: For ``WAIT``: seconds.
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind is StepKind.WAIT:
            return f"wait {self.seconds:g}s"
        if self.kind is StepKind.TOKEN:
            return "pushTokenOther arrives"
        if self.kind is StepKind.START and self.token_delayed:
            return "start without pushTokenOther"
        return {
            StepKind.START: "start",
            StepKind.FAIL_NEXT: "next exchange fails",
            StepKind.RETRY: "retry",
            StepKind.STOP: "stop",
        }[self.kind]


@attrs.frozen(kw_only=True)
class Session:
    """One account of the app over a run: what it knows at the first start, and what
    happens (starts, the late iOS token, failures, retries, stops)."""

    #: Report-field values known at the first start (``token_msgs`` is ``None`` when
    #: the iOS delay holds it back).
    values: Mapping[str, str | None]
    steps: tuple[Step, ...]
    platform: str = "android"

    def variables(self) -> dict[str, str | None]:
        return values_variables(self.values)

    def describe(self) -> str:
        return ", ".join(step.describe() for step in self.steps)


def build_session(
    values: Mapping[str, str | None],
    *,
    choose: Callable[[Sequence[Any]], Any],
    make_token: Callable[[], str],
    late_token: str | None = None,
    steps: int = 8,
) -> Session:
    """A valid session of *steps* steps, each chosen by *choose* among those the app can
    take then (``random.Random().choice``, or a hypothesis draw).

    With *late_token*, ``values`` lack ``token_msgs`` and the token arrives later (iOS).
    Generation assumes every exchange succeeds unless a ``FAIL_NEXT`` precedes it; the
    session has at least one exchange and never ends on a failed one.
    """
    state = AppState.IDLE
    fail_next = False
    ios = late_token is not None
    pending = late_token
    current = late_token if ios else values.get("token_msgs")
    out: list[Step] = []

    last_failed: bool | None = None  # how the last exchange went; None: none yet

    def exchange(state: AppState) -> AppState:
        nonlocal fail_next, last_failed
        while state is AppState.SENDING:
            state = transition(
                state, AppEvent.RESPONSE_FAILED if fail_next else AppEvent.RESPONSE_OK
            )
            last_failed, fail_next = fail_next, False
        return state

    while len(out) < steps:
        # The most interesting kinds first: a hypothesis draw shrinks toward the front.
        if state is AppState.IDLE:
            options = [StepKind.START]
        else:
            options = [StepKind.TOKEN] if pending is not None else []
            if state is AppState.BACKOFF:
                options.append(StepKind.RETRY)
            options += [StepKind.STOP, StepKind.WAIT]
            if pending is None:
                options.append(StepKind.TOKEN)  # a rotated token, rarer
        if not fail_next:
            options.append(StepKind.FAIL_NEXT)
        kind = choose(options)
        if kind is StepKind.START:
            # On iOS the delay may strike at every start, not only the first.
            delayed = bool(ios and out and pending is None and choose((False, True)))
            if delayed:
                pending = current
            out.append(Step(kind=kind, token_delayed=delayed))
            state = exchange(transition(state, AppEvent.START))
        elif kind is StepKind.TOKEN:
            token = pending if pending is not None else make_token()
            pending, current = None, token
            out.append(Step(kind=kind, token=token))
            state = exchange(transition(state, AppEvent.TOKEN_ARRIVED))
        elif kind is StepKind.RETRY:
            out.append(Step(kind=kind))
            state = exchange(transition(state, AppEvent.RETRY_DUE))
        elif kind is StepKind.STOP:
            out.append(Step(kind=kind))
            state = transition(state, AppEvent.STOP)
        elif kind is StepKind.WAIT:
            out.append(Step(kind=kind, seconds=float(choose((1, 5, 60, 3600)))))
        else:
            out.append(Step(kind=kind))
            fail_next = True
    # Settle, so that a session never ends on a failure: one backing off retries until
    # it gets through; a stopped one starts again (and reports).
    if fail_next:  # a failure that no exchange followed: drop it
        del out[max(i for i, step in enumerate(out) if step.kind is StepKind.FAIL_NEXT)]
        fail_next = False
    while state is AppState.BACKOFF:
        out.append(Step(kind=StepKind.RETRY))
        state = exchange(transition(state, AppEvent.RETRY_DUE))
    if state is AppState.IDLE and last_failed is not False:
        out.append(Step(kind=StepKind.START))
        state = exchange(transition(state, AppEvent.START))
    return Session(
        values=dict(values),
        steps=tuple(out),
        platform="ios" if late_token is not None else "android",
    )


_HEX = "0123456789ABCDEF"


def random_token(rng: random.Random) -> str:
    """A push token: APNs (32 bytes, hex or base64) or FCM-style (long base64 of an
    ``APA91b...`` registration id), so ``+``, ``/`` and ``=`` turn up."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(32).hex()
    if kind == 1:
        return base64.b64encode(rng.randbytes(32)).decode("ascii")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    fcm = (
        "".join(rng.choice(alphabet) for _ in range(11))
        + ":APA91b"
        + "".join(rng.choice(alphabet) for _ in range(rng.randrange(120, 150)))
    )
    return base64.b64encode(fcm.encode("ascii")).decode("ascii")


_AWKWARD_USERNAMES = (
    "{n}",
    "{n}@example.com",
    "{n}+sip",
    "{n} with space",
    "{n}/é&x=1",
    "{n}%41\"'",
)


def random_values(rng: random.Random, *, username_prefix: str = "user") -> dict[str, str]:
    """Report-field values of one account: selector, username (awkward characters
    included), both token pairs."""
    selector = (
        "".join(rng.choice(_HEX) for _ in range(40))
        + ":"
        + "".join(rng.choice(_HEX) for _ in range(8))
    )
    name = f"{username_prefix}-{rng.randrange(10**6):06d}"
    return {
        "selector": selector,
        "username": rng.choice(_AWKWARD_USERNAMES).format(n=name),
        "token_calls": random_token(rng),
        "appid_calls": "com.cloudsoftphone.app.pushkit",
        "token_msgs": random_token(rng),
        "appid_msgs": "com.cloudsoftphone.app",
    }


def random_session(
    rng: random.Random, *, steps: int = 8, username_prefix: str = "user"
) -> Session:
    """A session generated from *rng* alone (no hypothesis): half of them iOS ones whose
    ``pushTokenOther`` arrives after the first report."""
    values: dict[str, str | None] = dict(random_values(rng, username_prefix=username_prefix))
    late = None
    if rng.random() < 0.5:
        late, values["token_msgs"] = values["token_msgs"], None
    return build_session(
        values,
        choose=rng.choice,
        make_token=lambda: random_token(rng),
        late_token=late,
        steps=steps,
    )


#: What a ``deliver`` callable returns: ``(status, headers, body)``; or, when no answer
#: came (the connection failed), ``None`` or a string saying why.
Answer = Union[tuple[int, Union[Iterable[tuple[str, str]], Mapping[str, str]], bytes], str, None]


@attrs.frozen(kw_only=True)
class Exchange:
    """One request of a session and how it went."""

    step: int
    request: Request
    #: The variables the request was rendered with.
    variables: Mapping[str, str | None]
    at: datetime
    #: Whether the session meant this exchange to succeed (no ``FAIL_NEXT`` before it).
    expected_ok: bool
    #: Why the app counted it as failed, or ``None``.
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def conforms(self) -> bool:
        return self.ok == self.expected_ok


@attrs.frozen(kw_only=True)
class SessionRun:
    session: Session
    exchanges: tuple[Exchange, ...]
    #: Set when the session could not go on as generated (after a failure it did not
    #: expect, the app is in another state than planned).
    aborted: str | None = None

    @property
    def conforms(self) -> bool:
        return self.aborted is None and all(e.conforms for e in self.exchanges)

    def first_problem(self) -> str | None:
        """A one-line account of the first exchange that did not go as the app needs."""
        for e in self.exchanges:
            if not e.conforms:
                what = self.session.steps[e.step].describe()
                if e.expected_ok:
                    return f"step {e.step + 1} ({what}): {e.problem}"
                return (
                    f"step {e.step + 1} ({what}): the exchange was made to fail, yet "
                    "the app counted it as a success"
                )
        return self.aborted


def run_session(
    session: Session,
    template: Template,
    deliver: Callable[..., Answer],
    *,
    start: datetime,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    user_agent: str | None = None,
) -> SessionRun:
    """Run *session* through an :class:`AppModel` for *template*.

    ``deliver(request, fail=..., now=...)`` sends one request and returns
    ``(status, headers, body)``, or ``None`` or a reason when no answer came; with
    ``fail=True`` it must make
    the exchange fail (inject a storage failure, drop the connection). Time starts at
    *start* and moves only as the session says (``WAIT``, retries when due).
    """
    kwargs: dict[str, Any] = {"backoff": tuple(backoff)}
    if user_agent is not None:
        kwargs["user_agent"] = user_agent
    model = AppModel(template, session.variables(), **kwargs)  # type: ignore[arg-type]
    now = start
    fail_next = False
    exchanges: list[Exchange] = []
    for index, step in enumerate(session.steps):
        try:
            request: Request | None = None
            if step.kind is StepKind.FAIL_NEXT:
                fail_next = True
            elif step.kind is StepKind.WAIT:
                now += timedelta(seconds=step.seconds)
            elif step.kind is StepKind.START:
                request = model.start(now=now, token_delayed=step.token_delayed)
            elif step.kind is StepKind.TOKEN:
                assert step.token is not None
                request = model.token_arrived(step.token, now=now)
            elif step.kind is StepKind.RETRY:
                if model.retry_at is not None and model.retry_at > now:
                    now = model.retry_at
                request = model.retry_due(now=now)
            elif step.kind is StepKind.STOP:
                model.stop(now=now)
            while request is not None:
                sent = model.in_flight
                assert sent is not None
                answer = deliver(request, fail=fail_next, now=now)
                if answer is None or isinstance(answer, str):
                    problem: str | None = f"no answer ({answer or 'the connection failed'})"
                else:
                    status, headers, body = answer
                    problem = response_problem(status, headers, body, method=request.method)
                exchanges.append(
                    Exchange(
                        step=index,
                        request=request,
                        variables=sent.variables,
                        at=now,
                        expected_ok=not fail_next,
                        problem=problem,
                    )
                )
                fail_next = False
                request = model.response(problem is None, now=now)
        except AppModelError as e:
            return SessionRun(
                session=session,
                exchanges=tuple(exchanges),
                aborted=f"step {index + 1} ({step.describe()}): the app is "
                f"not where the session expects it: {e}",
            )
    return SessionRun(session=session, exchanges=tuple(exchanges))
