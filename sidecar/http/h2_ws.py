"""A WebSocket over one HTTP/2 stream (RFC 8441, extended CONNECT), without I/O.

    HEADERS :method CONNECT, :protocol websocket  -> H2Connection -> an H2Exchange
    the exchange's DATA, both ways                <-> H2WSConnection <-> the WebSocket stream

The server says it takes extended CONNECT in its SETTINGS (SETTINGS_ENABLE_CONNECT_PROTOCOL =
1, RFC 8441 section 3); a client then opens a WebSocket as a stream whose request is a CONNECT
with ``:protocol websocket`` (and ``:scheme``, ``:path``, ``:authority``; no
``Sec-WebSocket-Key``).  The app's accept is a 200 HEADERS without END_STREAM, and from then on
the stream's DATA frames carry the WebSocket's frames exactly as a TCP connection would; the
close handshake ends with END_STREAM both ways (a half close each), an abort with RST_STREAM.

``H2WSConnection`` is the HTTP/1.1 ``WSConnection`` (http/ws_connection.py: phases, framing,
keepalive, close deadlines -- one definition of every WebSocket rule) with the HTTP/2 stream
as its byte carrier: its ``io`` writes DATA through the connection, so flow control is the
stream's (bytes wait for the client's window; credit is granted to the worker only for bytes
the window took: ``write_blocked``), and what a client sends is acknowledged (WINDOW_UPDATE)
only while the stream takes it: past one window not yet given to the app, reading "pauses",
which over HTTP/2 means no WINDOW_UPDATE until the app catches up.  What differs from
HTTP/1.1 is only the answers that are HTTP: the handshake's accept (200 with the negotiated
subprotocol and extensions, not 101), a refusal and the app's denial response (HEADERS and
DATA on the stream, never on the connection).

To the H2Connection it is the exchange's ``stream`` (``on_body``, ``client_gone``,
``flush_owed``, ``finished``); to the stream layer a ``WSConnection`` like any other.
"""
from __future__ import annotations

import base64
import os

from h2.errors import ErrorCodes

from . import h1
from .ws_connection import CONNECTING, DENIAL, DONE, WSConnection

__all__ = ["H2WSConnection"]

# handshake fields of HTTP/1.1 only (RFC 8441 section 5: no key, no accept, no upgrade)
_H1_ONLY = frozenset(("upgrade", "connection", "sec-websocket-accept", "date", "server"))


class _StreamIO:
    """``WSConnection``'s io when its bytes are the DATA of one HTTP/2 stream."""

    __slots__ = ("conn", "ex", "peer")

    def __init__(self, conn, ex):
        self.conn = conn
        self.ex = ex
        self.peer = conn.io.peer

    def write(self, data: bytes) -> None:
        self.conn.send_data(self.ex, data)

    def flush(self) -> None:
        pass   # the connection hands h2's frames to the socket as it makes them

    def pause_reading(self) -> None:
        pass   # nothing is acknowledged while paused (H2WSConnection.on_body)

    def resume_reading(self) -> None:
        self.conn.body_read(self.ex, self.ex.unacked)

    def close(self) -> None:
        self.conn.send_data(self.ex, b"", True)   # END_STREAM once written

    linger = close   # END_STREAM is a half close: the client's DATA is still read

    def can_linger(self) -> bool:
        return True

    def abort(self) -> None:
        self.conn.reset(self.ex, ErrorCodes.CANCEL, "WebSocket aborted")

    def now(self) -> float:
        return self.conn.io.now()


class H2WSConnection(WSConnection):
    """One WebSocket on one HTTP/2 stream (see the module docstring).  ``on_end(ws)`` is
    called once when the stream is over (the access line)."""

    def __init__(self, conn, ex, *, on_end=None, **kw):
        self.conn = conn
        self.ex = ex
        self.on_end = on_end
        self.ended = False
        ex.stream = self
        ex.ws = self
        WSConnection.__init__(self, _StreamIO(conn, ex), ex.req, **kw)

    # --- the handshake: the HTTP/2 request given to websockets as HTTP/1.1 ---------------

    def _upgrade_head(self, req: h1.Request) -> bytes:
        """RFC 8441 has no Sec-WebSocket-Key: one is made up so that websockets' handshake
        checks (version, extensions, subprotocols) run as they do for HTTP/1.1; its answer
        (the accept hash) is not sent."""
        key = base64.b64encode(os.urandom(16))
        head = [b"GET ", req.target, b" HTTP/1.1\r\nupgrade: websocket\r\n"
                b"connection: upgrade\r\nsec-websocket-key: ", key, b"\r\n"]
        for name, value in req.headers:
            if name not in (b"sec-websocket-key", b"upgrade", b"connection"):
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def _upgrade_method(self, req: h1.Request) -> bool:
        return req.method == b"CONNECT" and req.upgrade == b"websocket"

    def _send_accept(self, response) -> None:
        """The accept is a 200 HEADERS that leaves the stream open (RFC 8441 section 5)."""
        self.proto.send_response(response)
        self.proto.data_to_send()   # the HTTP/1.1 101: not ours to send
        fields = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                  for name, value in response.headers.raw_items()
                  if name.lower() not in _H1_ONLY]
        self.conn.start_response(self.ex, 200, fields)
        self.status = 200

    # --- HTTP answers on the stream instead of the WebSocket ------------------------------

    def refuse(self, status: int, extra_headers=()) -> None:
        self.phase = DONE
        if self.ex.started or self.closed:
            return
        self.status = status
        self.conn.error_response(self.ex, status, extra_headers)

    def _reject(self, response: bytes) -> None:
        self.refuse(int(response[9:12]))   # websockets' HTTP/1.1 answer: its status

    def deny_start(self, status: int, headers) -> None:
        """websocket.http.response.start: the app's response on the stream (ValueError or
        TypeError for an invalid one, as HTTP/1.1's)."""
        if self.phase != CONNECTING or self.closed:
            return
        self.conn.start_response(self.ex, status, headers)
        self.phase = DENIAL
        self.status = status

    def deny_body(self, data: bytes, more: bool) -> None:
        if self.phase != DENIAL:
            return
        self.sent += len(data)
        self.conn.send_data(self.ex, data, not more)
        if not more:
            self.phase = DONE

    @property
    def write_blocked(self) -> bool:
        """Bytes wait for the client's window, or the socket is backed up."""
        return bool(self.ex.out) or self.conn.write_blocked_since is not None

    @write_blocked.setter
    def write_blocked(self, value: bool) -> None:
        pass   # (WSConnection sets it from the socket's pressure; here it is read live)

    # --- the H2Connection's side: this is the exchange's ``stream`` -----------------------

    def on_body(self, data: bytes, more: bool) -> None:
        """DATA on the stream: WebSocket bytes; acknowledged now unless reading is paused
        (the app is a window behind), then when it resumes."""
        if data:
            self.receive_data(data)
            if not self.read_paused and not self.closed:
                self.conn.body_read(self.ex, self.ex.unacked)
        if not more:
            self.receive_eof()   # END_STREAM: the client's half close

    def client_gone(self) -> None:
        self.connection_lost()

    def flush_owed(self) -> None:
        self.write_unblocked()

    def finished(self) -> None:
        self.connection_lost()   # our END_STREAM went out: the WebSocket is over

    def connection_lost(self) -> None:
        if self.ended:
            return
        self.ended = True
        WSConnection.connection_lost(self)
        if self.on_end is not None:
            self.on_end(self)
