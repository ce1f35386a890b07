"""Item 6 of issue 14: ``client_header`` is believed only from ``trusted_proxies``.

The client is the right-most address of the header's chain that is not a trusted
proxy; from a peer that is not a trusted proxy the header is ignored; a
``client_header`` without ``trusted_proxies`` is refused at start-up."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from pushreport import LimitsConfig, client_address
from pushreport_core import ConfigurationError
from pushreport_wsgi import Config, Receiver, make_plugin_manager

from .conftest import make_config
from .test_auth import Clock, query
from .test_limits import app_with, get

XFF = "X-Forwarded-For"


def limits(*trusted: str, header: str = XFF) -> LimitsConfig:
    return LimitsConfig(client_header=header, trusted_proxies=trusted)


def client(peer: str | None, header: str | None, config: LimitsConfig) -> str | None:
    return client_address(peer, header, config.trusted_proxies)


@pytest.mark.parametrize(
    "peer, header, trusted, expected",
    [
        # IPv4: the proxy's own entry is the client's address.
        ("10.0.0.1", "203.0.113.5", ("10.0.0.0/8",), "203.0.113.5"),
        # Spoofed left-most entries: never read.
        ("10.0.0.1", "1.2.3.4, 203.0.113.5", ("10.0.0.0/8",), "203.0.113.5"),
        ("10.0.0.1", "garbage, 5.6.7.8 ,203.0.113.5", ("10.0.0.0/8",), "203.0.113.5"),
        # A chain of trusted proxies: skipped from the right.
        ("10.0.0.1", "1.2.3.4, 203.0.113.5, 10.1.1.1, 10.2.2.2", ("10.0.0.0/8",), "203.0.113.5"),
        # Two networks, one of them IPv6.
        (
            "2001:db8::10",
            "198.51.100.9, 192.0.2.1",
            ("2001:db8::/64", "192.0.2.0/24"),
            "198.51.100.9",
        ),
        # IPv6 clients; written in other forms, the same address.
        ("::1", "2001:DB8:0:0::0001", ("::1",), "2001:db8::1"),
        ("::1", "[2001:db8::1]:4711", ("::1",), "2001:db8::1"),
        ("::1", "203.0.113.5:4711", ("::1",), "203.0.113.5"),
        # IPv4-mapped peer (a dual-stack socket): an IPv4 proxy.
        ("::ffff:10.0.0.1", "203.0.113.5", ("10.0.0.1",), "203.0.113.5"),
        # RFC 7239's Forwarded header.
        ("10.0.0.1", 'for="[2001:db8::7]";proto=https', ("10.0.0.1",), "2001:db8::7"),
        # The peer is not a trusted proxy: the header is the client's own, ignored.
        ("203.0.113.5", "10.9.9.9", ("10.0.0.0/8",), "203.0.113.5"),
        ("2001:db8::5", "1.1.1.1", ("10.0.0.0/8",), "2001:db8::5"),
        # A trusted proxy that sent no header: itself.
        ("10.0.0.1", None, ("10.0.0.0/8",), "10.0.0.1"),
        # Every entry is a trusted proxy: the left-most is as far as the chain goes.
        ("10.0.0.1", "10.3.3.3, 10.2.2.2", ("10.0.0.0/8",), "10.3.3.3"),
        # A trusted proxy that wrote something that is not an address: that, as written.
        ("10.0.0.1", "1.2.3.4, unknown", ("10.0.0.0/8",), "unknown"),
    ],
)
def test_the_right_most_untrusted_address_is_the_client(peer, header, trusted, expected):
    assert client(peer, header, limits(*trusted)) == expected


def test_without_client_header_the_peer_as_given():
    assert client_address("192.0.2.1") == "192.0.2.1"
    assert client_address("192.0.2.1", "1.1.1.1") == "192.0.2.1"
    assert client_address(None) is None


def test_the_adapter_reads_the_configured_header_and_nothing_else(tmp_path: Path):
    """``client_header`` names any header: the WSGI adapter finds it in the environ
    (``X-Client-Addr`` is ``HTTP_X_CLIENT_ADDR``), and a header of another name is the
    client's own, never read."""
    app = app_with(
        tmp_path,
        Clock(),
        per_client="1/minute",
        client_header="X-Client-Addr",
        trusted_proxies=("10.0.0.1",),
    )
    proxy = "10.0.0.1"
    assert get(app, query(), proxy, **{"X-Client-Addr": "198.51.100.1"}).status_code == 200
    assert get(app, query(), proxy, **{"X-Client-Addr": "198.51.100.2"}).status_code == 200
    assert get(app, query(), proxy, **{"X-Client-Addr": "198.51.100.2"}).status_code == 429
    # Another header: the proxy itself is the client, once a minute.
    assert get(app, query(), proxy, **{XFF: "198.51.100.3"}).status_code == 200
    assert get(app, query(), proxy, **{XFF: "198.51.100.4"}).status_code == 429


def test_repeated_headers_joined_by_the_server_are_one_chain():
    # gunicorn joins repeated headers with ","; the proxy's line is still the last.
    assert client("10.0.0.1", "6.6.6.6,203.0.113.5", limits("10.0.0.1")) == "203.0.113.5"


def test_rotating_a_forged_header_no_longer_bypasses_per_client(tmp_path: Path):
    """The issue's attack: a client rotating X-Forwarded-For got 300 of 300 through a
    per_client limit. Directly connected (not a trusted proxy), it gets the limit."""
    app = app_with(
        tmp_path,
        Clock(),
        per_client="3/minute",
        client_header=XFF,
        trusted_proxies=("10.0.0.0/8",),
    )
    statuses = [
        get(app, query(), "203.0.113.66", **{XFF: f"198.51.100.{i}"}).status_code
        for i in range(20)
    ]
    assert statuses.count(200) == 3 and statuses.count(429) == 17
    # Through the trusted proxy, two clients are two buckets.
    assert get(app, query(), "10.0.0.1", **{XFF: "198.51.100.1"}).status_code == 200
    assert get(app, query(), "10.0.0.1", **{XFF: "198.51.100.2"}).status_code == 200


@pytest.mark.parametrize(
    "table, message",
    [
        (
            {"client_header": XFF},
            "limits.client_header: needs limits.trusted_proxies: the addresses of the "
            "proxies allowed to set it (from anyone else the header is the client's own "
            "to forge)",
        ),
        (
            {"client_header": XFF, "trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]},
            "limits.trusted_proxies: must be addresses or networks such as 10.0.0.0/8 "
            "or ::1, not '10.0.0.1/8'",
        ),
        (
            {"client_header": XFF, "trusted_proxies": ["proxy.example.com"]},
            "limits.trusted_proxies: must be addresses or networks such as 10.0.0.0/8 "
            "or ::1, not 'proxy.example.com'",
        ),
        (
            {"trusted_proxies": ["10.0.0.1"]},
            "limits.trusted_proxies: has no effect without limits.client_header, the "
            "header those proxies set",
        ),
    ],
)
def test_bad_proxy_settings_are_refused_at_start_up(table, message):
    with pytest.raises(ConfigurationError) as e:
        Config.from_dict({"limits": table})
    assert str(e.value) == message


def test_a_config_built_in_python_is_refused_too(tmp_path: Path):
    """Refused however the configuration is built: the section itself checks it."""
    with pytest.raises(ConfigurationError) as e:
        config = attrs.evolve(make_config(tmp_path), limits=LimitsConfig(client_header=XFF))
        Receiver.from_config(config, plugin_manager=make_plugin_manager())
    assert str(e.value).startswith("limits.client_header: needs limits.trusted_proxies")
