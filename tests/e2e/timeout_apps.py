"""Raw ASGI app for the --timeout-request tests: apps that never answer, one that blocks its
loop, and quick ones beside them.  What the app saw goes to a marker file (``?marker=``)."""
import asyncio
import os
import time
from urllib.parse import parse_qs


def _args(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _mark(path, text: str) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)


async def _respond(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    args = _args(scope)
    marker = args.get("marker")
    path = scope["path"]
    if path == "/pid":
        await _respond(send, str(os.getpid()).encode())
    elif path == "/listen-forever":
        # reads until told the client is gone, then awaits forever: only cancellation ends it
        seen = []
        try:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    seen.append("http.disconnect")
                    _mark(marker, " ".join(seen))
                    await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            _mark(marker, " ".join(seen))
            raise
    elif path == "/await-forever":
        # never calls receive(): learns nothing until it is cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _mark(marker, "cancelled")
            raise
    elif path == "/block":
        time.sleep(float(args.get("s", "3")))   # holds the worker's loop
        _mark(marker, "unblocked")
        await _respond(send, b"late")
    elif path == "/sleep":
        await asyncio.sleep(float(args.get("s", "0.1")))
        await _respond(send, b"slept")
    elif path == "/slow-body":
        # starts at once, then takes its time: no request timeout after the start
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(int(args.get("n", "3"))):
            await asyncio.sleep(float(args.get("s", "1")))
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/upload":
        n = 0
        while True:
            msg = await receive()
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        await _respond(send, str(n).encode())
    else:
        await _respond(send, b"not found", 404)
