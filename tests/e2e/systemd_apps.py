"""An app whose lifespan startup takes a while and leaves a mark, so a test can tell whether
READY=1 came before or after every worker finished it (tests/e2e/test_systemd.py)."""
import asyncio
import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("STARTUP_DELAY", "0.5")))
                open(f"started.{os.getpid()}", "w").close()  # in the server's cwd
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"pid": os.getpid(), "path": scope["path"],
                       "environ": sorted(k for k in os.environ
                                         if k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_")))})
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})
