"""Two `pushreport serve` processes ("hosts") sharing one PostgreSQL table: concurrent
reports for the same selectors through both merge as if they had reached one host."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest

from .conftest import Server

pytestmark = pytest.mark.e2e

SELECTORS = [f"{i:040X}:7C3A0D{i:02X}" for i in range(4)]
THREADS = 8
PER_THREAD = 24


FAILURES: list[bytes] = []


def report(server: Server, **fields: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/token/?" + urlencode(fields))
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            FAILURES.append(body)
        return response.status
    finally:
        conn.close()


def burst(hosts: list[Server], make, statuses: list[int]) -> None:
    """THREADS threads, PER_THREAD reports each, alternating between the hosts."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(PER_THREAD):
                status = report(hosts[(t + i) % 2], **make(t, i))
                with lock:
                    statuses.append(status)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, f"a reporting thread failed: {errors[0]!r}"


def test_two_hosts_share_one_postgresql_table(tmp_path: Path, pg_dsn: str, pg_table: str) -> None:
    from pushreport_postgresql._storage import PostgreSQLStorage

    config = tmp_path / "pushreport.toml"
    # threads = 8: each host's group commit batches reports of the same selectors that
    # the other host's batches hold (PostgreSQL deadlocked them before they were sorted).
    config.write_text(
        "[server]\nthreads = 8\n"
        '[storage]\nbackends = ["postgresql"]\n[storage.postgresql]\n'
        f"dsn = {json.dumps(pg_dsn)}\ntable = {json.dumps(pg_table)}\n"
        "timeout = 10.0\n"
    )
    FAILURES.clear()
    hosts = []
    try:
        for name in ("host-a", "host-b"):
            (tmp_path / name).mkdir()
            hosts.append(Server(tmp_path / name, "--config", str(config), db=False))
        statuses: list[int] = []

        def anything(t: int, i: int) -> dict[str, str]:
            fields = {
                "selector": SELECTORS[i % len(SELECTORS)],
                "username": f"u{t}",
                "token_calls": f"call{t}x{i}AAAA",
                "appid_calls": "com.example.voip",
            }
            if (t + i) % 2 == 0:  # half of the reports know token_msgs
                fields.update(token_msgs=f"msg{t}x{i}AAAAA", appid_msgs="com.example.app")
            return fields

        burst(hosts, anything, statuses)
        # The last known token_msgs of each selector, reported once, through host a...
        final = {s: f"final{n}AAAAAAAA" for n, s in enumerate(SELECTORS)}
        for n, selector in enumerate(SELECTORS):
            statuses.append(
                report(
                    hosts[n % 2],
                    selector=selector,
                    token_msgs=final[selector],
                    appid_msgs="com.final",
                )
            )

        # ...then reports that do not know it, through both, at once.
        def without_msgs(t: int, i: int) -> dict[str, str]:
            return {"selector": SELECTORS[i % len(SELECTORS)], "token_calls": f"late{t}x{i}AAAA"}

        burst(hosts, without_msgs, statuses)
        outputs = [host.output() for host in hosts]
    finally:
        for host in hosts:
            host.stop()

    assert set(statuses) == {200}, (sorted(set(statuses)), FAILURES[:3], outputs)
    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        stored = {r.selector: r for r in storage}
    finally:
        storage.close()
    assert sorted(stored) == sorted(SELECTORS)
    for selector in SELECTORS:
        r = stored[selector]
        assert (r.token_msgs, r.appid_msgs) == (final[selector], "com.final"), selector
        assert r.token_calls is not None and r.token_calls.startswith("late")
        assert r.username is not None and r.appid_calls == "com.example.voip"
    assert (
        sum(r.reports for r in stored.values())
        == statuses.count(200)
        == (2 * THREADS * PER_THREAD + len(SELECTORS))
    )


def test_two_hosts_with_the_report_spool_store_every_report_once(
    tmp_path: Path, pg_dsn: str, pg_table: str
) -> None:
    """``spool = true`` on both hosts, each with its own spool folder (its marks under
    its own name): every report answered 200 is in the table once the hosts stop
    (a graceful stop applies the spool), whichever host's applier ran when, and a
    removal through one host of a selector reported through the other holds."""
    from pushreport_postgresql._storage import PostgreSQLStorage

    FAILURES.clear()
    hosts = []
    try:
        for name in ("host-a", "host-b"):
            folder = tmp_path / name
            folder.mkdir()
            config = folder / "pushreport.toml"
            config.write_text(
                '[storage]\nbackends = ["postgresql"]\n[storage.postgresql]\n'
                f"dsn = {json.dumps(pg_dsn)}\ntable = {json.dumps(pg_table)}\n"
                'timeout = 10.0\nspool = true\nspool_dir = "spool"\n'
            )
            hosts.append(Server(folder, "--config", str(config), db=False))
        statuses: list[int] = []

        def anything(t: int, i: int) -> dict[str, str]:
            return {
                "selector": SELECTORS[i % len(SELECTORS)],
                "username": f"u{t}",
                "token_calls": f"call{t}x{i}AAAA",
                "appid_calls": "com.example.voip",
            }

        burst(hosts, anything, statuses)
        gone = "F" * 40 + ":00000001"
        statuses.append(report(hosts[0], selector=gone, token_calls="goneAAAAAAAA"))
        conn = http.client.HTTPConnection("127.0.0.1", hosts[1].port, timeout=30)
        try:
            conn.request("GET", "/removal/?" + urlencode({"selector": gone}))
            removal = conn.getresponse()
            removal.read()
        finally:
            conn.close()
        outputs = [host.output() for host in hosts]
        spools = [
            list((tmp_path / name / "spool").glob("*.jsonl")) for name in ("host-a", "host-b")
        ]
    finally:
        for host in hosts:
            host.stop()

    assert set(statuses) == {200}, (sorted(set(statuses)), FAILURES[:3], outputs)
    assert removal.status == 200, outputs
    assert all(spools), "a host did not spool"
    storage = PostgreSQLStorage(dsn=pg_dsn, table=pg_table)
    try:
        stored = {r.selector: r for r in storage}
    finally:
        storage.close()
    assert sorted(stored) == sorted(SELECTORS)  # the removed one stays removed
    assert sum(r.reports for r in stored.values()) == THREADS * PER_THREAD
    assert all(r.token_calls is not None for r in stored.values())
