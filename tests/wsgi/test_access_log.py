"""The access log: one line per request with status, shape, selector and latency, in
text or JSON, and never a credential in either."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from werkzeug.test import Client

from pushreport._config import load_config
from pushreport._logs import TEXT_FORMAT, JsonFormatter, formatter
from pushreport_core import ConfigurationError
from pushreport_wsgi import Receiver, create_app, hookimpl, make_plugin_manager

from .conftest import SELECTOR, SPEC_GET, TOKEN_CALLS, TOKEN_MSGS, make_config

FIELDS = {"remote_addr", "method", "target", "status", "shape", "selector", "latency_ms"}
# What must never reach a log line, in any format.
SECRETS = (
    "12345678",
    "hunter2",
    "s3cret",
    TOKEN_MSGS,
    TOKEN_CALLS,
    TOKEN_CALLS.replace("/", "%2F").replace("=", "%3D"),
)


def access_records(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pushreport.access"]


def both_formats(records: list[logging.LogRecord]) -> tuple[str, list[dict[str, Any]]]:
    text = "\n".join(logging.Formatter(TEXT_FORMAT).format(r) for r in records)
    lines = [JsonFormatter().format(r) for r in records]
    assert all("\n" not in line for line in lines)
    return text, [json.loads(line) for line in lines]


def test_one_line_per_request_with_status_shape_selector_latency(config, caplog):
    app = create_app(config)
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        Client(app).get(SPEC_GET, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        Client(app).get("/token/?selector=bad")
        Client(app).get("/elsewhere")  # not ours: not logged
    ok, bad = access_records(caplog)
    assert ok.getMessage().startswith('192.0.2.7 "GET /token/?username=johndow&password=***')
    assert ok.getMessage().endswith(f'" 200 default-query {SELECTOR[:12]}… {ok.latency_ms:.1f}ms')  # type: ignore[attr-defined]
    assert (
        (ok.status, ok.shape, ok.selector)
        == (  # type: ignore[attr-defined]
            200,
            "default-query",
            SELECTOR[:12] + "…",
        )
    )
    assert 0 < ok.latency_ms < 5000  # type: ignore[attr-defined]
    assert bad.getMessage().endswith(f" 400 - - {bad.latency_ms:.1f}ms")  # type: ignore
    assert (bad.status, bad.shape, bad.selector) == (400, "-", "-")  # type: ignore


def test_json_lines_carry_the_same_fields(config, caplog):
    app = create_app(config)
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        Client(app).post("/token/johndow/", json={"selector": SELECTOR, "token_msgs": TOKEN_MSGS})
    [record] = access_records(caplog)
    [line] = both_formats([record])[1]
    assert FIELDS | {"time", "level", "logger", "message"} == set(line)
    assert line["logger"] == "pushreport.access" and line["level"] == "INFO"
    assert line["time"].endswith("Z")
    assert (line["method"], line["target"], line["status"], line["shape"]) == (
        "POST",
        "/token/johndow/",
        200,
        "default-json",
    )
    assert line["selector"] == SELECTOR[:12] + "…"
    assert line["message"] == record.getMessage()


class Refuser:
    @hookimpl
    def pushreport_authenticate(self, report, username, password, request):
        return False


def test_a_refused_report_still_logs_its_shape_and_selector(config, caplog):
    pm = make_plugin_manager()
    pm.register(Refuser())
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        assert Client(app).get(SPEC_GET).status_code == 403
    [record] = access_records(caplog)
    assert (
        (record.status, record.shape, record.selector)
        == (  # type: ignore[attr-defined]
            403,
            "default-query",
            SELECTOR[:12] + "…",
        )
    )


@pytest.mark.parametrize(
    "url, target",
    [
        ("", SPEC_GET),
        ("", SPEC_GET.replace("password=", "secret=s3cret&pwd=hunter2&password=")),
        (
            "https://e.com/r/%account[password]%/?s=%selector%&amp;key=s3cret&amp;t=%pushToken%",
            f"/r/hunter2/?s={SELECTOR}&key=s3cret&t={TOKEN_MSGS}",
        ),
        (
            "https://e.com/r/?s=%selector%&amp;pw=x%account[password]%&amp;t=%pushTokenIncomingCall%",
            f"/r/?s={SELECTOR}&pw=xhunter2&t={TOKEN_CALLS.replace('/', '%2F')}",
        ),
    ],
)
def test_credentials_and_tokens_never_reach_either_format(tmp_path, caplog, url, target):
    app = create_app(make_config(tmp_path, url=url))
    with caplog.at_level(logging.INFO, logger="pushreport.access"):
        assert Client(app).get(target).status_code == 200
        Client(app).get(target.replace(SELECTOR, "bad"))  # refused: logged too
    records = access_records(caplog)
    assert len(records) == 2
    text, lines = both_formats(records)
    raw = text + "\n" + "\n".join(json.dumps(line) for line in lines)
    for secret in SECRETS:
        assert secret not in raw, secret
    assert "***" in text and all("***" in line["target"] for line in lines)
    assert [line["status"] for line in lines] == [200, 400]


def test_json_formatter_keeps_exceptions_and_other_loggers(caplog):
    log = logging.getLogger("pushreport")
    with caplog.at_level(logging.INFO, logger="pushreport"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("internal error while handling a report")
        log.info("pushreport listening on http://%s:%d", "127.0.0.1", 8080)
    failed, listening = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert failed["message"] == "internal error while handling a report"
    assert failed["level"] == "ERROR"
    assert "RuntimeError: boom" in failed["exc_info"]
    assert listening == {
        "time": listening["time"],
        "level": "INFO",
        "logger": "pushreport",
        "message": "pushreport listening on http://127.0.0.1:8080",
    }


def test_log_format_is_text_or_json(tmp_path):
    assert isinstance(formatter("json"), JsonFormatter)
    assert formatter("text")._fmt == TEXT_FORMAT
    (tmp_path / "p.toml").write_text('[server]\nlog_format = "JSON"\n')
    assert load_config(tmp_path / "p.toml").server.log_format == "json"
    (tmp_path / "p.toml").write_text('[server]\nlog_format = "xml"\n')
    with pytest.raises(ConfigurationError) as e:
        load_config(tmp_path / "p.toml")
    assert str(e.value) == 'server.log_format: must be "text" or "json", not \'xml\''
