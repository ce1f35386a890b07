"""Test helpers for the WSGI adapter: :func:`wsgi_exchange` sends a request the app model
rendered to a WSGI app in-process, as a server would. The storage conformance kit is
:mod:`pushreport.testing`."""

from ._wsgi import wsgi_exchange

__all__ = ["wsgi_exchange"]
