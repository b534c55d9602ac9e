"""The bare ASGI app every peer of benchmarks/hosts/bench.js serves (no framework)."""

HELLO = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/upload":  # counts a streamed body
        n = 0
        while True:
            msg = await receive()
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = str(n).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif path == "/zeros":  # a streamed download of n bytes
        n = int(scope["query_string"].decode().partition("=")[2] or 0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = bytes(65536)
        while n > 0:
            await send({"type": "http.response.body", "body": chunk[:n], "more_body": True})
            n -= 65536
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": HELLO})
        await send({"type": "http.response.body", "body": b"Hello, world!"})
