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
    from pushreport._cli import with_db

    monkeypatch.chdir(tmp_path)
    c = with_db(Config(), "x.sqlite3")
    assert c.storage.options_for("sqlite")["path"] == str(tmp_path / "x.sqlite3")


# --- every bound and check holds however a Config is built (issue 14, item 7) ----------

# One table, run both ways: the TOML loader (from_dict, what load_config runs on the
# parsed file) and the Python constructors an embedder writes.
BOTH_WAYS = [
    (
        {"lookup": {"enabled": True, "token": "x"}},
        "lookup.token: the token must be at least 16 characters",
    ),
    ({"server": {"port": 70000}}, "server.port: must be between 0 and 65535, not 70000"),
    ({"server": {"workers": -1}}, "server.workers: must be between 0 and 256, not -1"),
    ({"server": {"port": 80.5}}, "server.port: must be an integer, not float"),
    (
        {"server": {"log_format": "xml"}},
        'server.log_format: must be "text" or "json", not \'xml\'',
    ),
    ({"server": {"access_log": "yes"}}, "server.access_log: must be true or false"),
    ({"reporter": {"max_body": 10}}, "reporter.max_body: must be at least 256, not 10"),
    ({"reporter": {"max_body": True}}, "reporter.max_body: must be an integer, not bool"),
    ({"reporter": {"url": 3}}, "reporter.url: must be a string, not int"),
    (
        {"reporter": {"token_owner": "oldest"}},
        'reporter.token_owner: must be "shared" or "newest", not \'oldest\'',
    ),
    (
        {"reporter": {"method": "POST"}},
        "reporter.url: post_data, content_type and method need a url",
    ),
    ({"health": {"timeout": 0}}, "health.timeout: must be between 0.01 and 60, not 0"),
    (
        {"health": {"healthz": "/up", "readyz": "/up"}},
        "health.readyz: must differ from health.healthz",
    ),
    (
        {"prune": {"older_than": "90x"}},
        "prune.older_than: '90x' is not a duration: write a whole number and a unit, "
        "s, m, h, d or w (e.g. 90d)",
    ),
    ({"push": {"gateway_url": "ftp://x"}}, "push.gateway_url: must be an http or https URL"),
    (
        {"metrics": {"path": "metrics"}},
        "metrics.path: must be a path starting with /, not 'metrics'",
    ),
    ({"plugins": {"blocked": "x"}}, "plugins.blocked: must be a list of entry-point names"),
    (
        {"auth": {"methods": ["kerberos"]}},
        'auth.methods: must list "secret", "digest", "callable" or "http", not \'kerberos\'',
    ),
    ({"auth": {"nonce_ttl": 1}}, "auth.nonce_ttl: must be between 5 and 86400, not 1"),
    ({"limits": {"max_url": 10}}, "limits.max_url: must be between 64 and 8192, not 10"),
    ({"storage": {"backends": []}}, "storage.backends: must be a non-empty list of backend names"),
    ({"storage": {"backends": ["sqlite", "sqlite"]}}, "storage.backends: names a backend twice"),
    (
        {"storage": {"backends": [""]}},
        "storage.backends: must be a non-empty list of backend names",
    ),
    (
        {
            "reporter": {"url": "http://h/token/?s=%selector%&t=%pushToken%"},
            "removal": {"url": "http://h/token/?s=%selector%&t=%pushToken%"},
        },
        "removal.url: the removal shapes would take the reporter's GET /token/: give the "
        "removal another path or method (or enabled = false)",
    ),
]


def _python(data: dict) -> Config:
    """The configuration *data* describes, built with the constructors (no loader)."""
    from pushreport._config import SECTIONS

    return Config(**{name: SECTIONS[name](**values) for name, values in data.items()})


@pytest.mark.parametrize("data, message", BOTH_WAYS)
@pytest.mark.parametrize("build", ["toml", "python"])
def test_every_bound_and_check_holds_both_ways(data, message, build):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict(data) if build == "toml" else _python(data)
    assert str(e.value) == message


def test_lookup_with_a_short_token_is_refused_however_built():
    from pushreport_wsgi import LookupConfig

    with pytest.raises(ConfigurationError) as e:
        Config(lookup=LookupConfig(enabled=True, token="x"))
    assert str(e.value) == "lookup.token: the token must be at least 16 characters"
    with pytest.raises(ConfigurationError) as e:
        import attrs

        attrs.evolve(Config(), lookup=attrs.evolve(LookupConfig(), enabled=True, token="x"))
    assert str(e.value) == "lookup.token: the token must be at least 16 characters"


@pytest.mark.parametrize("build", ["toml", "python"])
def test_values_are_normalised_alike_both_ways(build):
    data = {"server": {"log_format": "JSON"}, "auth": {"methods": []}, "reporter": {}}
    c = Config.from_dict(data) if build == "toml" else _python(data)
    assert c.server.log_format == "json"
    assert c.auth.methods == ()
