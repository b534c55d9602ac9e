"""Applications the benchmarks serve, identical for every server under test.

- ``benchmarks.apps:hello`` — a bare ASGI 3 callable: the server's own overhead, nothing else.
  Its ``websocket`` scope is a bare echo (the ``ws_echo`` benchmark scenario).
- ``benchmarks.apps:starlette_app`` — a small Starlette app: what a typical request costs.
- ``benchmarks.apps:template_app`` — Starlette rendering a Jinja2 page (``GET /page``: a
  title, a 20-row table of escaped values, a layout it extends): an app that does some work
  per request, as server-rendered pages do (docs/operations.md's capacity model);
  ``GET /page-cached``: the same response rendered once, for the front-end's share.
"""

from __future__ import annotations

import time

import functools

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


_TEMPLATES = {
    "layout.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %}</title>
</head><body><header><a href="/">Home</a> | <a href="/page">Orders</a></header>
<main>{% block main %}{% endblock %}</main><footer>{{ footer }}</footer></body></html>
""",
    "page.html": """{% extends "layout.html" %}
{% block title %}Orders of {{ user.name }}{% endblock %}
{% block main %}<h1>Orders of {{ user.name }}</h1>
<table><tr><th>#</th><th>Item</th><th>Qty</th><th>Price</th></tr>
{% for row in rows %}<tr class="{{ loop.cycle('odd', 'even') }}"><td>{{ row.id }}</td>
<td>{{ row.item }}</td><td>{{ row.qty }}</td><td>{{ "%.2f"|format(row.price) }}</td></tr>
{% endfor %}</table><p>Total: {{ "%.2f"|format(rows|sum(attribute="price")) }}</p>
{% endblock %}
""",
}
_ROWS = [{"id": i, "item": f"Widget <{i}> & co", "qty": i % 7 + 1, "price": 9.99 * (i % 5 + 1)}
         for i in range(20)]


@functools.cache
def _templates():
    # imported on first use: the other apps' workers (the bare hello's above all) do not
    # carry jinja2's modules and objects, and their figures stay comparable with checkouts
    # that have no template app
    import jinja2
    from starlette.templating import Jinja2Templates
    return Jinja2Templates(env=jinja2.Environment(loader=jinja2.DictLoader(_TEMPLATES),
                                                  autoescape=True))


async def _page(request: Request):
    return _templates().TemplateResponse(request, "page.html", {
        "user": {"name": "Ada"}, "rows": _ROWS, "footer": "sidecar benchmarks"})


_PAGE = None


async def _page_cached(request: Request):
    """The bytes and headers of /page, rendered once: what the front-end handles for /page,
    at the rate of a cheap route (the capacity model's front-end figure for this app)."""
    global _PAGE
    if _PAGE is None:
        _PAGE = await _page(request)
    return _PAGE


template_app = Starlette(routes=[Route("/page", _page), Route("/page-cached", _page_cached),
                                 Route("/", _plaintext)])
