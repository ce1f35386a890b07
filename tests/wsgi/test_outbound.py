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


class _TLSAnswer:
    """A loopback HTTPS server with a self-signed certificate (openssl) that answers
    every POST 204, or, *trickle*, sends its head a byte every half second (each read
    well within the timeout: only the whole-exchange deadline stops it)."""

    def __init__(self, tmp_path: Any, *, trickle: bool = False) -> None:
        import http.server
        import shutil
        import ssl
        import subprocess

        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed: no certificate for the HTTPS server")
        self.cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                if trickle:
                    for byte in b"HTTP/1.1 204 No Content\r\n\r\n":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        threading.Event().wait(0.5)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/check"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trusting_opener(self) -> Any:
        import ssl
        import urllib.request

        from pushreport.outbound import _HTTPHandler, _HTTPSHandler, _NoRedirect

        context = ssl.create_default_context(cafile=str(self.cert))
        return urllib.request.build_opener(
            _NoRedirect, _HTTPHandler, _HTTPSHandler(context=context)
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_verifies_the_certificate_and_answers_through_the_watched_connection(tmp_path):
    server = _TLSAnswer(tmp_path)
    try:
        with pytest.raises(OutboundError) as e:  # self-signed: the system store refuses
            post(server.url, b"x", headers={}, timeout=5)
        assert e.value.reason == "TLS error"
        answer = post(server.url, b"x", headers={}, timeout=5, opener=server.trusting_opener())
        assert answer.status == 204
    finally:
        server.close()


def test_https_that_trickles_its_answer_is_a_timeout(tmp_path):
    server = _TLSAnswer(tmp_path, trickle=True)
    try:
        with pytest.raises(OutboundError) as e:
            post(server.url, b"x", headers={}, timeout=2, opener=server.trusting_opener())
        assert e.value.reason == "timed out"
    finally:
        server.close()
