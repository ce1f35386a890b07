"""Issue 14, items 3, 4 and 5, on real servers: the limits hold for the whole of
``pushreport serve`` (3 workers, a restart) and for two servers sharing one PostgreSQL
database, not per worker.

Clients are told apart by their source address: the whole of 127.0.0.0/8 is local, so
a connection from 127.0.0.2 is another client to the server. The token buckets refill
while a test runs; each bound below counts the tokens that came in meanwhile (the
elapsed time is measured, not asserted).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import Server

pytestmark = pytest.mark.e2e

DIGEST_PASSWORD = "Dig3st-Pa55-e2e"
SECRET = "shared-s3cr3t-e2e"
NONCE_KEY = "nonce-key-shared-by-every-host"


def target(i: int, username: str = "") -> str:
    user = f"&username={username}" if username else ""
    return (
        f"/token/?selector={i:040X}:7C3A0D14&token_msgs=TOKEN{i:08d}AAAA"
        f"&appid_msgs=com.cloudsoftphone.app{user}"
    )


def send(server: Server, path: str, headers: str = "", source: str = "127.0.0.1") -> bytes:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=30, source_address=(source, 0)
    ) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status(answer: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert m is not None, answer[:200]
    return int(m.group(1))


def burst(jobs: list[tuple[Server, str, str]], threads: int = 8) -> tuple[list[int], float]:
    """Send every ``(server, path, source)`` at once over *threads*; the statuses and
    the seconds it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(lambda job: status(send(job[0], job[1], source=job[2])), jobs))
    return statuses, time.monotonic() - started


def most(burst_size: int, per_minute: int, elapsed: float) -> int:
    """The most a bucket of *burst_size*, refilled at *per_minute*, lets through in
    *elapsed* seconds (one token more for the second being cut)."""
    return burst_size + int(elapsed * per_minute / 60) + 1


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_rates_hold_for_the_whole_server_across_3_workers(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pushreport.toml",
        '[limits]\nper_client = "20/minute"\nper_username = "5/minute"\n',
    )
    server = Server(tmp_path, "--config", str(config), workers=3)
    try:
        # 300 reports of one client: 20, not 20 per worker.
        statuses, elapsed = burst([(server, target(i), "127.0.0.1") for i in range(300)])
        assert set(statuses) <= {200, 429}
        assert 20 <= statuses.count(200) <= most(20, 20, elapsed), (statuses.count(200), elapsed)
        # 200 reports of one username, each from its own client: 5.
        jobs = [(server, target(1000 + i, "alice"), f"127.0.1.{i + 1}") for i in range(200)]
        statuses, elapsed = burst(jobs)
        assert set(statuses) <= {200, 429}
        assert 5 <= statuses.count(200) <= most(5, 5, elapsed), (statuses.count(200), elapsed)
        answer = send(server, target(9999, "alice"), source="127.0.2.1")
        assert status(answer) == 429 and b"too many reports for this username" in answer
    finally:
        server.stop()
    assert (tmp_path / "pushreport.sqlite3.limits").exists()


def digest_header(challenge: str, path: str) -> str:
    p = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5(f"app:{p['realm']}:{DIGEST_PASSWORD}")
    response = md5(f"{ha1}:{p['nonce']}:00000001:0a4f113b:auth:{md5('GET:' + path)}")
    return (
        f'Authorization: Digest username="app", realm="{p["realm"]}", nonce="{p["nonce"]}", '
        f'uri="{path}", response="{response}", opaque="{p["opaque"]}", qop=auth, '
        'nc=00000001, cnonce="0a4f113b"\r\n'
    )


def challenge_of(answer: bytes) -> str:
    assert status(answer) == 401, answer[:300]
    m = re.search(rb"\r\n(?i:WWW-Authenticate): (Digest [^\r]*)\r\n", answer)
    assert m is not None
    return m.group(1).decode()


DIGEST_CONFIG = (
    '[auth]\nmethods = ["digest"]\ndigest_username = "app"\n'
    f'digest_password = "{DIGEST_PASSWORD}"\nnonce_key = "{NONCE_KEY}"\n'
)


def test_a_captured_digest_header_is_accepted_once_across_workers_and_a_restart(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pushreport.toml", DIGEST_CONFIG)
    path = target(1, "alice")
    server = Server(tmp_path, "--config", str(config), workers=3)
    try:
        captured = digest_header(challenge_of(send(server, path)), path)
        # 20 tries at once: whichever workers take them, one is accepted.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: send(server, path, captured), range(20)))
    finally:
        server.stop()
    server = Server(tmp_path, "--config", str(config), workers=3)  # the restart
    try:
        answers += [send(server, path, captured) for _ in range(20)]
    finally:
        server.stop()
    statuses = [status(a) for a in answers]
    assert statuses.count(200) == 1 and statuses.count(401) == 39, statuses
    replays = [a for a in answers if status(a) == 401]
    assert all(b"authentication required: nonce count replayed" in a for a in replays)


def test_another_clients_failures_never_lock_the_victim_out(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pushreport.toml",
        '[auth]\nmethods = ["secret"]\nsecret_field = "pushsecret"\n'
        f'secret = "{SECRET}"\n[limits]\nauth_failures = 3\nlockout = 300\n',
    )
    server = Server(tmp_path, "--config", str(config), workers=3)

    def report(secret: str, source: str) -> int:
        return status(send(server, target(7, "victim") + f"&pushsecret={secret}", source=source))

    try:
        # The attacker guesses from 127.0.0.2, one request after the other, on every worker.
        guesses = [report(f"guess{i}", "127.0.0.2") for i in range(30)]
        assert guesses[:3] == [403, 403, 403] and set(guesses[3:]) == {429}
        # Its guessing is stopped: the right secret is not even checked for it...
        assert report(SECRET, "127.0.0.2") == 429
        # ...and the victim, elsewhere, is not locked out.
        assert report(SECRET, "127.0.0.3") == 200
        assert report(SECRET, "127.0.0.3") == 200
    finally:
        server.stop()


def test_two_hosts_on_one_postgresql_database_share_the_limits(
    tmp_path: Path, pg_dsn: str, pg_table: str
) -> None:
    config = write_config(
        tmp_path / "pushreport.toml",
        '[storage]\nbackends = ["postgresql"]\n[storage.postgresql]\n'
        f"dsn = {json.dumps(pg_dsn)}\ntable = {json.dumps(pg_table)}\ntimeout = 10.0\n"
        '[limits]\nper_client = "20/minute"\n' + DIGEST_CONFIG,
    )
    hosts = []
    try:
        for name in ("host-a", "host-b"):
            (tmp_path / name).mkdir()
            hosts.append(Server(tmp_path / name, "--config", str(config), db=False))
        # 300 requests of one client, alternating between the hosts: 20 pass the limit
        # (and are asked for credentials), not 20 per host.
        jobs = [(hosts[i % 2], target(i, "alice"), "127.0.0.1") for i in range(300)]
        statuses, elapsed = burst(jobs)
        assert set(statuses) <= {401, 429}
        let_through = statuses.count(401)
        assert 20 <= let_through <= most(20, 20, elapsed), (let_through, elapsed)
        # A header signed for host a, replayed on host b: refused.
        path = target(1, "alice")
        captured = digest_header(challenge_of(send(hosts[0], path, source="127.0.0.2")), path)
        assert status(send(hosts[0], path, captured, source="127.0.0.2")) == 200
        replay = send(hosts[1], path, captured, source="127.0.0.2")
        assert status(replay) == 401 and b"nonce count replayed" in replay
    finally:
        for host in hosts:
            host.stop()
    assert not list(tmp_path.rglob("*.limits*"))  # the state is in the database
