"""The sidecar demo: a plain Starlette app doing what people build on ASGI servers.

Run it with::

    python -m sidecar examples.demo:app          # or: scripts/demo.sh

then open http://127.0.0.1:8000/ (or ``curl --unix-socket sidecar.sock http://x/``).

Every endpoint exercises one thing a server has to get right:

==============================  ===========================================================
``GET  /``                      small HTML index (this list, plus a live SSE feed)
``GET  /api/hello``             JSON; includes ``started_at`` set by the lifespan handler
``GET  /download?size=BYTES``   streamed download with Content-Length, 64 KiB at a time
``POST /upload``                streams the request body; answers ``{bytes, sha256}``
``GET  /sse/metrics``           Server-Sent Events (``?count=N&interval=S``; count=0: forever)
``GET  /ndjson/progress``       NDJSON progress stream (``?steps=N&delay=S``)
``GET  /cpu?ms=20``             burns CPU on the event loop for N ms (dispatch benchmark)
``GET  /pid``                   the pid of the worker that served the request
``GET  /ws/check``              page: your browser's WebSocket against the two below
``WS   /ws/echo``               WebSocket echo: text and binary messages come back as sent
``WS   /ws/chat?name=NAME``     WebSocket broadcast chat room (one room per worker process)
==============================  ===========================================================

Nothing here holds a whole body in memory: downloads are generated chunk by chunk and uploads
are hashed as they arrive, so memory stays flat whatever the size — if the server's does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger("demo")
log.setLevel(logging.INFO)  # the server's root logger stays at WARNING; these lines are wanted

CHUNK_SIZE = 64 * 1024
MAX_DOWNLOAD = 64 * 1024**3  # 64 GiB: large enough for any test, small enough to catch typos

# Download bytes follow a simple rule so a client can check them without a reference file:
# byte i of chunk k is (i + k) % 256.  Each chunk differs from its neighbours, so a duplicated,
# dropped or reordered chunk changes the sha256.
_PATTERN = bytes(range(256)) * (CHUNK_SIZE // 256 + 1)


def pattern_chunks(size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the ``size`` bytes that ``GET /download?size=size`` sends, chunk by chunk."""
    if chunk_size > CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at most {CHUNK_SIZE}")
    sent, index = 0, 0
    while sent < size:
        n = min(chunk_size, size - sent)
        start = index % 256
        yield _PATTERN[start : start + n]
        sent += n
        index += 1


# -- request parameters ----------------------------------------------------------------------


def _number(request: Request, name: str, default: float, low: float, high: float, kind=int):
    """Read query parameter ``name`` as ``kind`` within [low, high], or answer 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}")
    return value


# -- endpoints -------------------------------------------------------------------------------

INDEX_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>sidecar demo</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}
code{background:#f3f3f3;padding:0 .25em}pre{background:#f3f3f3;padding:.5em;min-height:6em}</style>
</head>
<body>
<h1>sidecar demo</h1>
<p>A plain Starlette app served by sidecar. Endpoints:</p>
<ul>
  <li><code>GET <a href="/api/hello">/api/hello</a></code> &mdash; JSON, with lifespan state</li>
  <li><code>GET <a href="/download?size=10485760">/download?size=BYTES</a></code>
      &mdash; streamed download (64 KiB chunks, Content-Length)</li>
  <li><code>POST /upload</code> (or PUT) &mdash; streamed upload, answers
      <code>{bytes, sha256}</code>: <code>curl -T bigfile http://127.0.0.1:8000/upload</code></li>
  <li><code>GET <a href="/sse/metrics">/sse/metrics?count=N&amp;interval=S</a></code>
      &mdash; Server-Sent Events (<code>count=0</code>: until you leave)</li>
  <li><code>GET <a href="/ndjson/progress">/ndjson/progress?steps=N&amp;delay=S</a></code>
      &mdash; NDJSON progress stream</li>
  <li><code>GET <a href="/cpu?ms=20">/cpu?ms=20</a></code> &mdash; burns CPU for N ms</li>
  <li><code>GET <a href="/pid">/pid</a></code> &mdash; which worker answered</li>
  <li><code>WS /ws/echo</code> &mdash; WebSocket echo (text and binary; subprotocol
      <code>echo</code> if offered)</li>
  <li><code>WS /ws/chat?name=NAME</code> &mdash; WebSocket chat room, one per worker process</li>
  <li><code>GET <a href="/ws/check">/ws/check</a></code> &mdash; checks your browser's WebSocket
      against those two, through any proxy in between, and an echo console</li>
</ul>
<p>Live feed from <code>/sse/metrics</code> (reload the page to see other workers):</p>
<pre id="feed"></pre>
<script>
  const feed = document.getElementById("feed");
  const source = new EventSource("/sse/metrics?count=0&interval=1");
  source.onmessage = (event) => {
    feed.textContent = (event.data + "\\n" + feed.textContent).split("\\n").slice(0, 8).join("\\n");
  };
</script>
</body>
</html>
"""


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(INDEX_HTML)


async def hello(request: Request) -> JSONResponse:
    # request.state is a copy of what the lifespan handler yielded, in this worker.
    started_at = request.state.started_at
    return JSONResponse(
        {
            "message": "Hello, world!",
            "pid": os.getpid(),
            "started_at": started_at,
            "uptime_s": round(time.time() - started_at, 3),
        }
    )


async def download(request: Request) -> StreamingResponse:
    size = _number(request, "size", 1024 * 1024, 0, MAX_DOWNLOAD)

    async def body() -> AsyncIterator[bytes]:
        # An async generator: between chunks the server may make us wait (backpressure)
        # while the client catches up; only one chunk exists at a time.
        for chunk in pattern_chunks(size):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="demo-{size}.bin"',
        },
    )


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    received = chunks = 0
    async for chunk in request.stream():  # never request.body(): that would buffer it all
        digest.update(chunk)
        received += len(chunk)
        chunks += 1 if chunk else 0
    return JSONResponse({"bytes": received, "sha256": digest.hexdigest(), "chunks": chunks})


async def sse_metrics(request: Request) -> StreamingResponse:
    count = _number(request, "count", 10, 0, 1_000_000)  # 0: until the client goes away
    interval = _number(request, "interval", 1.0, 0.0, 60.0, kind=float)
    # A reconnecting EventSource sends the last id it saw; carry on from there.
    try:
        last_id = max(0, int(request.headers.get("last-event-id", "0")))
    except ValueError:
        last_id = 0

    async def events() -> AsyncIterator[str]:
        seq = last_id
        while count == 0 or seq < count:
            seq += 1
            data = {
                "seq": seq,
                "pid": os.getpid(),
                "time": round(time.time(), 3),
                "loadavg": os.getloadavg()[0],
            }
            yield f"id: {seq}\ndata: {json.dumps(data)}\n\n"
            if count == 0 or seq < count:
                await asyncio.sleep(interval)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        # no-cache: every client needs its own live feed.  X-Accel-Buffering: tells nginx not
        # to buffer this response even where proxy_buffering is on.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def ndjson_progress(request: Request) -> StreamingResponse:
    steps = _number(request, "steps", 5, 1, 100_000)
    delay = _number(request, "delay", 0.2, 0.0, 60.0, kind=float)

    async def lines() -> AsyncIterator[str]:
        started = time.monotonic()
        for step in range(1, steps + 1):
            await asyncio.sleep(delay)  # stands in for real work
            progress = {"step": step, "steps": steps, "percent": round(100 * step / steps, 1)}
            yield json.dumps(progress) + "\n"
        done = {"done": True, "steps": steps, "elapsed_s": round(time.monotonic() - started, 3)}
        yield json.dumps(done) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def cpu(request: Request) -> JSONResponse:
    # Deliberately blocks the event loop, like a CPU-heavy handler written as `async def`:
    # this worker can serve nothing else meanwhile.  A server that dispatches per request
    # sends other requests to an idle worker instead.
    ms = _number(request, "ms", 20, 0, 10_000)
    deadline = time.perf_counter() + ms / 1000
    loops = 0
    while time.perf_counter() < deadline:
        loops += 1
    return JSONResponse({"ms": ms, "loops": loops, "pid": os.getpid()})


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


WS_CHECK_HTML = (Path(__file__).parent / "ws_check.html").read_text()


async def ws_check(request: Request) -> HTMLResponse:
    return HTMLResponse(WS_CHECK_HTML)


async def ws_echo(websocket: WebSocket) -> None:
    """Echo every message back as it came: text as text, binary as binary.  A client that
    offers the ``echo`` subprotocol gets it; how the client closed is logged."""
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="echo" if "echo" in offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                log.info("echo: client closed with %s %r", message.get("code"),
                         message.get("reason") or "")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


class ChatRoom:
    """A broadcast chat room held in memory.

    There is ONE ROOM PER WORKER PROCESS: each worker has its own copy of this object, and
    sidecar spreads WebSockets over the workers, so two clients only see each other when they
    landed on the same worker (run with ``--workers 1`` to get a single room).  A chat across
    workers needs a shared broker (Redis pub/sub, PostgreSQL LISTEN/NOTIFY, ...).
    """

    def __init__(self) -> None:
        self.members: set[WebSocket] = set()

    async def broadcast(self, text: str) -> None:
        for member in list(self.members):
            try:
                await member.send_text(text)
            except Exception:  # a member that went away: its own handler removes it
                self.members.discard(member)


chat_room = ChatRoom()
CHAT_NAME = re.compile(r"[\w.-]{1,32}")


async def ws_chat(websocket: WebSocket) -> None:
    """``/ws/chat?name=NAME``: every text message is sent to everyone in this worker's room."""
    name = websocket.query_params.get("name") or f"guest-{os.urandom(2).hex()}"
    await websocket.accept()
    if not CHAT_NAME.fullmatch(name):
        # Accept, then close with a code and reason: a browser shows a refused handshake
        # (403) only as close code 1006, with no reason; this way the page can tell the user.
        await websocket.close(1008, "name: 1 to 32 letters, digits, '.', '-' or '_'")
        return
    chat_room.members.add(websocket)
    await chat_room.broadcast(json.dumps({"event": "join", "name": name, "pid": os.getpid()}))
    try:
        while True:
            text = await websocket.receive_text()
            await chat_room.broadcast(json.dumps({"event": "message", "name": name,
                                                  "text": text}))
    except WebSocketDisconnect:
        pass
    finally:
        chat_room.members.discard(websocket)
        await chat_room.broadcast(json.dumps({"event": "leave", "name": name}))


# -- application -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict]:
    # Runs once per worker process, before it takes requests.  What we yield becomes the
    # lifespan state: each request sees a copy as request.state.
    yield {"started_at": time.time()}


app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/hello", hello),
        Route("/download", download),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/sse/metrics", sse_metrics),
        Route("/ndjson/progress", ndjson_progress),
        Route("/cpu", cpu),
        Route("/pid", pid),
        Route("/ws/check", ws_check),
        WebSocketRoute("/ws/echo", ws_echo),
        WebSocketRoute("/ws/chat", ws_chat),
    ],
    lifespan=lifespan,
)
