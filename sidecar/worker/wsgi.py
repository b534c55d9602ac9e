"""WSGI applications (PEP 3333) in the worker: an ASGI adapter that runs the app on a pool
of threads.

    HostLink -> HttpStream (credit, both ways) -> WsgiApp(scope, receive, send)  [loop]
                                   thread:  app(environ, start_response) -> iterable

The worker serves a WSGI app exactly as an ASGI one -- the same streams, credit, dispatch,
recycling, reload, limits and metrics -- because ``WsgiApp`` *is* an ASGI app: each request
is one job for a thread, and the thread talks to the stream's ``receive``/``send`` through
the worker's event loop (``asyncio.run_coroutine_threadsafe``), blocking until each returns:

- ``wsgi.input`` reads call ``receive()``: the body is streamed, never read whole first, and
  credit goes back to the host as the app reads (an app that stops reading stops the upload);
- each item of the response iterable is one ``send()``, which waits for credit: a slow
  client holds back the app's thread, never the worker's memory;
- ``close()`` of the iterable is called in every case (end, client gone, error), as PEP 3333
  asks; a client that left makes the next ``send()`` raise, which ends the iteration;
- an exception before the response head was sent is a 500 (the host's error policy); after
  it, the connection is cut.  ``start_response(..., exc_info)`` replaces a head not yet sent
  and re-raises once it was.

Headers go out with the first non-empty body item (PEP 3333), so an app that fails while
producing its first item still gets a clean 500.  A thread cannot be cancelled: when the
stream's task is cancelled (a request timeout, shutdown), the thread's next read or write
raises ``ClientDisconnected`` and it ends as soon as the app lets it.

The threads are daemon threads of our own (not concurrent.futures, whose threads are joined
at exit): a worker whose app is stuck in a thread still exits when it is told to.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading

from .http_stream import ClientDisconnected

__all__ = ["WsgiApp", "is_wsgi", "DEFAULT_THREADS"]

log = logging.getLogger("sidecar.worker")
errors_log = logging.getLogger("sidecar.worker.wsgi")

#: Threads per worker.  A WSGI request holds a thread until its response is sent (a slow
#: client included: the front-end buffers only a window), so this is the number of requests
#: one worker serves at once.  gunicorn's gthread: 1 by default, 2-4 x cores advised;
#: mod_wsgi 15; waitress 4.
DEFAULT_THREADS = 8   # (sidecar.config.Config.wsgi_threads)
_READ_CHUNK = 64 * 1024


def is_wsgi(app) -> bool:
    """``--interface auto``'s rule: a WSGI app is a callable that is not a coroutine function
    (nor an object whose ``__call__`` is one) and takes exactly two positional parameters,
    ``(environ, start_response)``, with no ``*args``.  Anything else -- a coroutine function
    of three parameters (ASGI 3), a callable whose signature cannot be read, one taking
    ``*args`` (a decorator's wrapper) -- is served as ASGI, as before this option existed;
    ``--interface wsgi`` says it when the rule cannot tell."""
    if inspect.iscoroutinefunction(app):
        return False
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(
        app, "__call__", None)
    if call is None or inspect.iscoroutinefunction(call):
        return False
    if inspect.isclass(app):
        return False   # an ASGI 2 class, or anything else that is built per call
    try:
        sig = inspect.signature(app)
    except (TypeError, ValueError):
        return False
    positional = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return False
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            positional.append(p)
    return len(positional) == 2


class _Threads:
    """N daemon threads taking jobs in order; started as jobs come, up to N."""

    def __init__(self, n: int):
        self.n = n
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.lock = threading.Lock()

    def submit(self, job) -> None:
        with self.lock:
            if self.idle == 0 and len(self.threads) < self.n:
                t = threading.Thread(target=self._run, name=f"wsgi-{len(self.threads)}",
                                     daemon=True)
                self.threads.append(t)
                t.start()
        self.jobs.put(job)

    def _run(self) -> None:
        while True:
            with self.lock:
                self.idle += 1
            job = self.jobs.get()
            with self.lock:
                self.idle -= 1
            if job is None:
                return
            try:
                job()
            except BaseException:   # a bug of ours: the thread must live on for the next job
                log.exception("WSGI thread failed")

    def stop(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


class _Errors:
    """``wsgi.errors``: text written by the app, one log line per line."""

    def __init__(self):
        self._local = threading.local()   # each thread's unfinished line

    @property
    def _partial(self) -> str:
        return getattr(self._local, "partial", "")

    @_partial.setter
    def _partial(self, text: str) -> None:
        self._local.partial = text

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            errors_log.error("%s", line)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            errors_log.error("%s", self._partial)
            self._partial = ""


class _Input:
    """``wsgi.input``: the request body, read from the stream as the app asks (PEP 3333's
    read, readline, readlines, iteration; ``wsgi.input_terminated``: reading past the end
    returns b"")."""

    def __init__(self, request: "_Request", first: bytes, more: bool):
        self._req = request
        self._buf = bytearray(first)
        self._more = more

    def _fill(self) -> bool:
        """More body into the buffer; False at its end."""
        if not self._more:
            return False
        msg = self._req.call(self._req.receive())
        if msg["type"] != "http.request":
            self._more = False
            raise ClientDisconnected("client disconnected")
        self._buf += msg.get("body", b"")
        self._more = bool(msg.get("more_body"))
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while len(self._buf) < size and self._fill():
            pass
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 and (limit is None or i < limit):
                n = i + 1
                break
            if limit is not None and len(self._buf) >= limit:
                n = limit
                break
            if not self._fill():
                n = len(self._buf) if limit is None else min(limit, len(self._buf))
                break
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def readlines(self, hint: int = -1) -> list[bytes]:
        out, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return out
            out.append(line)
            total += len(line)
            if 0 < hint <= total:
                return out

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _status_code(status: str) -> int:
    if not isinstance(status, str):
        raise TypeError(f"WSGI status must be a str, not {type(status).__name__}")
    code = status.split(" ", 1)[0]
    if len(code) != 3 or not code.isdigit():
        raise ValueError(f"WSGI status {status!r} does not start with a 3-digit code")
    return int(code)


def _latin1(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"WSGI {what} must be a str, not {type(value).__name__}")
    return value.encode("latin-1")


_DONE = object()   # the outbox's last item: the thread is done (with an exception, or not)


class _Request:
    """One request between its thread and the stream's task on the loop.

    Reads are calls: the thread blocks until ``receive()`` returns on the loop.  Writes are
    posted: the thread appends the ASGI messages to ``outbox`` and goes on producing (PEP
    3333 lets a server keep sending while the app makes its next block), and the stream's
    task sends them in order, each waiting for credit.  The thread waits only when more than
    ``limit`` bytes it posted are not sent yet: the stream's credit, carried to the thread.
    """

    def __init__(self, loop, scope: dict, receive, limit: int):
        self.loop = loop
        self.scope = scope
        self.receive = receive
        self.limit = limit
        self.status: int | None = None
        self.headers: list | None = None
        self.headers_sent = False
        self.lock = threading.Condition()
        self.outbox: list = []        # messages posted, not yet taken by the task
        self.unsent = 0               # body bytes posted and not yet sent
        self.gone = False             # nobody sends any more (cancelled, or the client left)
        self.wake: asyncio.Future | None = None   # the task waits on it for the outbox
        self.wake_due = False         # a wake-up is on its way to the loop

    # --- the thread's side -----------------------------------------------------------------

    def call(self, coro):
        """Run a coroutine of the stream on the worker's loop; block this thread until done."""
        if self.gone:
            coro.close()
            raise ClientDisconnected("client disconnected")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def post(self, item, size: int = 0) -> None:
        """Hand a message (or _DONE) to the task; wait while too much is unsent."""
        with self.lock:
            while self.unsent > self.limit and not self.gone:
                self.lock.wait()
            if self.gone and item is not _DONE:
                raise ClientDisconnected("client disconnected")
            self.outbox.append(item)
            self.unsent += size
            if self.wake_due:
                return
            self.wake_due = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:   # the loop is closed: the worker is exiting
            self.gone = True

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None   # no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response called twice without exc_info")
        code = _status_code(status)
        if not isinstance(headers, list):
            raise TypeError(f"WSGI headers must be a list, not {type(headers).__name__}")
        self.headers = [(_latin1(n, "header name"), _latin1(v, "header value"))
                        for n, v in headers]
        self.status = code
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable start_response returns."""
        self.body(data, True)

    def body(self, data: bytes, more: bool) -> None:
        if self.status is None:
            raise RuntimeError("response body before start_response")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"WSGI response items must be bytes, not {type(data).__name__}")
        if not data and more:
            return
        if not self.headers_sent:
            self.headers_sent = True
            self.post({"type": "http.response.start", "status": self.status,
                       "headers": self.headers})
        self.post({"type": "http.response.body", "body": bytes(data), "more_body": more},
                  len(data))

    # --- the loop's side -------------------------------------------------------------------

    def _wake(self) -> None:
        with self.lock:
            self.wake_due = False
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def take(self) -> list:
        with self.lock:
            items, self.outbox = self.outbox, []
            if not items:
                self.wake = self.loop.create_future()
            return items

    def sent(self, size: int) -> None:
        with self.lock:
            self.unsent -= size
            if self.unsent <= self.limit:
                self.lock.notify_all()

    def stop(self) -> None:
        """No more sending: the thread's next write (or a wait for one) raises."""
        with self.lock:
            self.gone = True
            self.lock.notify_all()


class WsgiApp:
    """An ASGI app running a WSGI app on ``threads`` threads (see the module docstring)."""

    def __init__(self, app, threads: int = DEFAULT_THREADS, window: int = 256 * 1024):
        self.app = app
        self.pool = _Threads(threads)
        self.window = window
        self.errors = _Errors()

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            return await self._http(scope, receive, send)
        if kind == "lifespan":   # WSGI has none: say yes to both, stop the threads at the end
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.pool.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind == "websocket":   # WSGI cannot take one: 403, as for an app that refused it
            await send({"type": "websocket.close", "code": 1000})
            return
        raise RuntimeError(f"WSGI app cannot serve a {kind!r} scope")

    async def _http(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        # the first body bytes came with the request: take them now (no thread trip)
        first = await receive()
        if first["type"] != "http.request":
            return   # the client left before we started: nothing to do
        request = _Request(loop, scope, receive, self.window)
        outcome: list = []

        def job():
            if request.gone:
                return   # cancelled while waiting for a thread
            try:
                self._run(request, first)
            except BaseException as exc:   # handed to the loop: the stream's error policy
                outcome.append(exc)
            request.post(_DONE)

        self.pool.submit(job)
        failed: BaseException | None = None
        try:
            while True:
                items = request.take()
                if not items:
                    await request.wake
                    continue
                for item in items:
                    if item is _DONE:
                        if outcome:
                            raise outcome[0]
                        if failed is not None:
                            raise failed
                        return
                    if failed is not None:
                        continue   # the client left: what the thread still posts is dropped
                    try:
                        await send(item)
                    except OSError as exc:   # ClientDisconnected: the thread is told
                        failed = exc
                        request.stop()
                    if item["type"] == "http.response.body":
                        request.sent(len(item["body"]))
        except BaseException:   # cancelled, or a message send() refused (a bad header)
            request.stop()   # the thread's next write raises; it ends when the app lets it
            raise

    def _run(self, request: _Request, first: dict) -> None:
        body, more = first.get("body", b""), bool(first.get("more_body"))
        environ = self.environ(request.scope, _Input(request, body, more))
        result = self.app(environ, request.start_response)
        try:
            for data in result:
                if data:
                    request.body(data, True)
            if request.status is None:
                raise RuntimeError("WSGI app returned without calling start_response")
            request.body(b"", False)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def environ(self, scope: dict, body: _Input) -> dict:
        """PEP 3333's environ for an ASGI HTTP scope."""
        root = scope.get("root_path", "") or ""
        path = scope["path"]
        if root and path.startswith(root):
            path = path[len(root):]
        server = scope.get("server") or ("localhost", None)
        client = scope.get("client")
        environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": root.encode("utf-8").decode("latin-1"),
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]) if server[1] is not None else "0",
            "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": body,
            "wsgi.input_terminated": True,
            "wsgi.errors": self.errors,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if client:
            environ["REMOTE_ADDR"] = str(client[0])
            environ["REMOTE_PORT"] = str(client[1])
        for name, value in scope["headers"]:
            key = name.decode("latin-1").upper()
            if "_" in key:
                continue   # X_Forwarded_For would pass for X-Forwarded-For (gunicorn drops it too)
            key = key.replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            text = value.decode("latin-1")
            if key in environ:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
            else:
                environ[key] = text
        return environ


def wrap(app, interface: str, threads: int, window: int = 256 * 1024):
    """The app the worker runs: ``app`` itself (ASGI), or a WsgiApp around it."""
    if interface == "wsgi" or interface == "auto" and is_wsgi(app):
        if interface == "auto":
            log.info("serving %r as a WSGI app (--interface auto: a callable of two "
                     "positional parameters), on %d threads", app, threads)
        return WsgiApp(app, threads, window)
    return app

