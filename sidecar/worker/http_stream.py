"""One HTTP request inside the worker: the ASGI ``receive``/``send`` pair of a stream and the
task that runs ``app(scope, receive, send)``.

Flow control, per direction (docs/protocol.md):

- request body (host -> worker): the host may have at most ``window`` body bytes that the
  worker has not credited back.  Bytes are credited with RECV_CREDIT once the app has taken
  them from ``receive()`` -- so an app that stops reading stops the upload, and a stream never
  buffers more than ``window``.  Credits are batched (``HostLink.credit_batch``) but always sent
  before ``receive()`` blocks, and the first ``receive()`` while more body is expected always
  sends one (possibly 0): the host turns it into ``100 Continue``.
- response body (worker -> host): ``send()`` spends ``send_credit`` (initially ``window``) and
  waits for SEND_CREDIT, which the host grants as the client's socket drains.

The stream never writes an HTTP error itself: APP_DONE carries the app's outcome and the host
applies the 500-or-close policy.

After DISCONNECT (the client left, the host answered for the app -- a request timeout -- or a
drain notice) the app has DISCONNECT_GRACE seconds to return; then its task is cancelled, as
hypercorn cancels it, so that an app awaiting something that never comes does not hold its
memory (and a --limit-worker-streams slot) forever.  Only that task: the worker and its other
streams go on.  A loop held by blocking code sees the DISCONNECT only once it runs again.
"""
from __future__ import annotations

import asyncio
import logging
import os

from sidecar.events import (
    DISCONNECT, FRAMING, HEADER_FRAMING, HTTP_BODY, RECV_CREDIT, RESPONSE_BODY, RESPONSE_START,
    RESPONSE_PATHSEND, RESPONSE_TRAILERS, SEND_CREDIT, ProtocolError,
)
from sidecar.http.fields import CR_LF_NUL, TCHARS, field_error

__all__ = ["ClientDisconnected", "HttpStream", "describe_error"]

try:   # send()'s usual response head checked in one C call (native/worker_api.c)
    from sidecar import _workerapi
except ImportError:
    _workerapi = None
    _response_headers = None
else:
    _workerapi.setup(FRAMING, HEADER_FRAMING)
    _response_headers = _workerapi.response_headers
#: The C path first (False, or SIDECAR_NO_SPEEDUPS=1 in the environment: the Python twin only;
#: tests run both).
speedups = _workerapi is not None and os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0")

log = logging.getLogger("sidecar.worker")

DISCONNECT_GRACE = 1.0  # seconds an app has to return after http.disconnect
_MAX_ERROR_TEXT = 1000  # APP_DONE error text: enough for a message, bounded for the ring


class ClientDisconnected(OSError):
    """``send()`` after the client went away (ASGI spec 2.4: an OSError subclass)."""


def describe_error(exc: BaseException) -> str:
    """``"ExcType: message"`` as carried by APP_DONE, bounded in length."""
    text = str(exc)
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT - 3] + "..."


#: Header names already found to be tokens (``_check_headers``): an app sends the same few
#: names over and over, and a set lookup is cheaper than checking each again.  Bounded, so
#: an app that makes up names cannot grow it.
_TOKEN_NAMES: set = set()
_MAX_TOKEN_NAMES = 256
_search_cr_lf_nul = CR_LF_NUL.search
#: Header values already found free of CR/LF/NUL (``HttpStream.send``): most responses repeat
#: a few (content types, lengths), and a set lookup costs less than a regex call (~1k
#: instructions a header, callgrind).  Bounded in count and in the length of a value kept.
_CLEAN_VALUES: set = set()
_MAX_CLEAN_VALUES = 1024
_MAX_CLEAN_VALUE_LEN = 64


def _check_headers(headers) -> list:
    """Response headers as a new list of (name, value) tuples of bytes, or TypeError /
    ValueError (a name that is not a token, CR/LF/NUL in a value).  The front-end checks
    again (it trusts no worker); checking here too makes the app's send() raise, as in
    uvicorn, so its traceback shows where the bad header came from.  A copy, because the
    record is packed later (RingLink.push): the app may reuse its list meanwhile."""
    if type(headers) is not list:
        headers = list(headers)
    # The common case, in one loop: (name, value) tuples or lists of exact bytes, every name
    # one already checked, no CR/LF/NUL in a value.  Anything else goes through the loops
    # below, which say what is wrong (and learn the names that are fine).
    if len(headers) <= 32:
        known, search = _TOKEN_NAMES, _search_cr_lf_nul
        checked = []
        append = checked.append
        for pair in headers:
            if type(pair) is not tuple and type(pair) is not list or len(pair) != 2:
                break
            name, value = pair
            if (type(name) is not bytes or type(value) is not bytes or name not in known
                    or search(value)):
                break
            append((name, value))
        else:
            return checked
    for pair in headers:
        if len(pair) != 2:
            raise TypeError(f"response header must be a [name, value] pair, not {pair!r}")
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(f"response header name and value must be bytes, not {pair!r}")
    names = b"".join(pair[0] for pair in headers)
    if (names.translate(None, TCHARS) or CR_LF_NUL.search(b"".join(p[1] for p in headers))
            or any(not pair[0] for pair in headers)):
        for name, value in headers:
            error = field_error(name, value)
            if error is not None:
                raise ValueError(error)
    if len(_TOKEN_NAMES) < _MAX_TOKEN_NAMES:
        _TOKEN_NAMES.update(pair[0] for pair in headers if type(pair[0]) is bytes)
    return [(pair[0], pair[1]) for pair in headers]


def _as_bytes(body) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"response body must be bytes, not {type(body).__name__}")


class Waiting:
    """Wait/wake for a stream's receive() and send(); subclasses have a ``waiters`` slot
    (None or a list of futures) and a ``link`` with the loop."""

    __slots__ = ()

    async def _wait(self) -> None:
        # One future per waiting call: receive() and send() may wait at the same time (and
        # apps may call receive() from two tasks); cancelling one must not cancel the other.
        fut = self.link.loop.create_future()
        if self.waiters is None:
            self.waiters = [fut]
        else:
            self.waiters.append(fut)
        await fut

    def _wake(self) -> None:
        waiters = self.waiters
        if waiters is not None:
            self.waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


class HttpStream(Waiting):
    """State of one HTTP stream; ``handlers`` maps the host's event kinds to its methods."""

    __slots__ = (
        "link", "sid", "scope", "task", "chunks", "body_complete", "recv_outstanding",
        "unacked", "credit_sent", "send_credit", "waiters", "started", "response_done",
        "disconnected", "finished", "trailers", "headers",
    )

    def __init__(self, link, sid: int, scope: dict, body: bytes, more_body: bool):
        if len(body) > link.window:
            raise ProtocolError("request body exceeds the stream window", sid)
        self.link = link
        self.sid = sid
        self.scope = scope
        self.task: asyncio.Task | None = None
        # The first request message is delivered even when empty, unless more is coming.
        self.chunks = [body] if body or not more_body else []
        self.body_complete = not more_body
        self.recv_outstanding = len(body)  # bytes received and not yet credited back
        self.unacked = 0                   # of those, bytes the app took: owed as credit
        self.credit_sent = False
        self.send_credit = link.window
        self.waiters: list | None = None   # futures of receive()/send() calls that wait
        self.started = False
        self.response_done = False
        self.disconnected = False
        self.finished = False              # APP_DONE sent
        # the app announced trailers (http.response.start "trailers"): 1 while they are due,
        # 2 once the last of them went
        self.trailers = 0

    # --- the app's side ------------------------------------------------------------------

    async def run(self) -> None:
        error = "worker error"  # if something we do not catch escapes (SystemExit...)
        try:
            await self.link.worker.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            error = "CancelledError: stream cancelled by the worker"
        except Exception as exc:
            error = describe_error(exc)
            if self.disconnected and isinstance(exc, OSError):
                log.debug("client gone: %s %s: %s", self.scope["method"], self.scope["path"],
                          error)
            else:
                log.error("Exception in ASGI application (%s %s)", self.scope["method"],
                          self.scope["path"], exc_info=exc)
        else:
            if self.trailers == 1 and not self.disconnected:
                error = "ASGI callable returned without sending the announced trailers"
            elif self.response_done or self.disconnected:
                error = None
            elif self.started:
                error = "ASGI callable returned without completing the response"
            else:
                error = "ASGI callable returned without starting a response"
        finally:
            self.link.stream_done(self, error)

    async def receive(self) -> dict:
        while True:
            if self.disconnected or self.response_done:
                return {"type": "http.disconnect"}
            chunks = self.chunks
            if chunks:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                more = not self.body_complete
                if more:
                    owed = self.unacked + len(body)
                    if owed >= self.link.credit_batch or not self.credit_sent:
                        self._grant(owed)
                    else:
                        self.unacked = owed
                return {"type": "http.request", "body": body, "more_body": more}
            if not self.body_complete and (self.unacked or not self.credit_sent):
                self._grant(self.unacked)  # never block while owing credit: the host would too
            await self._wait()

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.response_done:
                raise RuntimeError("http.response.body before http.response.start"
                                   if not self.started else
                                   "http.response.body after the response completed")
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            body = message.get("body", b"")
            more = True if message.get("more_body") else False
            if type(body) is not bytes:
                body = _as_bytes(body)
            n = len(body)
            if n <= self.send_credit and n <= self.link.chunk:  # the common case: one record
                if not n and more:
                    return
                self.send_credit -= n
                if not more:  # _response_finished(), spelled out: once a request
                    self.response_done = True
                    if self.waiters is not None:
                        self._wake()
                waiter = self.link.push([RESPONSE_BODY, self.sid, body, more], n + FRAMING)
                if waiter is not None:
                    await waiter
                return
            await self._send_chunks(body, more)
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            status = message["status"]
            if type(status) is not int:
                raise TypeError(f"response status must be an int, not {type(status).__name__}")
            if not 100 <= status <= 999:
                raise RuntimeError(f"response status {status} is not in 100..999")
            headers = message.get("headers", ())
            checked = _response_headers(headers) if speedups else None
            if checked is not None:   # the usual case, in C (native/worker_api.c)
                headers, size = checked
            else:
                # its Python twin: _check_headers' usual case written out (once a request),
                # the record's size counted in the same pass; anything else goes through it
                # (pairs unpacked by the for: one that is not two values raises, and goes
                # through _check_headers, which says what is wrong -- as it does for any
                # other problem)
                size = FRAMING
                checked = []
                if type(headers) is list and len(headers) <= 32:
                    append = checked.append
                    clean = _CLEAN_VALUES
                    try:
                        for name, value in headers:
                            if (type(name) is not bytes or type(value) is not bytes
                                    or name not in _TOKEN_NAMES):
                                break
                            if value not in clean:
                                if _search_cr_lf_nul(value):
                                    break
                                if (len(value) <= _MAX_CLEAN_VALUE_LEN
                                        and len(clean) < _MAX_CLEAN_VALUES):
                                    clean.add(value)
                            append((name, value))
                            size += len(name) + len(value) + HEADER_FRAMING
                        else:
                            headers = checked
                    except (TypeError, ValueError):
                        pass
                if headers is not checked:
                    headers = _check_headers(headers)
                    size = FRAMING
                    for pair in headers:
                        size += len(pair[0]) + len(pair[1]) + HEADER_FRAMING
            self.started = True
            self.headers = headers   # (http.response.pathsend reads its Content-Length)
            trailers = message.get("trailers") is True
            if trailers:
                self.trailers = 1
            waiter = self.link.push([RESPONSE_START, self.sid, status, headers, trailers], size)
            if waiter is not None:
                await waiter
        elif kind == "http.response.trailers":
            await self._send_trailers(message)
        elif kind == "http.response.pathsend":
            await self._send_path(message)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} on an http stream")

    async def _send_trailers(self, message: dict) -> None:
        """ASGI's http.response.trailers extension: after the last body, if announced."""
        if self.trailers != 1 or not self.response_done:
            raise RuntimeError("http.response.trailers without trailers announced in "
                               "http.response.start" if self.trailers != 1 else
                               "http.response.trailers before the last http.response.body")
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        headers = _check_headers(message.get("headers", ()))
        more = message.get("more_trailers") is True
        if not more:
            self.trailers = 2
        size = FRAMING
        for pair in headers:
            size += len(pair[0]) + len(pair[1]) + HEADER_FRAMING
        waiter = self.link.push([RESPONSE_TRAILERS, self.sid, headers, more], size)
        if waiter is not None:
            await waiter

    async def _send_path(self, message: dict) -> None:
        """ASGI's http.response.pathsend extension (offered by the front-end only): the body
        is the file at ``path``, which the host opens and sends itself; the file's bytes never
        cross the ring, and the response is complete for the app at once.  The Content-Length
        the app sent goes with it: the host sends exactly that many bytes (or aborts)."""
        if "http.response.pathsend" not in self.scope.get("extensions", ()):
            raise RuntimeError("http.response.pathsend is not offered on this stream")
        if not self.started or self.response_done:
            raise RuntimeError("http.response.pathsend before http.response.start"
                               if not self.started else
                               "http.response.pathsend after the response completed")
        if self.trailers:
            raise RuntimeError("http.response.pathsend on a response that announced trailers")
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        path = os.fspath(message["path"])
        if type(path) is not str:
            raise TypeError(f"pathsend path must be a str, not {type(path).__name__}")
        path = os.path.abspath(path)   # (the spec says absolute; a relative one is the app's)
        try:
            size = len(path.encode()) + FRAMING
        except UnicodeEncodeError:   # a name os.fsdecode escaped: msgpack str cannot carry it
            raise ValueError(f"pathsend path is not UTF-8: {path!r}") from None
        if "\0" in path:
            raise ValueError("pathsend path contains NUL")
        length = None
        for name, value in self.headers:
            if name.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    pass   # the host refused that head already
        self._response_finished()
        waiter = self.link.push([RESPONSE_PATHSEND, self.sid, path, length], size)
        if waiter is not None:
            await waiter

    async def _send_chunks(self, body: bytes, more: bool) -> None:
        """Split a body into records of at most ``link.chunk`` bytes, each waiting for credit."""
        view = memoryview(body)
        size = self.link.chunk
        total = len(body)
        for start in range(0, total, size):
            piece = view[start:start + size]
            n = len(piece)
            while self.send_credit < n and not self.disconnected:
                await self._wait()
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            self.send_credit -= n
            piece_more = more or start + size < total
            if not piece_more:
                self._response_finished()
            waiter = self.link.push([RESPONSE_BODY, self.sid, piece, piece_more], n + FRAMING)
            if waiter is not None:
                await waiter

    # --- the host's side (called by HostLink for events of this stream) -------------------

    def on_body(self, ev: list) -> None:
        if self.body_complete:
            raise ProtocolError("HTTP_BODY after the last body chunk", self.sid)
        body = ev[2]
        n = len(body)
        self.recv_outstanding += n
        if self.recv_outstanding > self.link.window:
            raise ProtocolError("host sent more request body than the window allows", self.sid)
        if not ev[3]:
            self.body_complete = True
        if self.response_done or self.disconnected:
            return  # nobody will read it
        if n or self.body_complete:
            self.chunks.append(body)
            self._wake()

    def on_disconnect(self, ev: list | None = None) -> None:
        first = not self.disconnected
        self.disconnected = True
        self.chunks.clear()
        self._wake()
        task = self.task
        if first and task is not None and not task.done() and self.link.loop is not None:
            self.link.loop.call_later(DISCONNECT_GRACE, self._cancel_late)

    def _cancel_late(self) -> None:
        """DISCONNECT_GRACE after http.disconnect: an app still running is cancelled."""
        task = self.task
        if task is not None and not task.done():
            log.info("%s %s: app still running %gs after http.disconnect: cancelled",
                        self.scope["method"], self.scope["path"], DISCONNECT_GRACE)
            self.link.worker.cancel_task(task)

    def on_send_credit(self, ev: list) -> None:
        self.send_credit += ev[2]
        if self.waiters is not None:
            self._wake()

    handlers = {HTTP_BODY: on_body, DISCONNECT: on_disconnect, SEND_CREDIT: on_send_credit}

    # --- helpers ---------------------------------------------------------------------------

    def _grant(self, n: int) -> None:
        self.credit_sent = True
        self.unacked = 0
        self.recv_outstanding -= n
        self.link.send([RECV_CREDIT, self.sid, n])

    def _response_finished(self) -> None:
        self.response_done = True
        if self.waiters is not None:  # (once per request: no call when nobody waits)
            self._wake()  # a receive() waiting for the end of the response returns disconnect

