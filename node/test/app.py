"""The ASGI app the Node package's tests (and benchmarks/hosts.js) talk to."""
import asyncio
import hashlib
import json
import os
import time


async def _json(send, obj, status=200):
    data = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            t = msg["type"].replace("lifespan.", "lifespan.") + ".complete"
            await send({"type": t})
            if msg["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if path == "/ws/reject":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept", "subprotocol": None})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "bye":
                await send({"type": "websocket.close", "code": 4000})
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"][::-1]})
    if path == "/hello":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello, world"})
    elif path == "/echo":
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif path == "/trailers":  # ASGI http.response.trailers, when the scope offers them
        offered = "http.response.trailers" in scope.get("extensions", {})
        await send({"type": "http.response.start", "status": 200, "headers": [],
                    "trailers": offered})
        await send({"type": "http.response.body", "body": b"part 1, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part 2"})
        if offered:
            await send({"type": "http.response.trailers", "more_trailers": True,
                        "headers": [(b"grpc-status", b"0")]})
            await asyncio.sleep(0.05)  # the last trailers come in a later ring read
            await send({"type": "http.response.trailers",
                        "headers": [(b"grpc-message", b"fine"), (b"x-sum", b"14")]})
    elif path == "/pid":
        await _json(send, {"pid": os.getpid()})
    elif path == "/sse":  # events 0.2 s apart, each stamped with when it was sent
        n = int(scope["query_string"].decode().partition("=")[2] or 3)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(n):
            line = f"data: {json.dumps({'i': i, 'sent': time.time()})}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow-upload":  # reads nothing for a while, then hashes the body
        await asyncio.sleep(1.0)
        h, n = hashlib.sha256(), 0
        while True:
            msg = await receive()
            h.update(msg.get("body", b""))
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        await _json(send, {"bytes": n, "sha256": h.hexdigest()})
    elif path == "/zeros":  # a streamed download of n bytes
        n = int(scope["query_string"].decode().partition("=")[2] or 0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = bytes(65536)
        while n > 0:
            await send({"type": "http.response.body", "body": chunk[:n], "more_body": True})
            n -= 65536
        await send({"type": "http.response.body", "body": b""})
    elif path == "/forever":  # a chunk, then nothing until the client goes away
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-pid", str(os.getpid()).encode())]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    elif path == "/raise":
        raise RuntimeError("boom")
    else:
        await _json(send, {"error": "not found"}, 404)
