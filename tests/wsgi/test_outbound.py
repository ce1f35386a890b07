"""pushreport.outbound, the one way the service POSTs (push gateway, auth provider):
what it logs of a URL, a redirect answered and not followed, failures in a few words."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from pushreport.outbound import OutboundError, post, where

from .test_auth_http import Provider


@pytest.mark.parametrize(
    "url, logged",
    [
        ("https://users.example/check?token=s3cret", "https://users.example"),
        ("http://svc:pw@users.example:8080/a/b", "http://users.example:8080"),
        ("https://[::1]:8443/check", "https://[::1]:8443"),
        ("https://users.example:port/x", "https://users.example"),
    ],
)
def test_where_keeps_scheme_host_and_port_only(url, logged):
    assert where(url) == logged


def test_a_redirect_is_answered_not_followed():
    provider = Provider()
    try:
        answer = post(
            provider.url,
            b"username=moved&password=x",
            headers={"Content-Type": "text/plain"},
            timeout=5,
            max_answer=10,
        )
    finally:
        provider.close()
    assert (answer.status, answer.body) == (302, b"ok")
    assert answer.headers is not None and answer.headers["Location"] == "/followed"
    assert not provider.redirect_followed


def test_no_answer_is_an_error_in_a_few_words():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OutboundError) as e:
        post(f"http://127.0.0.1:{port}/secret-path", b"x", headers={}, timeout=5)
    assert e.value.reason == "connection refused"
    assert str(e.value) == "connection refused"  # neither the URL nor the body


def test_a_host_name_is_resolved_and_connected_within_the_deadline():
    provider = Provider()
    try:
        url = provider.url.replace("127.0.0.1", "localhost")
        answer = post(url, b"username=nocontent&password=x", headers={}, timeout=5)
    finally:
        provider.close()
    assert answer.status == 401  # asked, and answered (the password is wrong)
    assert provider.calls[0]["form"]["username"] == "nocontent"


def test_a_resolver_that_hangs_is_a_timeout(monkeypatch):
    # Fault injection: the resolver never answers for this name (a DNS outage). The
    # caller gets "timed out" when the deadline passes; the lookup's thread is released
    # afterwards. Were the lookup not bounded, post() would wait for the event and then
    # fail on the name ("host name not resolved"), not time out.
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "users.pushreport-test.invalid":
            release.wait(30)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        with pytest.raises(OutboundError) as e:
            post("http://users.pushreport-test.invalid/check", b"x", headers={}, timeout=0.3)
    finally:
        release.set()
    assert e.value.reason == "timed out"
