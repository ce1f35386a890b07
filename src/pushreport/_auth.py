"""The built-in authenticators: pluggy plugins the receiver registers from ``[auth]``.

Each one implements the ordinary ``pushreport_authenticate`` hook, exactly as a
deployer's own plugin would, so they combine with each other and with third-party
plugins: every implementation is asked and one refusal refuses the report.

- :class:`SecretAuthenticator` (``methods = ["secret"]``): a shared secret carried by a
  named template variable (``%account[pushSecret]%``, a custom Account XML key) or
  parameter, compared in constant time with the configured one, then removed from the
  report so that it is never stored.
- :class:`DigestAuthenticator` (``"digest"``): HTTP Digest (RFC 7616, ``qop=auth``) as the
  app performs it when ``pushTokenReporterAuthUsername``/``AuthPassword`` are set. Nonces
  are stateless: a timestamp and random bytes signed with HMAC, so every worker (and every
  host with the same ``nonce_key``) accepts the nonces of the others. Replays are refused
  through the shared limit state: each ``(nonce, nc)`` pair is accepted once, by every
  worker, restart and host that shares it.
- :class:`CallableAuthenticator` (``"callable"``): the account's username and password
  checked by a deployer's function (their user table), with a bounded cache of successes.
- :class:`HttpAuthenticator` (``"http"``): the same check asked of an HTTP provider (a
  form POST; 2xx accepts, 401/403 refuse), with the callable's cache.

Only the callable and the provider identify the user (they answer ``True``: they vouch
for the username), so only then is a selector stored under another username refused
(:func:`pushreport_core.may_write`); the secret and Digest credentials are the same for
every account, and a valid one answers ``None``: no objection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

import attrs

from pushreport_core import (
    DEFAULT_SHAPES,
    FORM,
    AuthenticationRequired,
    AuthenticationUnavailable,
    ConfigurationError,
    Report,
    Request,
    Secret,
    Template,
)

from ._config import (
    DIGEST_ALGORITHMS,
    check_auth_config,
    load_callable,
    section_error,
    value_or_env,
)
from ._logs import ThrottledLog
from .hookspecs import hookimpl
from .limitstate import state_errors
from .outbound import OutboundError, post, where

if TYPE_CHECKING:
    from ._config import AuthConfig
    from .limitstate import LimitState

__all__ = [
    "SecretAuthenticator",
    "DigestAuthenticator",
    "CallableAuthenticator",
    "HttpAuthenticator",
    "build_authenticators",
    "secret_fields",
    "bearer_matches",
]

log = logging.getLogger("pushreport.auth")
_failures = ThrottledLog(log)

#: The variables a template must carry for the methods that check the account's own
#: username and password (``callable``, ``http``).
ACCOUNT_CREDENTIALS = ("account[password]", "account[username]")

_ALGORITHMS_LOWER = {k.lower(): k for k in DIGEST_ALGORITHMS}


def bearer_matches(header: str, token: Secret) -> bool:
    """Whether the ``Authorization`` *header* is ``Bearer <token>`` (the lookup
    endpoint's and the support page's check). Compared whatever the scheme, over
    digests (:meth:`Secret.matches`): the time taken tells neither a wrong scheme from
    a wrong token nor the token's length."""
    scheme, _, credentials = header.strip().partition(" ")
    bearer = scheme.lower() == "bearer"
    matches = token.matches(credentials.strip() if bearer else "")
    return bearer and matches


#: The longest ``Authorization`` header the digest parser looks at.
MAX_AUTHORIZATION = 4096
#: Seconds a ``(nonce, nc)`` claim outlives its nonce: a host whose clock is behind
#: still accepts the nonce that long after another host thinks it expired, and must
#: still see the claim.
CLAIM_MARGIN = 60.0


def _digest_equal(a: str, b: str) -> bool:
    """Constant-time equality that leaks neither content nor length
    (:meth:`Secret.matches <pushreport_core.Secret.matches>`: the SHA-256 digests of
    both are compared, never the texts)."""
    return Secret(b).matches(a)


def _from_env(value: str, env: str, key: str, what: str) -> str:
    """The configured value, or the environment variable named by ``<key>_env``."""
    found = value_or_env(value, env, key, error=section_error("auth"), needed_by=what)
    assert found is not None  # needed_by: none is an error
    return found


def secret_fields(auth: AuthConfig) -> frozenset[str]:
    """Field names to mask in logs: the variable (and its lower-cased form, the default
    shapes' parameter name) that carries the shared secret."""
    if "secret" not in auth.methods or not auth.secret_field:
        return frozenset()
    return frozenset({auth.secret_field, auth.secret_field.lower()})


# --- shared secret ----------------------------------------------------------------------


class SecretAuthenticator:
    """A shared secret carried in the report under *field*, compared in constant time.

    With a template, *field* is a template variable such as ``account[pushSecret]``: a
    custom Account XML key, so that the secret is not written into the URL template
    itself; with the default shapes it is a parameter name. Its value arrives among the
    report's extra fields; :meth:`pushreport_transform_report` (run first) removes it, so
    that it is never stored nor handed to a ``pushreport_report_stored`` hook.
    """

    def __init__(self, field: str, secret: Secret, *, default_shapes: bool = False) -> None:
        # The default shapes keep extra fields under their lower-cased parameter name.
        self.field = field.lower() if default_shapes else field
        self._secret = secret

    def __repr__(self) -> str:
        return f"SecretAuthenticator(field={self.field!r})"

    @hookimpl
    def pushreport_authenticate(self, report: Report) -> bool | None:
        # A match says nothing of who asks (every account has the same secret): no
        # objection (None), not a vouch for the username (True).
        value = report.extra.get(self.field)
        if value is None or not _digest_equal(value, self._secret.reveal()):
            return False
        return None

    @hookimpl(tryfirst=True)
    def pushreport_transform_report(self, report: Report) -> Report | None:
        if self.field not in report.extra:
            return None
        extra = {k: v for k, v in report.extra.items() if k != self.field}
        return attrs.evolve(report, extra=extra)


# --- HTTP Digest ------------------------------------------------------------------------

# auth-param = token BWS "=" BWS ( token / quoted-string ), RFC 7235.
_PARAM = re.compile(
    r'\s*([A-Za-z0-9_\-*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|\Z)', re.S
)
_NC = re.compile(r"[0-9A-Fa-f]{8}")


def parse_digest(header: str) -> dict[str, str] | None:
    """The parameters of ``Authorization: Digest ...``, lower-cased names; ``None`` when
    it is not a well-formed Digest credential (or is over :data:`MAX_AUTHORIZATION`)."""
    if len(header) > MAX_AUTHORIZATION:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if m.group(2) is not None:
            value = re.sub(r"\\(.)", r"\1", value)
        if name in params:
            return None
        params[name] = value
        pos = m.end()
    return params


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(DIGEST_ALGORITHMS[algorithm][0], text.encode("utf-8")).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The ``response`` value RFC 7616 (section 3.4.1) defines, for ``qop=auth``."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if DIGEST_ALGORITHMS[algorithm][1]:
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


def _uri_matches(uri: str, target: str) -> bool:
    """The digest ``uri`` names this request: the same target, in origin or absolute
    form, or with the prefix a mounting application stripped from the target."""
    if "://" in uri:
        slash = uri.find("/", uri.find("://") + 3)
        uri = uri[slash:] if slash != -1 else "/"
    return uri == target or (target.startswith("/") and uri.endswith(target))


class DigestAuthenticator:
    """HTTP Digest authentication with stateless, HMAC-signed nonces.

    A nonce is ``base64url(timestamp, 8 random bytes, HMAC-SHA256(key, both)[:16])``:
    any process holding *key* can check one without shared state, and a nonce older than
    *nonce_ttl* is answered ``stale=true`` so that the client retries with a fresh one
    without asking anybody for the password again.

    Replays: each nonce count (``nc``) of a nonce is accepted once. The pair is claimed
    in *nonce_counts*, the shared limit state (:mod:`pushreport.limitstate`), until
    the nonce expires: every worker and restart of a host, and every host sharing a
    PostgreSQL backend, sees the claim. (RFC 7616: a count seen twice is a replay.
    Counts may arrive out of order from a client's parallel requests: each is still
    accepted once.) Without *nonce_counts* (the receiver gives it one) credentials are
    answered ``503``: never accepted unchecked.
    """

    def __init__(
        self,
        *,
        realm: str,
        username: str,
        password: Secret,
        algorithms: tuple[str, ...] = ("MD5",),
        nonce_ttl: float = 300,
        key: bytes,
        clock: Callable[[], float] = time.time,
        nonce_counts: LimitState | None = None,
    ) -> None:
        self.realm = realm
        self.username = username
        self._password = password
        self.algorithms = algorithms
        self.nonce_ttl = nonce_ttl
        self._key = key
        self.clock = clock
        self.nonce_counts = nonce_counts
        self.opaque = _b64(hmac.new(key, b"opaque\0" + realm.encode(), "sha256").digest()[:12])

    def __repr__(self) -> str:
        return (
            f"DigestAuthenticator(realm={self.realm!r}, username={self.username!r}, "
            f"algorithms={self.algorithms!r})"
        )

    # nonces
    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"nonce\0" + body, "sha256").digest()[:16]

    def new_nonce(self) -> str:
        # Milliseconds: a nonce issued right after the forgetting floor (below) is new.
        body = struct.pack(">q", int(self.clock() * 1000)) + secrets.token_bytes(8)
        return _b64(body + self._mac(body))

    def _nonce_time(self, nonce: str) -> int | None:
        """The nonce's timestamp (milliseconds) when it is one of ours (signature
        checked), else None."""
        raw = _unb64(nonce) if len(nonce) <= 64 else None
        if raw is None or len(raw) != 32:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return int(struct.unpack(">q", body[:8])[0])

    def challenges(self, *, stale: bool = False) -> tuple[str, ...]:
        """One ``WWW-Authenticate`` value per algorithm, preferred first."""
        nonce = self.new_nonce()
        tail = ", stale=true" if stale else ""
        return tuple(
            f'Digest realm="{self.realm}", qop="auth", algorithm={alg}, '
            f'nonce="{nonce}", opaque="{self.opaque}"{tail}'
            for alg in self.algorithms
        )

    def _refuse(
        self, msg: str, *, stale: bool = False, failed: bool = False
    ) -> AuthenticationRequired:
        return AuthenticationRequired(msg, challenges=self.challenges(stale=stale), failed=failed)

    def verify(self, request: Request) -> None:
        """Return when *request* carries valid, fresh, unreplayed credentials; raise
        :class:`AuthenticationRequired` (401, with a new challenge) otherwise."""
        header = request.authorization
        if not header:
            raise self._refuse("authentication required")
        p = parse_digest(header)
        if p is None:
            raise self._refuse(
                "authentication required: not a valid Digest credential", failed=True
            )
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(p.get(k) is None for k in required):
            raise self._refuse(
                "authentication required: a Digest parameter is missing", failed=True
            )
        algorithm = _ALGORITHMS_LOWER.get((p.get("algorithm") or "MD5").lower())
        if algorithm is None or algorithm not in self.algorithms:
            raise self._refuse("authentication required: algorithm not offered", failed=True)
        if p["qop"] != "auth" or not _NC.fullmatch(p["nc"]):
            raise self._refuse("authentication required: only qop=auth is supported", failed=True)
        if p.get("opaque", self.opaque) != self.opaque or p["realm"] != self.realm:
            raise self._refuse("authentication required: wrong realm", failed=True)
        if not _uri_matches(p["uri"], request.target):
            raise self._refuse(
                "authentication required: uri does not match the request", failed=True
            )
        expected = digest_response(
            algorithm=algorithm,
            username=self.username,
            realm=self.realm,
            password=self._password.reveal(),
            method=request.method.upper(),
            uri=p["uri"],
            nonce=p["nonce"],
            nc=p["nc"],
            cnonce=p["cnonce"],
        )
        user_ok = _digest_equal(p["username"], self.username)
        if not (_digest_equal(p["response"].lower(), expected) and user_ok):
            raise self._refuse("authentication refused", failed=True)
        # The credentials are right: from here on the nonce is the only problem, and the
        # client retries with a fresh one (stale=true) without asking for the password.
        issued = self._nonce_time(p["nonce"])
        now = self.clock() * 1000
        if issued is None or not (now - self.nonce_ttl * 1000 <= issued <= now + 5000):
            raise self._refuse("authentication required: nonce expired", stale=True)
        if not self._claim(p["nonce"], int(p["nc"], 16), issued, now):
            raise self._refuse("authentication required: nonce count replayed", stale=True)

    def _claim(self, nonce: str, nc: int, issued: int, now: float) -> bool:
        """Claim ``(nonce, nc)`` until the nonce expires: ``True`` the first time."""
        counts = self.nonce_counts
        if counts is None:
            raise AuthenticationUnavailable("digest nonce counts have no limit state")
        with state_errors():
            return counts.claim(
                f"digest:{nonce}:{nc}",
                expires=issued / 1000 + self.nonce_ttl + CLAIM_MARGIN,
                now=now / 1000,
            )

    # First: the HTTP challenge comes before any other check (a deployer's user table
    # is not asked about requests that are not even authenticated at the HTTP level).
    @hookimpl(tryfirst=True)
    def pushreport_authenticate(self, request: Request) -> None:
        # One username and password for every account: valid credentials accept the
        # request (no objection) without saying which account asks.
        self.verify(request)


# --- the deployer's callable ------------------------------------------------------------


class _PasswordCheck:
    """What the ``callable`` and ``http`` methods share: the account's own username and
    password, asked of somebody (:meth:`_ask`), and a bounded cache of the successes.

    Successes are cached for *cache_ttl* seconds in a least-recently-used table of
    *cache_size* entries, keyed by the username and an HMAC of the password under a
    random per-process key: the password itself is never kept, and a cache entry is
    useless without the key. Failures are never cached (a changed password works at
    once; the lock-out counts them).
    """

    def __init__(
        self,
        *,
        cache_size: int = 1024,
        cache_ttl: float = 300,
        clock: Callable[[], float] = time.time,
        name: str,
    ) -> None:
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.name = name
        self._salt = secrets.token_bytes(32)
        self._cache: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, cache={len(self._cache)})"

    def _key(self, username: str, password: Secret) -> tuple[str, bytes]:
        mac = hmac.new(self._salt, password.reveal().encode("utf-8"), "sha256").digest()
        return (username, mac)

    def _cached(self, key: tuple[str, bytes], now: float) -> bool:
        with self._lock:
            until = self._cache.get(key)
            if until is None:
                return False
            if until <= now:
                del self._cache[key]
                return False
            self._cache.move_to_end(key)
            return True

    def _remember(self, key: tuple[str, bytes], now: float) -> None:
        if self.cache_size <= 0 or self.cache_ttl <= 0:
            return
        with self._lock:
            self._cache[key] = now + self.cache_ttl
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # Last: the most expensive check, behind the cheaper built-in ones.
    @hookimpl(trylast=True)
    def pushreport_authenticate(self, username: str | None, password: Secret | None) -> bool:
        # "A report without a password was accepted on the username alone": never.
        if not username or password is None or not password:
            return False
        key = self._key(username, password)
        now = self.clock()
        if self._cached(key, now):
            return True
        if self._ask(username, password):
            self._remember(key, now)
            return True
        return False

    def _ask(self, username: str, password: Secret) -> bool:
        """Whether the password is the user's: ``True`` vouches, ``False`` refuses;
        raise :class:`AuthenticationUnavailable` when nobody could tell."""
        raise NotImplementedError


class CallableAuthenticator(_PasswordCheck):
    """The account's username and password checked by ``check(username, password)``.

    Only ``True`` vouches (anything else refuses: fail closed); successes are cached
    (:class:`_PasswordCheck`). An exception in *check* answers ``503`` (the app retries
    later), logged with its type only: its message might carry the password.
    """

    def __init__(
        self,
        check: Callable[[str, str], object],
        *,
        cache_size: int = 1024,
        cache_ttl: float = 300,
        clock: Callable[[], float] = time.time,
        name: str = "",
    ) -> None:
        super().__init__(
            cache_size=cache_size,
            cache_ttl=cache_ttl,
            clock=clock,
            name=name or getattr(check, "__qualname__", repr(check)),
        )
        self.check = check

    def _ask(self, username: str, password: Secret) -> bool:
        try:
            answer = self.check(username, password.reveal())
        except Exception as e:
            # Once a minute with a count: a user table that is down fails every report.
            _failures.error("authentication callable %s failed: %s", self.name, type(e).__name__)
            raise AuthenticationUnavailable("authentication is unavailable") from None
        return answer is True


# --- an HTTP provider -------------------------------------------------------------------


class HttpAuthenticator(_PasswordCheck):
    """The account's username and password POSTed as a form
    (``username=...&password=...``, UTF-8) to a provider at *url*, which answers:

    - ``2xx``: the password is the user's (it vouches, as a callable's ``True`` does);
    - ``401`` or ``403``: it is not (the app gets ``403``, and the lock-out counts it);
    - anything else, a redirect (never followed), no answer or no whole answer within
      *timeout* seconds: nobody could tell, ``503`` with ``Retry-After``.

    Successes are cached as the callable's are (:class:`_PasswordCheck`). The answer's
    body is never read. A failed callout is logged with the provider's scheme, host and
    port and the reason (``HTTP 500``, ``timed out``): never the URL's path or query,
    nor anything sent.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        cache_size: int = 1024,
        cache_ttl: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(cache_size=cache_size, cache_ttl=cache_ttl, clock=clock, name=where(url))
        self.url = url
        self.timeout = timeout

    def _ask(self, username: str, password: Secret) -> bool:
        try:
            answer = post(
                self.url,
                urlencode({"username": username, "password": password.reveal()}).encode(),
                headers={"Content-Type": FORM, "Accept": "*/*"},
                timeout=self.timeout,
            )
        except OutboundError as e:
            reason = e.reason
        else:
            if 200 <= answer.status < 300:
                return True
            if answer.status in (401, 403):
                return False
            reason = f"HTTP {answer.status}"
            if 300 <= answer.status < 400:
                reason += " (a redirect: not followed)"
        # Raised outside the except clause: the exception carries no context (whose
        # frames hold the form) for a traceback to show.
        _failures.error("authentication provider %s failed: %s", self.name, reason)
        raise AuthenticationUnavailable("authentication is unavailable")


# --- from the configuration -------------------------------------------------------------


def build_authenticators(
    auth: AuthConfig,
    shapes: Any,
    *,
    clock: Callable[[], float] = time.time,
    removal_shapes: Any = None,
) -> list[object]:
    """The plugins ``[auth] methods`` asks for, checked against the template (and the
    Account Removal Reporter's template, which the same methods guard).

    :raises ConfigurationError: the configuration asks for a credential a template
        does not carry (refused at start-up: a report could never authenticate).
    """
    check_auth_config(auth)
    template = shapes if isinstance(shapes, Template) else None
    default_shapes = shapes is DEFAULT_SHAPES
    removal = removal_shapes if isinstance(removal_shapes, Template) else None

    def carried(variable: str, method: str, key: str) -> None:
        for which, t in (("template", template), ("removal template", removal)):
            if t is not None and variable not in t.variables:
                raise ConfigurationError(
                    f"the {which} carries no %{variable}%: the {method} method needs it", key=key
                )

    plugins: list[object] = []
    for method in auth.methods:
        if method == "secret":
            carried(auth.secret_field, "secret", "auth.secret_field")
            secret = Secret(_from_env(auth.secret, auth.secret_env, "secret", "the secret method"))
            plugins.append(
                SecretAuthenticator(auth.secret_field, secret, default_shapes=default_shapes)
            )
        elif method == "digest":
            password = Secret(
                _from_env(
                    auth.digest_password,
                    auth.digest_password_env,
                    "digest_password",
                    "the digest method",
                )
            )
            if auth.nonce_key or auth.nonce_key_env:
                key_text = _from_env(auth.nonce_key, auth.nonce_key_env, "nonce_key", "digest")
                key = hashlib.sha256(b"pushreport-nonce\0" + key_text.encode()).digest()
            else:
                log.info(
                    "digest nonces are signed with a key of this process only: set "
                    "[auth] nonce_key when several processes or hosts serve"
                )
                key = secrets.token_bytes(32)
            plugins.append(
                DigestAuthenticator(
                    realm=auth.realm,
                    username=auth.digest_username,
                    password=password,
                    algorithms=auth.digest_algorithms,
                    nonce_ttl=auth.nonce_ttl,
                    key=key,
                    clock=clock,
                )
            )
        elif method == "callable":
            for variable in ACCOUNT_CREDENTIALS:
                carried(variable, "callable", "auth.callable")
            plugins.append(
                CallableAuthenticator(
                    load_callable(auth.callable),
                    cache_size=auth.cache_size,
                    cache_ttl=auth.cache_ttl,
                    clock=clock,
                    name=auth.callable,
                )
            )
        elif method == "http":
            for variable in ACCOUNT_CREDENTIALS:
                carried(variable, "http", "auth.http_url")
            plugins.append(
                HttpAuthenticator(
                    auth.http_url,
                    timeout=auth.http_timeout,
                    cache_size=auth.cache_size,
                    cache_ttl=auth.cache_ttl,
                    clock=clock,
                )
            )
    return plugins
