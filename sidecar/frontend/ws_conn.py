"""One client connection speaking WebSocket: the asyncio adapter of its state machine.

    socket -> Transport -> WSConnection (sidecar/http/ws_connection.py: framing, handshake,
           phases, keepalive) -> WebSocketStream (sidecar/frontend/ws_stream.py: credit, the
           error policy) -> pool -> WorkerLink -> ring

HTTPConnection calls ``websocket_handler(conn, req)`` (installed on FrontEnd) for a request with
``Upgrade: websocket``: the socket is taken over from HTTP, with its Transport adapter and the
scope of the request (client, scheme, trusted proxy headers).  This module only joins the
parts: it is the socket's asyncio protocol, and writes the connection's access line when it
ends (as nginx logs a WebSocket: the status answered, every byte sent, the whole duration).
"""
from __future__ import annotations

import asyncio

from sidecar.frontend.ws_stream import WebSocketStream
from sidecar.http import h1
from sidecar.http.ws_connection import CONNECTING, WSConnection


def websocket_handler(conn, req: h1.Request) -> None:
    """FrontEnd.websocket_handler: take the connection over from HTTP (H1Connection hands
    over only an upgrade with no request ahead of it on the connection)."""
    WebSocket(conn, req)


class WebSocket(asyncio.Protocol):
    """The asyncio protocol of a socket taken over by a WebSocket."""

    def __init__(self, conn, req: h1.Request):
        self.server = server = conn.server
        config = server.config
        self.window = config.window
        self.client = conn.client
        self.io = io = conn.io   # the socket's Transport adapter (frontend/transport.py)
        scope = conn.req_scope(req)
        conn.flush()  # responses to earlier requests on this connection go first
        server.connections.discard(conn)
        server.connections.add(self)
        self.ws = ws = WSConnection(
            io, req, head_fields=server, max_size=config.ws_max_size,
            deflate=config.ws_per_message_deflate, ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout, trailing=conn.h1.parser.take_trailing())
        self.data_received = ws.receive_data
        io.transport.set_protocol(self)
        self.stream = WebSocketStream(self, ws, server.next_sid(), scope, conn.tls)
        if ws.phase == CONNECTING:
            server.pool.dispatcher.dispatch(self.stream, b"", False)

    @property
    def closed(self) -> bool:
        return self.ws.closed

    # --- asyncio.Protocol ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:   # (the instance's is ws.receive_data)
        self.ws.receive_data(data)

    def eof_received(self):
        self.ws.receive_eof()
        return False

    def connection_lost(self, exc) -> None:
        server = self.server
        server.connections.discard(self)
        ws = self.ws
        ws.connection_lost()
        if server.access is not None:
            # 499 (nginx's "client closed request"): gone before anything was answered
            stream = self.stream
            server.access.write_websocket(self.client, ws.req, ws.status or 499, ws.sent,
                                          stream.t0, stream.link, stream.sid)

    def pause_writing(self) -> None:
        self.ws.write_blocked_now()

    def resume_writing(self) -> None:
        self.ws.write_unblocked()

    # --- the server's side: sweep, drain -------------------------------------------------

    def close_if_idle(self, now: float, timeout: float) -> None:
        self.ws.tick(now)

    def start_drain(self) -> None:
        self.ws.start_drain()

    def stop_now(self) -> None:
        self.ws.stop_now()

    def flush(self) -> None:
        self.io.flush()
