"""The ASGI baseline of ``bench/load.py``: the least an ASGI app can answer.

``200 OK`` with an empty body and ``Content-Length: 0``, exactly the success answer of
``pushreport serve``, without reading the request body, parsing or storing anything.
Run under uvicorn with uvloop and httptools and the worker count of ``pushreport serve
--engine uvicorn``, its throughput is the ceiling the ASGI engine is measured against::

    uvicorn --app-dir bench bare_asgi:app --loop uvloop --http httptools --workers 2
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

__all__ = ["app"]

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
