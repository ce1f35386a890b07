"""The WSGI adapter: :class:`PushReportMiddleware` and :func:`create_app`.

:class:`PushReportMiddleware` wraps any WSGI app (Flask, Django, ...), answers exactly
the requests that match the configured shapes and the operator endpoints it turns on,
and passes every other request through untouched. :func:`create_app` is the same thing
standing alone, answering 404 to the rest. Each is a composition: a
:class:`PathDispatcher` over the endpoints' apps (``_endpoints.py``) and the report
paths' :class:`ReportMiddleware` (``_reports.py``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

from pushreport import AdminPage, Config, Receiver, as_config

from ._endpoints import AdminApp, LookupApp, PathDispatcher, operator_apps
from ._reports import ReportMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PushReportMiddleware", "create_app"]


class PushReportMiddleware(PathDispatcher):
    """Mount pushreport in front of any WSGI app.

    :param app: the WSGI app to pass every other request to.
    :param config: a :class:`Config`, or the path of a TOML configuration file; ``None``
        is the embedded default (default shapes, SQLite in ``./pushreport.sqlite3``).
    :param receiver: an already built :class:`Receiver` (tests, custom plugin managers);
        *config* is ignored then.

    Requests whose path matches the configured shapes (the reporter's, and the Account
    Removal Reporter's) are answered here: ``200`` with an empty body once every
    required backend has committed (a removal: deleted, or found already gone);
    ``400``/``403``/``405``/``413`` with a one-line ``text/plain`` reason when the
    request is refused (nothing stored or deleted); ``401`` with ``WWW-Authenticate``
    when HTTP Digest credentials are needed; ``429`` with ``Retry-After`` over a rate
    limit or during a lock-out; ``503`` with ``Retry-After`` when storage fails, so that
    the app retries.
    Handled requests carry ``pushreport.*`` keys in the environ for outer middleware:
    ``pushreport.handled``, ``pushreport.outcome`` (the receiver's
    :class:`~pushreport.Outcome`), ``pushreport.selector`` and ``pushreport.removed``
    on success, ``pushreport.error`` (the one-line reason) on a refusal.

    It is a :class:`PathDispatcher`: the health, metrics and lookup endpoints and the
    support page (``[health]``, ``[metrics]``, ``[lookup]``, ``[admin]``) are small apps of
    their own in front of the report paths' :class:`ReportMiddleware`, which passes the
    rest to *app*.
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        receiver: Receiver | None = None,
    ) -> None:
        self.app = app
        self.receiver = (
            receiver if receiver is not None else Receiver.from_config(as_config(config))
        )
        settings = self.receiver.config
        prefixes: dict[str, WSGIApplication] = {}
        if settings.lookup.enabled:
            lookup = LookupApp.from_config(settings.lookup, self.receiver.storage, whole=settings)
            prefixes[lookup.endpoint.path] = lookup
        if settings.admin.enabled:
            admin = AdminApp(AdminPage.from_config(self.receiver))
            prefixes[admin.page.path] = admin
        super().__init__(
            ReportMiddleware(app, self.receiver),
            exact=operator_apps(self.receiver),
            prefixes=prefixes,
        )

    def close(self) -> None:
        self.receiver.close()


def _not_found(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    data = b"not found\n"
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def create_app(
    config: Config | str | os.PathLike[str] | None = None, *, receiver: Receiver | None = None
) -> PushReportMiddleware:
    """A standalone WSGI app: the shapes of *config*, 404 for anything else."""
    return PushReportMiddleware(_not_found, config, receiver=receiver)
