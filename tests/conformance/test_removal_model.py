"""The Account Removal Reporter through the app model: the app reports, then logs out
(:meth:`AppModel.log_out` renders the removal from its template), and every answer is
judged as the app judges it, against the whole WSGI receiver on a real SQLite file."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushreport._config import ReporterConfig, StorageConfig
from pushreport_core import (
    AppModel,
    AppState,
    Removal,
    Request,
    Template,
    default_removal_template,
    judge_response,
    removal_template,
)
from pushreport_core.testing import (
    DEFAULT_COMPATIBLE,
    ROUNDTRIP_TEMPLATES,
    SPEC_VALUES,
    expected_report,
    values_variables,
)
from pushreport_core.testing import strategies as prs
from pushreport_wsgi import Config, PushReportMiddleware, RemovalConfig, create_app
from pushreport_wsgi.testing import wsgi_exchange

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
ROUNDTRIP = {name: Template.parse(**xml) for name, xml in ROUNDTRIP_TEMPLATES.items()}

#: Removal templates, as the Account XML would configure them (``None``: the receiver
#: runs the default removal shapes, which read each of these too but the last).
REMOVALS: dict[str, tuple[Template, bool]] = {
    "default-get": (default_removal_template("https://push.example.com"), True),
    "selector-only": (
        removal_template(url="https://push.example.com/removal/?selector=%selector%"),
        True,
    ),
    "form": (
        removal_template(
            url="https://push.example.com/removal/",
            post_data="selector=%selector%&token_msgs=%pushTokenOther%",
        ),
        True,
    ),
    "json-delete-token": (
        removal_template(
            url="https://push.example.com/token/%account[username]%/",
            method="DELETE",
            content_type="application/json",
            post_data='{"selector": "%selector%", "token_calls": "%pushTokenIncomingCall%"}',
        ),
        True,
    ),
    "rest-delete": (
        removal_template(
            url="https://push.example.com/api/devices/%selector%?user=%account[username]%",
            method="DELETE",
        ),
        False,
    ),
}


def _config(folder: Path, reporter: Template | None, removal: Template | None) -> Config:
    rep = (
        ReporterConfig()
        if reporter is None
        else ReporterConfig(
            url=reporter.url,
            post_data=reporter.post_data,
            content_type=reporter.content_type,
            method=reporter.method,
        )
    )
    rem = (
        RemovalConfig()
        if removal is None
        else RemovalConfig(
            url=removal.url,
            post_data=removal.post_data,
            content_type=removal.content_type,
            method=removal.method,
        )
    )
    return Config(
        reporter=rep,
        removal=rem,
        storage=StorageConfig(
            backends=("sqlite",), options={"sqlite": {"path": str(folder / "db.sqlite3")}}
        ),
        base_dir=folder,
    )


class Receiver:
    def __init__(self, reporter: Template | None, removal: Template | None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pushreport-removal-"))
        self.app: PushReportMiddleware = create_app(_config(self.folder, reporter, removal))

    def send(self, request: Request) -> bool:
        status, headers, body = wsgi_exchange(self.app, request)
        return judge_response(status, headers, body, method=request.method)

    def stored(self) -> dict[str, Any]:
        return {r.selector: r for r in self.app.receiver.storage}

    def close(self) -> None:
        self.app.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def receiver_for() -> Iterator[Any]:
    opened: list[Receiver] = []

    def make(reporter: Template | None, removal: Template | None) -> Receiver:
        opened.append(Receiver(reporter, removal))
        return opened[-1]

    yield make
    for r in opened:
        r.close()


def _setups() -> list[Any]:
    out = []
    for name, (removal, default_reads_it) in REMOVALS.items():
        out.append(pytest.param(removal, removal, id=f"{name}-configured"))
        if default_reads_it:
            out.append(pytest.param(removal, None, id=f"{name}-default-shapes"))
    return out


@pytest.mark.parametrize(("removal", "configured"), _setups())
@pytest.mark.parametrize("reporter_name", DEFAULT_COMPATIBLE)
def test_report_then_log_out_removes_the_registration(
    receiver_for, reporter_name, removal, configured
):
    reporter = ROUNDTRIP[reporter_name]
    receiver = receiver_for(None, configured)
    model = AppModel(reporter, values_variables(SPEC_VALUES), removal=removal)
    report = model.start(now=T0)
    model.response(receiver.send(report), now=T0)
    assert model.state is AppState.DONE
    assert list(receiver.stored()) == [SPEC_VALUES["selector"]]
    logout = model.log_out(now=T0)
    assert logout is not None and receiver.send(logout)
    assert receiver.stored() == {}
    # The app (it does not say whether it retries) sends it again: still a success.
    assert receiver.send(logout)


@pytest.mark.parametrize(("removal", "configured"), _setups())
def test_removal_of_an_unknown_selector_is_2xx(receiver_for, removal, configured):
    receiver = receiver_for(None, configured)
    model = AppModel(ROUNDTRIP["query"], values_variables(SPEC_VALUES), removal=removal)
    logout = model.log_out(now=T0)  # never reported
    assert logout is not None and receiver.send(logout)
    assert receiver.stored() == {}


def test_a_removal_delayed_past_a_reinstall_keeps_the_new_registration(receiver_for):
    """The old install's removal arrives after the new install reported under the same
    selector with a new token: answered 2xx, and the new registration stays."""
    removal = REMOVALS["default-get"][0]
    receiver = receiver_for(None, None)
    old = AppModel(ROUNDTRIP["query"], values_variables(SPEC_VALUES), removal=removal)
    old.response(receiver.send(old.start(now=T0)), now=T0)
    delayed = old.log_out(now=T0)
    assert delayed is not None
    new_token = "bmV3IGluc3RhbGwgbmV3IHRva2VuIGZvciBjYWxscw=="
    new = AppModel(ROUNDTRIP["query"], values_variables({**SPEC_VALUES, "token_msgs": new_token}))
    new.response(receiver.send(new.start(now=T0)), now=T0)
    assert new.state is AppState.DONE
    assert receiver.send(delayed)
    [registration] = receiver.stored().values()
    assert registration.token_msgs == new_token
    # The new install's own logout removes it.
    new.removal = removal
    assert receiver.send(new.log_out(now=T0))
    assert receiver.stored() == {}


def test_ios_log_out_before_the_late_token_arrives(receiver_for):
    receiver = receiver_for(ROUNDTRIP["json"], None)
    model = AppModel(
        ROUNDTRIP["json"], values_variables(SPEC_VALUES), removal=REMOVALS["default-get"][0]
    )
    model.response(receiver.send(model.start(now=T0, token_delayed=True)), now=T0)
    assert receiver.stored()[SPEC_VALUES["selector"]].token_msgs is None
    logout = model.log_out(now=T0)
    assert logout is not None and logout.target.endswith("&token_msgs=")  # not known
    assert receiver.send(logout)
    assert receiver.stored() == {}


@settings(
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    values=prs.registration_values,
    reporter=prs.templates(),
    removal_name=st.sampled_from(sorted(REMOVALS)),
    configured=st.booleans(),
)
def test_any_report_then_its_removal(receiver_for, values, reporter, removal_name, configured):
    """Any template, any values: the app reports (configured template) and logs out
    through a removal template; the removal read is the one the app meant, and the
    registration is gone."""
    removal, default_reads_it = REMOVALS[removal_name]
    configured = configured or not default_reads_it
    receiver = receiver_for(reporter, removal if configured else None)
    variables = values_variables(values)
    model = AppModel(reporter, variables, removal=removal)
    assert receiver.send(model.start(now=T0))
    logout = model.log_out(now=T0)
    assert logout is not None
    parsed = Removal.from_report(expected_report(removal, variables))
    assert parsed.applies_to(receiver.stored()[values["selector"]])
    assert receiver.send(logout)
    assert values["selector"] not in receiver.stored()
    receiver.close()
