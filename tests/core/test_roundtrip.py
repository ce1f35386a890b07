"""Property: whatever the app knows, rendered through any supported template, reads back
as the same values (``None`` stays ``None``)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import example, given

from pushreport_core import Report, Template, parse_request, render_request
from pushreport_core.testing import strategies as s

TEMPLATES = {name: Template.parse(**xml) for name, xml in s.ROUNDTRIP_TEMPLATES.items()}
RUNS = [pytest.param(name, "template", id=f"{name}-template") for name in TEMPLATES] + [
    pytest.param(name, "default", id=f"{name}-default") for name in s.DEFAULT_COMPATIBLE
]

AWKWARD = {
    "selector": "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14",
    "username": ' a+b/c=d&e"f\\g %41 ü日🎉 ',
    "token_calls": "ab+/cdef==",
    "appid_calls": "com.cloudsoftphone.app.pushkit",
    "token_msgs": "ab-_cdef",
    "appid_msgs": "com.cloudsoftphone.app",
    "password": "p@ss w&rd+",
    "installid": "%2F&x",
}


def _fields(report: Report) -> dict[str, Any]:
    fields = attrs.asdict(report, filter=lambda a, _: a.name not in ("user_agent", "shape"))
    fields["password"] = None if report.password is None else report.password.reveal()
    return fields


@pytest.mark.parametrize(("name", "mode"), RUNS)
@given(values=s.registration_values)
@example(values=AWKWARD)
@example(values={**dict.fromkeys(AWKWARD), "selector": AWKWARD["selector"]})
def test_render_then_parse_gives_the_same_values(
    name: str, mode: str, values: dict[str, str | None]
) -> None:
    template = TEMPLATES[name]
    request = render_request(template, s.variables_for(values))
    report = parse_request(request, template if mode == "template" else None)
    assert _fields(report) == s.expected_fields(template, values)
    assert report.user_agent == request.user_agent


def test_every_template_kind_carries_every_token_field() -> None:
    # Guards the property above against a template that silently carries nothing.
    for name, template in TEMPLATES.items():
        carried = s.expected_fields(template, AWKWARD)
        assert carried["selector"] and carried["token_msgs"] and carried["appid_msgs"], name
        if name != "path":
            assert carried["token_calls"] and carried["appid_calls"], name
