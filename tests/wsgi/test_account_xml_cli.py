"""``pushreport account-xml``: a ``--base-url`` that cannot be one is refused naming the
option; without one, a warning says that the keys call a loopback address (issue 14,
item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushreport._cli import main


@pytest.mark.parametrize(
    "base_url", ["push.example.com", "https://push.example.com/?a=1", "https://x.com/#f"]
)
def test_a_bad_base_url_is_one_line_naming_the_option(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["account-xml", "--base-url", base_url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pushreport: configuration error: --base-url: ")
    assert err.count("\n") == 1


def test_without_base_url_it_warns_of_the_loopback_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["account-xml"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("<pushTokenReporterUrl>http://127.0.0.1:8080/token/?")
    assert err == (
        "pushreport: warning: these keys call http://127.0.0.1:8080, a loopback address no "
        "phone can reach; pass --base-url https://your.server\n"
    )


def test_with_base_url_or_a_real_host_there_is_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["account-xml", "--base-url", "https://push.example.com/"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "<pushTokenReporterUrl>https://push.example.com/token/?" in out
    config = tmp_path / "p.toml"
    config.write_text(
        '[reporter]\nurl = "https://push.example.com/t/?s=%selector%&t=%pushToken%"\n'
    )
    assert main(["account-xml", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "https://push.example.com/t/?s=%selector%" in out
