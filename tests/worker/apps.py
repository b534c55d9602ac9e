"""Small ASGI apps the worker tests serve (imported by the worker as ``apps:<name>``)."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def _query(scope, name: str, default: int) -> int:
    values = parse_qs(scope["query_string"].decode()).get(name)
    return int(values[0]) if values else default


async def _respond(send, body: bytes, status: int = 200, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        more = message["more_body"]
    return b"".join(chunks)


async def hello(scope, receive, send):
    if scope["type"] != "http":
        raise NotImplementedError(scope["type"])  # "auto" lifespan: unsupported
    await _respond(send, b"Hello, world!")


async def echo(scope, receive, send):
    await _respond(send, await _read_body(receive))


async def digest(scope, receive, send):
    """Read the body one message at a time; answer its length and sha256."""
    h, n, messages = hashlib.sha256(), 0, 0
    more = True
    while more:
        message = await receive()
        h.update(message["body"])
        n += len(message["body"])
        messages += 1
        more = message["more_body"]
    await _respond(send, json.dumps({"bytes": n, "sha256": h.hexdigest(),
                                     "messages": messages}).encode())


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


async def stream(scope, receive, send):
    """``?size=N&chunk=M``: N bytes of pattern(N), M bytes per send, then an empty last one."""
    size, chunk = _query(scope, "size", 1 << 20), _query(scope, "chunk", 16384)
    data = pattern(size)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for start in range(0, size, chunk):
        await send({"type": "http.response.body", "body": data[start:start + chunk],
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def big_send(scope, receive, send):
    """One send() of ``?size=N`` bytes: the worker splits it into chunks."""
    size = _query(scope, "size", 1 << 20)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": pattern(size)})


async def scope_json(scope, receive, send):
    """The scope as JSON (bytes as latin-1 text, tuples as lists), to check how it was built."""
    def plain(value):
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    types = {"headers": type(scope["headers"]).__name__,
             "header": type(scope["headers"][0]).__name__ if scope["headers"] else None,
             "client": type(scope["client"]).__name__,
             "server": type(scope["server"]).__name__}
    await _respond(send, json.dumps({"scope": plain(scope), "types": types}).encode())


async def raise_before(scope, receive, send):
    raise ValueError("boom before start")


async def raise_after(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom after start")


async def bad_status(scope, receive, send):
    await send({"type": "http.response.start", "status": "200", "headers": []})


async def bad_headers(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [("x-a", "b")]})


async def injected_header(scope, receive, send):
    """A header whose name or value could end the line (?name=1: in the name)."""
    pair = ((b"x-a\r\nx-b", b"1") if scope["query_string"] == b"name=1"
            else (b"x-a", b"1\r\nx-b: 2"))
    await send({"type": "http.response.start", "status": 200, "headers": [pair]})


async def reuses_headers(scope, receive, send):
    """Changes its header list (and a pair in it) once send() has taken it."""
    pair = [b"x-a", b"1"]
    headers = [pair]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    pair[1] = b"changed"
    headers.append((b"x-b", b"2\r\nx-c: 3"))
    await send({"type": "http.response.body", "body": b"ok"})


async def view_header(scope, receive, send):
    """A header value that is not bytes but equal to one (a memoryview of b"1")."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-a", memoryview(b"1"))]})


async def misuse(scope, receive, send):
    """Completes a response, then sends what may not be sent; reports the errors."""
    await _respond(send, b"ok")
    errors = []
    for message in ({"type": "http.response.body", "body": b"more"},
                    {"type": "http.response.push", "headers": []}):
        try:
            await send(message)
        except RuntimeError as exc:
            errors.append(str(exc))
    raise ValueError(" | ".join(errors))


async def pathsend(scope, receive, send):
    """http.response.pathsend (offered: the test's host is host 0), with a relative path;
    then what may not be sent with it, the errors reported."""
    errors = []
    try:   # before the start
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
    except RuntimeError as exc:
        errors.append(str(exc))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"Content-Length", b"12")]})
    await send({"type": "http.response.pathsend", "path": "files/../data.bin"})
    try:
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
    except RuntimeError as exc:
        errors.append(str(exc))
    raise ValueError(" | ".join(errors) + " | " + str(sorted(scope["extensions"])))


async def returns_early(scope, receive, send):
    pass


async def no_read(scope, receive, send):
    """Starts a response, then never reads the body (nor notices anything)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(3600)


async def disconnect_probe(scope, receive, send):
    """Reads the request, starts the response, waits on receive(); reports through its error
    what receive() returned and what send() raised after the client left."""
    first = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    second = await receive()
    try:
        await send({"type": "http.response.body", "body": b"late"})
    except Exception as exc:  # noqa: BLE001 -- what it is, is the point
        raised = f"{type(exc).__name__} OSError={isinstance(exc, OSError)}"
    else:
        raised = "nothing"
    raise RuntimeError(f"first={first['type']} second={second['type']} send={raised}")


async def waits_for_body(scope, receive, send):
    """Blocks in receive() until the body ends or the client leaves; says which."""
    message = {"more_body": True}
    body = b""
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RuntimeError("saw http.disconnect")
        body += message["body"]
    await _respond(send, b"done:" + body)


async def ignores_everything(scope, receive, send):
    await asyncio.sleep(3600)


ROUTES = {
    "/hello": hello, "/echo": echo, "/digest": digest, "/stream": stream,
    "/big_send": big_send, "/scope": scope_json, "/raise_before": raise_before,
    "/raise_after": raise_after, "/bad_status": bad_status, "/bad_headers": bad_headers,
    "/injected_header": injected_header, "/reuses_headers": reuses_headers,
    "/view_header": view_header,
    "/returns_early": returns_early, "/misuse": misuse, "/no_read": no_read,
    "/disconnect_probe": disconnect_probe, "/slow": waits_for_body,
    "/ignores_everything": ignores_everything,
}


async def holds_loop(scope, receive, send):
    """Keeps the worker's event loop (CPU-bound, no await) until the file named by the query
    string exists, or ``seconds`` pass; answers which."""
    import os
    import time
    marker = parse_qs(scope["query_string"].decode())["marker"][0]
    deadline = time.monotonic() + _query(scope, "seconds", 30)
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            await _respond(send, b"timed out")
            return
    await _respond(send, b"released")


ROUTES["/holds_loop"] = holds_loop
ROUTES["/pathsend"] = pathsend


async def router(scope, receive, send):
    """Every app above, by path; no lifespan support (the ASGI way: raise)."""
    if scope["type"] != "http":
        raise NotImplementedError(scope["type"])
    await ROUTES[scope["path"]](scope, receive, send)


# --- lifespan ---------------------------------------------------------------------------------

def _lifespan_app(on_startup=None, fail=None, raise_in_startup=False):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if raise_in_startup:
                        raise RuntimeError("cannot start: no database")
                    if fail:
                        await send({"type": "lifespan.startup.failed", "message": fail})
                        return
                    scope["state"]["greeting"] = "hello from lifespan"
                    scope["state"]["counter"] = 0
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    print("LIFESPAN SHUTDOWN RAN", file=sys.stderr, flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            if scope["path"] != "/":
                return await router(scope, receive, send)
            state = scope["state"]
            state["counter"] += 1  # a shallow copy: other requests must not see this
            body = json.dumps({"greeting": state["greeting"], "counter": state["counter"]})
            await _respond(send, body.encode())
    return app


with_state = _lifespan_app()
startup_fails = _lifespan_app(fail="no database")
startup_raises = _lifespan_app(raise_in_startup=True)


async def slow_startup(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    print("STARTUP BEGUN", file=sys.stderr, flush=True)
    await asyncio.sleep(3600)


def make_hello():
    """An app factory (``factory: true``)."""
    return hello


# --- Starlette --------------------------------------------------------------------------------

async def _json(request: Request) -> JSONResponse:
    return JSONResponse({"message": "hi", "path": request.url.path,
                         "started": request.state.started})


async def _numbers(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("count", "5"))

    async def lines():
        for i in range(count):
            yield f"{i}\n"
            await asyncio.sleep(0)

    return StreamingResponse(lines(), media_type="text/plain")


async def _upload(request: Request) -> JSONResponse:
    h, n = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return JSONResponse({"bytes": n, "sha256": h.hexdigest()})


@contextlib.asynccontextmanager
async def _starlette_lifespan(app):
    yield {"started": True}


starlette_app = Starlette(routes=[Route("/json", _json), Route("/numbers", _numbers),
                                  Route("/upload", _upload, methods=["POST"])],
                          lifespan=_starlette_lifespan)


async def ws_echo(scope, receive, send):
    """A raw ASGI websocket echo (the worker-level WebSocket tests)."""
    if scope["type"] != "websocket":
        raise NotImplementedError(scope["type"])
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", **{k: v for k, v in msg.items()
                                                  if k in ("text", "bytes")}})
