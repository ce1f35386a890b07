"""``[auth] methods = ["http"]``: the account's username and password POSTed to a
provider, a real HTTP server on loopback (``http.server`` in a thread) that answers
2xx, 401, 403, 500, a redirect, slowly, byte by byte, or not at all.

Everything is stored in a real SQLite file; the reports go through werkzeug's client.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote

import attrs
import pytest
from werkzeug.test import Client

from pushreport._auth import HttpAuthenticator
from pushreport._config import AuthConfig, LimitsConfig, MetricsConfig
from pushreport_core import FORM, AuthenticationUnavailable, ConfigurationError, Secret
from pushreport_wsgi import Config, Receiver, create_app, make_plugin_manager

from .conftest import make_config
from .test_auth import PASSWORD_URL, PLAIN_URL, Clock, query

#: Characters a form must escape, and one that is not ASCII.
PASSWORD = "Pr0v1der&pa55=wörd+%"
TIMEOUT = 0.5  # the provider's deadline in these tests


class Provider:
    """The deployer's user service: the answer depends on the username posted."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.redirect_followed = False
        self.release = threading.Event()  # ends the slow answers at teardown
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # only a followed redirect would GET
                provider.redirect_followed = True
                self.send_response(200)
                self.end_headers()

            def do_POST(self) -> None:
                if self.path == "/followed":
                    provider.redirect_followed = True
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                form = {k: v[0] for k, v in parse_qs(body.decode("ascii")).items()}
                provider.calls.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "user_agent": self.headers.get("User-Agent"),
                        "body": body,
                        "form": form,
                    }
                )
                user = form.get("username")
                if user == "closed":
                    self.close_connection = True
                    return  # no answer at all
                if user == "slow":
                    provider.release.wait(10)
                elif user == "trickle":
                    # Each byte well within the socket timeout, the whole far past the
                    # deadline: only a deadline on the whole exchange stops it.
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X: y\r\n" * 20
                    for byte in head + b"\r\n":
                        if provider.release.wait(TIMEOUT / 5):
                            return
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                status = {
                    "nocontent": 204,
                    "forbidden": 403,
                    "broken": 500,
                    "moved": 302,
                }.get(user or "", 200 if form.get("password") == PASSWORD else 401)
                if user in ("alice", "nocontent") and form.get("password") != PASSWORD:
                    status = 401
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/followed")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/check/users?key=k3y"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.close()


def receiver(
    tmp_path: Path,
    url: str,
    *,
    clock: Clock | None = None,
    limits: LimitsConfig | None = None,
    metrics: bool = False,
    **auth: Any,
) -> Receiver:
    config = attrs.evolve(
        make_config(tmp_path, url=url),
        auth=AuthConfig(**{"http_timeout": TIMEOUT, **auth}),
        limits=limits or LimitsConfig(),
        metrics=MetricsConfig(enabled=metrics),
    )
    return Receiver.from_config(
        config, plugin_manager=make_plugin_manager(), clock=clock or Clock()
    )


def http_app(tmp_path: Path, provider_url: str, **kw: Any) -> Any:
    return create_app(
        receiver=receiver(tmp_path, PASSWORD_URL, methods=("http",), http_url=provider_url, **kw)
    )


def report(username: str = "alice", password: str = PASSWORD) -> str:
    return query(username=username, password=quote(password, safe=""))


def test_the_right_password_is_accepted_and_posted_as_a_form(tmp_path, provider):
    app = http_app(tmp_path, provider.url)
    assert Client(app).get(report()).status_code == 200
    [call] = provider.calls
    assert call["path"] == "/check/users?key=k3y"
    assert call["content_type"] == FORM
    assert call["user_agent"] == "pushreport"
    assert call["form"] == {"username": "alice", "password": PASSWORD}
    assert call["body"] == b"username=alice&password=Pr0v1der%26pa55%3Dw%C3%B6rd%2B%25"
    [reg] = list(app.receiver.storage)
    assert reg.username == "alice" and reg.reports == 1


def test_any_2xx_accepts(tmp_path, provider):
    app = http_app(tmp_path, provider.url)
    assert Client(app).get(report("nocontent")).status_code == 200
    assert [c["form"]["username"] for c in provider.calls] == ["nocontent"]


@pytest.mark.parametrize(
    "username, password",
    [("alice", "guess"), ("forbidden", PASSWORD), ("alice", "")],
    ids=["401", "403", "empty password"],
)
def test_401_and_403_refuse_with_403_and_store_nothing(tmp_path, provider, username, password):
    app = http_app(tmp_path, provider.url)
    resp = Client(app).get(report(username, password))
    assert resp.status_code == 403
    assert list(app.receiver.storage) == []
    # An empty password is refused without asking anybody.
    assert len(provider.calls) == (0 if password == "" else 1)


UNAVAILABLE = [
    ("broken", "HTTP 500"),
    ("moved", "HTTP 302 (a redirect: not followed)"),
    ("slow", "timed out"),
    ("trickle", "timed out"),
    ("closed", "connection closed without an answer"),
]


@pytest.mark.parametrize("username, reason", UNAVAILABLE, ids=[u for u, _ in UNAVAILABLE])
def test_no_verdict_is_503_with_retry_after(tmp_path, provider, caplog, username, reason):
    app = http_app(tmp_path, provider.url)
    with caplog.at_level("DEBUG"):
        resp = Client(app).get(report(username))
    assert resp.status_code == 503
    assert resp.data == b"authentication is unavailable\n"
    assert resp.headers["Retry-After"] == "5"
    assert list(app.receiver.storage) == []
    host = provider.url.split("/check")[0]
    assert f"authentication provider {host} failed: {reason}" in caplog.text
    assert "/check" not in caplog.text and "k3y" not in caplog.text  # path and query not logged
    assert PASSWORD not in caplog.text and quote(PASSWORD, safe="") not in caplog.text
    assert not provider.redirect_followed


def test_a_provider_that_is_not_listening_is_503(tmp_path, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens there
    app = http_app(tmp_path, f"http://127.0.0.1:{port}/check")
    with caplog.at_level("DEBUG"):
        resp = Client(app).get(report())
    assert resp.status_code == 503
    assert f"authentication provider http://127.0.0.1:{port} failed: connection refused" in (
        caplog.text
    )


def test_the_deadline_covers_the_whole_exchange(provider):
    # Directly: the trickling provider is cut off at the deadline, not after its last
    # byte (which would answer 200: the assertion below would then fail).
    auth = HttpAuthenticator(provider.url, timeout=TIMEOUT)
    with pytest.raises(AuthenticationUnavailable) as e:
        auth.pushreport_authenticate(username="trickle", password=Secret(PASSWORD))
    assert str(e.value) == "authentication is unavailable"
    # No chained exception whose frames hold the form: a traceback cannot show it.
    assert e.value.__context__ is None and e.value.__cause__ is None
    assert repr(auth) == f"HttpAuthenticator('{provider.url.split('/check')[0]}', cache=0)"


def test_successes_are_cached_failures_never(tmp_path, provider):
    clock = Clock()
    app = http_app(tmp_path, provider.url, clock=clock, cache_ttl=60)
    c = Client(app)
    for _ in range(3):
        assert c.get(report()).status_code == 200
        assert c.get(report(password="guess")).status_code == 403
        assert c.get(report("broken")).status_code == 503
    users = [(call["form"]["username"], call["form"]["password"]) for call in provider.calls]
    assert users.count(("alice", PASSWORD)) == 1  # then from the cache
    assert users.count(("alice", "guess")) == 3
    assert users.count(("broken", PASSWORD)) == 3
    [plugin] = [
        p for p in app.receiver.plugin_manager.get_plugins() if isinstance(p, HttpAuthenticator)
    ]
    assert all(PASSWORD.encode() not in k[1] for k in plugin._cache)
    assert PASSWORD not in repr(plugin)
    clock.advance(61)
    assert c.get(report()).status_code == 200
    users = [(call["form"]["username"], call["form"]["password"]) for call in provider.calls]
    assert users.count(("alice", PASSWORD)) == 2  # expired: asked again


def test_refusals_count_towards_the_lock_out_and_unavailability_does_not(tmp_path, provider):
    app = http_app(tmp_path, provider.url, limits=LimitsConfig(auth_failures=2))
    c = Client(app)
    assert [c.get(report("broken")).status_code for _ in range(3)] == [503, 503, 503]
    assert [c.get(report(password="guess")).status_code for _ in range(2)] == [403, 403]
    assert c.get(report()).status_code == 429  # locked out, the provider not asked
    assert sum(call["form"]["username"] == "alice" for call in provider.calls) == 2


def test_the_password_is_in_no_log_metric_or_error(tmp_path, provider, caplog):
    app = http_app(tmp_path, provider.url, metrics=True)
    c = Client(app)
    with caplog.at_level("DEBUG"):
        for username, _ in [("alice", ""), ("forbidden", ""), *UNAVAILABLE]:
            resp = c.get(report(username))
            assert PASSWORD.encode() not in resp.data
        scraped = c.get("/metrics").get_data(as_text=True)
    assert "pushreport_" in scraped
    for text in (caplog.text, scraped, repr(app.receiver.config)):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text


def test_a_template_without_the_password_is_refused_at_start_up(tmp_path, provider):
    with pytest.raises(ConfigurationError) as e:
        receiver(tmp_path, PLAIN_URL, methods=("http",), http_url=provider.url)
    assert str(e.value) == (
        "auth.http_url: the template carries no %account[password]%: the http method needs it"
    )


@pytest.mark.parametrize(
    "auth, message",
    [
        ({"methods": ["http"]}, "auth.http_url: the http method needs the provider's URL"),
        (
            {"methods": ["http"], "http_url": "ftp://users.example/check"},
            "auth.http_url: must be an http or https URL with a host",
        ),
        (
            {"methods": ["http"], "http_url": "https:///check"},
            "auth.http_url: must be an http or https URL with a host",
        ),
        (
            {"methods": ["http"], "http_url": "https://svc:pw@users.example/check"},
            "auth.http_url: must not carry a user or password",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example:port/check"},
            "auth.http_url: is not a valid URL",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example/a b"},
            "auth.http_url: must not contain spaces or control characters",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example/\r\nX-Injected: 1"},
            "auth.http_url: must not contain spaces or control characters",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example/", "http_timeout": 0},
            "auth.http_timeout: must be between 0.1 and 10, not 0",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example/", "http_timeout": 30},
            "auth.http_timeout: must be between 0.1 and 10, not 30",
        ),
        (
            {"methods": ["http"], "http_url": "https://users.example/", "http_timeout": "3"},
            "auth.http_timeout: must be a number, not str",
        ),
    ],
)
def test_http_configuration_errors_name_the_key(auth, message):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"auth": auth})
    assert str(e.value) == message


def test_an_https_url_with_a_port_is_accepted():
    config = Config.from_dict(
        {"auth": {"methods": ["http"], "http_url": "https://users.example:8443/check"}}
    )
    assert config.auth.http_url == "https://users.example:8443/check"
    assert config.auth.http_timeout == 3.0


def test_it_identifies_the_user_so_another_cannot_take_the_selector_over(tmp_path, provider):
    app = http_app(tmp_path, provider.url)
    c = Client(app)
    assert c.get(report("alice")).status_code == 200
    # "nocontent" is a user the provider accepts too: authenticated, but not the owner.
    assert c.get(report("nocontent")).status_code == 403
    [reg] = list(app.receiver.storage)
    assert reg.username == "alice" and reg.reports == 1
