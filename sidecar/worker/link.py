"""One host's ring pair as the worker sees it: where ring records become stream events, and
where stream events become ring records.

Inbound, every record goes through ``events.unpack`` (``Consumer.read_events``, a batch at a
time) + ``events.check`` (HTTP_REQUEST and WS_CONNECT: ``events.check_request``, which gives
the scope's headers too) and is dispatched by kind: link-level kinds (a new stream, PING) to
``HostLink.link_handlers``, the rest to the ``handlers`` table of the stream class that owns
the stream id (``HttpStream.handlers``, ``WsStream.handlers``).  Errors, by scope:

- a ProtocolError naming a live stream fails that stream only (APP_DONE with the error);
- one naming a stream that does not exist is ignored (events race with APP_DONE), except a
  malformed HTTP_REQUEST/WS_CONNECT, which is answered with APP_DONE so the host can reply;
- one with no stream (undecodable record) or stream 0 (the link itself), and any ring error,
  mean the host cannot be trusted: the worker exits with EXIT_PROTOCOL_ERROR.

Outbound, many streams share one Producer and order per link is FIFO: the batching, early
publishing, backlog and backpressure are the shared ring link's (``sidecar/ring_link.py``
RingLink): ``push`` for an app's response records (a future to await while the ring is
full), ``send`` for credits, APP_DONE and PONG.  When a stream's task ends, what is queued
(its last records, its APP_DONE) is published at once (``publish``): the end of the turn may
be a long way off when another stream's task, ready in the same turn, runs CPU-bound code -- a
0.1 ms response would wait out a 20 ms one, and the host would learn that its route costs
20 ms.  (Not at a response's last body record: an app rarely computes after it without
yielding, and a second publish per request cost ~10% of req/s with two workers.)
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys

from sidecar.events import (
    APP_DONE, DISCONNECT, HELLO, HTTP_BODY, HTTP_REQUEST, PING, PONG, RESPONSE_BODY,
    RESPONSE_START, SEND_CREDIT, VERSION, WS_CONNECT, WS_DISCONNECT, WS_RECEIVE, ProtocolError,
    check, check_request, pack, tls_scope,
)
from sidecar.frontend.ratelog import RateLimitedLog
from sidecar.ring import Consumer, Producer, RingError
from sidecar.ring_link import RingLink

from .http_stream import HttpStream
from .ws_stream import WsStream

__all__ = ["HostLink", "http_scope"]

# The ASGI spec version in every scope.  "2.3", not "2.4", as uvicorn reports: at 2.4
# Starlette (and FastAPI, Nexios) stop listening for http.disconnect during a streaming
# response and rely on the next send() raising instead, so a stream that is quiet (an SSE
# feed waiting for its next event) would not learn that its client left until it sends.
# send() still raises OSError (ClientDisconnected) after a disconnect, as 2.4 asks.
SPEC_VERSION = "2.3"

log = logging.getLogger("sidecar.worker")
_log_over_limit = RateLimitedLog(log)

#: The worker's own answer to an attached host's stream over --limit-worker-streams.
_OVERLOADED_BODY = b"Service Unavailable: too many streams in flight on this worker\n"
_OVERLOADED_HEADERS = [[b"content-type", b"text/plain; charset=utf-8"],
                       [b"content-length", str(len(_OVERLOADED_BODY)).encode()],
                       [b"retry-after", b"5"]]

#: Kinds that only make sense for an existing stream: for an unknown stream id they are late
#: (the stream finished meanwhile) and ignored.
_STREAM_KINDS = frozenset({HTTP_BODY, DISCONNECT, WS_RECEIVE, WS_DISCONNECT, SEND_CREDIT})
_OPENING_KINDS = frozenset({HTTP_REQUEST, WS_CONNECT})


#: A scope's "asgi" (each scope gets its own copy).
_ASGI = {"version": "3.0", "spec_version": SPEC_VERSION}

try:   # the usual HTTP_REQUEST's check and scope in one C call (native/worker_api.c)
    from sidecar._workerapi import http_scope as _c_http_scope
except ImportError:
    _c_http_scope = None
#: The C path first (False, or SIDECAR_NO_SPEEDUPS=1 in the environment: the Python twin only;
#: tests run both).
speedups = _c_http_scope is not None and os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0")


if sys.version_info >= (3, 12):
    #: ``start_task(coro, loop=loop)``: a stream's task, started eagerly: its first step runs
    #: now, inside this call, and a task that finishes there (a bare response that never
    #: waits) is never scheduled nor registered in asyncio's WeakSet of tasks (callgrind,
    #: benchmarks.worker: 5.9 -> 2.0 µs a task).  Only from 3.12: the task is current
    #: (``asyncio.current_task()``) during that step, as anyio and sniffio need; 3.11's
    #: ``eager_task_factory`` does not exist, and running the first step outside its task
    #: would break them.  (A partial, not a function: no Python frame per request.)
    start_task = functools.partial(asyncio.Task, eager_start=True)
else:
    #: ``start_task(coro, loop=loop)``: a stream's task, scheduled (3.11: see the 3.12+ twin
    #: above); what ``loop.create_task`` makes, without a Python frame per request.
    start_task = asyncio.Task


def http_scope(ev: list, state: dict, root_path: str, frontend: bool) -> dict:
    """The scope of an HTTP_REQUEST, checked by ``events.check_request`` (its ProtocolError
    if malformed; the headers as the scope holds them): the Python twin of
    ``_workerapi.http_scope`` (native/worker_api.c), which makes the same dict.  ``state``:
    the lifespan's, copied; ``root_path``: the worker's, where the request has none;
    ``frontend``: a sidecar front-end, which sends files itself (pathsend)."""
    pairs = check_request(ev)
    if len(ev) == 14:
        tls = None
    else:   # a TLS connection's (the ASGI tls extension)
        ev, tls = ev[:14], ev[14]
    (_, _, method, scheme, path, raw_path, query_string, _, client, server, http_version,
     root, _, _) = ev
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
        "http_version": http_version,
        "server": (server[0], server[1]) if server is not None else None,
        "client": (client[0], client[1]) if client is not None else None,
        "scheme": scheme,
        "method": method,
        "root_path": root or root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": pairs,
        "state": state.copy(),
    }
    if frontend:
        # sidecar's front-ends send files themselves (sidecar/frontend/file_send.py);
        # other attached hosts do not
        scope["extensions"] = extensions = {"http.response.pathsend": {}}
        if http_version == "2" or (b"te", b"trailers") in pairs:
            # trailers reach the client over HTTP/2, and over HTTP/1.1 to a client that
            # said it takes them (TE: trailers; the front-end checks again)
            extensions["http.response.trailers"] = {}
    elif http_version == "2" or (b"te", b"trailers") in pairs:
        scope["extensions"] = {"http.response.trailers": {}}
    if tls is not None:
        scope.setdefault("extensions", {})["tls"] = tls_scope(tls)
    return scope


class HostLink(RingLink):
    """One host: a Consumer (host -> worker), a Producer (worker -> host) and the streams the
    host opened, keyed by stream id (each host has its own id space)."""

    __slots__ = ("worker", "host", "frontend", "link_handlers")

    def __init__(self, worker, host: int, consumer: Consumer, producer: Producer, window: int,
                 frontend: bool = False):
        super().__init__(producer, consumer, window=window)
        self.worker = worker
        self.host = host
        self.frontend = frontend   # a sidecar front-end: it sends files (pathsend)
        self.link_handlers = {
            HTTP_REQUEST: self._open_http,
            WS_CONNECT: self._open_websocket,
            PING: self._on_ping,
        }

    @classmethod
    def attach(cls, worker, config, window: int) -> "HostLink":
        """Map the rings named by a LinkConfig (raises RingError if they are not rings)."""
        consumer = Consumer.attach(config.to_worker)
        try:
            producer = Producer.attach(config.to_host)
        except BaseException:
            consumer.close()
            raise
        return cls(worker, config.host, consumer, producer, window, config.frontend)

    def start(self, loop) -> None:
        """Take streams from now on, and tell the host so."""
        super().start(loop)
        self.send([HELLO, 0, VERSION, os.getpid(), self.window])

    # --- inbound -----------------------------------------------------------------------------

    def _on_records(self, evs: list) -> None:
        """A batch of decoded events (``Consumer.read_events``: each ``[int, int, ...]``; an
        undecodable record arrives as a ProtocolError in ``_on_ring_error``)."""
        if self.closed:
            return  # stop_reading() does not stop a batch loop already running
        streams = self.streams
        link_handlers = self.link_handlers
        for ev in evs:
            try:
                kind = ev[0]
                if kind == HTTP_REQUEST:  # the most common record: _open_http checks it
                    self._open_http(ev)
                    continue
                if kind == WS_CONNECT:  # as is _open_websocket
                    self._open_websocket(ev)
                    continue
                if kind == WS_RECEIVE:  # a WebSocket's message: check() and dispatch inline
                    stream = streams.get(ev[1])
                    if (type(stream) is WsStream and len(ev) == 4 and type(ev[3]) is bool
                            and (type(ev[2]) is str or type(ev[2]) is bytes)):
                        stream.on_receive(ev)
                        continue
                check(ev)
                handler = link_handlers.get(kind)
                if handler is not None:
                    handler(ev)
                    continue
                stream = streams.get(ev[1])
                if stream is not None:
                    handler = stream.handlers.get(kind)
                    if handler is None:
                        raise ProtocolError(f"event kind {kind} does not apply to "
                                            f"a {type(stream).__name__}", ev[1])
                    handler(stream, ev)
                elif kind not in _STREAM_KINDS:
                    raise ProtocolError(f"event kind {kind} is not sent by hosts", ev[1])
            except ProtocolError as exc:
                if not self._on_protocol_error(exc, ev):
                    return  # the link is done for; the worker is exiting

    def _on_protocol_error(self, exc: ProtocolError, ev: list | None) -> bool:
        """Contain a bad event to its stream; False if it condemns the whole link."""
        sid = exc.sid
        if not sid or sid < 0:  # None (undecodable) or 0 (the link itself)
            self.fail_link(f"protocol error from host {self.host}: {exc}")
            return False
        stream = self.streams.get(sid)
        if stream is not None:
            log.warning("protocol error on stream %d of host %d: %s", sid, self.host, exc)
            self.fail_stream(stream, f"protocol error: {exc}")
        elif ev is not None and ev[0] in _OPENING_KINDS:
            log.warning("protocol error opening stream %d of host %d: %s", sid, self.host, exc)
            self.send([APP_DONE, sid, f"protocol error: {exc}"])
        else:
            log.warning("protocol error on finished stream %d of host %d (ignored): %s",
                        sid, self.host, exc)
        return True

    def _on_ring_error(self, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):  # an undecodable record (read_events)
            self.fail_link(f"protocol error from host {self.host}: {exc}")
        elif isinstance(exc, RingError):
            self.fail_link(f"ring from host {self.host} is broken: {exc}")
        else:  # a bug of ours while dispatching: not the host's fault, but just as final
            self.closed = True
            self.worker.internal_error(f"dispatching events of host {self.host}", exc)

    def _write_failed(self, exc: RingError) -> None:
        self.fail_link(f"cannot write to host {self.host}: {exc}")

    def fail_link(self, reason: str) -> None:
        self.closed = True
        self.stop_reading()
        if self.host == 0:  # the front-end: the worker exits and is replaced
            self.worker.protocol_error(reason)
        else:  # an attached host: cut that one off (Worker.link_failed)
            self.worker.link_failed(self, reason)

    def _open_http(self, ev: list) -> None:
        """HTTP_REQUEST: checked and made a scope (the usual request's in one C call,
        ``_workerapi.http_scope``; ``http_scope`` is its Python twin), a stream, its task."""
        worker = self.worker
        scope = (_c_http_scope(ev, worker.state, worker.root_path, self.frontend, _ASGI)
                 if speedups else None)
        if scope is None:   # the Python twin: decides whatever the C declines
            scope = http_scope(ev, worker.state, worker.root_path, self.frontend)
        sid = ev[1]
        if sid < 1 or sid in self.streams:   # the usual case, without a call
            self._check_new_sid(sid)
        if self.host and self._refused(sid):
            return
        stream = HttpStream(self, sid, scope, ev[12], ev[13])
        self.streams[sid] = stream
        self._run(stream, worker)

    def _run(self, stream, worker) -> None:
        """Start a stream's task.  One that finished in its first step (3.12+: start_task is
        eager) has been through stream_done already, with ``stream.task`` None: it never
        counts as in flight."""
        task = start_task(stream.run(), loop=self.loop)
        if task.done():
            return
        stream.task = task
        worker.tasks.add(task)  # run()'s finally takes it out (stream_done)
        if worker.pulse_timer is None:  # the hosts' dispatch reads it (Worker.pulse)
            worker.start_pulse()

    def _open_websocket(self, ev: list) -> None:
        pairs = check_request(ev)
        tls = ev[12] if len(ev) == 13 else None
        (_, sid, scheme, path, raw_path, query_string, _, client, server,
         http_version, root_path, subprotocols) = ev[:12]
        self._check_new_sid(sid)
        if self.host and self._refused(sid):  # a denial response: the host answers it
            return
        worker = self.worker
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "http_version": http_version,
            "server": tuple(server) if server is not None else None,
            "client": tuple(client) if client is not None else None,
            "scheme": scheme,
            "root_path": root_path or worker.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "headers": pairs,
            "subprotocols": subprotocols,
            "state": worker.state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        if tls is not None:
            scope["extensions"]["tls"] = tls_scope(tls)
        stream = WsStream(self, sid, scope)
        self.streams[sid] = stream
        self._run(stream, worker)

    def _refused(self, sid: int) -> bool:
        """An attached host opens a stream: if this worker has --limit-worker-streams in
        flight (every host's count), answer 503 without running the app, and say so.  Not
        asked for the front-end (host 0): it holds its streams back itself, and waits for a
        worker rather than being refused (pool.pick)."""
        worker = self.worker
        if not worker.limit_streams or len(worker.tasks) < worker.limit_streams:
            return False
        _log_over_limit("host %d: %d streams in flight on this worker "
                        "(--limit-worker-streams): answering 503", self.host,
                        len(worker.tasks))
        self.send([RESPONSE_START, sid, 503, _OVERLOADED_HEADERS, False])
        self.send([RESPONSE_BODY, sid, _OVERLOADED_BODY, False])
        self.send([APP_DONE, sid, None])
        return True

    def _check_new_sid(self, sid: int) -> None:
        """ProtocolError for a stream id that cannot open a new stream."""
        if sid < 1:
            raise ProtocolError(f"stream id {sid} is reserved", None)  # a broken host
        if sid in self.streams:
            raise ProtocolError(f"stream id {sid} is already open", sid)

    def _on_ping(self, ev: list) -> None:
        self.send([PONG, 0, ev[2]])

    # --- stream ends ---------------------------------------------------------------------------

    def stream_done(self, stream: HttpStream, error: str | None) -> None:
        """The stream's task is over: forget the stream and tell the host (once)."""
        streams = self.streams
        sid = stream.sid
        if streams.get(sid) is stream:
            del streams[sid]
        if not stream.finished:
            stream.finished = True
            if not self.closed:
                if self.backlog:
                    self._enqueue(pack([APP_DONE, sid, error]), None)
                else:  # send() + publish()
                    self.pending.append([APP_DONE, sid, error])
                    self._write_pending()
        self.worker.task_done(stream.task)  # None: it ended in its first step (start_task)

    def fail_stream(self, stream: HttpStream, error: str) -> None:
        """End a stream now (its task is cancelled; it can no longer reach the host)."""
        del self.streams[stream.sid]
        stream.finished = True
        stream.on_disconnect()
        self.send([APP_DONE, stream.sid, error])
        if stream.task is not None:
            self.worker.cancel_task(stream.task)
