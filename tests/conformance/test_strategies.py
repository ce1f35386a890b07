"""The shipped strategies and session generators produce what they promise."""

from __future__ import annotations

import base64
import random
from datetime import datetime, timezone

import attrs
from hypothesis import given
from hypothesis import strategies as st

from pushreport_core import Report, Template, parse_request, render_request
from pushreport_core.testing import (
    ROUNDTRIP_TEMPLATES,
    Session,
    StepKind,
    expected_report,
    random_session,
    random_token,
    run_session,
    values_variables,
)
from pushreport_core.testing import strategies as prs

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _comparable(report: Report) -> dict[str, object]:
    fields = attrs.asdict(report, filter=lambda a, _: a.name not in ("password", "shape"))
    fields["password"] = None if report.password is None else report.password.reveal()
    return fields


@given(template=prs.templates(), values=prs.registration_values)
def test_generated_templates_round_trip(template: Template, values: dict) -> None:
    """Whatever template is drawn, the app's request for it reads back as
    ``expected_report`` says."""
    variables = values_variables(values)
    request = render_request(template, variables)
    assert _comparable(parse_request(request, template)) == _comparable(
        expected_report(template, variables, user_agent=request.user_agent)
    )


@given(data=st.data())
def test_templates_cover_every_kind(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(prs.TEMPLATE_KINDS))
    template = data.draw(prs.templates(kinds=[kind]))
    assert "selector" in template.variables
    content_type = {
        "query": "",
        "path": "",
        "form": "",
        "json": "application/json",
        "nested-json": "application/json",
        "text": "text/plain",
        "xml": "application/xml",
    }[kind]
    assert template.content_type.startswith(content_type)
    assert (template.method == "GET") == (kind in ("query", "path"))
    assert bool(template.post_data) == (kind not in ("query", "path"))
    if kind == "query":
        assert "=%selector%" in template.url.partition("?")[2]
    if kind == "path":
        assert "?" not in template.url and "/%selector%" in template.url
    if kind == "nested-json":
        assert '"devices": [{' in template.post_data


@given(token=prs.apns_tokens)
def test_apns_tokens_are_32_bytes(token: str) -> None:
    raw = bytes.fromhex(token) if len(token) == 64 else base64.b64decode(token)
    assert len(raw) == 32


@given(token=prs.fcm_tokens)
def test_fcm_tokens_are_long_base64_of_a_registration_id(token: str) -> None:
    padded = token + "=" * (-len(token) % 4)
    assert b":APA91b" in base64.b64decode(padded, validate=True)
    assert len(token) > 140


def test_token_generators_produce_the_awkward_characters() -> None:
    rng = random.Random(7)
    seen = set("".join(random_token(rng) for _ in range(200)))
    assert {"+", "/", "="} <= seen


def _always_ok(request: object, *, fail: bool, now: datetime) -> object:
    return "dropped" if fail else (200, [], b"")


@given(session=prs.sessions(), name=st.sampled_from(sorted(ROUNDTRIP_TEMPLATES)))
def test_generated_sessions_run_as_planned(session: Session, name: str) -> None:
    """Against a receiver that accepts everything it is sent, every generated session runs
    to its end, every injected failure is followed by a retry that gets through."""
    template = Template.parse(**ROUNDTRIP_TEMPLATES[name])
    run = run_session(session, template, _always_ok, start=T0)
    assert run.conforms, run.first_problem()
    assert run.exchanges[0].expected_ok is not None
    assert session.steps[0].kind in (StepKind.START, StepKind.FAIL_NEXT)
    failed = [e for e in run.exchanges if not e.ok]
    assert all(e.problem == "no answer (dropped)" for e in failed)
    if failed:
        assert run.exchanges[-1].ok, "the session ended backing off"
    if session.platform == "ios":
        assert run.exchanges[0].variables["pushTokenOther"] is None


def test_random_sessions_are_valid_and_varied() -> None:
    template = Template.parse(**ROUNDTRIP_TEMPLATES["query"])
    kinds = set()
    for seed in range(300):
        session = random_session(random.Random(seed))
        kinds.update(step.kind for step in session.steps)
        run = run_session(session, template, _always_ok, start=T0)
        assert run.conforms, (seed, run.first_problem())
    assert kinds == set(StepKind)
    # The same seed gives the same session.
    assert random_session(random.Random(5)) == random_session(random.Random(5))


def test_a_receiver_that_fails_unexpectedly_is_reported() -> None:
    session = random_session(random.Random(1))
    template = Template.parse(**ROUNDTRIP_TEMPLATES["json"])
    run = run_session(
        session,
        template,
        lambda r, fail, now: (200, [("Content-Type", "application/json")], b""),
        start=T0,
    )
    assert not run.conforms
    assert "the body is empty" in (run.first_problem() or "")
    # The model backed off rather than believing the 200: no exchange counted as ok.
    assert run.exchanges and not any(e.ok for e in run.exchanges)
