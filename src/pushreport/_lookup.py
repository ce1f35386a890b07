"""Looking registrations up: a Python API (:class:`Lookup`) and an HTTP endpoint
(:class:`LookupEndpoint`, answered by the adapters) for the provider's own services.

The endpoint is off by default. Turned on (``[lookup] enabled = true``), it answers::

    GET {path}/registrations?username=U      the registrations of U
    GET {path}/registrations?selector=S      the registration of S
    GET {path}/targets?username=U&purpose=call|message
                                             the (AppId, DeviceToken, Selector) to push

with JSON, to callers that send ``Authorization: Bearer <[lookup] token>`` (anyone else
gets 401). Every request names one account: there is no "list everything", and what a
backend returns is filtered again by exact equality, so the stored data of another
account is never in an answer. ``GET {path}/openapi.json`` is the endpoint's OpenAPI
description (and the health checks'), to anyone, without a token: it holds no data
(:func:`~pushreport.openapi_document`).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import attrs

from pushreport_core import (
    Purpose,
    PushTarget,
    Registration,
    Secret,
    StorageUnavailable,
    push_targets,
)

from ._auth import bearer_matches
from ._config import check_bearer_token
from ._logs import ThrottledLog
from ._openapi import lookup_document, openapi_document
from .storage import Storage

if TYPE_CHECKING:
    from ._config import Config, LookupConfig

__all__ = ["Lookup", "LookupAnswer", "LookupEndpoint"]

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


@attrs.frozen
class LookupAnswer:
    """One answer of the lookup endpoint, as any adapter sends it: a status, a JSON
    document (:meth:`json`) and headers."""

    status: int
    data: Mapping[str, Any]
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, separators=(",", ":")) + "\n"


class LookupEndpoint:
    """The lookup endpoint under *path* (see the module), as HTTP-agnostic answers:
    an adapter hands :meth:`answer` the request's method, path, query and
    ``Authorization`` header, and sends what comes back.

    *openapi* is the document served at ``{path}/openapi.json``
    (:func:`~pushreport.openapi_document` of the whole configuration, which knows the
    health checks' paths too); by default, one of the lookup paths only.
    """

    #: Where the OpenAPI document is, under the endpoint's path.
    OPENAPI = "/openapi.json"

    def __init__(
        self,
        lookup: Lookup,
        *,
        token: Secret,
        path: str,
        openapi: Mapping[str, Any] | None = None,
    ) -> None:
        check_bearer_token(token.reveal(), "lookup.token")  # however it was built
        self.lookup = lookup
        self.path = path.rstrip("/")
        self._token = token
        self.openapi = openapi if openapi is not None else lookup_document(self.path)

    @classmethod
    def from_config(
        cls, config: LookupConfig, storage: Storage, *, whole: Config | None = None
    ) -> LookupEndpoint:
        """The endpoint of *config*; *whole*, the configuration it is a section of,
        gives the OpenAPI document the health checks' paths."""
        return cls(
            Lookup(storage),
            token=config.bearer_token(),
            path=config.path,
            openapi=openapi_document(whole) if whole is not None else None,
        )

    def owns(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")

    def answer(
        self,
        *,
        method: str,
        path: str,
        query: Mapping[str, Sequence[str]],
        authorization: str = "",
    ) -> LookupAnswer:
        """The answer to a *method* request for *path* with *query* (each parameter's
        values, in order)."""
        route = path[len(self.path) :]
        if route == self.OPENAPI:  # a description, no data: no token needed
            if method not in ("GET", "HEAD"):
                return _NOT_ALLOWED
            return LookupAnswer(200, self.openapi)
        if not self._authorized(authorization):
            challenge = 'Bearer realm="pushreport"'
            if authorization:
                challenge += ', error="invalid_token"'
            return LookupAnswer(
                401, {"error": "a valid bearer token is required"}, {"WWW-Authenticate": challenge}
            )
        if method not in ("GET", "HEAD"):
            return _NOT_ALLOWED
        try:
            if route == "/registrations":
                return self._registrations(query)
            if route == "/targets":
                return self._targets(query)
        except _BadRequest as e:
            return LookupAnswer(400, {"error": str(e)})
        except StorageUnavailable as e:
            _failures.warning("lookup: storage unavailable: %s", e.msg)
            return LookupAnswer(
                503, {"error": "storage unavailable"}, {"Retry-After": str(e.retry_after)}
            )
        return LookupAnswer(404, {"error": "not found"})

    def _authorized(self, header: str) -> bool:
        return bearer_matches(header, self._token)

    def _registrations(self, query: Mapping[str, Sequence[str]]) -> LookupAnswer:
        username = _one(query, "username")
        selector = _one(query, "selector")
        if username is None and selector is None:
            raise _BadRequest("give username or selector")
        found = self.lookup.registrations(username=username, selector=selector)
        return LookupAnswer(200, {"registrations": [r.to_json() for r in found]})

    def _targets(self, query: Mapping[str, Sequence[str]]) -> LookupAnswer:
        username = _one(query, "username")
        purpose = _one(query, "purpose")
        if username is None:
            raise _BadRequest("give username")
        if purpose not in ("call", "message"):
            raise _BadRequest("purpose must be call or message")
        targets = self.lookup.push_targets(username, purpose)  # type: ignore[arg-type]
        return LookupAnswer(
            200,
            {"username": username, "purpose": purpose, "targets": [t.to_json() for t in targets]},
        )


_NOT_ALLOWED = LookupAnswer(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})


class _BadRequest(Exception):
    pass


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name, ())
    if len(values) > 1:
        raise _BadRequest(f"give {name} once")
    return values[0] if values and values[0] else None
