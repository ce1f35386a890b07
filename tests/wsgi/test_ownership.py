"""A registration belongs to the username it is stored under (issue 14, item 2).

When authentication identifies the user (``[auth] methods = ["callable"]``, or a plugin
that vouches with ``True``), a report or removal of a selector stored under another
username is refused with 403 and changes nothing. Real SQLite and files backends, and
the real PostgreSQL with ``CI=true``.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import attrs
import pytest
from werkzeug.test import Client

from pushreport._config import AuthConfig, StorageConfig
from pushreport_core import Registration
from pushreport_wsgi import Config, Receiver, create_app, hookimpl, make_plugin_manager

from .conftest import SELECTOR, TOKEN_CALLS, TOKEN_MSGS

PASSWORDS = {"alice": "alice-pa55word", "mallory": "mallory-pa55word", "bob": "bob-pa55word"}
MALLORYS_TOKEN = "bWFsbG9yeXMtb3duLXRva2VuLTAxMjM0NTY3ODk="
REFUSED = b"selector belongs to another username\n"


def check_user(username: str, password: str) -> bool:
    return PASSWORDS.get(username) == password


@pytest.fixture(autouse=True)
def users_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("pushreport_test_owners")
    module.check_user = check_user  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pushreport_test_owners", module)


def storage_config(tmp_path: Path, backend: str, pg: str | None = None) -> StorageConfig:
    options: dict[str, dict[str, Any]] = {
        "sqlite": {"path": str(tmp_path / "db.sqlite3"), "busy_timeout": 2},
        "files": {"path": str(tmp_path / "files"), "lock_timeout": 2},
    }
    if pg is not None:
        options["postgresql"] = {"dsn": pg.split("|")[0], "table": pg.split("|")[1]}
    backends = tuple(backend.split("+"))
    return StorageConfig(backends=backends, options=options)


def app_for(tmp_path: Path, *, backend: str = "sqlite", pg: str | None = None, **auth: Any):
    auth = auth or {"methods": ("callable",), "callable": "pushreport_test_owners:check_user"}
    config = Config(
        storage=storage_config(tmp_path, backend, pg), auth=AuthConfig(**auth), base_dir=tmp_path
    )
    return create_app(config)


def report(user: str, *, token: str = TOKEN_MSGS, password: str | None = None, **more: str):
    password = PASSWORDS[user] if password is None else password
    fields = {
        "selector": SELECTOR,
        "username": user,
        "password": password,
        "token_msgs": token,
        "appid_msgs": "com.cloudsoftphone.app",
        **more,
    }
    return "/token/?" + "&".join(f"{k}={v}" for k, v in fields.items())


def removal(user: str, **more: str) -> str:
    fields = {"selector": SELECTOR, "username": user, "password": PASSWORDS[user], **more}
    return "/removal/?" + "&".join(f"{k}={v}" for k, v in fields.items())


def stored(app: Any) -> Registration | None:
    return app.receiver.storage.get(SELECTOR)


@pytest.fixture(params=["sqlite", "files", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param != "postgresql":
        return request.param, None
    dsn = request.getfixturevalue("pg_dsn")
    table = request.getfixturevalue("pg_table")
    return "postgresql", f"{dsn}|{table}"


def test_another_user_cannot_take_over_a_registration(tmp_path, backend) -> None:
    name, pg = backend
    app = app_for(tmp_path, backend=name, pg=pg)
    try:
        c = Client(app)
        assert c.get(report("alice", token_calls=TOKEN_CALLS)).status_code == 200
        before = stored(app)
        assert before is not None and before.username == "alice"
        # mallory, logged in as herself, reports alice's selector with her own token.
        resp = c.get(report("mallory", token=MALLORYS_TOKEN))
        assert (resp.status_code, resp.data) == (403, REFUSED)
        assert stored(app) == before  # nothing changed: username, tokens, counts
        # Alice goes on as before.
        assert c.get(report("alice")).status_code == 200
        after = stored(app)
        assert after is not None and (after.username, after.reports) == ("alice", 2)
    finally:
        app.close()


def test_another_user_cannot_remove_a_registration(tmp_path, backend) -> None:
    name, pg = backend
    app = app_for(tmp_path, backend=name, pg=pg)
    try:
        c = Client(app)
        assert c.get(report("alice")).status_code == 200
        before = stored(app)
        resp = c.get(removal("mallory"))
        assert (resp.status_code, resp.data) == (403, REFUSED)
        assert stored(app) == before
        # The owner removes it; then the selector is free, for anyone.
        assert c.get(removal("alice")).status_code == 200
        assert stored(app) is None
        assert c.get(removal("mallory")).status_code == 200  # already gone: a success
        assert c.get(report("mallory", token=MALLORYS_TOKEN)).status_code == 200
        now = stored(app)
        assert now is not None and now.username == "mallory"
    finally:
        app.close()


def test_a_registration_stored_without_a_username_is_free(tmp_path) -> None:
    app = app_for(tmp_path)
    try:
        # Stored before authentication identified anyone (or by a template without one).
        app.receiver.storage.upsert(attrs.evolve(_bare(), username=None), now=app.receiver.clock())
        assert Client(app).get(report("alice")).status_code == 200
        now = stored(app)
        assert now is not None and now.username == "alice"
    finally:
        app.close()


def _bare():
    from pushreport_core import Report

    return Report(selector=SELECTOR, token_msgs=TOKEN_MSGS, appid_msgs="com.cloudsoftphone.app")


def test_a_refusal_writes_no_backend_not_even_a_best_effort_one_before_it(tmp_path) -> None:
    """The backend that decides is the first required one; a best-effort backend listed
    before it is written after the decision, so a refusal leaves it untouched too."""
    config = Config(
        storage=StorageConfig(
            backends=("files", "sqlite"),
            options={
                "files": {"path": str(tmp_path / "files"), "required": False},
                "sqlite": {"path": str(tmp_path / "db.sqlite3")},
            },
        ),
        auth=AuthConfig(methods=("callable",), callable="pushreport_test_owners:check_user"),
        base_dir=tmp_path,
    )
    app = create_app(config)
    try:
        c = Client(app)
        assert c.get(report("alice")).status_code == 200
        files, sqlite = (b.storage for b in app.receiver.backends)
        before = (files.get(SELECTOR), sqlite.get(SELECTOR))
        assert before[0] is not None and before[0].username == "alice"
        assert c.get(report("mallory", token=MALLORYS_TOKEN)).status_code == 403
        assert c.get(removal("mallory")).status_code == 403
        assert (files.get(SELECTOR), sqlite.get(SELECTOR)) == before
    finally:
        app.close()


def test_shared_credentials_identify_nobody_so_nothing_changes_for_them(tmp_path) -> None:
    """A shared secret is the same for every account: it does not say who asks, and a
    report under another username is stored as before (the README's advice stands:
    prefer the callable)."""
    app = app_for(
        tmp_path, methods=("secret",), secret="s3cr3t-shared-value", secret_field="pushsecret"
    )
    try:
        c = Client(app)
        assert c.get(report("alice", pushsecret="s3cr3t-shared-value")).status_code == 200
        resp = c.get(report("mallory", token=MALLORYS_TOKEN, pushsecret="s3cr3t-shared-value"))
        assert resp.status_code == 200
        now = stored(app)
        assert now is not None and now.username == "mallory"
    finally:
        app.close()


class Vouch:
    """A third-party authenticator: it knows who is asking (a client certificate, a
    session), and says so with True; None when it has no opinion."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer

    @hookimpl
    def pushreport_authenticate(self, username):
        return self.answer


@pytest.mark.parametrize(("answer", "mallory_status"), [(True, 403), (None, 200)])
def test_a_plugin_that_vouches_identifies_the_user(tmp_path, answer, mallory_status) -> None:
    config = Config(storage=storage_config(tmp_path, "sqlite"), base_dir=tmp_path)
    pm = make_plugin_manager(plugins=[Vouch(answer)])
    app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
    try:
        c = Client(app)
        assert c.get(report("alice")).status_code == 200
        assert c.get(report("mallory", token=MALLORYS_TOKEN)).status_code == mallory_status
        assert c.get(removal("mallory")).status_code == mallory_status
        now = stored(app)
        if mallory_status == 403:
            assert now is not None and now.username == "alice" and now.token_msgs == TOKEN_MSGS
        else:
            assert now is None  # no identification: the removal went through, as before
    finally:
        app.close()


@pytest.mark.parametrize("name", ["sqlite", "files"])
def test_concurrent_reports_of_a_new_selector_by_two_users_never_both_pass(tmp_path, name) -> None:
    """Many threads report one new selector at once, half as alice, half as mallory:
    the first one stored decides; every answer 200 is of that username, every other a
    403, and the row holds only that user's report."""
    app = app_for(tmp_path, backend=name)
    receiver: Receiver = app.receiver
    users = ["alice", "mallory"] * 8
    answers: dict[int, int] = {}
    start = threading.Barrier(len(users))

    def send(i: int) -> None:
        start.wait(timeout=30)
        token = TOKEN_MSGS if users[i] == "alice" else MALLORYS_TOKEN
        for _ in range(100):  # a 503 (a lock held past its timeout under load): the app retries
            answers[i] = Client(app).get(report(users[i], token=token)).status_code
            if answers[i] != 503:
                break
            time.sleep(0.02)

    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(users))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = {users[i] for i, status in answers.items() if status == 200}
        assert len(answers) == len(users)
        assert set(answers.values()) <= {200, 403}
        assert len(winners) == 1, answers
        [winner] = winners
        row = receiver.storage.get(SELECTOR)
        assert row is not None and row.username == winner
        assert row.token_msgs == (TOKEN_MSGS if winner == "alice" else MALLORYS_TOKEN)
        assert row.reports == sum(1 for i, s in answers.items() if s == 200)
    finally:
        app.close()


def _race_worker(config: Config, user: str, rounds: int, barrier: Any, out: Any) -> None:
    import time

    from pushreport_core import AuthenticationFailed, Request, StorageUnavailable

    # A fresh interpreter (spawn): the module of the callable is installed here too.
    module = types.ModuleType("pushreport_test_owners")
    module.check_user = check_user  # type: ignore[attr-defined]
    sys.modules["pushreport_test_owners"] = module
    receiver = Receiver.from_config(config)
    results: list[tuple[int, int]] | str = []
    try:
        for r in range(rounds):
            selector = f"{r:040X}:7C3A0D14"
            target = report(user, token=f"{user}TOKEN{r:04d}AAAA").replace(SELECTOR, selector)
            barrier.wait(timeout=30)  # every process reports this selector at once
            for _ in range(100):  # a 503 (the database busy under load): retry, as the app
                try:
                    receiver.handle(Request(method="GET", target=target))
                    results.append((r, 200))
                except AuthenticationFailed:
                    results.append((r, 403))
                except StorageUnavailable:
                    time.sleep(0.05)
                    continue
                break
    except BaseException as e:  # reported, so that the test fails with it, not a timeout
        results = f"{user}: {type(e).__name__}: {e}"
    finally:
        receiver.close()
        out.put((user, results))


@pytest.mark.parametrize("name", ["sqlite", "postgresql"])
def test_processes_racing_for_new_selectors_never_both_pass(tmp_path, request, name) -> None:
    """Several processes (gunicorn's workers) report the same new selector at the same
    moment, each as another user, round after round: per selector, only one user ever
    gets a 200, and the row is theirs."""
    import multiprocessing

    pg = None
    if name == "postgresql":
        pg = f"{request.getfixturevalue('pg_dsn')}|{request.getfixturevalue('pg_table')}"
    config = Config(
        storage=storage_config(tmp_path, name, pg),
        auth=AuthConfig(methods=("callable",), callable="pushreport_test_owners:check_user"),
        base_dir=tmp_path,
    )
    users, rounds = ["alice", "mallory", "bob"], 40
    # spawn, not fork: a fork of this process (threads of other tests' apps) could
    # inherit a lock such a thread holds and hang.
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(users)), ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(config, u, rounds, barrier, out)) for u in users
    ]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    crashed = [r for r in results.values() if isinstance(r, str)]
    assert crashed == []
    receiver = Receiver.from_config(config, serving=False)
    try:
        for r in range(rounds):
            winners = [u for u in users if (r, 200) in results[u]]
            assert len(winners) == 1, f"round {r}: {winners} all got 200"
            row = receiver.storage.get(f"{r:040X}:7C3A0D14")
            assert row is not None and row.username == winners[0]
            assert row.token_msgs == f"{winners[0]}TOKEN{r:04d}AAAA"
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("answers", "username", "accepted", "identified"),
    [
        ([], "alice", True, False),  # nobody asked: accepted, nobody identified
        ([None], "alice", True, False),  # a shared secret that matched
        ([True], "alice", True, True),  # the callable vouched for alice
        ([None, True], "alice", True, True),
        ([True, False], "alice", False, False),
        ([True], None, True, False),  # no username: nobody to identify
    ],
)
def test_the_verdict_says_who_vouched(answers, username, accepted, identified) -> None:
    from pushreport._plugins import Verdict, authentication
    from pushreport_core import Report, Request

    pm = make_plugin_manager(plugins=[Vouch(a) for a in answers], load_entrypoints=False)
    report = Report(selector=SELECTOR, username=username)
    verdict = authentication(pm, report, Request(method="GET", target="/token/"))
    assert verdict == Verdict(accepted=accepted, identified=identified)


def test_digest_identifies_nobody_so_nothing_changes_for_it(tmp_path) -> None:
    """One Digest username and password for every account: it does not say who asks."""
    from .test_auth import authorization, digest_app, query

    app = digest_app(tmp_path)
    try:
        c = Client(app)
        for user in ("alice", "mallory"):
            target = query(username=user)
            challenge = c.get(target).headers["WWW-Authenticate"]
            headers = {"Authorization": authorization(challenge, "GET", target)}
            assert c.get(target, headers=headers).status_code == 200
        now = stored(app)
        assert now is not None and (now.username, now.reports) == ("mallory", 2)
    finally:
        app.close()


def test_the_owners_stale_removal_still_keeps_a_newer_registration(tmp_path, backend) -> None:
    name, pg = backend
    app = app_for(tmp_path, backend=name, pg=pg)
    try:
        c = Client(app)
        assert c.get(report("alice")).status_code == 200
        before = stored(app)
        # A removal naming another (older) token than the stored one: a newer report
        # came after it, so the registration stays; a success all the same.
        assert c.get(removal("alice", token_msgs=MALLORYS_TOKEN)).status_code == 200
        assert stored(app) == before
        assert c.get(removal("alice", token_msgs=TOKEN_MSGS)).status_code == 200
        assert stored(app) is None
    finally:
        app.close()
