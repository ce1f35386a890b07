"""pushreport inside a real Flask app: report path answered, portal routes untouched."""

from __future__ import annotations

import pytest
from werkzeug.test import Client

from pushreport_wsgi import PushReportMiddleware

from ..wsgi.conftest import SELECTOR, SPEC_GET, TOKEN_MSGS, make_config

flask = pytest.importorskip("flask", reason="Flask is in the test extras")


def make_portal(tmp_path, **reporter):
    app = flask.Flask("portal")

    @app.route("/")
    def home():
        return "portal home"

    @app.route("/token/list")
    def token_list():
        return flask.jsonify(["not", "a", "report"])

    @app.post("/api/echo")
    def echo():
        return flask.request.get_data()

    app.wsgi_app = PushReportMiddleware(app.wsgi_app, make_config(tmp_path, **reporter))
    return app


def test_report_is_stored_and_portal_routes_still_answer(tmp_path):
    app = make_portal(tmp_path)
    client = app.test_client()
    assert client.get(SPEC_GET).status_code == 200
    assert client.get("/").data == b"portal home"
    assert client.get("/token/list").json == ["not", "a", "report"]
    assert client.post("/api/echo", data=b"body kept").data == b"body kept"
    assert client.get("/missing").status_code == 404  # Flask's own 404
    [reg] = list(app.wsgi_app.receiver.storage)
    assert reg.selector == SELECTOR and reg.token_msgs == TOKEN_MSGS


def test_template_shape_inside_flask(tmp_path):
    app = make_portal(
        tmp_path,
        url="https://portal.example.com/api/push?sel=%selector%"
        "&amp;t=%pushTokenOther%&amp;key=s3cret",
    )
    client = Client(app)
    assert client.get(f"/api/push?sel={SELECTOR}&t={TOKEN_MSGS}&key=s3cret").status_code == 200
    wrong = client.get(f"/api/push?sel={SELECTOR}&t={TOKEN_MSGS}&key=guess")
    assert wrong.status_code == 400
    assert client.get("/api/echo").status_code == 405  # Flask's route, not ours
    assert len(list(app.wsgi_app.receiver.storage)) == 1
