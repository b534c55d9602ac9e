"""More raw ASGI apps for the end-to-end tests of streaming, shutdown and the CLI.

``app`` serves the endpoints below and hands everything else (and lifespan) to
``tests.e2e.apps.app``.  Markers are files the test names in the query string: the app writes
them so that the test can see, without sleeping, what the app is doing.

    */whoami?env=NAME           root_path, path, raw_path, pid and os.environ[NAME]; matched on
                                the path's end so that it answers under any --root-path
    /zeros-progress?n=&m=FILE   like /zeros (64 KiB chunks), and writes the number of bytes
                                the app has handed to send() so far into FILE (every 1 MiB)
    /stall-reader?m=FILE        reads one body chunk, then waits (up to 60 s) until FILE
                                exists before reading the rest; answers {bytes, sha256}
    /sleep-marked?s=&m=FILE     creates FILE once the request reached the app, sleeps s seconds

``failing_startup`` refuses lifespan startup with a message.
"""
import asyncio
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

from tests.e2e import apps

STARTUP_FAILURE = "the database is unreachable (test)"


def _query(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


async def _json(send, obj, status=200):
    data = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _write_marker(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # atomic: a reader never sees a half-written number


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await apps.app(scope, receive, send)
    path, q = scope["path"], _query(scope)
    if path.endswith("/whoami"):
        name = q.get("env")
        return await _json(send, {"root_path": scope.get("root_path"), "path": path,
                                  "raw_path": scope["raw_path"].decode("latin-1"),
                                  "pid": os.getpid(),
                                  "env": os.environ.get(name) if name else None})
    if path == "/zeros-progress":
        n, marker = int(q["n"]), q["m"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk, sent, reported = b"\0" * 65536, 0, 0
        while sent < n:
            piece = chunk[:min(len(chunk), n - sent)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
            if sent - reported >= 1 << 20 or sent == n:
                _write_marker(marker, str(sent))
                reported = sent
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/stall-reader":
        marker = q["m"]
        h, n, first = hashlib.sha256(), 0, True
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            h.update(msg.get("body", b""))
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
            if first:
                first = False
                deadline = time.monotonic() + 60
                while not os.path.exists(marker) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
        return await _json(send, {"bytes": n, "sha256": h.hexdigest()})
    if path == "/sleep-marked":
        _write_marker(q["m"], "in app")
        await asyncio.sleep(float(q.get("s", "1")))
        return await _json(send, {"slept": True, "pid": os.getpid()})
    return await apps.app(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        msg = await receive()
        assert msg["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": STARTUP_FAILURE})
        return
    await _json(send, {"never": "served"})
