"""Looking registrations up: a Python API (:class:`Lookup`) and an HTTP endpoint
(:class:`LookupApp`) for the provider's own services.

The endpoint is off by default. Turned on (``[lookup] enabled = true``), it answers::

    GET {path}/registrations?username=U      the registrations of U
    GET {path}/registrations?selector=S      the registration of S
    GET {path}/targets?username=U&purpose=call|message
                                             the (AppId, DeviceToken, Selector) to push

with JSON, to callers that send ``Authorization: Bearer <[lookup] token>`` (anyone else
gets 401). Every request names one account: there is no "list everything", and what a
backend returns is filtered again by exact equality, so the stored data of another
account is never in an answer.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Iterable

from werkzeug.wrappers import Request, Response

from pushreport_core import (
    Purpose,
    PushTarget,
    Registration,
    Secret,
    StorageUnavailable,
    push_targets,
)

from ._logs import ThrottledLog
from .storage import Storage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ._config import LookupConfig

__all__ = ["Lookup", "LookupApp"]

log = logging.getLogger("pushreport")
#: Storage failures, logged once a minute with a count, not once per lookup.
_failures = ThrottledLog(log)


class Lookup:
    """Registrations and push targets of one account, read from a :class:`Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def registrations(
        self, *, username: str | None = None, selector: str | None = None
    ) -> list[Registration]:
        """The registrations of *username*, or the one of *selector* (both: the one of
        *selector* if it belongs to *username*), by selector. Raises ``ValueError`` when
        neither is given: a lookup never lists everything."""
        if not username and not selector:
            raise ValueError("give a username or a selector")
        if selector:
            one = self.storage.get(selector)
            found = [one] if one is not None and one.selector == selector else []
        else:
            found = self.storage.find(username=username)
        if username:
            found = [r for r in found if r.username == username]
        return sorted(found, key=lambda r: r.selector)

    def push_targets(self, username: str, purpose: Purpose) -> list[PushTarget]:
        """The ``(AppId, DeviceToken, Selector)`` to push *username* for *purpose*:
        the PushKit pair for ``"call"``, the other pair for ``"message"``; devices
        without that pair's token are left out."""
        if not username:
            raise ValueError("give a username")
        return push_targets(self.registrations(username=username), purpose, username=username)


class LookupApp:
    """The lookup endpoint, a WSGI app answering under *path* only (see the module)."""

    def __init__(self, lookup: Lookup, *, token: Secret, path: str) -> None:
        from ._config import check_lookup_token

        check_lookup_token(token.reveal(), "lookup.token")  # however it was built
        self.lookup = lookup
        self.path = path.rstrip("/")
        self._token = token

    @classmethod
    def from_config(cls, config: LookupConfig, storage: Storage) -> LookupApp:
        return cls(Lookup(storage), token=config.bearer_token(), path=config.path)

    def owns(self, environ: WSGIEnvironment) -> bool:
        path = environ.get("PATH_INFO", "")
        return bool(path == self.path or path.startswith(self.path + "/"))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["pushreport.handled"] = True
        response = self._respond(Request(environ))
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        if not self._authorized(request.headers.get("Authorization", "")):
            given = bool(request.headers.get("Authorization"))
            challenge = 'Bearer realm="pushreport"'
            if given:
                challenge += ', error="invalid_token"'
            return _json(
                {"error": "a valid bearer token is required"}, 401, {"WWW-Authenticate": challenge}
            )
        if request.method not in ("GET", "HEAD"):
            return _json({"error": "method not allowed"}, 405, {"Allow": "GET, HEAD"})
        route = request.path[len(self.path) :]
        try:
            if route == "/registrations":
                return self._registrations(request)
            if route == "/targets":
                return self._targets(request)
        except _BadRequest as e:
            return _json({"error": str(e)}, 400)
        except StorageUnavailable as e:
            _failures.warning("lookup: storage unavailable: %s", e.msg)
            return _json(
                {"error": "storage unavailable"}, 503, {"Retry-After": str(e.retry_after)}
            )
        return _json({"error": "not found"}, 404)

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.strip().partition(" ")
        bearer = scheme.lower() == "bearer"
        # Compared whatever the scheme, over digests (Secret.matches): the time taken
        # tells neither a wrong scheme from a wrong token nor the token's length.
        matches = self._token.matches(credentials.strip() if bearer else "")
        return bearer and matches

    def _registrations(self, request: Request) -> Response:
        username = _one(request, "username")
        selector = _one(request, "selector")
        if username is None and selector is None:
            raise _BadRequest("give username or selector")
        found = self.lookup.registrations(username=username, selector=selector)
        return _json({"registrations": [r.to_json() for r in found]})

    def _targets(self, request: Request) -> Response:
        username = _one(request, "username")
        purpose = _one(request, "purpose")
        if username is None:
            raise _BadRequest("give username")
        if purpose not in ("call", "message"):
            raise _BadRequest("purpose must be call or message")
        targets = self.lookup.push_targets(username, purpose)  # type: ignore[arg-type]
        return _json(
            {"username": username, "purpose": purpose, "targets": [t.to_json() for t in targets]}
        )


class _BadRequest(Exception):
    pass


def _one(request: Request, name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise _BadRequest(f"give {name} once")
    return values[0] if values and values[0] else None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
    return Response(
        body, status=status, headers=headers, content_type="application/json; charset=utf-8"
    )
