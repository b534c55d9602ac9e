"""A tiny gRPC service as a raw ASGI app (no framework, no protobuf: messages are raw bytes),
for real grpcio clients: gRPC needs HTTP/2 and the ASGI ``http.response.trailers`` extension.

    /test.Echo/Unary     one message in, the same upper-cased out
    /test.Echo/Bidi      each message answered as it arrives (full duplex)
    /test.Echo/Fail      grpc-status 3 (INVALID_ARGUMENT) in the trailers
    /test.Echo/Sleep     waits 10 s (a client deadline expires first) and records the
                         disconnect in the file named by the message
"""
import asyncio

GRPC_HEADERS = [(b"content-type", b"application/grpc")]


def frame(payload: bytes) -> bytes:
    return b"\0" + len(payload).to_bytes(4, "big") + payload


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if "http.response.trailers" not in scope.get("extensions", {}):
        await send({"type": "http.response.start", "status": 415, "headers": []})
        await send({"type": "http.response.body", "body": b"no trailers extension"})
        return
    method = scope["path"].rpartition("/")[2]
    await send({"type": "http.response.start", "status": 200, "headers": GRPC_HEADERS,
                "trailers": True})
    status, message = b"0", b""
    buf, more = b"", True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        buf += msg.get("body", b"")
        more = msg.get("more_body", False)
        while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
            n = int.from_bytes(buf[1:5], "big")
            payload, buf = buf[5:5 + n], buf[5 + n:]
            if method == "Fail":
                status, message = b"3", b"bad argument"
            elif method == "Sleep":
                try:
                    await asyncio.wait_for(receive(), 10)   # the client's cancel ends it
                finally:
                    with open(payload.decode(), "w") as fh:
                        fh.write("disconnected")
                return
            else:
                await send({"type": "http.response.body", "body": frame(payload.upper()),
                            "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    await send({"type": "http.response.trailers",
                "headers": [(b"grpc-status", status), (b"grpc-message", message)]})
