"""Errors that say whose fault it is.

Every error pushreport raises derives from :class:`PushReportError` and carries an
``error_status_hint``: the HTTP status an adapter should answer with. The core never
speaks HTTP itself; only the WSGI adapter turns hints into responses.
"""

from __future__ import annotations

import re

__all__ = [
    "PushReportError",
    "InvalidReport",
    "RequestTooLarge",
    "AuthenticationFailed",
    "AuthenticationRequired",
    "TooManyRequests",
    "StorageUnavailable",
    "ConfigurationError",
    "MethodNotAllowed",
    "AppModelError",
]


class PushReportError(Exception):
    """Base class of every error pushreport raises on purpose."""

    #: The HTTP status an adapter should answer with.
    error_status_hint: int = 500

    def __init__(self, msg: str, *, error_status_hint: int | None = None) -> None:
        if type(self) is PushReportError:
            raise TypeError("PushReportError is abstract; raise one of its subclasses")
        super().__init__(msg)
        self.msg = msg
        if error_status_hint is not None:
            self.error_status_hint = error_status_hint

    def __str__(self) -> str:
        return self.msg


class InvalidReport(PushReportError):
    """The request is not a valid report: the client's fault (4xx).

    Nothing of an invalid report is ever stored.
    """

    error_status_hint = 400


class RequestTooLarge(InvalidReport):
    """The body, target or a field is over its limit."""

    error_status_hint = 413


class AuthenticationFailed(PushReportError):
    """The report's credentials were refused (403)."""

    error_status_hint = 403


class AuthenticationRequired(PushReportError):
    """The request carries no valid credentials for HTTP authentication (401).

    ``challenges`` are the ``WWW-Authenticate`` values to send, one header each, preferred
    first; the client (the app, for HTTP Digest) answers one of them and retries.
    ``failed`` tells whether credentials were presented and were wrong (counted against
    the lock-out), rather than absent or merely stale.
    """

    error_status_hint = 401

    def __init__(
        self, msg: str, *, challenges: tuple[str, ...] = (), failed: bool = False
    ) -> None:
        super().__init__(msg)
        self.challenges = challenges
        self.failed = failed


class TooManyRequests(PushReportError):
    """A rate limit or a lock-out refused the request (429).

    ``retry_after`` is the number of seconds to advertise in ``Retry-After``: when the
    request would be accepted again.
    """

    error_status_hint = 429

    def __init__(self, msg: str, *, retry_after: int = 1) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class ServiceUnavailable(PushReportError):
    """Something the receiver depends on failed: nobody's fault the app can fix (503).

    The app retries any non-2xx answer, so the report is not lost: it comes again.
    ``retry_after`` is the number of seconds to advertise in ``Retry-After``.
    """

    error_status_hint = 503

    def __init__(self, msg: str, *, retry_after: int = 5) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class StorageUnavailable(ServiceUnavailable):
    """A storage backend failed or stayed locked: the backend's fault (503)."""


class AuthenticationUnavailable(ServiceUnavailable):
    """The credential check itself failed (the deployer's callable raised): 503, so the
    app retries, rather than a 403 that would blame the credentials."""


class ConfigurationError(PushReportError):
    """The deployer's configuration is unusable; raised at start-up, never per request.

    ``key`` names the configuration value (e.g. ``pushTokenReporterUrl``) and
    ``position`` the 0-based character offset in it where the problem is, when known.
    """

    error_status_hint = 500

    def __init__(
        self,
        msg: str,
        *,
        key: str | None = None,
        position: int | None = None,
        text: str | None = None,
    ) -> None:
        self.key = key
        self.position = position
        self.text = text
        full = msg
        if key is not None:
            full = f"{key}: {msg}"
        if text is not None and position is not None:
            # Point at the spot, like a compiler does: in its line, for a multi-line body.
            start = text.rfind("\n", 0, position) + 1
            end = text.find("\n", position)
            line = text[start:] if end < 0 else text[start:end]
            full += f"\n    {line}\n    {' ' * (position - start)}^"
        super().__init__(full)


_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}")


def shown_method(method: str) -> str:
    """*method* as an error message may show it: as is when it is a short HTTP token,
    else quoted, escaped and cut short, so that the message stays one printable line."""
    return method if _HTTP_TOKEN.fullmatch(method) else ascii(method[:20])


class MethodNotAllowed(InvalidReport):
    """The request's method is not one the configured shapes accept (405)."""

    error_status_hint = 405

    def __init__(self, msg: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(msg)
        self.allowed = allowed


class AppModelError(PushReportError):
    """An event the app model cannot take in its current state (a harness bug).

    ``state`` and ``event`` name the two; raised before anything changes, so the model
    is still usable.
    """

    def __init__(self, msg: str, *, state: object = None, event: object = None) -> None:
        super().__init__(msg)
        self.state = state
        self.event = event
