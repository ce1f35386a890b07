"""The built-in authenticators of ``[auth]``: shared secret, HTTP Digest, a callable.

Unit cases go through werkzeug's test client; the digest cases are also played by a real
digest client (``urllib.request.HTTPDigestAuthHandler``) against a real HTTP server on
loopback. Everything is stored in a real SQLite file.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import types
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client

from pushreport._auth import (
    CallableAuthenticator,
    digest_response,
    parse_digest,
)
from pushreport._config import AuthConfig, LimitsConfig
from pushreport_core import ConfigurationError, Secret
from pushreport_wsgi import Config, Receiver, create_app, hookimpl, make_plugin_manager

from .conftest import SELECTOR, TOKEN_MSGS, make_config

SECRET = "s3cr3t-shared-value"
DIGEST_PASSWORD = "digest-pa55word"
ACCOUNT_PASSWORD = "account-pa55word"

SECRET_URL = (
    "https://push.example.com/token/?selector=%selector%&username=%account[username]%"
    "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
    "&key=%account[pushSecret]%"
)
PASSWORD_URL = (
    "https://push.example.com/token/?selector=%selector%"
    "&username=%account[username]%&password=%account[password]%"
    "&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
)
PLAIN_URL = (
    "https://push.example.com/token/?selector=%selector%"
    "&username=%account[username]%&token_msgs=%pushTokenOther%"
    "&appid_msgs=%pushappid_other%"
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def receiver(
    tmp_path: Path,
    url: str,
    *,
    clock: Clock | None = None,
    limits: LimitsConfig | None = None,
    **auth: Any,
) -> Receiver:
    config = attrs.evolve(
        make_config(tmp_path, url=url), auth=AuthConfig(**auth), limits=limits or LimitsConfig()
    )
    return Receiver.from_config(
        config, plugin_manager=make_plugin_manager(), clock=clock or Clock()
    )


def query(**values: str) -> str:
    fields = {
        "selector": SELECTOR,
        "username": "alice",
        "token_msgs": TOKEN_MSGS,
        "appid_msgs": "com.cloudsoftphone.app",
        **values,
    }
    return "/token/?" + "&".join(f"{k}={v}" for k, v in fields.items())


# --- shared secret ------------------------------------------------------------------------


def secret_app(tmp_path: Path, **kw: Any) -> Any:
    return create_app(
        receiver=receiver(
            tmp_path,
            SECRET_URL,
            methods=("secret",),
            secret=SECRET,
            secret_field="account[pushSecret]",
            **kw,
        )
    )


def test_secret_right_is_stored_without_the_secret(tmp_path):
    app = secret_app(tmp_path)
    resp = Client(app).get(query(key=SECRET))
    assert resp.status_code == 200, resp.data
    [reg] = list(app.receiver.storage)
    assert reg.username == "alice" and reg.extra == {}
    assert SECRET not in repr(reg)


@pytest.mark.parametrize("key", ["wrong", SECRET[:-1], SECRET + "x", ""])
def test_secret_wrong_or_missing_is_403_and_stores_nothing(tmp_path, key):
    app = secret_app(tmp_path)
    resp = Client(app).get(query(key=key))
    assert resp.status_code == 403
    assert resp.data == b"authentication refused\n"
    assert list(app.receiver.storage) == []


def test_secret_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHREPORT_TEST_SECRET", SECRET)
    app = create_app(
        receiver=receiver(
            tmp_path,
            SECRET_URL,
            methods=("secret",),
            secret_env="PUSHREPORT_TEST_SECRET",
            secret_field="account[pushSecret]",
        )
    )
    assert Client(app).get(query(key=SECRET)).status_code == 200
    assert Client(app).get(query(key="nope")).status_code == 403


def test_secret_with_the_default_shapes_uses_the_parameter_name(tmp_path):
    app = create_app(
        receiver=receiver(tmp_path, "", methods=("secret",), secret=SECRET, secret_field="PushKey")
    )
    assert Client(app).get(query(pushkey=SECRET)).status_code == 200
    assert Client(app).get(query(pushkey="x")).status_code == 403
    [reg] = list(app.receiver.storage)
    assert reg.extra == {}


def test_secret_is_stripped_before_any_other_transform_sees_it(tmp_path):
    seen: list[dict[str, str]] = []

    class Spy:
        @hookimpl
        def pushreport_transform_report(self, report):
            seen.append(dict(report.extra))

        @hookimpl
        def pushreport_report_stored(self, registration, report):
            seen.append(dict(report.extra))

    rec = receiver(
        tmp_path,
        SECRET_URL,
        methods=("secret",),
        secret=SECRET,
        secret_field="account[pushSecret]",
    )
    rec.plugin_manager.register(Spy())
    assert Client(create_app(receiver=rec)).get(query(key=SECRET)).status_code == 200
    assert seen == [{}, {}]


def test_secret_compares_in_constant_time_over_digests(monkeypatch):
    from pushreport import _auth

    compared: list[tuple[bytes, bytes]] = []
    real = _auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_auth.hmac, "compare_digest", spy)
    assert _auth._digest_equal("short", "a much longer value") is False
    assert _auth._digest_equal(SECRET, SECRET) is True
    # Same-length digests, never the texts: neither content nor length leaks.
    assert all(len(a) == len(b) == 32 for a, b in compared)
    assert all(SECRET.encode() not in a + b for a, b in compared)


def test_template_without_the_secret_variable_is_refused_at_start_up(tmp_path):
    with pytest.raises(ConfigurationError) as e:
        receiver(
            tmp_path,
            PLAIN_URL,
            methods=("secret",),
            secret=SECRET,
            secret_field="account[pushSecret]",
        )
    assert str(e.value) == (
        "auth.secret_field: the template carries no "
        "%account[pushSecret]%: the secret method needs it"
    )


def test_removal_template_without_the_secret_variable_is_refused_at_start_up(tmp_path):
    """The same methods guard removals: a removal template that cannot carry the
    secret would refuse every logout, so it is a start-up error too."""
    from pushreport._config import RemovalConfig

    config = attrs.evolve(
        make_config(tmp_path, url=SECRET_URL),
        auth=AuthConfig(methods=("secret",), secret=SECRET, secret_field="account[pushSecret]"),
        removal=RemovalConfig(url="https://push.example.com/removal/?selector=%selector%"),
    )
    with pytest.raises(ConfigurationError) as e:
        Receiver.from_config(config, plugin_manager=make_plugin_manager())
    assert str(e.value) == (
        "auth.secret_field: the removal template carries no "
        "%account[pushSecret]%: the secret method needs it"
    )


# --- the deployer's callable --------------------------------------------------------------

USERS = {"alice": ACCOUNT_PASSWORD}
CALLS: list[tuple[str, str]] = []


def check_user(username: str, password: str) -> bool:
    CALLS.append((username, password))
    if username == "explode":
        raise RuntimeError(f"database down while checking {password}")
    if username == "truthy":
        return 1  # type: ignore[return-value]
    return USERS.get(username) == password


@pytest.fixture
def users_module(monkeypatch):
    module = types.ModuleType("pushreport_test_users")
    module.check_user = check_user  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pushreport_test_users", module)
    CALLS.clear()
    yield module


def callable_app(tmp_path: Path, clock: Clock | None = None, **kw: Any) -> Any:
    return create_app(
        receiver=receiver(
            tmp_path,
            PASSWORD_URL,
            clock=clock,
            methods=("callable",),
            callable="pushreport_test_users:check_user",
            **kw,
        )
    )


def test_callable_accepts_the_right_password_and_refuses_others(tmp_path, users_module):
    app = callable_app(tmp_path)
    c = Client(app)
    assert c.get(query(password=ACCOUNT_PASSWORD)).status_code == 200
    assert c.get(query(password="guess")).status_code == 403
    assert c.get(query(username="mallory", password=ACCOUNT_PASSWORD)).status_code == 403
    assert c.get(query(password="")).status_code == 403  # empty: no password at all
    [reg] = list(app.receiver.storage)
    assert reg.username == "alice" and reg.reports == 1


def test_callable_only_true_vouches(tmp_path, users_module):
    app = callable_app(tmp_path)
    assert Client(app).get(query(username="truthy", password="x")).status_code == 403


def test_callable_failure_is_503_and_logs_no_password(tmp_path, users_module, caplog):
    app = callable_app(tmp_path)
    with caplog.at_level("DEBUG"):
        resp = Client(app).get(query(username="explode", password=ACCOUNT_PASSWORD))
    assert resp.status_code == 503
    assert resp.data == b"authentication is unavailable\n"
    assert resp.headers["Retry-After"] == "5"
    assert "unavailable: authentication is unavailable" in caplog.text
    assert "storage unavailable" not in caplog.text  # not blamed on storage
    assert (
        "authentication callable pushreport_test_users:check_user failed: "
        "RuntimeError" in caplog.text
    )
    assert ACCOUNT_PASSWORD not in caplog.text


def test_callable_caches_successes_only_keyed_by_a_hash(tmp_path, users_module):
    clock = Clock()
    app = callable_app(tmp_path, clock=clock, cache_ttl=60)
    c = Client(app)
    for _ in range(3):
        assert c.get(query(password=ACCOUNT_PASSWORD)).status_code == 200
        assert c.get(query(password="guess")).status_code == 403
    assert CALLS.count(("alice", ACCOUNT_PASSWORD)) == 1  # then from the cache
    assert CALLS.count(("alice", "guess")) == 3  # failures are never cached
    [plugin] = [
        p
        for p in app.receiver.plugin_manager.get_plugins()
        if isinstance(p, CallableAuthenticator)
    ]
    assert ACCOUNT_PASSWORD.encode() not in repr(plugin._cache).encode()
    assert all(ACCOUNT_PASSWORD.encode() not in k[1] for k in plugin._cache)
    clock.advance(61)
    assert c.get(query(password=ACCOUNT_PASSWORD)).status_code == 200
    assert CALLS.count(("alice", ACCOUNT_PASSWORD)) == 2  # expired: asked again


def test_callable_cache_is_bounded():
    clock = Clock()
    auth = CallableAuthenticator(
        lambda u, p: True, cache_size=3, cache_ttl=60, clock=lambda: clock().timestamp()
    )
    for i in range(50):
        assert auth.pushreport_authenticate(username=f"u{i}", password=Secret("pw"))
    assert len(auth._cache) == 3


def test_callable_without_password_in_the_template_is_refused_at_start_up(tmp_path, users_module):
    with pytest.raises(ConfigurationError) as e:
        receiver(
            tmp_path, PLAIN_URL, methods=("callable",), callable="pushreport_test_users:check_user"
        )
    assert str(e.value) == (
        "auth.callable: the template carries no %account[password]%: the callable method needs it"
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "nocolon",
            "auth.callable: the callable method needs module:function, e.g. "
            "portal.users:check_password",
        ),
        (
            "pushreport_no_such_module:f",
            "auth.callable: cannot import 'pushreport_no_such_module': ModuleNotFoundError",
        ),
        ("pushreport_test_users:nope", "auth.callable: 'pushreport_test_users' has no 'nope'"),
    ],
)
def test_callable_that_cannot_be_loaded_is_a_configuration_error(spec, message, users_module):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"auth": {"methods": ["callable"], "callable": spec}})
    assert str(e.value) == message


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth, message",
    [
        (
            {"methods": ["kerberos"]},
            'auth.methods: must list "secret", "digest", "callable" or "http", not \'kerberos\'',
        ),
        ({"methods": ["secret", "secret"]}, "auth.methods: names a method twice"),
        (
            {"methods": ["secret"], "secret_field": "account[k]"},
            "auth.secret: the secret method needs secret or secret_env",
        ),
        (
            {"methods": ["secret"], "secret": "x", "secret_env": "Y", "secret_field": "k"},
            "auth.secret: set secret or secret_env, not both",
        ),
        # An unset secret_env is an error of serving, not of loading: see
        # tests/wsgi/test_serving_secrets.py.
        (
            {"methods": ["secret"], "secret": "x"},
            "auth.secret_field: the secret method needs the variable that carries it, e.g. "
            "account[pushSecret]",
        ),
        (
            {"methods": ["digest"], "digest_password": "x"},
            "auth.digest_username: the digest method needs a username",
        ),
        (
            {"methods": ["digest"], "digest_username": "app"},
            "auth.digest_password: the digest method needs digest_password or digest_password_env",
        ),
        (
            {
                "methods": ["digest"],
                "digest_username": "app",
                "digest_password": "x",
                "digest_algorithms": ["SHA-1"],
            },
            "auth.digest_algorithms: unknown algorithm 'SHA-1' (known: MD5, MD5-sess, SHA-256, "
            "SHA-256-sess)",
        ),
        (
            {
                "methods": ["digest"],
                "digest_username": "app",
                "digest_password": "x",
                "realm": 'a"b',
            },
            "auth.realm: must not contain a quote or a backslash",
        ),
        (
            {"methods": "digest"},
            'auth.methods: must be a list of "secret", "digest", "callable" or "http"',
        ),
    ],
)
def test_auth_configuration_errors_name_the_key(auth, message):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"auth": auth})
    assert str(e.value) == message


def test_configured_secrets_stay_out_of_the_config_repr_and_errors():
    config = Config.from_dict(
        {
            "auth": {
                "methods": ["secret", "digest"],
                "secret": SECRET,
                "secret_field": "k",
                "digest_username": "app",
                "digest_password": DIGEST_PASSWORD,
                "nonce_key": "nonce-key-value",
            }
        }
    )
    for text in (repr(config), str(config), repr(config.auth)):
        assert SECRET not in text and DIGEST_PASSWORD not in text
        assert "nonce-key-value" not in text
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"auth": {"secret": 12345}})
    assert "12345" not in str(e.value)


# --- HTTP Digest --------------------------------------------------------------------------


def test_digest_response_matches_the_rfc_7616_examples():
    # RFC 7616, section 3.9.1.
    common = dict(
        username="Mufasa",
        realm="http-auth@example.org",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert digest_response(algorithm="MD5", **common) == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest_response(algorithm="SHA-256", **common) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_parse_digest_handles_quoting_and_refuses_garbage():
    assert parse_digest('Digest username="a\\"b", nc=00000001, qop=auth') == {
        "username": 'a"b',
        "nc": "00000001",
        "qop": "auth",
    }
    assert parse_digest("Basic YWxhZGRpbjpvcGVuc2VzYW1l") is None
    assert parse_digest('Digest username="a", username="b"') is None
    assert parse_digest('Digest username="unterminated') is None
    assert parse_digest('Digest a="' + "x" * 5000 + '"') is None


def digest_app(tmp_path: Path, clock: Clock | None = None, url: str = PLAIN_URL, **kw: Any) -> Any:
    kw.setdefault("methods", ("digest",))
    return create_app(
        receiver=receiver(
            tmp_path,
            url,
            clock=clock,
            digest_username="app",
            digest_password=DIGEST_PASSWORD,
            nonce_key="k" * 32,
            **kw,
        )
    )


def challenge_params(header: str) -> dict[str, str]:
    params = parse_digest(header)
    assert params is not None, header
    return params


def authorization(
    challenge: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    password: str = DIGEST_PASSWORD,
    username: str = "app",
    cnonce: str = "0a4f113b",
) -> str:
    """What a client answers: computed here from RFC 7616 directly, not with our code."""
    p = challenge_params(challenge)
    algorithm = p["algorithm"]
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm.removesuffix("-sess")]

    def H(s: str) -> str:
        return h(s.encode()).hexdigest()

    ha1 = H(f"{username}:{p['realm']}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = H(f"{ha1}:{p['nonce']}:{cnonce}")
    ncs = f"{nc:08x}"
    response = H(f"{ha1}:{p['nonce']}:{ncs}:{cnonce}:auth:{H(f'{method}:{uri}')}")
    return (
        f'Digest username="{username}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
        f'uri="{uri}", algorithm={algorithm}, response="{response}", '
        f'opaque="{p["opaque"]}", qop=auth, nc={ncs}, cnonce="{cnonce}"'
    )


def test_digest_without_credentials_is_401_with_a_challenge(tmp_path):
    app = digest_app(tmp_path)
    resp = Client(app).get(query())
    assert resp.status_code == 401
    assert resp.data == b"authentication required\n"
    [challenge] = resp.headers.getlist("WWW-Authenticate")
    assert re.fullmatch(
        r'Digest realm="pushreport", qop="auth", algorithm=MD5, '
        r'nonce="[A-Za-z0-9_-]{43}", opaque="[A-Za-z0-9_-]{16}"',
        challenge,
    )
    assert list(app.receiver.storage) == []


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256",), ("MD5-sess",), ("SHA-256-sess",)])
def test_digest_round_trip_stores_the_report(tmp_path, algorithms):
    app = digest_app(tmp_path, digest_algorithms=algorithms)
    c = Client(app)
    target = query()
    challenge = c.get(target).headers["WWW-Authenticate"]
    resp = c.get(target, headers={"Authorization": authorization(challenge, "GET", target)})
    assert resp.status_code == 200, resp.data
    [reg] = list(app.receiver.storage)
    assert reg.username == "alice"


def test_digest_offers_every_algorithm_preferred_first(tmp_path):
    app = digest_app(tmp_path, digest_algorithms=("SHA-256", "MD5"))
    resp = Client(app).get(query())
    algorithms = [
        challenge_params(c)["algorithm"] for c in resp.headers.getlist("WWW-Authenticate")
    ]
    assert algorithms == ["SHA-256", "MD5"]


@pytest.mark.parametrize(
    "change", ["password", "username", "uri", "method", "realm", "opaque", "qop", "nonce-forged"]
)
def test_digest_wrong_credentials_are_401_and_store_nothing(tmp_path, change):
    app = digest_app(tmp_path)
    c = Client(app)
    target = query()
    challenge = c.get(target).headers["WWW-Authenticate"]
    header = authorization(challenge, "GET", target)
    if change == "password":
        header = authorization(challenge, "GET", target, password="guess")
    elif change == "username":
        header = authorization(challenge, "GET", target, username="root")
    elif change == "uri":
        header = authorization(challenge, "GET", query(username="bob"))
    elif change == "method":
        header = authorization(challenge, "POST", target)
    elif change == "realm":
        header = header.replace('realm="pushreport"', 'realm="other"')
    elif change == "opaque":
        header = re.sub(r'opaque="[^"]*"', 'opaque="x"', header)
    elif change == "qop":
        header = header.replace("qop=auth", "qop=auth-int")
    elif change == "nonce-forged":
        # A nonce of the right shape not signed by us, answered correctly: stale.
        nonce = challenge_params(challenge)["nonce"]
        forged = challenge.replace(nonce, "A" * 43)
        header = authorization(forged, "GET", target)
    resp = c.get(target, headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.headers.getlist("WWW-Authenticate")
    stale = "stale=true" in resp.headers["WWW-Authenticate"]
    assert stale == (change == "nonce-forged")
    assert list(app.receiver.storage) == []


def test_digest_expired_nonce_is_stale_then_a_fresh_one_works(tmp_path):
    clock = Clock()
    app = digest_app(tmp_path, clock=clock, nonce_ttl=60)
    c = Client(app)
    target = query()
    challenge = c.get(target).headers["WWW-Authenticate"]
    clock.advance(61)
    resp = c.get(target, headers={"Authorization": authorization(challenge, "GET", target)})
    assert resp.status_code == 401
    assert resp.data == b"authentication required: nonce expired\n"
    fresh = resp.headers["WWW-Authenticate"]
    assert fresh.endswith(", stale=true")
    resp = c.get(target, headers={"Authorization": authorization(fresh, "GET", target)})
    assert resp.status_code == 200


def test_digest_replay_is_refused_and_counts_must_grow(tmp_path):
    app = digest_app(tmp_path)
    c = Client(app)
    target = query()
    challenge = c.get(target).headers["WWW-Authenticate"]
    first = authorization(challenge, "GET", target, nc=1)
    assert c.get(target, headers={"Authorization": first}).status_code == 200
    replay = c.get(target, headers={"Authorization": first})
    assert replay.status_code == 401
    assert replay.data == b"authentication required: nonce count replayed\n"
    # The same nonce with a growing count is a client reusing its nonce: fine.
    again = authorization(challenge, "GET", target, nc=2, cnonce="ffee")
    assert c.get(target, headers={"Authorization": again}).status_code == 200
    assert list(app.receiver.storage)[0].reports == 2


def test_digest_nonces_of_another_process_with_the_same_key_are_accepted(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = digest_app(tmp_path / "a")
    two = digest_app(tmp_path / "b")
    target = query()
    challenge = Client(one).get(target).headers["WWW-Authenticate"]
    resp = Client(two).get(
        target, headers={"Authorization": authorization(challenge, "GET", target)}
    )
    assert resp.status_code == 200


def test_digest_under_a_mount_prefix(tmp_path):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    def portal(environ, start_response):
        start_response("404 Not Found", [])
        return [b""]

    app = digest_app(tmp_path)
    outer = DispatcherMiddleware(portal, {"/push": app})
    c = Client(outer)
    target = "/push" + query()
    challenge = c.get(target).headers["WWW-Authenticate"]
    resp = c.get(target, headers={"Authorization": authorization(challenge, "GET", target)})
    assert resp.status_code == 200, resp.data


def test_digest_and_callable_together_both_must_pass(tmp_path, users_module):
    app = digest_app(
        tmp_path,
        url=PASSWORD_URL,
        methods=("digest", "callable"),
        callable="pushreport_test_users:check_user",
    )
    c = Client(app)
    for password, status in ((ACCOUNT_PASSWORD, 200), ("guess", 403)):
        target = query(password=password)
        challenge = c.get(target).headers["WWW-Authenticate"]
        resp = c.get(target, headers={"Authorization": authorization(challenge, "GET", target)})
        assert resp.status_code == status


# --- a real digest client against a real server -------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    app = digest_app(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.close()


def urllib_opener(base: str, password: str) -> urllib.request.OpenerDirector:
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, base, "app", password)
    return urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(manager))


def test_urllib_digest_client_is_accepted(live):
    base, app = live
    opener = urllib_opener(base, DIGEST_PASSWORD)
    for _ in range(3):
        with opener.open(base + query(), timeout=10) as resp:
            assert resp.status == 200
    [reg] = list(app.receiver.storage)
    assert reg.reports == 3


def test_urllib_digest_client_with_a_wrong_password_gets_401(live):
    base, app = live
    opener = urllib_opener(base, "guess")
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(base + query(), timeout=10)
    assert e.value.code == 401
    assert list(app.receiver.storage) == []
