"""A Starlette app (with sse-starlette) for the tests that serve real frameworks as users do.

    /hello                  plain text
    /asgi                   the scope's "asgi" dict, as JSON
    POST /late-404?ms=      waits ms milliseconds, then answers 404 without reading the body
                            (the window fills first: the front-end has stopped reading)
    /quiet?m=FILE           a StreamingResponse that sends one chunk, then waits for an event
                            that never comes; writes FILE ("ended") once the stream is ended
    /sse?m=FILE             an endless sse-starlette feed (an event every 0.2 s); writes FILE
                            ("ended") when the feed stops
    /finite?chunks=&delay=&length=0|1
                            a response of chunks x 1 KiB, one every delay s, with a
                            Content-Length (length=1, the default) or chunked
    Unknown paths: Starlette's 404, at once, without reading the body.
"""
from __future__ import annotations

import asyncio

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (JSONResponse, PlainTextResponse, Response,
                                 StreamingResponse)
from starlette.routing import Route


def _mark(request: Request, text: str) -> None:
    path = request.query_params.get("m")
    if path:
        with open(path, "w") as fh:
            fh.write(text)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def asgi(request: Request) -> Response:
    return JSONResponse(request.scope["asgi"])


async def late_404(request: Request) -> Response:
    await asyncio.sleep(int(request.query_params.get("ms", "300")) / 1000)
    return PlainTextResponse("not here", status_code=404)


async def quiet(request: Request) -> Response:
    async def body():
        try:
            yield b"first\n"
            await asyncio.Event().wait()   # nothing ever comes
        finally:
            _mark(request, "ended")
    return StreamingResponse(body(), media_type="text/plain")


async def sse(request: Request) -> Response:
    async def feed():
        n = 0
        try:
            while True:
                n += 1
                yield {"data": str(n)}
                await asyncio.sleep(0.2)
        finally:
            _mark(request, "ended")
    return EventSourceResponse(feed(), ping=1)


async def finite(request: Request) -> Response:
    chunks = int(request.query_params.get("chunks", "10"))
    delay = float(request.query_params.get("delay", "0.1"))

    async def body():
        for _ in range(chunks):
            await asyncio.sleep(delay)
            yield b"x" * 1024
    length = request.query_params.get("length", "1") == "1"
    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"content-length": str(chunks * 1024)} if length else None)


app = Starlette(routes=[
    Route("/hello", hello),
    Route("/asgi", asgi),
    Route("/late-404", late_404, methods=["POST"]),
    Route("/quiet", quiet),
    Route("/sse", sse),
    Route("/finite", finite),
])
