"""The support page (``[admin]``, off by default): find the registrations of an
account, send one a test push, forget one (an erasure request).

:class:`AdminPage` answers parsed requests (:class:`AdminRequest`) with
:class:`AdminAnswer` values: server-rendered HTML and its headers. It speaks no WSGI:
an adapter hands it the method, path, query, form, cookies and a few headers, and sends
back what it returns. Under its ``path``::

    GET  {path}/          the search form; ?q= a username or a selector ({path}: to here)
    GET  {path}/login     the login form;  POST: log in with the token
    POST {path}/logout    end the session
    POST {path}/push      a test push to one registration (purpose call or message)
    POST {path}/forget    forget one registration (asks first; confirm=yes does it)

Who may: a request with ``Authorization: Bearer <[admin] token>``, or a browser that
logged in with that token and holds the session cookie it was given (signed with a key
derived from the token: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https,
``Path`` the page's). Every POST carries a CSRF token bound to the session. Failed logins
count towards ``[limits] auth_failures`` per client and are locked out like failed
reports. Every answer forbids scripts, frames, caching and referrers
(:data:`SECURITY_HEADERS`); the page works without JavaScript and fits a phone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

import attrs

from pushreport_core import (
    ConfigurationError,
    Purpose,
    PushReportError,
    Registration,
    Secret,
    StorageUnavailable,
    TooManyRequests,
    format_time,
    push_targets,
    shorten,
)

from ._auth import bearer_matches
from ._config import check_bearer_token
from ._lookup import Lookup
from ._push import PushClient, PushResult

if TYPE_CHECKING:
    from ._service import Receiver

__all__ = ["AdminAnswer", "AdminPage", "AdminRequest", "SECURITY_HEADERS"]

log = logging.getLogger("pushreport.admin")

#: The session cookie, and the one that carries a login form's CSRF nonce.
SESSION_COOKIE = "pushreport_admin"
LOGIN_COOKIE = "pushreport_admin_login"
#: The longest search or selector accepted (a selector is far shorter).
MAX_VALUE = 4096
#: The session of a request that sent the bearer token (its CSRF token is bound to it).
_BEARER_SESSION = "bearer"

_CSS = """
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.4}
body{margin:0 auto;max-width:48rem;padding:.75rem}
header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5rem}
h1{font-size:1.25rem;margin:.25rem 0}h2{font-size:1.05rem;margin:0 0 .5rem;overflow-wrap:anywhere}
form.inline{display:inline}
input[type=search],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{padding:.5rem .75rem;font-size:1rem;margin:.25rem .25rem .25rem 0}
.reg{border:1px solid #8888;border-radius:.4rem;padding:.75rem;margin:.75rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .75rem;margin:0 0 .5rem}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.stale{background:#c60;color:#fff;border-radius:.3rem;padding:0 .4rem;font-size:.85rem}
.note{border-left:.3rem solid #08c;padding:.25rem .75rem;margin:.75rem 0}
.error{border-left-color:#c00}
.danger{background:#c00;color:#fff;border:0;border-radius:.3rem}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #8888;padding:.25rem;text-align:left;overflow-wrap:anywhere}
@media (max-width:30rem){dl{grid-template-columns:1fr}dt{margin-top:.3rem}}
""".strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

#: Sent with every answer of the page: no script, no frame, no other origin, nothing
#: cached or referred.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


@attrs.frozen(kw_only=True)
class AdminRequest:
    """One request to the page, as an adapter parsed it. *query* and *form* hold each
    parameter's values in order; *client* is the client's address as ``[limits]``
    reads it; *secure*: it came over https."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    form: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    cookies: Mapping[str, str] = attrs.field(factory=dict)
    authorization: str = attrs.field(default="", repr=False)
    client: str | None = None
    secure: bool = False
    #: Where the adapter is mounted (WSGI's ``SCRIPT_NAME``): the cookie's path starts
    #: with it. The page's own links are relative.
    script_root: str = ""


@attrs.frozen
class AdminAnswer:
    """What to send: a status, an HTML body, and headers (``Set-Cookie`` may repeat)."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class _Refused(Exception):
    """An answer other than the page: its status, the one line to show, its headers."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _one(values: Mapping[str, Sequence[str]], name: str) -> str:
    given = values.get(name, ())
    if len(given) > 1:
        raise _Refused(400, f"give {name} once")
    value = given[0] if given else ""
    if len(value) > MAX_VALUE:
        raise _Refused(400, f"{name} is too long")
    if "\x00" in value:  # no backend stores one; PostgreSQL cannot even compare it
        raise _Refused(400, f"{name} contains a NUL character")
    return value


def _same(expected: str, given: str) -> bool:
    """Constant-time equality of a computed signature and what a client sent (any text:
    ``hmac.compare_digest`` refuses non-ASCII ``str``, so bytes are compared)."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogatepass"))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


class AdminPage:
    """The support page under *path* over *receiver*'s storage (see the module).

    :param token: the ``[admin]`` token (at least 16 characters).
    :param session: how long a login lasts.
    :param push_client: what sends the test pushes (``[push]``).
    :param stale_after: a registration not seen for this long is marked stale
        (``[prune] older_than``; ``None``: none is).
    """

    def __init__(
        self,
        receiver: Receiver,
        *,
        token: Secret,
        path: str,
        session: timedelta = timedelta(hours=8),
        push_client: PushClient | None = None,
        stale_after: timedelta | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        check_bearer_token(token.reveal(), "admin.token")  # however it was built
        self.receiver = receiver
        self.lookup = Lookup(receiver.storage)
        self.path = path.rstrip("/")
        for method in ("GET", "POST"):
            if receiver.owns(method, self.path) or receiver.owns(method, self.path + "/"):
                raise ConfigurationError(
                    f"{self.path} is a report path of the configured shapes", key="admin.path"
                )
        self.session = session
        self.push_client = push_client or PushClient.from_config(
            receiver.config.push, storages=[b.storage for b in receiver.backends]
        )
        self.stale_after = stale_after
        self.clock = clock or receiver.clock
        self._token = token
        # Sessions and CSRF tokens are signed with a key only the token gives: a new
        # token ends every session.
        self._key = hmac.new(
            token.reveal().encode("utf-8", "surrogatepass"),
            b"pushreport admin session",
            hashlib.sha256,
        ).digest()

    @classmethod
    def from_config(cls, receiver: Receiver) -> AdminPage:
        config = receiver.config
        return cls(
            receiver,
            token=config.admin.bearer_token(),
            path=config.admin.path,
            session=config.admin.session_delta(),
            stale_after=config.prune.older_than_delta(),
        )

    def owns(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")

    # -- the answer ------------------------------------------------------------------

    def answer(self, request: AdminRequest) -> AdminAnswer:
        """The answer to *request* (never raises for anything the request holds)."""
        route = request.path[len(self.path) :] if self.owns(request.path) else None
        try:
            if route == "":  # the page's links are relative to {path}/
                return self._redirect(self.path.rsplit("/", 1)[-1] + "/")
            if route == "/login":
                return self._login(request)
            if route not in ("/", "/logout", "/push", "/forget"):
                raise _Refused(404, "not found")
            session = self._session(request)
            if session is None:
                if request.method in ("GET", "HEAD"):
                    return self._redirect("login")
                raise _Refused(401, "log in first")
            if route == "/":
                self._methods(request, "GET", "HEAD")
                return self._search(request, session)
            self._methods(request, "POST")
            self._check_csrf(request, session)
            if route == "/logout":
                return self._redirect(
                    "login", cookies=[self._cookie(request, SESSION_COOKIE, "", 0)]
                )
            if route == "/push":
                return self._push(request, session)
            return self._forget(request, session)
        except _Refused as e:
            return self._page(e.status, "Refused", self._note(e.message, error=True), e.headers)
        except TooManyRequests as e:
            return self._page(
                429,
                "Refused",
                self._note(e.msg, error=True),
                (("Retry-After", str(e.retry_after or 1)),),
            )
        except StorageUnavailable as e:
            self.receiver.failure_log.warning("support page: storage unavailable: %s", e.msg)
            return self._page(
                503,
                "Unavailable",
                self._note("storage unavailable; try again", error=True),
                (("Retry-After", str(e.retry_after or 1)),),
            )

    # -- sessions, logins, CSRF ------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(
            self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()

    def _csrf(self, session: str) -> str:
        return self._sign("csrf:" + session)

    def _session(self, request: AdminRequest) -> str | None:
        """The session the request belongs to (``None``: none). A wrong bearer token
        counts as a failed login."""
        if request.authorization:
            limiter = self.receiver.limiter
            if limiter is not None:
                limiter.check_login(request.client)
            if bearer_matches(request.authorization, self._token):
                return _BEARER_SESSION
            if limiter is not None:
                limiter.login_failed(request.client)
            log.info("support page: a wrong bearer token from %s", request.client)
            raise _Refused(401, "a valid bearer token is required")
        cookie = request.cookies.get(SESSION_COOKIE, "")
        sid, _, rest = cookie.partition(".")
        expires, _, signature = rest.partition(".")
        if not (sid and expires.isascii() and expires.isdigit() and signature):
            return None
        if not _same(self._sign(f"{sid}.{expires}"), signature):
            return None
        if int(expires) <= self.clock().timestamp():
            return None
        return sid

    def _check_csrf(self, request: AdminRequest, session: str) -> None:
        given = _one(request.form, "csrf")
        if not _same(self._csrf(session), given):
            log.info("support page: a %s without a valid CSRF token refused", request.path)
            raise _Refused(403, "invalid or missing CSRF token: reload the page and try again")

    def _cookie(self, request: AdminRequest, name: str, value: str, max_age: int) -> str:
        flags = f"Path={request.script_root}{self.path}; HttpOnly; SameSite=Strict"
        if request.secure:
            flags += "; Secure"
        return f"{name}={value}; Max-Age={max_age}; {flags}"

    def _login(self, request: AdminRequest) -> AdminAnswer:
        self._methods(request, "GET", "HEAD", "POST")
        if request.method != "POST":
            nonce = secrets.token_urlsafe(18)
            cookie = self._cookie(request, LOGIN_COOKIE, nonce, 3600)
            return self._login_form(200, nonce, "", cookie)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        given = _one(request.form, "csrf")
        if not nonce or not _same(self._csrf("login:" + nonce), given):
            raise _Refused(403, "invalid or missing CSRF token: reload the page and try again")
        limiter = self.receiver.limiter
        if limiter is not None:
            limiter.check_login(request.client)
        if not self._token.matches(_one(request.form, "token")):
            if limiter is not None:
                limiter.login_failed(request.client)
            log.info("support page: a failed login from %s", request.client)
            return self._login_form(401, nonce, "wrong token")
        if limiter is not None:
            limiter.login_succeeded(request.client)
        log.info("support page: a login from %s", request.client)
        lifetime = int(self.session.total_seconds())
        sid = secrets.token_urlsafe(18)
        expires = int(self.clock().timestamp()) + lifetime
        value = f"{sid}.{expires}.{self._sign(f'{sid}.{expires}')}"
        return self._redirect(
            "./",
            cookies=[
                self._cookie(request, SESSION_COOKIE, value, lifetime),
                self._cookie(request, LOGIN_COOKIE, "", 0),
            ],
        )

    def _methods(self, request: AdminRequest, *allowed: str) -> None:
        if request.method not in allowed:
            raise _Refused(405, "method not allowed", (("Allow", ", ".join(allowed)),))

    # -- the actions -------------------------------------------------------------------

    def _search(self, request: AdminRequest, session: str, notes: str = "") -> AdminAnswer:
        q = _one(request.query, "q").strip()
        return self._results(session, q, notes)

    def _results(self, session: str, q: str, notes: str = "") -> AdminAnswer:
        body = notes + self._search_form(q)
        if q:
            found = self._find(q)
            if found:
                body += "".join(self._registration(r, session, q) for r in found)
            else:
                body += self._note(f"no registration of username or selector {q!r}")
        return self._page(200, "Search", body, session=session)

    def _find(self, q: str) -> list[Registration]:
        by_selector = self.lookup.registrations(selector=q)
        by_username = self.lookup.registrations(username=q)
        seen = {r.selector for r in by_selector}
        return by_selector + [r for r in by_username if r.selector not in seen]

    def _target(self, request: AdminRequest) -> Registration:
        selector = _one(request.form, "selector")
        if not selector:
            raise _Refused(400, "give a selector")
        found = self.lookup.registrations(selector=selector)
        if not found:
            raise _Refused(404, "no registration with that selector")
        return found[0]

    def _push(self, request: AdminRequest, session: str) -> AdminAnswer:
        registration = self._target(request)
        given = _one(request.form, "purpose")
        if given not in ("call", "message"):
            raise _Refused(400, "purpose must be call or message")
        purpose: Purpose = "call" if given == "call" else "message"
        q = _one(request.form, "q").strip() or registration.selector
        targets = push_targets([registration], purpose, username=registration.username)
        if not targets:
            note = self._note(f"this registration has no token for {purpose}s", error=True)
            return self._results(session, q, note)
        try:
            results = [
                self.push_client.send(
                    t, message="pushreport test push" if purpose == "message" else None
                )
                for t in targets
            ]
        except PushReportError as e:
            return self._results(session, q, self._note(f"not sent: {e.msg}", error=True))
        log.info("support page: a test %s push to %s", purpose, registration.selector)
        return self._results(session, q, self._push_results(purpose, results))

    def _forget(self, request: AdminRequest, session: str) -> AdminAnswer:
        registration = self._target(request)
        q = _one(request.form, "q").strip()
        if _one(request.form, "confirm") != "yes":
            return self._page(
                200, "Forget?", self._confirm(registration, session, q), session=session
            )
        outcome = self.receiver.forget(registration.selector)
        log.info("support page: forgot the registration of %s", registration.selector)
        if outcome.removed is None:
            note = self._note(f"{registration.selector} was already gone")
        else:
            note = self._note(f"forgot the registration {registration.selector}")
        return self._results(session, q, note)

    # -- HTML --------------------------------------------------------------------------

    def _redirect(self, location: str, cookies: Iterable[str] = ()) -> AdminAnswer:
        headers = (("Location", location), *(("Set-Cookie", c) for c in cookies))
        return AdminAnswer(
            303,
            self._document("Redirect", f'<p><a href="{_e(location)}">continue</a></p>'),
            (("Content-Type", "text/html; charset=utf-8"), *headers, *SECURITY_HEADERS),
        )

    def _page(
        self,
        status: int,
        title: str,
        body: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        session: str | None = None,
    ) -> AdminAnswer:
        if session is not None:
            logout = (
                '<form class="inline" method="post" action="logout">'
                f"{self._csrf_field(session)}<button>Log out</button></form>"
            )
            body = f"<header><h1>pushreport support</h1>{logout}</header><main>{body}</main>"
        else:
            body = f"<header><h1>pushreport support</h1></header><main>{body}</main>"
        return AdminAnswer(
            status,
            self._document(title, body),
            (("Content-Type", "text/html; charset=utf-8"), *headers, *SECURITY_HEADERS),
        )

    def _document(self, title: str, body: str) -> str:
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{_e(title)} — pushreport support</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n"
        )

    def _note(self, text: str, *, error: bool = False) -> str:
        kind = "note error" if error else "note"
        role = "alert" if error else "status"
        return f'<p class="{kind}" role="{role}">{_e(text)}</p>'

    def _csrf_field(self, session: str) -> str:
        return f'<input type="hidden" name="csrf" value="{_e(self._csrf(session))}">'

    def _login_form(
        self, status: int, nonce: str, error: str, cookie: str | None = None
    ) -> AdminAnswer:
        body = (self._note(error, error=True) if error else "") + (
            '<form method="post" action="login">'
            f'<input type="hidden" name="csrf" value="{_e(self._csrf("login:" + nonce))}">'
            '<p><label for="token">Token</label><br>'
            '<input type="password" id="token" name="token" autocomplete="current-password" '
            "required autofocus></p><p><button>Log in</button></p></form>"
        )
        headers = (("Set-Cookie", cookie),) if cookie else ()
        return self._page(status, "Log in", body, headers)

    def _search_form(self, q: str) -> str:
        return (
            '<form method="get" action="./" role="search">'
            '<p><label for="q">Username or selector</label><br>'
            f'<input type="search" id="q" name="q" value="{_e(q)}" required></p>'
            "<p><button>Search</button></p></form>"
        )

    def _hidden(self, session: str, registration: Registration, q: str) -> str:
        return (
            self._csrf_field(session)
            + f'<input type="hidden" name="selector" value="{_e(registration.selector)}">'
            + f'<input type="hidden" name="q" value="{_e(q)}">'
        )

    def _is_stale(self, registration: Registration) -> bool:
        return (
            self.stale_after is not None
            and self.clock() - registration.last_seen > self.stale_after
        )

    def _registration(self, registration: Registration, session: str, q: str) -> str:
        r = registration
        stale = ' <span class="stale">stale</span>' if self._is_stale(r) else ""

        def token(value: str | None, app_id: str | None) -> str:
            if not value:
                return "—"
            return f"<code>{_e(shorten(value, 12))}</code> ({_e(app_id or 'no app id')})"

        rows = [
            ("Username", _e(r.username or "—")),
            ("Calls token", token(r.token_calls, r.appid_calls)),
            ("Messages token", token(r.token_msgs, r.appid_msgs)),
            ("First seen", _e(format_time(r.first_seen))),
            ("Last seen", _e(format_time(r.last_seen))),
            ("Reports", _e(r.reports)),
            ("User agent", _e(r.user_agent or "—")),
        ]
        items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
        return (
            f'<section class="reg" data-selector="{_e(r.selector)}">'
            f"<h2>{_e(r.selector)}{stale}</h2><dl>{items}</dl>"
            '<form class="inline" method="post" action="push">'
            f"{self._hidden(session, r, q)}"
            '<button name="purpose" value="message">Test push: message</button>'
            '<button name="purpose" value="call">Test push: call</button></form>'
            '<form class="inline" method="post" action="forget">'
            f'{self._hidden(session, r, q)}<button class="danger">Forget…</button></form>'
            "</section>"
        )

    def _confirm(self, registration: Registration, session: str, q: str) -> str:
        back = f"./?q={_e(quote(q or registration.selector, safe=''))}"
        return (
            f"<p>Forget the registration <strong>{_e(registration.selector)}</strong> "
            f"of {_e(registration.username or 'no username')}? Its tokens are deleted from "
            "every storage backend; the app registers again on its next start, unless the "
            "account is removed from it.</p>"
            '<form method="post" action="forget">'
            f"{self._hidden(session, registration, q)}"
            '<input type="hidden" name="confirm" value="yes">'
            f'<button class="danger">Forget it</button> <a href="{back}">Cancel</a></form>'
        )

    def _push_results(self, purpose: str, results: Sequence[PushResult]) -> str:
        rows = "".join(
            "<tr>"
            f"<td>{_e(r.target.selector)}</td>"
            f"<td><code>{_e(shorten(r.target.device_token, 12))}</code></td>"
            f"<td>{_e(r.target.app_id)}</td>"
            f'<td class="push-status">{_e(r.status)}</td>'
            f"<td>{_e(_gateway_answer(r))}</td>"
            "</tr>"
            for r in results
        )
        return (
            f'<div class="note" role="status" id="push-results"><p>Test {_e(purpose)} push:</p>'
            "<table><tr><th>Selector</th><th>Token</th><th>App id</th><th>Result</th>"
            f"<th>Gateway's answer</th></tr>{rows}</table></div>"
        )


def _gateway_answer(result: PushResult) -> str:
    outcome = result.outcome
    parts = []
    if outcome.status is not None:
        parts.append(f"HTTP {outcome.status}")
    if outcome.code is not None:
        parts.append(f"code {outcome.code}")
    if outcome.reason and outcome.reason not in parts:
        parts.append(outcome.reason)
    tries = "1 attempt" if result.attempts == 1 else f"{result.attempts} attempts"
    return ", ".join(parts) + f" ({tries})"
