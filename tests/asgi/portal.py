"""A portal of its own (Starlette: routes, a JSON API, its own 404) with pushreport
mounted in front, served by uvicorn on loopback: ``python -m tests.asgi.portal CONFIG
PORT``. Its own routes answer with ``%2F`` still in their path parameters."""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pushreport_asgi import PushReportMiddleware


async def home(request: Request) -> Response:
    return PlainTextResponse("portal home")


async def token_list(request: Request) -> Response:
    return JSONResponse(["not", "a", "report"])


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def raw(request: Request) -> Response:
    return JSONResponse({"raw_path": request.scope["raw_path"].decode("latin-1")})


def make_portal(config: str) -> PushReportMiddleware:
    portal = Starlette(
        routes=[
            Route("/", home),
            Route("/token/list", token_list),
            Route("/api/echo", echo, methods=["POST"]),
            Route("/files/{name:path}", raw),
        ]
    )
    return PushReportMiddleware(portal, config)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        make_portal(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        lifespan="on",
        log_level="info",
    )
