"""The Account Removal Reporter against a real `pushreport serve`: the app's bytes (from
the app model) report then remove, read back with `pushreport list --json`; a removal
of an unknown selector is a success; `pushreport account-xml` prints the removal keys."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pushreport_core import (
    AppModel,
    Template,
    default_removal_template,
    judge_response,
    to_http_bytes,
)
from pushreport_core.testing import SPEC_TEMPLATES, SPEC_VALUES, values_variables

from .conftest import PUSHREPORT, Server, pushreport_list

pytestmark = pytest.mark.e2e

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SELECTOR = SPEC_VALUES["selector"]


def exchange(server: Server, raw: bytes) -> tuple[int, bytes, bytes]:
    answer = server.send(raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def judged(server: Server, raw: bytes, method: str) -> bool:
    status, head, body = exchange(server, raw)
    headers = [
        tuple(p.strip() for p in line.decode("latin-1").split(":", 1))
        for line in head.split(b"\r\n")[1:]
    ]
    return judge_response(status, headers, body, method=method)


def test_report_then_remove_through_the_app_model(server: Server):
    model = AppModel(
        Template.parse(**SPEC_TEMPLATES["query"]),
        values_variables(SPEC_VALUES),
        removal=default_removal_template(f"http://127.0.0.1:{server.port}"),
    )
    report = model.start(now=T0)
    assert judged(server, to_http_bytes(report, "example.com"), report.method)
    assert [r["selector"] for r in pushreport_list(server.db)] == [SELECTOR]
    logout = model.log_out(now=T0)
    assert logout is not None
    status, head, body = exchange(server, to_http_bytes(logout, "example.com"))
    assert (status, body) == (200, b"")
    assert b"content-type" not in head.lower()
    assert pushreport_list(server.db) == []
    # Again (a retry): already gone, still a success.
    assert judged(server, to_http_bytes(logout, "example.com"), logout.method)


def test_removal_of_an_unknown_selector_is_2xx(server: Server):
    raw = (
        f"DELETE /token/?selector={SELECTOR} HTTP/1.1\r\nHost: example.com\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    status, _, body = exchange(server, raw)
    assert (status, body) == (200, b"")
    # A portal's own DELETE elsewhere is not ours: the standalone server answers 404.
    raw = raw.replace(b"/token/?selector=", b"/something/else?selector=")
    assert exchange(server, raw)[0] == 404
    assert "accepting removals by the default removal shapes" in server.output()


def test_configured_removal_template(tmp_path: Path):
    cfg = tmp_path / "pushreport.toml"
    cfg.write_text(
        '[removal]\nurl = "https://push.example.com/bye/%selector%"\nmethod = "DELETE"\n'
    )
    server = Server(tmp_path, "--config", str(cfg))
    try:
        assert (
            exchange(
                server,
                to_http_bytes(
                    AppModel(
                        Template.parse(**SPEC_TEMPLATES["path"]), values_variables(SPEC_VALUES)
                    ).start(now=T0),
                    "example.com",
                ),
            )[0]
            == 200
        )
        assert len(pushreport_list(server.db)) == 1
        raw = (
            f"DELETE /bye/{SELECTOR} HTTP/1.1\r\nHost: example.com\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        assert exchange(server, raw)[0] == 200
        assert pushreport_list(server.db) == []
        assert "accepting removals by DELETE /bye/%selector%" in server.output()
    finally:
        server.stop()


def test_account_xml_prints_the_removal_keys(tmp_path: Path):
    out = subprocess.run(
        [*PUSHREPORT, "account-xml", "--base-url", "https://push.example.com"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("<pushTokenReporterUrl>")
    assert lines[1] == (
        "<accountRemovalReporterUrl>https://push.example.com/removal/?selector=%selector%"
        "&amp;username=%account[username]%&amp;token_calls=%pushTokenIncomingCall%"
        "&amp;token_msgs=%pushTokenOther%</accountRemovalReporterUrl>"
    )
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[removal]\nurl = "https://x/bye/?s=%selector%"\nmethod = "DELETE"\n'
        'post_data = "u=%account[username]%"\n'
    )
    out = subprocess.run(
        [
            *PUSHREPORT,
            "account-xml",
            "--config",
            str(cfg),
            "--base-url",
            "https://push.example.com",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.splitlines()[1:] == [
        "<accountRemovalReporterUrl>https://push.example.com/bye/?s=%selector%"
        "</accountRemovalReporterUrl>",
        "<accountRemovalReporterPostData>u=%account[username]%</accountRemovalReporterPostData>",
        "<accountRemovalReporterMethod>DELETE</accountRemovalReporterMethod>",
    ]
    cfg.write_text("[removal]\nenabled = false\n")
    out = subprocess.run(
        [*PUSHREPORT, "account-xml", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "accountRemovalReporter" not in out
