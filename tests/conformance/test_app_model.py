"""The app model: its transition table is total, its rules are the spec's, it judges
answers as the app does and writes the spec's bytes."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import (
    DEFAULT_BACKOFF,
    TRANSITIONS,
    AppEvent,
    AppModel,
    AppModelError,
    AppState,
    PushReportError,
    Request,
    Template,
    app_variables,
    judge_response,
    parse_request,
    response_problem,
    to_http_bytes,
    transition,
)
from pushreport_core.testing import SPEC_REQUESTS, SPEC_TEMPLATES, SPEC_VALUES, values_variables

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
QUERY = Template.parse(**SPEC_TEMPLATES["query"])
JSON = Template.parse(**SPEC_TEMPLATES["json"])
LATE_TOKEN = SPEC_VALUES["token_msgs"]


def ios_model(template: Template = QUERY, **kwargs: object) -> AppModel:
    """An iOS account whose pushTokenOther is not known at the first start."""
    return AppModel(template, values_variables({**SPEC_VALUES, "token_msgs": None}), **kwargs)  # type: ignore[arg-type]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the transition table ---------------------------------------------------------------------


@given(state=st.sampled_from(AppState), event=st.sampled_from(AppEvent))
def test_transition_is_total(state: AppState, event: AppEvent) -> None:
    """Every event in every state transitions per the table or raises AppModelError naming
    both; never anything else."""
    try:
        new = transition(state, event)
    except AppModelError as e:
        assert event not in TRANSITIONS[state]
        assert str(e) == f"event {event.name} cannot happen in state {state.name}"
        assert (e.state, e.event) == (state, event)
        assert isinstance(e, PushReportError)
    else:
        assert new is TRANSITIONS[state][event]


def _reach(state: AppState) -> AppModel:
    """A model in *state*, reached through its public methods."""
    model = ios_model()
    if state is AppState.IDLE:
        return model
    model.start(now=T0)
    if state is AppState.SENDING:
        return model
    if state is AppState.SENDING_STALE:
        model.token_arrived(LATE_TOKEN, now=T0)
        return model
    if state is AppState.BACKOFF:
        model.response(False, now=T0)
        return model
    model.response(True, now=T0)
    return model


@given(state=st.sampled_from(AppState), event=st.sampled_from(AppEvent))
def test_model_follows_the_table_or_raises_before_changing(
    state: AppState, event: AppEvent
) -> None:
    model = _reach(state)
    assert model.state is state
    before = (model.state, model.failures, model.retry_at, model.in_flight, dict(model.variables))
    try:
        request = model.feed(event, now=at(10_000), token=LATE_TOKEN)
    except AppModelError as e:
        assert event not in TRANSITIONS[state]
        assert (e.state, e.event) == (state, event)
        assert (
            model.state,
            model.failures,
            model.retry_at,
            model.in_flight,
            dict(model.variables),
        ) == before
    else:
        assert model.state is TRANSITIONS[state][event]
        # A report is sent exactly on the transitions into SENDING.
        assert (request is not None) == (model.state is AppState.SENDING)
        if request is not None:
            assert model.in_flight is not None and model.in_flight.request == request


def test_every_state_is_reachable_and_can_stop() -> None:
    reachable = {AppState.IDLE}
    frontier = [AppState.IDLE]
    while frontier:
        for new in TRANSITIONS.get(frontier.pop(), {}).values():
            if new not in reachable:
                reachable.add(new)
                frontier.append(new)
    assert reachable == set(AppState)
    assert all(
        TRANSITIONS[s].get(AppEvent.STOP) is AppState.IDLE
        for s in AppState
        if s is not AppState.IDLE
    )


# -- the app's rules ----------------------------------------------------------------------------


def test_ios_first_report_lacks_pushtokenother_and_a_later_one_fills_it_in() -> None:
    model = ios_model()
    first = model.start(now=T0)
    assert "&token_msgs=&" in first.target
    assert parse_request(first).token_msgs is None
    assert model.response(True, now=T0) is None and model.state is AppState.DONE
    second = model.token_arrived(LATE_TOKEN, now=at(2))
    assert second is not None and model.state is AppState.SENDING
    assert parse_request(second).token_msgs == LATE_TOKEN
    assert model.receive(200, [], b"", now=at(2)) is None
    assert model.state is AppState.DONE


def test_ios_delay_on_a_later_start_drops_the_token_until_it_arrives_again() -> None:
    model = AppModel(QUERY, values_variables(SPEC_VALUES))
    assert parse_request(model.start(now=T0)).token_msgs == LATE_TOKEN
    model.response(True, now=T0)
    model.stop(now=T0)
    late = model.start(now=at(60), token_delayed=True)
    assert parse_request(late).token_msgs is None
    assert model.variables["pushTokenOther"] is model.variables["pushToken"] is None
    model.response(True, now=at(60))
    assert parse_request(model.token_arrived(LATE_TOKEN, now=at(61))).token_msgs == LATE_TOKEN
    model.response(True, now=at(61))
    with pytest.raises(AppModelError, match="^event START cannot happen in state DONE$"):
        model.start(now=at(62), token_delayed=True)
    assert model.variables["pushTokenOther"] == LATE_TOKEN  # untouched by the refusal


def test_token_arriving_while_a_report_is_in_flight_is_reported_after_it() -> None:
    model = ios_model()
    model.start(now=T0)
    assert model.token_arrived(LATE_TOKEN, now=T0) is None
    assert model.state is AppState.SENDING_STALE
    again = model.response(True, now=at(1))
    assert again is not None and parse_request(again).token_msgs == LATE_TOKEN


def test_failure_backs_off_on_the_schedule_and_the_retry_carries_the_late_token() -> None:
    model = ios_model(backoff=(5, 10, 30))
    model.start(now=T0)
    assert model.receive(503, [("Retry-After", "5")], b"locked\n", now=T0) is None
    assert (model.state, model.failures, model.retry_at) == (AppState.BACKOFF, 1, at(5))
    model.token_arrived(LATE_TOKEN, now=at(1))
    assert model.state is AppState.BACKOFF
    with pytest.raises(AppModelError, match="before the retry is due"):
        model.retry_due(now=at(4))
    retry = model.retry_due(now=at(5))
    assert parse_request(retry).token_msgs == LATE_TOKEN
    delays = []
    for n in range(4):
        model.response(False, now=at(100 * n))
        delays.append((model.retry_at - at(100 * n)).total_seconds())
        model.retry_due(now=model.retry_at)
    assert delays == [10, 30, 30, 30]  # capped at the last entry
    model.response(True, now=at(1000))
    assert (model.state, model.failures, model.retry_at) == (AppState.DONE, 0, None)


def test_default_backoff_grows_and_is_capped() -> None:
    model = ios_model()
    assert model.backoff == DEFAULT_BACKOFF
    delays = [model.retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[-1] == delays[-4] == 300


def test_a_2xx_with_a_body_not_matching_its_content_type_is_a_failure() -> None:
    model = ios_model()
    model.start(now=T0)
    model.receive(200, {"Content-Type": "application/json"}, b"", now=T0)
    assert model.state is AppState.BACKOFF


def test_report_on_every_start() -> None:
    model = AppModel(QUERY, values_variables(SPEC_VALUES))
    for n in range(3):
        assert model.start(now=at(n)) == model.in_flight.request
        model.response(True, now=at(n))
        model.stop(now=at(n))
    with pytest.raises(AppModelError, match="^event STOP cannot happen in state IDLE$"):
        model.stop(now=at(9))


def test_bad_backoff_and_missing_token_are_refused() -> None:
    with pytest.raises(ValueError, match="backoff"):
        AppModel(QUERY, {}, backoff=())
    with pytest.raises(ValueError, match="backoff"):
        AppModel(QUERY, {}, backoff=(5, 0))
    model = _reach(AppState.DONE)
    with pytest.raises(ValueError, match="needs the token"):
        model.feed(AppEvent.TOKEN_ARRIVED, now=T0)
    assert model.state is AppState.DONE


# -- the request on the wire ------------------------------------------------------------------

SPEC_GET_BYTES = (
    b"GET /token/?username=johndow&password=12345678&selector="
    b"12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14&token_msgs="
    b"QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J&appid_msgs="
    b"com.cloudsoftphone.app&token_calls=Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
    b"&appid_calls=com.cloudsoftphone.app.pushkit HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Connection: close\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"User-Agent: CloudSoftphone/1.5.6\r\n"
    b"\r\n"
)


def test_http_bytes_of_the_spec_get_example() -> None:
    assert to_http_bytes(SPEC_REQUESTS["GET"], "example.com") == SPEC_GET_BYTES


def test_http_bytes_of_the_spec_json_example() -> None:
    request = SPEC_REQUESTS["POST JSON"]
    raw = to_http_bytes(request, "example.com")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /token/johndow/ HTTP/1.1",
        b"Host: example.com",
        b"Connection: close",
        b"Cache-Control: max-age=0",
        b"User-Agent: CloudSoftphone/1.5.6",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
    ]
    assert body == request.body


def test_rendered_json_request_and_odd_targets() -> None:
    model = AppModel(
        JSON,
        app_variables(
            selector=SPEC_VALUES["selector"], username='jo "d" é', token_msgs="ab+/cd=="
        ),
    )
    request = model.start(now=T0)
    assert request.content_type == "application/json"
    assert b'"username" : "jo \\"d\\" \xc3\xa9"' in request.body
    assert request.target == "/token/jo%20%22d%22%20%C3%A9/"
    raw = to_http_bytes(Request(method="PUT", target="/t\u00e9st/?a=%2F"), "h:8080")
    assert raw.startswith(b"PUT /t%C3%A9st/?a=%2F HTTP/1.1\r\nHost: h:8080\r\n")
    assert b"Content-Length: 0\r\n" in raw and b"User-Agent" not in raw
    with pytest.raises(ValueError, match="line break"):
        to_http_bytes(Request(method="GET", target="/", user_agent="x\r\nEvil: 1"), "h")


# -- judging answers ----------------------------------------------------------------------------

JUDGED = [
    # status, headers, body, method, problem (None: success)
    (200, [], b"", None, None),
    (204, [], b"", None, None),
    (200, [], b"anything at all \xff", None, None),
    (200, [("Content-Type", "application/json")], b"{}", None, None),
    (201, [("content-type", "application/problem+json")], b'{"a": [1]}', None, None),
    (
        200,
        [("Content-Type", "application/json")],
        b"",
        None,
        "Content-Type application/json needs a JSON body (at least {}); the body is empty",
    ),
    (
        200,
        [("Content-Type", "application/json; charset=utf-8")],
        b"  \n",
        None,
        "Content-Type application/json needs a JSON body (at least {}); the body is empty",
    ),
    (
        200,
        [("Content-Type", "application/json")],
        b"OK",
        None,
        "Content-Type application/json needs a JSON body; the body is not JSON "
        "(Expecting value: line 1 column 1 (char 0))",
    ),
    (200, [("Content-Type", "application/json")], b"", "HEAD", None),
    (200, [("Content-Type", "text/xml")], b"<ok/>", None, None),
    (
        200,
        [("Content-Type", "application/xml")],
        b"<ok>",
        None,
        "Content-Type application/xml needs well-formed XML; the body is not "
        "(no element found: line 1, column 4)",
    ),
    (
        200,
        [("Content-Type", "application/soap+xml")],
        b"",
        None,
        "Content-Type application/soap+xml needs an XML body; the body is empty",
    ),
    (200, [("Content-Type", "text/plain")], "d\u00e9j\u00e0".encode(), None, None),
    (
        200,
        [("Content-Type", "text/plain")],
        b"\xff",
        None,
        "Content-Type text/plain: the body is not valid utf-8",
    ),
    (200, [("Content-Type", "text/plain; charset=latin-1")], b"\xff", None, None),
    (
        200,
        [("Content-Type", "text/plain; charset=klingon")],
        b"x",
        None,
        "Content-Type text/plain: unknown charset 'klingon'",
    ),
    (200, [("Content-Type", "text/html")], b"", None, None),
    (200, [("Content-Type", "application/octet-stream")], b"\x00\xff", None, None),
    (
        200,
        [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        gzip.compress(b"{}", mtime=0),
        None,
        None,
    ),
    (
        200,
        [("Content-Type", "application/json"), ("Content-Encoding", "br")],
        b"x",
        None,
        "Content-Type application/json: the body cannot be decoded "
        "(Content-Encoding br cannot be decoded)",
    ),
    (199, [], b"", None, "status 199 is not 2xx"),
    (300, [], b"", None, "status 300 is not 2xx"),
    (404, [], b"", None, "status 404 is not 2xx"),
    (503, [("Content-Type", "application/json")], b"{}", None, "status 503 is not 2xx"),
]


@pytest.mark.parametrize(("status", "headers", "body", "method", "problem"), JUDGED)
def test_judge_response(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    method: str | None,
    problem: str | None,
) -> None:
    assert response_problem(status, headers, body, method=method) == problem
    assert judge_response(status, dict(headers), body, method=method) is (problem is None)


def test_xml_entity_declarations_are_refused() -> None:
    bomb = b'<!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>'
    assert not judge_response(200, [("Content-Type", "text/xml")], bomb)


# -- purity -----------------------------------------------------------------------------------


def test_core_and_check_import_without_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None; sys.modules['pytest'] = None\n"
        "import pushreport_core, pushreport_core.testing, pushreport._check\n"
        "from pushreport._cli import main\n"
        "assert 'hypothesis' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    import pushreport_core.testing.strategies\n"
        "except ImportError:\n"
        "    print('strategies need hypothesis')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "strategies need hypothesis\n"
