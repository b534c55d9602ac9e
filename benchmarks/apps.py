"""Applications the benchmarks serve, identical for every server under test.

- ``benchmarks.apps:hello`` — a bare ASGI 3 callable: the server's own overhead, nothing else.
  Its ``websocket`` scope is a bare echo (the ``ws_echo`` benchmark scenario).
- ``benchmarks.apps:starlette_app`` — a small Starlette app: what a typical request costs.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

_HELLO_BODY = b"Hello, world!"
_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_HELLO_BODY)).encode()),
    ],
}
_HELLO_BODY_MESSAGE = {"type": "http.response.body", "body": _HELLO_BODY}


_WSGI_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]


def wsgi_hello(environ, start_response):
    """Bare WSGI hello: the same response as ``hello``."""
    start_response("200 OK", _WSGI_HEADERS)
    return [b"Hello, world!"]


async def hello(scope, receive, send):
    """Bare ASGI hello: 'Hello, world!' as text/plain, with a lifespan that just says yes."""
    if scope["type"] == "http":
        await send(_HELLO_START)
        await send(_HELLO_BODY_MESSAGE)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            message["type"] = "websocket.send"
            await send(message)
    else:
        # The ASGI spec: raise on a scope type the app does not support.
        raise NotImplementedError(f"unsupported scope type {scope['type']!r}")


def burn_cpu(ms: float) -> int:
    """Spin on the CPU for ``ms`` milliseconds; return the number of loop turns."""
    deadline = time.perf_counter() + ms / 1000
    turns = 0
    while time.perf_counter() < deadline:
        turns += 1
    return turns


async def _plaintext(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def _json(request: Request) -> JSONResponse:
    return JSONResponse({"message": "Hello, world!"})


async def _cpu(request: Request) -> PlainTextResponse:
    # `async def` on purpose: the busy loop blocks this worker's event loop for its duration,
    # so whatever else lands on this worker waits.
    ms = float(request.query_params.get("ms", "20"))
    burn_cpu(ms)
    return PlainTextResponse(f"burned {ms:g} ms")


async def _fast(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fast")


starlette_app = Starlette(
    routes=[
        Route("/", _plaintext),
        Route("/json", _json),
        Route("/cpu", _cpu),
        Route("/fast", _fast),
    ]
)
