"""Raw ASGI apps for end-to-end tests (no framework in the way of what is being tested)."""
import asyncio
import hashlib
import json
import os
import time


async def _body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise OSError("client disconnected")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _send_json(send, obj, status=200):
    data = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["booted"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":   # (the HTTP/2 conformance table's RFC 8441 cases)
        await receive()
        await send({"type": "websocket.accept"})
        if scope["path"] == "/tls":
            await send({"type": "websocket.send", "text": json.dumps(
                {"http_version": scope["http_version"],
                 "tls": scope.get("extensions", {}).get("tls")})})
        while (msg := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": msg.get("text"),
                        "bytes": msg.get("bytes")})
        return
    path = scope["path"]
    if path.startswith("/scope"):
        out = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string",
                                                             "state", "extensions", "asgi")}
        out["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        out["raw_path"] = scope["raw_path"].decode("latin-1")
        out["query_string"] = scope["query_string"].decode("latin-1")
        out["state"] = dict(scope.get("state", {}))
        out["pid"] = os.getpid()
        return await _send_json(send, out)
    if path == "/tls":   # the ASGI tls extension (None: not a TLS connection)
        return await _send_json(send, {"http_version": scope["http_version"],
                                       "tls": scope.get("extensions", {}).get("tls")})
    if path == "/echo":
        body = await _body(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/hash":  # streamed upload: hash as it comes, never hold the body
        h, n = hashlib.sha256(), 0
        while True:
            msg = await receive()
            h.update(msg.get("body", b""))
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return await _send_json(send, {"bytes": n, "sha256": h.hexdigest()})
    if path == "/slow-reader":  # reads the body slowly
        h, n = hashlib.sha256(), 0
        while True:
            msg = await receive()
            h.update(msg.get("body", b""))
            n += len(msg.get("body", b""))
            await asyncio.sleep(0.002)
            if not msg.get("more_body"):
                break
        return await _send_json(send, {"bytes": n, "sha256": h.hexdigest()})
    if path == "/zeros":  # streamed download of n zero bytes in 64 KiB chunks, chunked encoding
        n = int(scope["query_string"].decode().partition("=")[2] or 0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"\0" * 65536
        while n > 0:
            piece = chunk if n >= len(chunk) else chunk[:n]
            n -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/pid":
        return await _send_json(send, {"pid": os.getpid()})
    if path == "/spin":  # holds the worker's loop: CPU-bound for ?ms=N milliseconds
        ms = float(scope["query_string"].decode().partition("=")[2] or 20)
        t0 = time.monotonic()
        while time.monotonic() - t0 < ms / 1000:
            pass
        return await _send_json(send, {"pid": os.getpid(), "t0": t0, "t1": time.monotonic()})
    if path == "/error-before":
        raise RuntimeError("boom before start")
    if path == "/error-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    if path == "/no-response":
        return
    if path == "/bad-header":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nInjected: yes")]})
        await send({"type": "http.response.body", "body": b"never"})
        return
    if path == "/close":  # the app asks for the connection to be closed after this response
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"3"), (b"Connection", b"close")]})
        await send({"type": "http.response.body", "body": b"bye"})
        return
    if path == "/sleep":
        await asyncio.sleep(float(scope["query_string"].decode().partition("=")[2] or 0.1))
        return await _send_json(send, {"slept": True, "pid": os.getpid()})
    if path == "/disconnect":  # waits for the client to go away, records it in a file
        await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        msg = await receive()
        marker = scope["query_string"].decode().partition("=")[2]
        with open(marker, "w") as fh:
            fh.write(msg["type"])
        return
    await _send_json(send, {"error": "not found"}, status=404)
