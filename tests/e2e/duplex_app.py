"""A full-duplex echo for the HTTP/2 backpressure test: each body chunk goes straight back as
it arrives (the response starts first), so one stream carries as much up as down and the app
never holds more than one chunk: what bounds memory is the flow control end to end."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        body, more = msg.get("body", b""), msg.get("more_body", False)
        if body or not more:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return
