"""The baseline of ``bench/load.py``: the least a WSGI app can answer.

``200 OK`` with an empty body and no ``Content-Type``, exactly the success answer of
``pushreport serve`` (which sends ``Content-Length: 0`` too), without reading the
request, parsing anything or storing anything. Run under gunicorn with the settings of
``pushreport serve``, its throughput is the ceiling the receiver is measured against::

    gunicorn --pythonpath bench bare_app:app      # or, from the repository root:
    gunicorn bench.bare_app:app
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

__all__ = ["app"]

_HEADERS = [("Content-Length", "0")]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", list(_HEADERS))
    return [b""]
