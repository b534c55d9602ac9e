"""One client connection speaking HTTP/1.1, and the streams (requests) on it.

socket bytes -> sidecar.http.h1.RequestParser -> HTTP_REQUEST/HTTP_BODY events -> worker link;
worker link -> RESPONSE_START/RESPONSE_BODY/APP_DONE -> HTTP framing -> socket.

Rules kept here:
- Pipelining: every parsed request becomes a stream at once (dispatched to a worker), but only
  the oldest unfinished stream (the head) writes to the socket; the others buffer, and their
  buffers are bounded because the worker may send only ``window`` bytes without credit, and a
  stream grants credit only for bytes it wrote to the socket.
- Response credit is granted after a write while the transport is not paused; while it is
  paused (slow client) credit is owed and granted on resume_writing: a slow client costs one
  window of buffer, never a worker.
- Request credit: at most ``window`` body bytes go to the worker before it grants more; beyond
  that the body waits here and, past one window, the socket stops being read.
- Error policy (the only place): the app failed or the worker was lost before the response
  started -> 500 / 502; after it started -> the connection is closed (a chunked body ends
  without its last chunk), never a second status line.
- Client timeouts (checked by the server's once-a-second sweep, ``close_if_idle``), none of
  them running while we ourselves stopped reading (backpressure):
  header timeout -- a request head must arrive whole within ``header_timeout`` of its first
  byte (of the accept, for a connection's first request); not reset by each byte, so a
  slowloris client dribbling a byte a second still gets 408 and close;
  body timeout -- no request body byte for ``body_timeout`` while the app waits for one:
  408 and close if the response has not started, else close; the app sees http.disconnect;
  keep-alive timeout -- no request for ``keepalive_timeout`` after the last response: close;
  send timeout -- the client has taken none of our response bytes for ``send_timeout``
  (the transport stayed paused): abort; the app sees http.disconnect (nginx send_timeout).
- Connection limit (``limit_concurrency``, uvicorn's meaning): a connection accepted beyond
  it is answered 503 with Retry-After at its first request, then closed.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from http import HTTPStatus
from collections import deque

from sidecar import events
from sidecar.events import (APP_DONE, DISCONNECT, HTTP_BODY, HTTP_REQUEST, MAX_CHUNK,
                            RECV_CREDIT, RESPONSE_BODY, RESPONSE_START, SEND_CREDIT)
from sidecar.frontend import access
from sidecar.http import h1

log = logging.getLogger("sidecar.frontend")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINE = 32  # requests parsed ahead of their responses before we stop reading
# Lingering close (nginx lingering_time / lingering_timeout): after an early answer, read and
# drop what the client still sends for at most LINGER_TIME seconds, or until it pauses
# LINGER_TIMEOUT seconds, before closing.
LINGER_TIME = 30.0
LINGER_TIMEOUT = 5.0
# A request body the app left unread when its response completed (a 404 for a large POST) is
# read and dropped up to DISCARD_MAX bytes, keeping the connection alive, as uvicorn and
# nginx (ngx_http_discard_request_body) do; a body known or found to be larger closes the
# connection after the answer, lingering, instead of reading on for the client's sake.
DISCARD_MAX = 4 * 1024 * 1024
# Retry-After (RFC 9110 section 10.2.3) on our 503s: seconds before a client should retry.
RETRY_AFTER = ((b"retry-after", b"5"),)
# A packed HTTP_REQUEST record: array of 14, kind 1; then sid, the packed scope, body, more.
_REQUEST_PREFIX = b"\x9e\x01"
_TRUE, _FALSE = b"\xc3", b"\xc2"


def _is_event_stream(headers) -> bool:
    """Whether the app's response headers say ``Content-Type: text/event-stream``."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


class HTTPStream:
    """One request/response exchange, from the parsed head to APP_DONE."""

    __slots__ = ("conn", "sid", "req", "link", "recv_credit", "pending", "pending_bytes",
                 "body_done", "body_sent_done", "credit_seen", "started", "complete", "chunked",
                 "head_only", "buffer", "owed", "status", "sent_bytes", "app_done", "t0",
                 "keep_alive", "dispatched", "route", "cost", "t_dispatch", "event_stream",
                 "told_to_end")

    def __init__(self, conn: "HTTPConnection", sid: int, req: h1.Request):
        self.conn = conn
        self.sid = sid
        self.req = req
        self.link = None
        self.recv_credit = 0
        self.pending: deque[tuple[bytes, bool]] = deque()  # request body waiting for credit
        self.pending_bytes = 0
        self.body_done = False       # parser saw the end of the request body
        self.body_sent_done = False  # the worker got more_body=False
        self.credit_seen = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.head_only = req.method == b"HEAD"
        self.buffer: list[bytes] | None = None  # response bytes while not at the head
        self.owed = 0
        self.status = 0
        self.sent_bytes = 0
        self.app_done = False
        self.t0 = time.monotonic()
        self.keep_alive = req.keep_alive
        self.dispatched = False
        self.event_stream = False  # a text/event-stream response (drain_notice)
        self.told_to_end = False   # drain_notice sent the app http.disconnect

    # --- request direction ---------------------------------------------------------------

    def dispatch(self, link, body: bytes, more_body: bool) -> None:
        """Send the scope (with the first body chunk) to the worker chosen for this stream."""
        self.link = link
        self.dispatched = True
        self.recv_credit = link.window - len(body)
        self.body_sent_done = not more_body
        link.open_stream(self.sid, self, self.conn.request_event(self, body, more_body))
        if self.pending:
            self._flush_body()

    def feed_body(self, data: bytes, more: bool) -> None:
        if not more:
            self.body_done = True
        if self.complete or self.app_done:
            self.conn.discarded(self, len(data))  # answered: the rest is read and dropped
            return
        if data or not more:
            self.pending.append((data, more))
            self.pending_bytes += len(data)
        if self.dispatched:
            self._flush_body()
        if self.pending_bytes > self.conn.window:
            self.conn.pause_reading_for(self)

    def _flush_body(self) -> None:
        chunk_max = min(MAX_CHUNK, self.link.window)
        pending, link, sid = self.pending, self.link, self.sid
        while pending:
            data, more = pending[0]
            if len(data) > chunk_max:
                # split to what the window lets a record carry
                pending[0] = (data[chunk_max:], more)
                data, more = data[:chunk_max], True
                pending.appendleft((data, True))
            if len(data) > self.recv_credit:
                break
            pending.popleft()
            self.pending_bytes -= len(data)
            self.recv_credit -= len(data)
            link.send([HTTP_BODY, sid, data, more])
            if not more:
                self.body_sent_done = True
        if self.pending_bytes <= self.conn.window:
            self.conn.resume_reading_for(self)

    # --- response direction --------------------------------------------------------------

    def on_worker_event(self, ev: list) -> None:
        kind = ev[0]
        if kind == RESPONSE_BODY:
            self._on_body(ev[2], ev[3])
        elif kind == RESPONSE_START:
            self._on_start(ev[2], ev[3])
        elif kind == APP_DONE:
            self._on_app_done(ev[2])
        elif kind == RECV_CREDIT:
            self._on_recv_credit(ev[2])
        else:
            self._fail(f"unexpected event kind {kind} on an HTTP stream")

    def _on_recv_credit(self, n: int) -> None:
        if not self.credit_seen:
            self.credit_seen = True
            if self.req.expect_continue and not self.started:
                self.conn.write_for(self, CONTINUE)
        self.recv_credit += n
        if self.pending:
            self._flush_body()

    def _on_start(self, status: int, headers: list) -> None:
        if self.conn.closed:
            return  # also after our own answer (a timeout): the app is being told
        if self.started:
            return self._fail("second http.response.start")
        conn = self.conn
        req = self.req
        keep_alive = self.keep_alive and not conn.draining
        if not self.body_done and req.expect_continue and not self.credit_seen:
            keep_alive = False  # the client never sent the body it announced
        try:
            # keep_alive comes back cleared for a close-delimited body (HTTP/1.0 without a
            # length) and for an app's Connection: close
            server = conn.server
            head, chunked, _length, keep_alive = h1.response_head(
                status, headers, method=req.method, http_version=req.http_version,
                keep_alive=keep_alive, date=server.date_value, server=server.server_header,
                extra=server.extra_fields)
        except (ValueError, TypeError) as exc:
            log.error("invalid response from the app for %s %s: %s", req.method.decode(),
                      req.target.decode("latin-1"), exc)
            self._error_response(500)
            return
        self.started = True
        self.status = status
        self.chunked = chunked and not self.head_only
        self.keep_alive = keep_alive
        if _length is None and not self.head_only:   # open-ended: is it an event stream?
            self.event_stream = _is_event_stream(headers)
        conn.write_for(self, head)

    def _on_body(self, data: bytes, more: bool) -> None:
        if self.conn.closed:
            # the client left (the worker has been told) or we answered for the app (a
            # timeout): its start was dropped as well, and nothing can be written
            return
        if not self.started or self.complete:
            return self._fail("response body outside a started response")
        n = len(data)
        if data and not self.head_only:
            self.sent_bytes += n
            self.conn.write_for(self, h1.encode_chunk(data) if self.chunked else data)
        if more:
            if n:
                self.grant(n)
            return
        if self.chunked:
            self.conn.write_for(self, h1.LAST_CHUNK)
        self.complete = True
        self.conn.stream_complete(self)

    def grant(self, n: int) -> None:
        """Response credit for n bytes: now if they left for the socket, else when they do."""
        if self.buffer is None and not self.conn.write_paused:
            self.link.send([SEND_CREDIT, self.sid, n])
        else:
            self.owed += n

    def flush_owed(self) -> None:
        if self.owed and not self.complete and self.link is not None:
            n, self.owed = self.owed, 0
            self.link.send([SEND_CREDIT, self.sid, n])

    def _on_app_done(self, error: str | None) -> None:
        self.app_done = True
        if self.conn.closed or self.told_to_end and self.started:
            if error:   # most often the app's send() raising ClientDisconnected
                log.info("app ended after %s, in %s %s: %s",
                         "its connection closed" if self.conn.closed else "a drain notice",
                         self.req.method.decode(), self.req.target.decode("latin-1"), error)
            if not self.conn.closed and not self.complete:
                self._end_event_stream()
            return
        if error:
            log.error("app error in %s %s: %s", self.req.method.decode(),
                      self.req.target.decode("latin-1"), error)
        if not self.started:
            if not error:
                log.error("app returned without a response for %s %s",
                          self.req.method.decode(), self.req.target.decode("latin-1"))
            self._error_response(500)
        elif not self.complete:
            self.conn.abort_from(self, "app ended mid-response")

    def drain_notice(self) -> None:
        """The stream's worker is draining: an event stream that is still running is told
        http.disconnect, so that an app that listens stops (sse-starlette, Starlette's
        StreamingResponse); its response is then ended cleanly (_end_event_stream).  Other
        responses are left to finish: ending them early would cut a download short."""
        if (self.event_stream and not self.complete and not self.app_done
                and not self.told_to_end and self.link is not None):
            self.told_to_end = True
            self.link.send([DISCONNECT, self.sid])

    def _end_event_stream(self) -> None:
        """An event stream whose app stopped after drain_notice: events are whole messages,
        so ending the body here loses nothing, and the client reconnects."""
        if self.chunked:
            self.conn.write_for(self, h1.LAST_CHUNK)
        else:
            self.keep_alive = False   # a body delimited by the close (HTTP/1.0)
        self.complete = True
        self.conn.stream_complete(self)

    def on_worker_lost(self) -> None:
        """The worker died or broke the protocol: 502 if nothing was sent, else abort."""
        if self.app_done:
            return
        self.app_done = True
        if not self.started:
            self._error_response(502)
        elif not self.complete:
            self.conn.abort_from(self, "worker lost mid-response")

    def _fail(self, why: str) -> None:
        log.error("protocol error from worker on stream %d: %s", self.sid, why)
        if self.link is not None:
            self.link.streams.pop(self.sid, None)
            self.link.send([DISCONNECT, self.sid])
        self.on_worker_lost()

    def overloaded(self) -> None:
        """No worker could take the stream in time, or too many streams are in flight."""
        self.app_done = True
        self._error_response(503, RETRY_AFTER)

    def body_failed(self, status: int, why: str) -> None:
        """The request body broke off (timeout, bad chunked framing, over max_body): answer
        ``status`` if nothing was sent yet, else close the connection; either way the app is
        told the client is gone, and the connection closes after this stream."""
        conn = self.conn
        if self.complete:   # answered already: only the rest of the body was awaited
            self.keep_alive = False
            if self not in conn.pipeline:
                conn._close_after_write()
            return
        self.client_gone()
        self.app_done = True   # nothing the app sends from now on reaches the client
        if self.started:
            conn.abort_from(self, why)
        else:
            self._error_response(status)

    def _error_response(self, status: int, extra_headers=()) -> None:
        self.started = True
        self.status = status
        self.keep_alive = False
        self.conn.write_for(self, h1.simple_response(status, HTTPStatus(status).phrase,
                                                     keep_alive=False,
                                                     extra_headers=extra_headers))
        self.complete = True
        self.conn.stream_complete(self)

    def client_gone(self) -> None:
        if self.dispatched and not self.app_done and self.link is not None:
            self.link.send([DISCONNECT, self.sid])


class HTTPConnection(asyncio.Protocol):
    """asyncio protocol for one client socket (TCP or Unix)."""

    def __init__(self, server):
        self.server = server
        self.batcher = server.batcher
        self._out: list[bytes] = []  # socket bytes of this loop iteration
        self.window = server.config.window
        self.transport: asyncio.Transport | None = None
        self.parser = h1.RequestParser(server.limits)
        self.pipeline: deque[HTTPStream] = deque()
        self.current: HTTPStream | None = None  # stream receiving request body
        self.closed = False
        self.write_paused = False
        self.write_paused_since = 0.0
        self.read_paused_by: set[int] = set()
        self.idle_since: float | None = None  # loop time the connection went idle
        self.head_since: float | None = None  # loop time the current request head began
        self.last_read = 0.0                  # loop time of the last bytes from the client
        self.over_limit = False               # accepted beyond limit_concurrency
        self.client = None
        self.server_addr = None
        self.scheme = "http"
        self.trusted = False
        self.draining = False
        self.lingering_until: float | None = None  # closing lingering: give up at this time
        self.discard_bytes = 0   # of an answered request's body, read and dropped so far

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(local, str) or isinstance(local, bytes):  # Unix socket
            path = local.decode() if isinstance(local, bytes) else local
            self.server_addr = [path, None]
            self.client = None
            self.trusted = self.server.trust_unix
        else:
            self.server_addr = [local[0], local[1]]
            self.client = [peer[0], peer[1]] if peer else None
            if transport.get_extra_info("sslcontext") is not None:
                self.scheme = "https"   # wss for WebSockets (ws_conn)
            self.trusted = self.server.is_trusted(peer[0] if peer else None)
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
        server = self.server
        self.who = access.who(self.client)   # the access lines' first field
        # the C parser packs each request's HTTP_REQUEST fields with this connection's scope
        # (request_event); a trusted peer's proxy headers may change it per request
        pack = events.pack
        self._packed_server = pack(self.server_addr)
        self.parser.pack_requests(pack(self.scheme), pack(self.client) + self._packed_server,
                                  server.config.root_path.encode(),
                                  self._proxy_scope if self.trusted else None)
        limit = server.config.limit_concurrency
        if limit and len(server.connections) > limit:
            self.over_limit = True
        # nginx: client_header_timeout also bounds the wait for a new connection's request
        self.idle_since = self.head_since = self.last_read = server.loop.time()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        self.last_read = now = self.server.loop.time()
        try:
            evs = parser.feed(data)
        except Exception:  # a parser bug must not take the process down
            log.exception("request parser failed")
            evs = [h1.ProtocolError(400, "unparseable request")]
        if parser.head_pending:   # a head began: its deadline runs from its first byte
            if self.head_since is None:
                self.head_since = now
            self.idle_since = None
        else:
            self.head_since = None
        i, n = 0, len(evs)
        while i < n:
            ev = evs[i]
            t = type(ev)
            if t is h1.Request:
                if ev.upgrade == b"websocket" and self.server.websocket_handler is None:
                    # no WebSocket support: serve it as plain HTTP and keep parsing
                    evs[i + 1:] = self.parser.decline_upgrade()
                    n = len(evs)
                # piggyback the whole body on HTTP_REQUEST when it is already here
                body, more = b"", True
                if i + 1 < n and type(evs[i + 1]) is h1.EndOfMessage:
                    body, more, i = b"", False, i + 1
                elif (i + 2 < n and type(evs[i + 1]) is h1.Body
                      and type(evs[i + 2]) is h1.EndOfMessage
                      and len(evs[i + 1].data) <= MAX_CHUNK):
                    body, more, i = evs[i + 1].data, False, i + 2
                self._on_request(ev, body, more)
            elif t is h1.Body:
                if self.current is not None:
                    self.current.feed_body(ev.data, True)
            elif t is h1.EndOfMessage:
                if self.current is not None:
                    self.current.feed_body(b"", False)
                    self.current = None
            elif t is h1.ProtocolError:
                self._on_protocol_error(ev)
                return
            if self.closed:
                return
            i += 1

    def eof_received(self):
        # A client that shuts down its side is treated as gone (as uvicorn and nginx do): the
        # transport closes, connection_lost tells the workers, apps see http.disconnect.
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in self.pipeline:
            stream.client_gone()
        self.pipeline.clear()
        self.current = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = self.server.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.pipeline:
            self.pipeline[0].flush_owed()

    # --- requests ------------------------------------------------------------------------

    def _on_request(self, req: h1.Request, body: bytes, more: bool) -> None:
        self.idle_since = None
        if self.over_limit:
            self._refuse_over_limit()
            return
        if req.upgrade == b"websocket" and self.server.websocket_handler is not None:
            self.server.websocket_handler(self, req)
            return
        stream = HTTPStream(self, self.server.next_sid(), req)
        if self.draining:
            stream.keep_alive = False
        self.pipeline.append(stream)
        if more:
            self.current = stream
        else:
            stream.body_done = True
        if len(self.pipeline) == 1:
            stream.buffer = None
        else:
            stream.buffer = []
        if len(self.pipeline) >= MAX_PIPELINE:
            self.pause_reading_for(None)
        self.server.pool.dispatch(stream, body, more)

    def request_event(self, stream: HTTPStream, body: bytes, more: bool) -> list | bytes:
        """The stream's HTTP_REQUEST: the record itself when the C parser packed the scope
        (h1.Request.packed), else the event as a list."""
        packed = stream.req.packed
        if packed is not None:
            pack = events.pack
            return b"".join((_REQUEST_PREFIX, pack(stream.sid), packed,
                             pack(body), _TRUE if more else _FALSE))
        req = self.req_scope(stream.req)
        return [HTTP_REQUEST, stream.sid, req[0], req[1], req[2], req[3], req[4], req[5],
                req[6], req[7], req[8], req[9], body, more]

    def _proxy_scope(self, headers) -> tuple[bytes, bytes] | None:
        """For the C packer (h1.RequestParser.pack_requests): a trusted peer's request whose
        proxy headers change the scheme or the client gets them packed, else None."""
        scheme, client = self.server.apply_proxy_headers(headers, self.scheme, self.client)
        if scheme == self.scheme and client == self.client:
            return None
        pack = events.pack
        return pack(scheme), pack(client) + self._packed_server

    def req_scope(self, req: h1.Request) -> tuple:
        """(method, scheme, path, raw_path, query, headers, client, server, version, root)."""
        root = self.server.config.root_path
        scheme, client = self.scheme, self.client
        headers = req.headers  # list of (name, value) tuples: msgpack packs them as arrays
        if self.trusted:
            scheme, client = self.server.apply_proxy_headers(req.headers, scheme, client)
        path = root + req.path if root else req.path
        raw_path = root.encode() + req.raw_path if root else req.raw_path
        return (req.method.decode("ascii"), scheme, path, raw_path, req.query_string, headers,
                client, self.server_addr, req.http_version, root)

    def _refuse_over_limit(self) -> None:
        self.server.log_over_concurrency("connection from %s over --limit-concurrency (%d): 503",
                                         self.client or "unix peer",
                                         self.server.config.limit_concurrency)
        self.parser.stop()
        self.current = None
        self._write(h1.simple_response(503, "Service Unavailable", keep_alive=False,
                                       extra_headers=RETRY_AFTER))
        self._close_after_write()

    def _on_protocol_error(self, err: h1.ProtocolError) -> None:
        log.info("bad request from %s: %d %s", self.client or "unix peer", err.status,
                 err.reason)
        self.pause_reading_for(None)
        stream, self.current = self.current, None
        if stream is not None:   # the error is in this request's body: it is the answer
            stream.body_failed(err.status, err.reason)
            return
        data = h1.simple_response(err.status, err.reason, keep_alive=False)
        if not self.pipeline:
            self._write(data)
            self._close_after_write()
            return
        # answer after the responses already in flight, then close
        stream = HTTPStream(self, 0, self.pipeline[-1].req)
        stream.keep_alive = False
        stream.started = stream.complete = stream.app_done = True
        stream.buffer = [data]
        self.pipeline.append(stream)

    # --- writing -------------------------------------------------------------------------

    def write_for(self, stream: HTTPStream, data: bytes) -> None:
        if self.closed:
            return
        if stream.buffer is None:
            self._write(data)
        else:
            stream.buffer.append(data)

    def _write(self, data: bytes) -> None:
        if not self._out:
            self.batcher.add(self)
        self._out.append(data)

    def flush(self) -> None:
        """Write this iteration's bytes with one send (called by the Batcher)."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def stream_complete(self, stream: HTTPStream) -> None:
        """The stream's response is fully written (or buffered): advance the pipeline."""
        if self.closed:
            return
        if not stream.body_done:
            self._discard_body(stream)
        if self.server.access is not None:
            self._log_access(stream)
        while self.pipeline and self.pipeline[0].complete:
            done = self.pipeline.popleft()
            if not done.keep_alive:
                self._close_after_write()
                return
            if not done.body_done and done.req.expect_continue and not done.credit_seen:
                self._close_after_write()  # the announced body never came
                return
            if not self.pipeline:
                break
            nxt = self.pipeline[0]
            buffered, nxt.buffer = nxt.buffer, None
            if buffered:
                self._write(b"".join(buffered))
            if nxt.owed:
                nxt.flush_owed()
        if len(self.pipeline) < MAX_PIPELINE:
            self.resume_reading_for(None)
        if not self.pipeline:
            if self.draining:
                self._close_after_write()
            else:
                self.idle_since = self.server.loop.time()

    def _discard_body(self, stream: HTTPStream) -> None:
        """The response is complete but the request body is not all here (the app did not
        read it): drop what waits for the worker and read the rest only to drop it -- unless
        it is known to be over DISCARD_MAX: then close after the answer, lingering."""
        stream.pending.clear()
        stream.pending_bytes = 0
        self.discard_bytes = 0
        left = self.parser.body_left
        if left is not None and left > DISCARD_MAX:
            stream.keep_alive = False
        # reading was paused for this stream when the app stopped taking its body
        self.resume_reading_for(stream)

    def discarded(self, stream: HTTPStream, n: int) -> None:
        """``n`` more bytes of an answered request's body were dropped (_discard_body)."""
        self.discard_bytes += n
        if self.discard_bytes > DISCARD_MAX and stream.keep_alive:
            stream.keep_alive = False
            if stream not in self.pipeline:   # its answer is out already: close now
                self._close_after_write()

    def abort_from(self, stream: HTTPStream, why: str) -> None:
        log.warning("closing connection from %s: %s (stream %d)", self.client or "unix peer",
                    why, stream.sid)
        if stream.buffer is None and not self.closed:
            # what was written stays written; a truncated body is visible as a short read
            self.flush()
            self.transport.close()
        else:
            self.transport.abort()
        self.closed = True

    def _close_after_write(self) -> None:
        """Close once our bytes are written.  If the client may still be sending the request
        we answered early (413 on its Content-Length, a bad chunk, an app that did not read
        the body), close lingering, as nginx does: send FIN after the answer and keep
        reading and dropping its bytes until it closes, pauses LINGER_TIMEOUT or
        LINGER_TIME is up.  Closing with its bytes unread would make the kernel reset the
        connection, and a client still sending may then never read the answer."""
        self.flush()
        self.closed = True
        transport = self.transport
        if self.parser.mid_request and transport.can_write_eof():
            self.parser.stop()    # every byte from now on is dropped unparsed
            now = self.server.loop.time()
            self.lingering_until = now + LINGER_TIME
            self.last_read = now
            transport.write_eof()  # after what is buffered: the client reads our answer
            if self.read_paused_by:
                self.read_paused_by.clear()
                transport.resume_reading()
            return
        transport.close()  # flushes the transport's buffer first

    def _linger_done(self, now: float) -> bool:
        return now >= self.lingering_until or now - self.last_read >= LINGER_TIMEOUT

    def close_if_idle(self, now: float, timeout: float) -> None:
        """The client timeouts (header, body, keep-alive ``timeout``), checked by the
        server's once-a-second sweep: one timer for all connections, none per request."""
        if self.closed:
            if self.lingering_until is not None and self._linger_done(now):
                self.lingering_until = None
                self.transport.close()
            return
        config = self.server.config
        if self.write_paused and now - self.write_paused_since >= config.send_timeout:
            log.info("send timeout (%.0fs): client %s takes no response bytes",
                     config.send_timeout, self.client or "unix peer")
            # what is buffered would never leave; connection_lost tells the streams' apps
            self.transport.abort()
            return
        if self.read_paused_by:
            return  # we are not reading: the client cannot be late
        if self.head_since is not None and now - self.head_since >= config.header_timeout:
            self._header_timed_out()
        elif self.parser.expecting_body and now - self.last_read >= config.body_timeout:
            stream = self.current
            # a client that sent Expect: 100-continue waits for us until the app reads
            if stream is None or not stream.req.expect_continue or stream.credit_seen:
                log.info("request body timeout (%.0fs) from %s", config.body_timeout,
                         self.client or "unix peer")
                self.parser.stop()
                self.current = None
                if stream is None:
                    self._close_after_write()
                else:
                    stream.body_failed(408, "request body timeout")
        elif self.idle_since is not None and now - self.idle_since >= timeout \
                and not self.pipeline:
            self._close_after_write()

    def _header_timed_out(self) -> None:
        self.head_since = None
        if not self.parser.head_pending:   # a new connection that never sent a byte
            self.parser.stop()
            self._close_after_write()      # nothing to answer (nginx closes silently too)
            return
        self.parser.stop()
        self._on_protocol_error(h1.ProtocolError(408, "request header timeout"))

    def pause_reading_for(self, stream: HTTPStream | None) -> None:
        key = 0 if stream is None else stream.sid
        if not self.read_paused_by:
            self.transport.pause_reading()
        self.read_paused_by.add(key)

    def resume_reading_for(self, stream: HTTPStream | None) -> None:
        key = 0 if stream is None else stream.sid
        if key in self.read_paused_by:
            self.read_paused_by.discard(key)
            if not self.read_paused_by and not self.closed:
                self.transport.resume_reading()
                # time we did not read is not the client's: its timeouts start over
                self.last_read = now = self.server.loop.time()
                if self.head_since is not None:
                    self.head_since = now

    def start_drain(self) -> None:
        """Shutdown/reload: finish what is in flight, then close; idle connections close now."""
        self.draining = True
        if self.lingering_until is not None:   # our answer is out: stop waiting for the client
            self.lingering_until = None
            self.transport.close()
            return
        if not self.pipeline and not self.closed:
            self._close_after_write()

    def stop_now(self) -> None:
        """The graceful-shutdown timeout expired: a request whose response never started gets
        503 (the client may retry elsewhere); anything else in flight is cut off."""
        if self.closed or self.transport is None:
            return
        head = self.pipeline[0] if self.pipeline else None
        if head is not None and not head.started and head.buffer is None:
            head.app_done = True
            head._error_response(503, ((b"retry-after", b"1"),))
        if not self.closed:
            self.transport.abort()

    def _log_access(self, stream: HTTPStream) -> None:
        self.server.access.write(access.line(self.who, stream.req,
                                             stream.status, stream.sent_bytes,
                                             time.monotonic() - stream.t0))


__all__ = ["HTTPConnection", "HTTPStream", "events"]
