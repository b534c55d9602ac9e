"""An app whose "code version" is read when it is imported, from the file named by
$RELOAD_APP_VERSION: a reload that re-imports the app serves the new version.  A version
starting with "fail" refuses lifespan startup; one starting with "broken" fails the import;
one starting with "slow" takes a minute in lifespan startup."""
import asyncio
import json
import os

with open(os.environ["RELOAD_APP_VERSION"]) as fh:
    VERSION = fh.read().strip()

if VERSION.startswith("broken"):
    raise RuntimeError(f"version {VERSION} cannot be imported (test)")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if VERSION.startswith("fail"):
                    await send({"type": "lifespan.startup.failed",
                                "message": f"version {VERSION} refuses to start (test)"})
                    return
                if VERSION.startswith("slow"):
                    await asyncio.sleep(60)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    data = json.dumps({"version": VERSION, "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
