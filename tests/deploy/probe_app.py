"""A raw ASGI app for tests/deploy: a lifespan startup the test holds, and a slow request.

    PROBE_GATE=FILE   lifespan startup completes once FILE exists (at most 60 s)
    /sleep?s=S        sleeps S seconds, then answers
    /parent           the worker's parent pid (1 when the front-end is PID 1)
    anything else     the worker's pid
"""
import asyncio
import os
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                gate = os.environ.get("PROBE_GATE")
                deadline = time.monotonic() + 60
                while gate and not os.path.exists(gate) and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (msg := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": msg.get("text"),
                        "bytes": msg.get("bytes")})
        return
    if scope["path"] == "/sleep":
        await asyncio.sleep(float(scope["query_string"].decode().partition("=")[2] or 1))
    body = str(os.getppid() if scope["path"] == "/parent" else os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
