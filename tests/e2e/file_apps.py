"""Files served with Starlette's FileResponse, which uses ASGI's http.response.pathsend when
the scope offers it (the front-end then sends the file: sidecar/frontend/file_send.py).

    /f/NAME             FileResponse of $SC_FILES/NAME (ranges, HEAD, conditional requests:
                        Starlette's)
    /raw/NAME?length=N  a raw ASGI app: a 200 head with Content-Length N (the file's size
                        now if absent), then pathsend of $SC_FILES/NAME, without checking
                        that it exists (a file that vanished between the app's stat and
                        the front-end's open)
    /ext                the scope's extensions, as JSON keys
"""
from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

FILES = os.environ.get("SC_FILES", "/nonexistent")


async def file(request):
    return FileResponse(os.path.join(FILES, request.path_params["name"]))


async def raw(scope, receive, send):
    path = os.path.join(FILES, scope["path"].rsplit("/", 1)[1])
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
    length = int(query["length"]) if "length" in query else os.stat(path).st_size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % length)]})
    await send({"type": "http.response.pathsend", "path": path})


async def ext(scope, receive, send):
    body = json.dumps(sorted(scope.get("extensions", {}))).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


_starlette = Starlette(routes=[Route("/f/{name}", file)])


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith("/raw/"):
        return await raw(scope, receive, send)
    if scope["type"] == "http" and scope["path"] == "/ext":
        return await ext(scope, receive, send)
    return await _starlette(scope, receive, send)
