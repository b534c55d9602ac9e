"""Raw ASGI app for the limits and timeouts tests: it reports what it saw through files, so a
test can wait for "the app is running" and "the app was told the client left"."""
import asyncio
import os
from urllib.parse import parse_qs


def _args(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _mark(path: str | None, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a test that polls for the file's existence must
    never read it before its contents are there."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)


async def _wait_file(path: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not os.path.exists(path) and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def _read_body(receive, marker: str | None) -> bytes | None:
    """The whole body, or None (and the marker written) if the client went away."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            _mark(marker, "http.disconnect")
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _respond(send, status: int, body: bytes, headers=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


BAD_HEADERS = {
    "lf": [(b"x-evil", b"a\nInjected: yes")],
    "cr": [(b"x-evil", b"a\rInjected: yes")],
    "nul": [(b"x-evil", b"a\x00b")],
    "name-space": [(b"x evil", b"v")],
    "name-colon": [(b"x-evil:injected", b"v")],
    "name-crlf": [(b"x-evil\r\nInjected", b"v")],
    "empty-name": [(b"", b"v")],
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    args = _args(scope)
    path = scope["path"]
    if path == "/pid":
        return await _respond(send, 200, str(os.getpid()).encode())
    if path == "/hold":  # running: writes ?started=, then waits for the ?release= file
        _mark(args.get("started"), "running")
        await _wait_file(args["release"])
        return await _respond(send, 200, b"released")
    if path == "/upload":  # reads the whole body, then answers its size
        body = await _read_body(receive, args.get("marker"))
        if body is not None:
            await _respond(send, 200, str(len(body)).encode())
        return
    if path == "/respond-then-read":  # the response starts before the body is read
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
        if await _read_body(receive, args.get("marker")) is not None:
            await send({"type": "http.response.body", "body": b"done\n"})
        return
    if path == "/read-later":  # reads the body only after ?delay= seconds (100-continue)
        await asyncio.sleep(float(args.get("delay", "0")))
        body = await _read_body(receive, None)
        if body is not None:
            await _respond(send, 200, str(len(body)).encode())
        return
    if path == "/endless":  # streams until the client is gone, then writes ?marker=
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"z" * 65536
        try:
            while True:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:
            _mark(args.get("marker"), "disconnected")
        return
    if path == "/bad-header":
        return await _respond(send, 200, b"never", BAD_HEADERS[args["kind"]])
    await _respond(send, 404, b"not found")
