"""Authentication and limits on a real ``pushreport serve``: a real digest client
(urllib's) across several workers, a replayed request, 429 + Retry-After, and the
start-up refusal of a template that carries no credential."""

from __future__ import annotations

import hashlib
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import PUSHREPORT, Server, pushreport_list

pytestmark = pytest.mark.e2e

SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
DIGEST_PASSWORD = "Dig3st-Pa55-e2e"
TARGET = (
    f"/token/?selector={SELECTOR}&username=alice&token_msgs={TOKEN}"
    "&appid_msgs=com.cloudsoftphone.app"
)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "pushreport.toml"
    path.write_text(
        '[auth]\nmethods = ["digest"]\ndigest_username = "app"\n'
        f'digest_password = "{DIGEST_PASSWORD}"\n' + extra
    )
    return path


def test_urllib_digest_client_across_two_workers(tmp_path: Path):
    server = Server(tmp_path, "--config", str(write_config(tmp_path)), "--access-log", workers=2)
    try:
        base = f"http://127.0.0.1:{server.port}"
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, base, "app", DIGEST_PASSWORD)
        opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(manager))
        # Each report is a 401 and a retry, on new connections: the two land on either
        # worker, so the nonce of one is checked by the other (one key for all).
        for _ in range(12):
            with opener.open(base + TARGET, timeout=10) as resp:
                assert resp.status == 200
        wrong = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        wrong.add_password(None, base, "app", "guess")
        bad = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(wrong))
        with pytest.raises(urllib.error.HTTPError) as e:
            bad.open(base + TARGET.replace("alice", "mallory"), timeout=10)
        assert e.value.code == 401
        [reg] = pushreport_list(server.db)
        assert reg["username"] == "alice" and reg["reports"] == 12
    finally:
        server.stop()
    output = (tmp_path / "server.log").read_text("utf-8", "replace")
    assert output.count('"GET /token/') >= 24 and " 401 " in output and " 200 " in output
    assert DIGEST_PASSWORD not in output and TOKEN not in output
    assert "pushreport: authentication: digest" in output


def authorization(challenge: str, target: str) -> str:
    p = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5(f"app:{p['realm']}:{DIGEST_PASSWORD}")
    response = md5(f"{ha1}:{p['nonce']}:00000001:abcdef:auth:{md5('GET:' + target)}")
    return (
        f'Digest username="app", realm="{p["realm"]}", nonce="{p["nonce"]}", '
        f'uri="{target}", response="{response}", opaque="{p["opaque"]}", qop=auth, '
        'nc=00000001, cnonce="abcdef"'
    )


def request(target: str, headers: str = "") -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").encode()


def test_replayed_request_is_refused_and_limits_answer_429(tmp_path: Path):
    config = write_config(tmp_path, '[limits]\nper_client = "4/minute"\n')
    server = Server(tmp_path, "--config", str(config), workers=1)
    try:
        answer = server.send(request(TARGET))
        assert answer.startswith(b"HTTP/1.1 401 ")
        challenge = re.search(rb"(?i:WWW-Authenticate): (.*)\r\n", answer).group(1).decode()
        signed = request(TARGET, f"Authorization: {authorization(challenge, TARGET)}\r\n")
        assert server.send(signed).startswith(b"HTTP/1.1 200 ")
        replay = server.send(signed)
        assert replay.startswith(b"HTTP/1.1 401 ")
        assert b"authentication required: nonce count replayed" in replay
        assert server.send(request(TARGET)).startswith(b"HTTP/1.1 401 ")  # the fourth
        limited = server.send(request(TARGET))  # the fifth request of this client
        assert limited.startswith(b"HTTP/1.1 429 ")
        # One request every 15 s: the next token is at most 15 s away.
        assert re.search(rb"\r\n(?i:Retry-After): (1[0-5]|[1-9])\r\n", limited)
        assert pushreport_list(server.db)[0]["reports"] == 1
    finally:
        server.stop()


def test_template_without_the_credential_is_refused_at_start_up(tmp_path: Path):
    config = tmp_path / "pushreport.toml"
    config.write_text(
        '[reporter]\nurl = "https://x/token/?selector=%selector%&u=%account[username]%'
        '&t=%pushToken%"\n'
        '[auth]\nmethods = ["callable"]\ncallable = "os.path:exists"\n'
    )
    done = subprocess.run(
        [*PUSHREPORT, "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "pushreport: configuration error: auth.callable: the template carries no "
        "%account[password]%: the callable method needs it"
    )


# -- a registration belongs to its username (issue 14, item 2) ---------------------------

OWNERS = """
PASSWORDS = {"alice": "alice-pa55", "mallory": "mallory-pa55"}


def check(username, password):
    return PASSWORDS.get(username) == password
"""
MALLORYS_TOKEN = "bWFsbG9yeXMtb3duLXRva2VuLTAxMjM0NTY3ODk="


def owner_target(user: str, selector: str = SELECTOR, token: str = TOKEN, path="/token/") -> str:
    target = f"{path}?selector={selector}&username={user}&password={user}-pa55"
    if path == "/token/":
        target += f"&token_msgs={token}&appid_msgs=com.cloudsoftphone.app"
    return target


def callable_server(tmp_path: Path, workers: int = 2) -> Server:
    (tmp_path / "pushreport_e2e_owners.py").write_text(OWNERS)  # imported from the cwd
    config = tmp_path / "pushreport.toml"
    config.write_text('[auth]\nmethods = ["callable"]\ncallable = "pushreport_e2e_owners:check"\n')
    return Server(tmp_path, "--config", str(config), workers=workers)


def test_another_user_can_neither_take_over_nor_remove_a_registration(tmp_path: Path):
    server = callable_server(tmp_path)
    try:
        assert server.send(request(owner_target("alice"))).startswith(b"HTTP/1.1 200 ")
        [before] = pushreport_list(server.db)
        assert before["username"] == "alice"
        # mallory, logged in as herself, reports alice's selector with her own token...
        answer = server.send(request(owner_target("mallory", token=MALLORYS_TOKEN)))
        assert answer.startswith(b"HTTP/1.1 403 ")
        assert answer.endswith(b"\r\n\r\nselector belongs to another username\n")
        # ... and removes it.
        answer = server.send(request(owner_target("mallory", path="/removal/")))
        assert answer.startswith(b"HTTP/1.1 403 ")
        assert pushreport_list(server.db) == [before]  # the row is unchanged
        # Alice still reports and removes her own registration.
        assert server.send(request(owner_target("alice"))).startswith(b"HTTP/1.1 200 ")
        assert pushreport_list(server.db)[0]["reports"] == 2
        answer = server.send(request(owner_target("alice", path="/removal/")))
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert pushreport_list(server.db) == []
    finally:
        server.stop()
    output = (tmp_path / "server.log").read_text("utf-8", "replace")
    assert "mallory-pa55" not in output and "alice-pa55" not in output


def test_two_users_racing_for_new_selectors_across_workers(tmp_path: Path):
    """alice and mallory report the same new selectors at the same moment, on
    connections that land on either worker: per selector one of them gets 200, the
    other 403, and the row is the winner's."""
    import threading

    server = callable_server(tmp_path, workers=3)
    selectors = [f"{i:040X}:7C3A0D14" for i in range(12)]
    answers: dict[tuple[str, str], list[bytes]] = {}
    try:
        for selector in selectors:
            start = threading.Barrier(4)

            def send(user: str, selector: str = selector, start=start) -> None:
                token = TOKEN if user == "alice" else MALLORYS_TOKEN
                raw = request(owner_target(user, selector, token))
                start.wait(timeout=30)
                answers.setdefault((user, selector), []).append(server.send(raw)[:12])

            threads = [
                threading.Thread(target=send, args=(u,))
                for u in ("alice", "mallory", "alice", "mallory")
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        rows = {r["selector"]: r for r in pushreport_list(server.db)}
    finally:
        server.stop()
    for selector in selectors:
        won = [u for u in ("alice", "mallory") if answers[(u, selector)] == [b"HTTP/1.1 200"] * 2]
        lost = [u for u in ("alice", "mallory") if answers[(u, selector)] == [b"HTTP/1.1 403"] * 2]
        assert len(won) == 1 and len(lost) == 1, (selector, answers)
        assert rows[selector]["username"] == won[0]
        assert rows[selector]["token_msgs"] == (TOKEN if won[0] == "alice" else MALLORYS_TOKEN)
