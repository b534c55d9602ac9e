"""One client connection speaking HTTP/2: the asyncio adapter of its state machine.

    socket -> Transport -> H2Connection (sidecar/http/h2_connection.py: every HTTP/2 rule)
           -> on_request, per HTTP/2 stream -> Stream (sidecar/frontend/stream.py) -> pool

A connection starts as an ``HTTPConnection`` (http_conn.py).  It becomes an HTTP/2 one when
its first bytes are the client preface (prior knowledge, h2c), its TLS handshake chose
ALPN ``h2``, or an HTTP/1.1 request without a body asked for ``Upgrade: h2c`` (that request
is then stream 1, answered over HTTP/2 after the 101): the ``HTTP2Connection`` then takes the socket over (``transport.set_protocol``)
with the same ``Transport``, and keeps the ``HTTPConnection`` for the connection's part of
each request's scope (client, server, scheme, trusted proxy headers), which is the same for
both protocols.  Each HTTP/2 stream is a ``Stream`` of its own, dispatched to a worker on its
own: one connection from a proxy spreads its streams over the pool.  A WebSocket opened by
extended CONNECT (RFC 8441) is an ``H2WSConnection`` on its stream (sidecar/http/h2_ws.py)
and a ``WebSocketStream``, as an HTTP/1.1 upgrade is a ``WSConnection`` and one.
"""
from __future__ import annotations

import asyncio
import time

from sidecar.events import HTTP_REQUEST, pack, request_record
from sidecar.frontend.stream import Stream
from sidecar.frontend.ws_stream import WebSocketStream
from sidecar.http.h2_connection import H2Connection, H2Limits
from sidecar.http.h2_ws import H2WSConnection
from sidecar.http.ws_connection import CONNECTING

__all__ = ["HTTP2Connection", "limits"]

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def limits(config) -> H2Limits:
    return H2Limits.from_config(config)


class HTTP2Connection(asyncio.Protocol):
    """asyncio protocol of a socket after it turned out to speak HTTP/2."""

    def __init__(self, conn, data: bytes = b"", upgrade=None):
        from sidecar.frontend.http_conn import timeouts
        server = conn.server
        self.server = server
        self.scope_of = conn          # the HTTPConnection: the connection's part of the scope
        self.window = server.config.window
        self.who = conn.who
        self.transport = conn.transport
        self.io = io = conn.io
        if upgrade is not None:   # Upgrade: h2c (RFC 7540 section 3.2)
            io.write(SWITCHING)
        self.h2 = H2Connection(io, self, server.h2_limits, timeouts(server.config), io.now(),
                               head_fields=server, window=self.window, upgrade=upgrade,
                               extended_connect=server.websocket_handler is not None)
        self.data_received = self.h2.receive_data
        server.connections.discard(conn)
        server.connections.add(self)
        self.transport.set_protocol(self)
        if conn.h1.over_limit:
            # over --limit-concurrency: GOAWAY before any stream, so that every request the
            # client sent is refused (REFUSED_STREAM: safe to retry elsewhere), then the close
            self.h2.start_drain()
        if upgrade is not None:
            self.h2.upgraded_request(upgrade)
        if data:
            self.h2.receive_data(data)

    @property
    def closed(self) -> bool:
        return self.h2.closed

    # --- asyncio.Protocol ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:   # (the instance's is h2.receive_data)
        self.h2.receive_data(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.h2.connection_lost()

    def pause_writing(self) -> None:
        self.h2.write_blocked(self.server.loop.time())

    def resume_writing(self) -> None:
        self.h2.write_unblocked()

    # --- H2Connection's handler ----------------------------------------------------------

    def on_request(self, ex, body: bytes, more: bool) -> None:
        stream = Stream(self, ex, ex, self.server.next_sid())
        self.server.pool.dispatcher.dispatch(stream, body, more)

    def on_websocket(self, ex) -> None:
        """An extended CONNECT for a WebSocket: its stream is one, dispatched as an HTTP/1.1
        upgrade is (ws_conn.py)."""
        config = self.server.config
        ws = H2WSConnection(self.h2, ex, on_end=self._websocket_ended, head_fields=self.server,
                            max_size=config.ws_max_size, deflate=config.ws_per_message_deflate,
                            ping_interval=config.ws_ping_interval,
                            ping_timeout=config.ws_ping_timeout)
        stream = WebSocketStream(self, ws, self.server.next_sid(),
                                 self.scope_of.req_scope(ex.req), self.scope_of.tls)
        if ws.phase == CONNECTING:
            self.server.pool.dispatcher.dispatch(stream, b"", False)

    def _websocket_ended(self, ws) -> None:
        access = self.server.access
        if access is not None:
            # 499 (nginx's "client closed request"): gone before anything was answered
            stream = ws.stream   # None: the handshake was refused as it came
            access.write_websocket(self.scope_of.client, ws.req, ws.status or 499, ws.sent,
                                   stream.t0 if stream else time.monotonic(),
                                   stream and stream.link, stream.sid if stream else 0)

    def pack_scope(self, req) -> bytes:
        """For H2Connection (its RequestHeads, once per distinct request head): the ten scope
        fields of ``req``'s HTTP_REQUEST packed, as request_event's record carries them."""
        return b"".join(map(pack, self.scope_of.req_scope(req)))

    def request_event(self, stream: Stream, body: bytes, more: bool) -> list | bytes:
        """The stream's HTTP_REQUEST: a record of its head's packed scope (``req.packed``,
        pack_scope) where it has one, else the event as a list."""
        conn = self.scope_of
        packed = stream.req.packed
        if packed is not None:
            record = request_record(stream.sid, packed, body, more)
            if conn.tls is not None:   # a fixarray of 14 (0x9e) becomes one of 15 (0x9f)
                return b"\x9f" + record[1:] + conn._packed_tls
            return record
        req = conn.req_scope(stream.req)
        ev = [HTTP_REQUEST, stream.sid, req[0], req[1], req[2], req[3], req[4], req[5],
              req[6], req[7], req[8], req[9], body, more]
        if conn.tls is not None:   # the ASGI tls extension (docs/protocol.md)
            ev.append(conn.tls)
        return ev

    # --- the server's side: sweep, drain, access, status ---------------------------------

    def close_if_idle(self, now: float, timeout: float) -> None:
        self.h2.tick(now)

    def start_drain(self) -> None:
        self.h2.start_drain()

    def close_after_response(self) -> bool:
        """Shed the connection (a busy front-end passes it to another: balance.py) the
        HTTP/2 way: the graceful GOAWAY of a drain (last stream id: the highest seen), the
        streams in flight finish, then the close; the client's next connection goes where
        the kernel now sends new ones.  False, nothing done: no stream in flight (idle), a
        WebSocket open on it (a drain would close it 1012), or already closing."""
        h2 = self.h2
        if h2.closed or h2.draining or not h2.exchanges or \
                any(ex.ws is not None for ex in h2.exchanges.values()):
            return False
        h2.start_drain()
        return True

    def stop_now(self) -> None:
        self.h2.stop_now()

    def flush(self) -> None:
        self.io.flush()

    @property
    def open_streams(self) -> int:
        return len(self.h2.exchanges)

    def log_access(self, stream: Stream) -> None:
        # the HTTP/1.1 connection it began as writes the line (its client, scheme and
        # --access-log-format; the protocol field shows HTTP/2.0)
        self.scope_of.log_access(stream)
