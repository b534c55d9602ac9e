"""One host's ring pair as the worker sees it: where ring records become stream events, and
where stream events become ring records.

Inbound, every record goes through ``events.unpack`` (``Consumer.read_events``, a batch at a
time) + ``events.check`` (HTTP_REQUEST: the same checks, made by ``_open_http`` as it builds
the scope) and is dispatched by kind: link-level kinds (a new stream, PING) to
``HostLink.link_handlers``, the rest to the ``handlers`` table of the stream class that owns
the stream id (``HttpStream.handlers``, ``WsStream.handlers``).  Errors, by scope:

- a ProtocolError naming a live stream fails that stream only (APP_DONE with the error);
- one naming a stream that does not exist is ignored (events race with APP_DONE), except a
  malformed HTTP_REQUEST/WS_CONNECT, which is answered with APP_DONE so the host can reply;
- one with no stream (undecodable record) or stream 0 (the link itself), and any ring error,
  mean the host cannot be trusted: the worker exits with EXIT_PROTOCOL_ERROR.

Outbound, many streams share one Producer and order per link is FIFO. Records pushed during one
turn of the event loop are published together at its end, or every EARLY_RECORDS records in a
long turn (one release, at most one doorbell -- ringing per record would wake the host once per
record); records of 16 KiB and more are written at once. When a stream's task ends, what is
queued (its last records, its APP_DONE) is published at once too (``publish``): the end of the
turn may be a long way off when another stream's task, ready in the same turn, runs CPU-bound
code -- a 0.1 ms response would wait out a 20 ms one, and the host would learn that its route
costs 20 ms. (Not at a response's last body record: an app rarely computes after it without
yielding, and a second publish per request cost ~10% of req/s with two workers.) When the ring
is full they queue in ``backlog`` and one flusher task, woken by the ring's space doorbell,
drains it in order; meanwhile ``push`` hands senders (response start/body) a future to await --
that is the ring-level backpressure. Credits, APP_DONE and PONG are fire-and-forget (``post``).
HTTP streams queue their small events unpacked (``push_event``, ``post_event``): a batch of them
is packed by one msgpack call and written by one C call (``Producer.try_write_events``), which
is most of what a request's three records (start, body, APP_DONE) cost.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from itertools import islice

from sidecar.events import (
    APP_DONE, DISCONNECT, HELLO, HTTP_BODY, HTTP_REQUEST, MAX_CHUNK, PING, PONG, RESPONSE_BODY,
    RESPONSE_START, SEND_CREDIT, VERSION, WS_CONNECT, WS_DISCONNECT, WS_RECEIVE, ProtocolError,
    check, check_request, pack,
)
from sidecar.frontend.ratelog import RateLimitedLog
from sidecar.ring import Consumer, Producer, RingError

from .http_stream import HttpStream
from .ws_stream import WsStream

__all__ = ["HostLink"]

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
#: msgpack framing around a RESPONSE_BODY chunk: array, kind, sid (<= 9 bytes), bin header, bool
_BODY_OVERHEAD = 32
_FLUSH_BATCH = 64
#: A record this large is written at once rather than at the end of the loop turn: batching
#: saves doorbells for small records, and a large one must find out now if the ring is full.
_EAGER_BYTES = 16 * 1024
#: Publish once this many records wait (pushed or posted), not only at the end of the loop
#: turn, so the front-end writes the first responses of a burst while the rest run (see
#: frontend/link.EARLY_EVENTS).
EARLY_RECORDS = 16


class HostLink:
    """One host: a Consumer (host -> worker), a Producer (worker -> host) and the streams the
    host opened, keyed by stream id (each host has its own id space)."""

    def __init__(self, worker, host: int, consumer: Consumer, producer: Producer, window: int):
        self.worker = worker
        self.host = host
        self.consumer = consumer
        self.producer = producer
        self.window = window
        # A body record must fit the ring, and a chunk must fit the window or it would wait
        # for credit forever.
        self.chunk = min(MAX_CHUNK, window, producer.max_record - _BODY_OVERHEAD)
        self.credit_batch = max(1, window // 4)
        self.streams: dict[int, HttpStream] = {}
        self.max_record = producer.max_record
        # Pushed during this loop turn, written at its end: events not yet packed
        # (push_event, post_event), or packed ones (push, post; then pending_packed is set).
        self.pending: list = []
        self.pending_packed = False
        # push_event packs an event this large at once: it may be eager, or too big for a record
        self.small_event = min(_EAGER_BYTES, self.max_record)
        self._flush_scheduled = False  # _end_of_turn is queued (call_soon) for this turn
        self.backlog: deque = deque()  # (payload, future | None) waiting for ring space
        self.flusher: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.broken = False
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
        return cls(worker, config.host, consumer, producer, window)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take streams from now on, and tell the host so."""
        self.loop = loop
        self.consumer.start_reading_events(loop, self._on_records, self._on_ring_error)
        self.post_event([HELLO, 0, VERSION, os.getpid(), self.window])

    def stop_reading(self) -> None:
        self.consumer.stop_reading()

    def heartbeat(self) -> None:
        self.consumer.heartbeat()
        self.producer.heartbeat()

    def close(self) -> None:
        self.broken = True  # late writers (tasks the app left behind) write nowhere
        if self.flusher is not None:
            self.flusher.cancel()
        self.consumer.close()
        self.producer.close()

    # --- inbound -----------------------------------------------------------------------------

    def _on_records(self, evs: list) -> None:
        """A batch of decoded events (``Consumer.read_events``: each ``[int, int, ...]``; an
        undecodable record arrives as a ProtocolError in ``_on_ring_error``)."""
        if self.broken:
            return  # stop_reading() does not stop a batch loop already running
        streams = self.streams
        link_handlers = self.link_handlers
        for ev in evs:
            try:
                kind = ev[0]
                if kind == HTTP_REQUEST:  # the most common record: _open_http checks it
                    self._open_http(ev)
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
            self.post_event([APP_DONE, sid, f"protocol error: {exc}"])
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
            self.broken = True
            self.worker.internal_error(f"dispatching events of host {self.host}", exc)

    def fail_link(self, reason: str) -> None:
        self.broken = True
        self.stop_reading()
        if self.host == 0:  # the front-end: the worker exits and is replaced
            self.worker.protocol_error(reason)
        else:  # an attached host: cut that one off (Worker.link_failed)
            self.worker.link_failed(self, reason)

    def _open_http(self, ev: list) -> None:
        """HTTP_REQUEST.  The checks of ``events.check_request``, fused with building the
        scope; whatever they do not accept goes to check_request, which says what is wrong."""
        if len(ev) != 14:
            check_request(ev)  # raises: field count
        (_, sid, method, scheme, path, raw_path, query_string, headers, client, server,
         http_version, root_path, body, more_body) = ev
        pairs = []
        if type(headers) is list:
            append = pairs.append
            for pair in headers:
                if type(pair) is not list or len(pair) != 2:
                    break
                name, value = pair
                if type(name) is not bytes or type(value) is not bytes:
                    break
                append((name, value))
        # is_addr(client) and is_addr(server, port_optional=True), spelled out: two calls
        # per request are worth saving
        if (type(headers) is not list or len(pairs) != len(headers)
                or type(method) is not str or type(scheme) is not str or type(path) is not str
                or type(raw_path) is not bytes or type(query_string) is not bytes
                or type(http_version) is not str
                or type(root_path) is not str or type(body) is not bytes
                or type(more_body) is not bool
                or client is not None and (type(client) is not list or len(client) != 2
                                           or type(client[0]) is not str
                                           or type(client[1]) is not int)
                or server is not None and (type(server) is not list or len(server) != 2
                                           or type(server[0]) is not str
                                           or type(server[1]) is not int
                                           and server[1] is not None)):
            check_request(ev)  # raises, saying which field is wrong
            raise ProtocolError("HTTP_REQUEST: bad scope field", sid)  # (not reached)
        self._check_new_sid(sid)
        if self.host and self._refused(sid):
            return
        worker = self.worker
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "http_version": http_version,
            "server": tuple(server) if server is not None else None,
            "client": tuple(client) if client is not None else None,
            "scheme": scheme,
            "method": method,
            "root_path": root_path or worker.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "headers": pairs,
            "state": worker.state.copy(),
        }
        if http_version == "2" or (b"te", b"trailers") in pairs:
            # trailers reach the client over HTTP/2, and over HTTP/1.1 to a client that said
            # it takes them (TE: trailers; the front-end checks again)
            scope["extensions"] = {"http.response.trailers": {}}
        stream = HttpStream(self, sid, scope, body, more_body)
        self.streams[sid] = stream
        stream.task = task = self.loop.create_task(stream.run())
        worker.tasks.add(task)  # run()'s finally takes it out (stream_done)
        if worker.pulse_timer is None:  # the hosts' dispatch reads it (Worker.pulse)
            worker.start_pulse()

    def _open_websocket(self, ev: list) -> None:
        (_, sid, scheme, path, raw_path, query_string, headers, client, server,
         http_version, root_path, subprotocols) = ev
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
            "headers": list(map(tuple, headers)),
            "subprotocols": subprotocols,
            "state": worker.state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        stream = WsStream(self, sid, scope)
        self.streams[sid] = stream
        stream.task = task = self.loop.create_task(stream.run())
        worker.tasks.add(task)  # run()'s finally takes it out (stream_done)
        if worker.pulse_timer is None:
            worker.start_pulse()

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
        self.post(pack([RESPONSE_START, sid, 503, _OVERLOADED_HEADERS, False]))
        self.post(pack([RESPONSE_BODY, sid, _OVERLOADED_BODY, False]))
        self.post(pack([APP_DONE, sid, None]))
        return True

    def _check_new_sid(self, sid: int) -> None:
        if sid < 1:
            raise ProtocolError(f"stream id {sid} is reserved", None)  # a broken host
        if sid in self.streams:
            raise ProtocolError(f"stream id {sid} is already open", sid)

    def _on_ping(self, ev: list) -> None:
        self.post_event([PONG, 0, ev[2]])

    # --- stream ends ---------------------------------------------------------------------------

    def stream_done(self, stream: HttpStream, error: str | None) -> None:
        """The stream's task is over: forget the stream and tell the host (once)."""
        streams = self.streams
        sid = stream.sid
        if streams.get(sid) is stream:
            del streams[sid]
        if not stream.finished:
            stream.finished = True
            if not self.broken:
                if self.backlog:
                    self._enqueue(pack([APP_DONE, sid, error]), None)
                else:  # post_event() + publish()
                    self.pending.append([APP_DONE, sid, error])
                    self._write_pending()
        self.worker.task_done(stream.task)

    def fail_stream(self, stream: HttpStream, error: str) -> None:
        """End a stream now (its task is cancelled; it can no longer reach the host)."""
        del self.streams[stream.sid]
        stream.finished = True
        stream.on_disconnect()
        self.post_event([APP_DONE, stream.sid, error])
        if stream.task is not None:
            self.worker.cancel_task(stream.task)

    # --- outbound ------------------------------------------------------------------------------

    def push(self, payload: bytes) -> asyncio.Future | None:
        """Queue a record for the ring in FIFO order.  Returns a future to await when the ring
        is full (backpressure), else None.  Small records go out at the end of this turn of
        the event loop, together; large ones at once, so a big body meets a full ring early."""
        if len(payload) > self.max_record:
            raise ValueError(f"event of {len(payload)} bytes exceeds the ring's largest "
                             f"record ({self.max_record} bytes)")
        if self.broken:
            return None  # the worker is going down; nobody reads this ring any more
        if self.backlog:
            return self._enqueue(payload, self.loop.create_future())
        self.pending_packed = True
        if len(payload) < _EAGER_BYTES:
            self._batch(payload)
            return None
        self.pending.append(payload)
        self._write_pending()
        if self.backlog:  # it did not fit: it is the last one queued; wait for it
            fut = self.loop.create_future()
            self.backlog[-1] = (payload, fut)
            return fut
        return None

    def push_event(self, ev: list, size: int) -> asyncio.Future | None:
        """``push(pack(ev))``, for less: ``size`` is an upper bound of the packed event's
        bytes.  A small event is queued as it is, and its batch is packed by one msgpack call
        and written by one C call (``Producer.try_write_events``).  The caller must not
        change ``ev`` (or what it holds) afterwards."""
        if size >= self.small_event or self.backlog or self.broken:
            return self.push(pack(ev))
        pending = self.pending  # _batch(ev), spelled out: once or twice a request
        pending.append(ev)
        if len(pending) >= EARLY_RECORDS:
            self._write_pending()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._end_of_turn)
        return None

    def post(self, payload: bytes) -> None:
        """Queue a record for the ring in FIFO order; nobody waits for it."""
        if self.broken:
            return
        if self.backlog:
            self._enqueue(payload, None)
            return
        self.pending_packed = True
        self._batch(payload)

    def post_event(self, ev: list) -> None:
        """``post(pack(ev))`` for a small event (``push_event``)."""
        if self.broken:
            return
        if self.backlog:
            self._enqueue(pack(ev), None)
            return
        self._batch(ev)

    def _batch(self, payload: bytes) -> None:
        """Add a small record to this turn's batch: published at the end of the turn, or at
        once when EARLY_RECORDS are waiting (the front-end writes the first responses of a
        burst while the rest run)."""
        pending = self.pending
        pending.append(payload)
        if len(pending) >= EARLY_RECORDS:
            self._write_pending()
        elif not self._flush_scheduled:
            # once per turn, not once per record: publish() (a stream's end) empties pending
            # many times a turn, and a callback that finds nothing still costs a loop slot
            self._flush_scheduled = True
            self.loop.call_soon(self._end_of_turn)

    def publish(self) -> None:
        """Write what this turn queued now rather than at its end: a stream's task is over,
        and the task that runs next may not yield for long."""
        if self.pending:
            self._write_pending()

    def _end_of_turn(self) -> None:
        self._flush_scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        """Everything pushed during one loop turn, published with one release and at most one
        doorbell: ringing per record would wake the host once per record."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        packed, self.pending_packed = self.pending_packed, False
        if self.broken:
            return  # broken or closed since these were queued
        written = 0
        if not self.backlog:
            producer = self.producer
            try:
                if not packed:  # events only (push_event, post_event): the common case
                    written = producer.try_write_events(pending)
                else:
                    pending = [p if type(p) is bytes else pack(p) for p in pending]
                    if len(pending) == 1:
                        written = 1 if producer.try_write(pending[0]) else 0
                    else:
                        written = producer.try_write_many(pending)
            except RingError as exc:
                self.fail_link(f"cannot write to host {self.host}: {exc}")
                return
        for payload in islice(pending, written, None):
            self._enqueue(payload if type(payload) is bytes else pack(payload), None)

    def _enqueue(self, payload: bytes, fut: asyncio.Future | None):
        self.backlog.append((payload, fut))
        if self.flusher is None:
            self.flusher = self.loop.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        backlog = self.backlog
        producer = self.producer
        try:
            while backlog and not self.broken:
                batch = [payload for payload, _ in islice(backlog, _FLUSH_BATCH)]
                written = producer.try_write_many(batch)
                for _ in range(written):
                    _, fut = backlog.popleft()
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                if not written:  # wait_space adds the padding a record needs at the wrap
                    await producer.wait_space(len(batch[0]) + 16)
        except RingError as exc:
            self.fail_link(f"cannot write to host {self.host}: {exc}")
        finally:
            self.flusher = None
            if self.broken:
                for _, fut in backlog:
                    if fut is not None and not fut.done():
                        fut.cancel()
                backlog.clear()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for queued records to reach the ring; True if they did."""
        self._write_pending()
        flusher = self.flusher
        if flusher is not None:
            await asyncio.wait([flusher], timeout=timeout)
        return not self.backlog
