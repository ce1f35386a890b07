from __future__ import annotations

from pathlib import Path

import pytest

from pushreport_core import DEFAULT_SHAPES, ConfigurationError, Template
from pushreport_wsgi import Config, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_empty_file_is_the_embedded_default(tmp_path):
    c = load_config(write(tmp_path, ""))
    assert c.reporter.shapes() is DEFAULT_SHAPES
    assert c.storage.backends == ("sqlite",)
    assert c.base_dir == tmp_path


def test_template_is_compiled_at_load(tmp_path):
    c = load_config(
        write(tmp_path, '[reporter]\nurl = "https://e/t?s=%selector%&t=%pushToken%"\n')
    )
    assert isinstance(c.reporter.shapes(), Template)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[reporter]\nurl = 3\n", "reporter.url: must be a string, not int"),
        (
            "[reporter]\nurls = 'x'\n",
            "reporter.urls: unknown key (expected one of: content_type, max_body, method, "
            "post_data, token_owner, url)",
        ),
        (
            "[storage]\nbackends = []\n",
            "storage.backends: must be a non-empty list of backend names",
        ),
        (
            "[storage]\nbackends = ['sqlite', 'sqlite']\n",
            "storage.backends: names a backend twice",
        ),
        ("[server]\nport = 70000\n", "server.port: must be between 0 and 65535, not 70000"),
        ("[reporter]\nmax_body = true\n", "reporter.max_body: must be an integer, not bool"),
        (
            "[reporter]\nmethod = 'POST'\n",
            "reporter.url: post_data, content_type and method need a url",
        ),
        ("[plugins]\nblocked = 'x'\n", "plugins.blocked: must be a list of entry-point names"),
    ],
)
def test_errors_name_the_key_and_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigurationError) as e:
        load_config(write(tmp_path, text))
    assert str(e.value) == message


def test_template_error_points_at_the_spot(tmp_path):
    with pytest.raises(ConfigurationError) as e:
        load_config(write(tmp_path, '[reporter]\nurl = "https://e/%selector%%pushToken%"\n'))
    assert str(e.value).startswith("pushTokenReporterUrl: %selector% and %pushToken% have no")
    assert e.value.position == len("https://e/%selector%")


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(write(tmp_path, "[reporter\n"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_db_override_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = Config().with_sqlite_path("x.sqlite3")
    assert c.storage.options_for("sqlite")["path"] == str(tmp_path / "x.sqlite3")
