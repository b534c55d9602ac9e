"""Raw ASGI WebSocket apps for the end-to-end WebSocket tests (tests/e2e/test_websocket.py).

What the app saw of a close is appended to ``ws_events.log`` in the server's working
directory (the test's temporary directory), so a test can check it whichever worker ran it.
"""
import asyncio
import json
import os


def _log(line: str) -> None:
    with open("ws_events.log", "a") as fh:
        fh.write(line + "\n")


async def _http(scope, receive, send):
    body = json.dumps({"pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
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
    if scope["type"] == "http":
        return await _http(scope, receive, send)
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    args = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    tag = args.get("tag", "")
    if path == "/reject":
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/raise":
        raise RuntimeError("refusing in style")
    if path == "/deny":
        body = b"no websockets for you"
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "websocket.http.response.body", "body": body[5:]})
        return
    subprotocol = "superchat" if "superchat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-ws-app", b"yes")]})
    if path == "/scope":
        out = {k: v for k, v in scope.items() if k in (
            "type", "scheme", "path", "root_path", "subprotocols", "http_version", "extensions")}
        out["client"] = list(scope["client"]) if scope["client"] else None
        out["query_string"] = scope["query_string"].decode()
        await send({"type": "websocket.send", "text": json.dumps(out)})
    elif path == "/close4001":
        await send({"type": "websocket.close", "code": 4001, "reason": "app says bye"})
    elif path == "/pid":
        await send({"type": "websocket.send", "text": str(os.getpid())})
    elif path == "/noread":
        # accepted, never reads: the client must be held back
        await asyncio.sleep(float(args.get("s", "5")))
        return
    elif path == "/flood":
        block = b"x" * 65536
        try:
            while True:
                await send({"type": "websocket.send", "bytes": block})
        except OSError:
            return
    # echo (also what /pid does after its first message)
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            _log(f"disconnect {tag} {msg['code']} {msg.get('reason', '')}")
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})
