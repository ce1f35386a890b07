"""pushreport in front of a real Django project."""

from __future__ import annotations

import os

import pytest
from werkzeug.test import Client

from pushreport_wsgi import PushReportMiddleware

from ..wsgi.conftest import SELECTOR, SPEC_GET, make_config

django = pytest.importorskip("django", reason="Django is in the test extras")


@pytest.fixture(scope="module")
def django_app():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.embedding.django_portal.settings")
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_report_and_portal_side_by_side(tmp_path, django_app):
    app = PushReportMiddleware(django_app, make_config(tmp_path))
    client = Client(app)
    assert client.get(SPEC_GET).status_code == 200
    assert client.get("/").data == b"portal home"
    assert client.get("/accounts/alice/").json == {"account": "alice"}
    assert client.get("/tokens/").data == b"portal tokens page"
    assert client.get("/nope/").status_code == 404
    [reg] = list(app.receiver.storage)
    assert reg.selector == SELECTOR and reg.username == "johndow"


def test_django_portal_with_json_template(tmp_path, django_app):
    app = PushReportMiddleware(
        django_app,
        make_config(
            tmp_path,
            url="https://portal.example.com/push/register/",
            post_data='{"user": {"name": "%account[username]%"}, "sel": "%selector%", '
            '"tokens": ["%pushTokenIncomingCall%", "%pushTokenOther%"]}',
            content_type="application/json",
        ),
    )
    client = Client(app)
    body = '{"user": {"name": "alice"}, "sel": "%s", "tokens": ["", "AAAAAAAABBBB"]}' % SELECTOR
    resp = client.post("/push/register/", data=body, content_type="application/json")
    assert resp.status_code == 200, resp.data
    [reg] = list(app.receiver.storage)
    assert (reg.username, reg.token_calls, reg.token_msgs) == ("alice", None, "AAAAAAAABBBB")
    assert client.get("/accounts/bob/").json == {"account": "bob"}
