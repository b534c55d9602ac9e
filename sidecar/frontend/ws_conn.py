"""WebSocket connections: the front-end takes a client connection over after its upgrade request.

HTTPConnection calls ``websocket_handler(conn, req)`` (installed on FrontEnd) for a request with
``Upgrade: websocket``; from then on the socket belongs to a ``WebSocket`` object, which is at
once the connection's asyncio protocol (``transport.set_protocol``) and the stream the worker
link dispatches events to.  Framing, handshake checks, permessage-deflate, ping answers and
the close handshake are the ``websockets`` package's sans-I/O ``ServerProtocol``; this module
only moves bytes and ASGI events.

    upgrade request -> handshake check (400/426 ... if invalid) -> WS_CONNECT to a worker
    WS_ACCEPT  -> 101 (chosen subprotocol, app headers, negotiated extensions), frames flow
    WS_CLOSE before accept -> 403;  RESPONSE_START/BODY before accept -> that response, close
    APP_DONE before accept -> 403 (500 if the app raised); after -> close 1000 (1011)
    worker lost -> 502 before accept, close 1011 after

Flow control, as for HTTP bodies (docs/protocol.md): WS_SEND data is credited back with
SEND_CREDIT once its frames went to the socket and the transport is not paused; WS_RECEIVE
data waits here for RECV_CREDIT, and past a window of it the socket stops being read.  Large
messages travel as several events (``more``); a message larger than ``ws_max_size`` is
refused with close code 1009 by the protocol.  Keepalive pings run off the server's
once-a-second sweep (``close_if_idle``), not a timer per connection.
"""
from __future__ import annotations

import asyncio
import codecs
import logging
import os
import time
from collections import deque
from http import HTTPStatus

from websockets.exceptions import InvalidState
from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from sidecar.events import (APP_DONE, DISCONNECT, MAX_CHUNK, RECV_CREDIT, RESPONSE_BODY,
                            RESPONSE_START, SEND_CREDIT, WS_ACCEPT, WS_CLOSE, WS_CONNECT,
                            WS_DISCONNECT, WS_RECEIVE, WS_SEND)
from sidecar.http import h1, h1_response

log = logging.getLogger("sidecar.websocket")
# websockets logs "connection open/closed" at INFO for every connection: keep that quiet.
_proto_log = logging.getLogger("sidecar.websocket.protocol")
_proto_log.setLevel(logging.WARNING)

_TEXT, _BINARY, _CONT, _PONG, _CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG,
                                        Opcode.CLOSE)
_OPEN = State.OPEN
_utf8 = codecs.getincrementaldecoder("utf-8")

# phases of a WebSocket stream
CONNECTING, OPEN, DENIAL, DONE = range(4)
PRE_ACCEPT_BUFFER = 64 * 1024  # client bytes held before the 101 (clients should send none)
_RECORD_SLACK = 64             # msgpack framing around a WS_RECEIVE chunk


def websocket_handler(conn, req: h1.Request) -> None:
    """FrontEnd.websocket_handler: take the connection over from HTTP (H1Connection hands
    over only an upgrade with no request ahead of it on the connection)."""
    WebSocket(conn, req)


def _subprotocols(headers) -> list[str]:
    out = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return out


class _ServerProtocol(ServerProtocol):
    """websockets' ServerProtocol, with a close frame allowed in the middle of a fragmented
    message.  RFC 6455 5.4 lets control frames come between fragments, and 5.5.1 says a close
    ends the connection; the unfinished message is simply dropped.  websockets fails such a
    connection with 1002 ("incomplete fragmented message"); Autobahn case 7.1.5 expects the
    normal closing handshake.  (``current_size``: the size of the message being received, or
    None; websockets 16 renamed it from ``cur_size``.)"""

    def recv_frame(self, frame) -> None:
        if frame.opcode is _CLOSE and self.current_size is not None:
            self.current_size = None
        super().recv_frame(frame)


def _extensions(config) -> list:
    if not config.ws_per_message_deflate:
        return []
    # websockets' own server defaults: 4 KiB windows keep per-connection zlib memory small
    return [ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12,
                                           compress_settings={"memLevel": 5})]


class WebSocket(asyncio.Protocol):
    """One WebSocket: asyncio protocol of its socket and stream of its worker link."""

    def __init__(self, conn, req: h1.Request):
        server = conn.server
        self.server = server
        self.conn = self  # what the pool looks at (``stream.conn.closed``)
        self.config = config = server.config
        self.req = req
        self.sid = server.next_sid()
        self.link = None
        self.phase = CONNECTING
        # the access line, written when the socket closes (as nginx logs a WebSocket): the
        # status answered (101, or the refusal's), every byte sent, the whole duration
        self.client = conn.client
        self.status = 0
        self.sent = 0
        self.t0 = time.monotonic()
        self.closed = False
        self.app_done = False
        self.disconnect_sent = False
        self.write_paused = False
        self.read_paused = False
        self._eof_after = False             # the protocol ended its output: half close
        self.owed = 0                       # SEND_CREDIT held back (batched / socket backed up)
        self.credit_batch = 1
        self.recv_credit = 0
        self.pending: deque = deque()       # (data, more) waiting for RECV_CREDIT
        self.pending_units = 0
        self.pre_accept: list[bytes] = []   # client bytes before the 101
        self.pre_accept_bytes = 0
        self.chunk = MAX_CHUNK
        self.window = config.window
        self.msg_text = False
        self.decoder = None
        self.send_frag = False              # an app message is being sent in fragments
        self.denial_chunked = False
        self.chosen: str | None = None
        self.rx_seen = False
        self.last_rx = server.loop.time()
        self.ping_sent: float | None = None
        self.close_deadline: float | None = None

        # take the socket over from the HTTP connection
        self.transport = transport = conn.transport
        self.io = conn.io   # the socket's Transport adapter (frontend/transport.py)
        scope = conn.req_scope(req)
        conn.flush()  # responses to earlier requests on this connection go first
        server.connections.discard(conn)
        server.connections.add(self)
        trailing = conn.h1.parser.take_trailing()
        if trailing:
            self.pre_accept.append(trailing)
            self.pre_accept_bytes = len(trailing)
        transport.set_protocol(self)

        # handshake: the library parses the head we already parsed, and checks it
        self.proto = proto = _ServerProtocol(
            extensions=_extensions(config), select_subprotocol=lambda _p, _offered: self.chosen,
            max_size=config.ws_max_size, logger=_proto_log)
        head = [b"GET ", req.target, b" HTTP/1.1\r\n"]
        for name, value in req.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        proto.receive_data(b"".join(head))
        evs = proto.events_received()
        if req.method != b"GET" or not evs:
            self._reject(h1_response.simple_response(
                400, "Bad Request", keep_alive=False, date=self.server.date_value))
            return
        self.ws_request = evs[0]
        probe = ServerProtocol(logger=_proto_log).accept(self.ws_request)
        if probe.status_code != 101:
            log.info("WebSocket handshake refused (%d): %s", probe.status_code,
                     (probe.body or b"").decode(errors="replace").strip())
            self._reject(probe.serialize())
            return
        scheme = {"http": "ws", "https": "wss"}.get(scope[1], scope[1])
        self.connect_event = [WS_CONNECT, self.sid, scheme, scope[2], scope[3], scope[4],
                              scope[5], scope[6], scope[7], scope[8], scope[9],
                              _subprotocols(req.headers)]
        if self.pre_accept_bytes > PRE_ACCEPT_BUFFER:
            self._pause_reading()
        server.pool.dispatcher.dispatch(self, b"", False)

    # --- the pool's side -----------------------------------------------------------------

    def dispatch(self, link, body: bytes, more: bool) -> None:
        self.link = link
        self.window = link.window
        self.recv_credit = link.window
        chunk = min(MAX_CHUNK, link.window, link.to_worker.max_record - _RECORD_SLACK)
        self.chunk = max(chunk, 16)
        # hold credit below this: the worker's chunks are at most min(MAX_CHUNK, window)
        self.credit_batch = max(1, min(link.window // 4,
                                       link.window - min(MAX_CHUNK, link.window) + 1))
        event, self.connect_event = self.connect_event, None
        link.open_stream(self.sid, self, event)

    def overloaded(self) -> None:
        self.app_done = True
        self._reject(h1_response.simple_response(
            503, "Service Unavailable", keep_alive=False, date=self.server.date_value,
            extra_headers=h1_response.RETRY_AFTER))

    # --- worker events -------------------------------------------------------------------

    def on_worker_event(self, ev: list) -> None:
        kind = ev[0]
        if kind == WS_SEND:
            self._on_send(ev[2], ev[3])
        elif kind == RECV_CREDIT:
            self.recv_credit += ev[2]
            if self.pending:
                self._flush_rx()
        elif kind == WS_ACCEPT:
            self._on_accept(ev[2], ev[3])
        elif kind == WS_CLOSE:
            self._on_close(ev[2], ev[3])
        elif kind == APP_DONE:
            self._on_app_done(ev[2])
        elif kind == RESPONSE_START:
            self._on_denial_start(ev[2], ev[3])
        elif kind == RESPONSE_BODY:
            self._on_denial_body(ev[2], ev[3])
        else:
            self._fail(f"unexpected event kind {kind} on a WebSocket stream")

    def _on_accept(self, subprotocol: str | None, headers: list) -> None:
        if self.phase == DONE or self.closed:
            return  # already answered (shutdown, timeout) or the client left
        if self.phase != CONNECTING:
            return self._fail("websocket.accept in the wrong state")
        self.chosen = subprotocol
        proto = self.proto
        response = proto.accept(self.ws_request)
        if response.status_code != 101:
            self.phase = DONE
            self._reject(response.serialize())
            return
        try:
            for name, value in headers:
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
        except Exception as exc:  # a header the library will not serialize
            log.error("bad websocket.accept headers: %s", exc)
        if self.server.server_header and "Server" not in response.headers:
            response.headers["Server"] = "sidecar"
        proto.send_response(response)
        self.status = 101
        self.phase = OPEN
        self._pump()
        if self.pre_accept:
            data = b"".join(self.pre_accept)
            self.pre_accept.clear()
            self.pre_accept_bytes = 0
            self._feed(data)
        if self.read_paused and self.pending_units <= self.window:
            self._resume_reading()
        if self.link.draining:   # accepted by a worker that drains: close 1012 at once
            self.start_drain()

    def _on_send(self, data, more: bool) -> None:
        if self.phase != OPEN:
            if self.phase == DONE:
                return self._grant(len(data))
            return self._fail("websocket.send before websocket.accept")
        proto = self.proto
        if proto.state is _OPEN and not self.closed:
            text = type(data) is str
            payload = data.encode() if text else data
            fin = not more
            try:
                if self.send_frag:
                    proto.send_continuation(payload, fin)
                elif text:
                    proto.send_text(payload, fin)
                else:
                    proto.send_binary(payload, fin)
            except (InvalidState, WSProtocolError):
                pass
            self.send_frag = more
            self._pump()
        self._grant(len(data))

    def _grant(self, n: int) -> None:
        """Send credit for n bytes that went to the socket.  Credits are batched: held while
        they stay under ``credit_batch`` -- by then the worker still has at least a chunk of
        credit, so it cannot be waiting -- and while the socket is backed up (granted on
        resume_writing): a slow client costs a window here, never a worker."""
        if self.closed or self.app_done:
            return
        due = self.owed + n
        if due >= self.credit_batch and not self.write_paused:
            self.owed = 0
            self.link.send([SEND_CREDIT, self.sid, due])
        else:
            self.owed = due

    def _on_close(self, code: int, reason: str) -> None:
        if self.phase == CONNECTING:
            self.phase = DONE
            self._reject(h1_response.simple_response(
                403, "Forbidden", keep_alive=False, date=self.server.date_value))
        elif self.phase == OPEN:
            self._send_close(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        proto = self.proto
        if proto.state is not _OPEN or self.closed:
            return
        try:
            proto.send_close(code, reason)
        except (WSProtocolError, ValueError, InvalidState) as exc:
            log.error("invalid WebSocket close (%r, %r): %s; closing with 1011", code, reason,
                      exc)
            proto.send_close(CloseCode.INTERNAL_ERROR, "")
        self.close_deadline = self.server.loop.time() + self.config.ws_ping_timeout
        self._pump()

    def _on_denial_start(self, status: int, headers: list) -> None:
        if self.phase == DONE:
            return
        if self.phase != CONNECTING:
            return self._fail("websocket.http.response.start in the wrong state")
        if self.closed:
            return
        req = self.req
        try:
            head, chunked, _length, _keep = h1_response.response_head(
                status, headers, method=b"GET", http_version=req.http_version,
                keep_alive=False, date=self.server.date_value, server=self.server.server_header)
        except (ValueError, TypeError) as exc:
            log.error("invalid denial response from the app for %s: %s",
                      req.target.decode("latin-1"), exc)
            self.phase = DONE
            self._reject(h1_response.simple_response(
                500, "Internal Server Error", keep_alive=False, date=self.server.date_value))
            return
        self.phase = DENIAL
        self.status = status
        self.denial_chunked = chunked
        self._write(head)

    def _on_denial_body(self, data: bytes, more: bool) -> None:
        if self.phase == DONE:
            return self._grant(len(data))
        if self.phase != DENIAL:
            return self._fail("websocket.http.response.body outside a started response")
        if data:
            self._write(h1_response.encode_chunk(data) if self.denial_chunked else data)
        if more:
            if data:
                self._grant(len(data))
            return
        if self.denial_chunked:
            self._write(h1_response.LAST_CHUNK)
        self.phase = DONE
        self._close_after_write()

    def _on_app_done(self, error: str | None) -> None:
        self.app_done = True
        if error:
            log.error("app error in WebSocket %s: %s", self.req.target.decode("latin-1"), error)
        if self.phase == CONNECTING:
            self.phase = DONE
            status = 500 if error else 403
            self._reject(h1_response.simple_response(
                status, HTTPStatus(status).phrase, keep_alive=False, date=self.server.date_value))
        elif self.phase == OPEN:
            self._send_close(CloseCode.INTERNAL_ERROR if error else CloseCode.NORMAL_CLOSURE, "")
        elif self.phase == DENIAL:
            self._abort("app ended mid-response")

    def on_worker_lost(self) -> None:
        if self.app_done:
            return
        self.app_done = True
        if self.phase == CONNECTING:
            self.phase = DONE
            self._reject(h1_response.simple_response(
                502, "Bad Gateway", keep_alive=False, date=self.server.date_value))
        elif self.phase == OPEN:
            self._send_close(CloseCode.INTERNAL_ERROR, "worker lost")
        elif self.phase == DENIAL:
            self._abort("worker lost mid-response")

    def _fail(self, why: str) -> None:
        log.error("protocol error from worker on WebSocket stream %d: %s", self.sid, why)
        if self.link is not None:
            self.link.streams.pop(self.sid, None)
            self.link.send([DISCONNECT, self.sid])
        self.on_worker_lost()

    # --- client -> app -------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for frame in proto.events_received():
            op = frame.opcode
            if op is _TEXT or op is _BINARY or op is _CONT:
                self._on_data_frame(frame)
            elif op is _PONG:
                self.ping_sent = None
        self._pump()
        if proto.close_rcvd is not None and not self.disconnect_sent:
            self.pending.clear()
            self.pending_units = 0
            self._disconnect(proto.close_rcvd.code, proto.close_rcvd.reason)

    def _on_data_frame(self, frame) -> None:
        if frame.opcode is not _CONT:
            self.msg_text = text = frame.opcode is _TEXT
            self.decoder = _utf8() if text and not frame.fin else None
        data = frame.data
        if self.msg_text:
            try:
                if frame.fin and frame.opcode is _TEXT:  # a whole message in one frame
                    data = data.decode() if type(data) is bytes else bytes(data).decode()
                else:
                    data = self.decoder.decode(data, frame.fin)
            except UnicodeDecodeError as exc:
                self.proto.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        elif type(data) is not bytes:
            data = bytes(data)
        more = not frame.fin
        if not data and more:
            return
        if self.disconnect_sent or self.app_done:
            return
        n = len(data)
        limit = self.chunk
        if type(data) is str and not data.isascii():
            limit = max(1, limit // 4)  # a chunk must fit a record once encoded
        pending = self.pending
        if n <= limit:
            pending.append((data, more))
        else:
            for i in range(0, n, limit):
                pending.append((data[i:i + limit], more or i + limit < n))
        self.pending_units += n
        self._flush_rx()
        if self.pending_units > self.window and not self.read_paused:
            self._pause_reading()

    def _flush_rx(self) -> None:
        pending, link, sid = self.pending, self.link, self.sid
        while pending and len(pending[0][0]) <= self.recv_credit:
            data, more = pending.popleft()
            n = len(data)
            self.pending_units -= n
            self.recv_credit -= n
            link.send([WS_RECEIVE, sid, data, more])
        if self.read_paused and self.pending_units <= self.window and self.phase == OPEN:
            self._resume_reading()

    def _disconnect(self, code: int, reason: str) -> None:
        if self.disconnect_sent:
            return
        self.disconnect_sent = True
        if self.link is not None and not self.app_done:
            self.link.send([WS_DISCONNECT, self.sid, int(code), reason or ""])

    # --- asyncio.Protocol ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.rx_seen = True
        if self.phase == OPEN:
            self._feed(data)
        elif self.phase == CONNECTING:
            self.pre_accept.append(data)
            self.pre_accept_bytes += len(data)
            if self.pre_accept_bytes > PRE_ACCEPT_BUFFER:
                self._pause_reading()
        # DENIAL/DONE: the connection closes after the response; input is dropped

    def eof_received(self):
        if self.phase == OPEN:
            self.proto.receive_eof()
            self._pump()
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.server.access is not None:
            # 499 (nginx's "client closed request"): gone before anything was answered
            self.server.access.write_websocket(self, self.status or 499)
        proto = self.proto
        if proto.close_rcvd is not None:
            code, reason = proto.close_rcvd.code, proto.close_rcvd.reason
        elif proto.close_sent is not None and proto.close_sent.code in (
                CloseCode.MESSAGE_TOO_BIG, CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA):
            code, reason = proto.close_sent.code, proto.close_sent.reason
        else:
            code, reason = CloseCode.ABNORMAL_CLOSURE, ""
        self.pending.clear()
        self._disconnect(code, reason)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owed >= self.credit_batch and not self.closed and not self.app_done \
                and self.link is not None:
            n, self.owed = self.owed, 0
            self.link.send([SEND_CREDIT, self.sid, n])

    # --- writing -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move what the protocol wants to send to the socket.  b"" means end of output: half
        close (closing outright could reset the connection while the client still sends, and
        lose our close frame), go on reading -- the protocol discards it -- until the client
        closes, for at most ws_ping_timeout (the sweep enforces it)."""
        for data in self.proto.data_to_send():
            if data:
                self._write(data)
            elif not self._eof_after:
                self._eof_after = True
                if self.close_deadline is None:
                    self.close_deadline = self.server.loop.time() + self.config.ws_ping_timeout
                if self.closed or self.transport.is_closing():
                    continue
                self.read_paused = False
                if self.io.can_linger():
                    self.io.linger()   # FIN after what is written; reading goes on
                else:
                    self.io.close()

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        self.sent += len(data)
        self.io.write(data)

    def flush(self) -> None:
        self.io.flush()

    def _close_after_write(self) -> None:
        if not self.transport.is_closing():
            self.io.close()

    def _reject(self, response: bytes) -> None:
        """An HTTP answer instead of the upgrade, then close."""
        self.phase = DONE
        self.status = int(response[9:12])   # b"HTTP/1.1 403 ..."
        self._write(response)
        self._close_after_write()

    def _abort(self, why: str) -> None:
        log.warning("closing WebSocket connection of %s: %s", self.req.target.decode("latin-1"),
                    why)
        self.io.flush()
        self.io.abort()
        self.closed = True

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.io.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.io.resume_reading()

    # --- the server's sweep (once a second) and shutdown ----------------------------------

    def close_if_idle(self, now: float, timeout: float) -> None:
        """Keepalive: ping a quiet peer; give up on one that does not answer in time."""
        if self.closed or self.phase != OPEN:
            return
        if self.close_deadline is not None or self._eof_after:
            if now >= self.close_deadline:
                self._abort("no answer to our close frame")
            return
        if self.rx_seen or self.read_paused:
            self.rx_seen = False
            self.last_rx = now
            self.ping_sent = None
            return
        if self.ping_sent is not None:
            if now - self.ping_sent >= self.config.ws_ping_timeout:
                log.info("WebSocket peer did not answer a ping in %.0fs: closing",
                         self.config.ws_ping_timeout)
                self.proto.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._pump()
                self._abort("keepalive ping timeout")
            return
        interval = self.config.ws_ping_interval
        if interval and now - self.last_rx >= interval and self.proto.state is _OPEN:
            self.proto.send_ping(os.urandom(4))
            self.ping_sent = now
            self._pump()

    def start_drain(self) -> None:
        if self.phase == OPEN:
            self._send_close(CloseCode.SERVICE_RESTART, "server shutting down")
        elif self.phase == CONNECTING and not self.closed:
            self._reject(h1_response.simple_response(
                503, "Service Unavailable", keep_alive=False, date=self.server.date_value))

    def stop_now(self) -> None:
        if not self.closed:
            self.io.flush()
            self.io.abort()
            self.closed = True
