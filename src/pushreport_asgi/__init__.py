"""pushreport_asgi: the ASGI adapter of pushreport.

- :func:`create_app` — a standalone ASGI app;
- :class:`PushReportMiddleware` — mounts pushreport in front of any ASGI app
  (Starlette, FastAPI, ...);
- :func:`raw_target` — the request target as it came over the wire.

It answers what :mod:`pushreport_wsgi` answers, byte for byte, over the same service
(:mod:`pushreport`); the two adapters share no code but the service's.
"""

from ._app import PushReportMiddleware, create_app, raw_target

__all__ = ["PushReportMiddleware", "create_app", "raw_target"]
