"""One WebSocket server connection as a state machine, without I/O.

    bytes in (``receive_data``)                    -> message chunks and the client's close,
                                                      to the stream
    the app's answers in (``accept``, ``send_message``, ``close``, ``deny_*``, ``refuse``)
                                                   -> bytes out (``io.write``)

Framing, the handshake's checks, permessage-deflate, ping answers and the close handshake are
the ``websockets`` package's sans-I/O ``ServerProtocol``.  This module adds what a server
decides around it: the phases of the upgrade, the HTTP answer when it is refused, the bytes a
client sends before the 101, the keepalive ping, the close deadlines and the half close.  It
reads no clock (the time comes from ``io.now`` and ``tick``), touches no socket, runs no loop:

    io       write(bytes), flush() (what is written, to the socket now), pause_reading(),
             resume_reading(), close() (once written), linger() (half-close once written,
             keep reading), can_linger(), abort(), now()
    stream   on_body(data, more) -- a chunk of a client message (str or bytes)
             client_gone(code, reason) -- the client closed, or the socket is gone (once)
             flush_owed() -- the socket takes bytes again

Phases
------
    CONNECTING  the upgrade request is with the app (bytes the client sends meanwhile wait,
                up to PRE_ACCEPT_BUFFER, then reading pauses)
    OPEN        accepted: 101 sent, frames flow both ways
    DENIAL      the app answers the upgrade with an HTTP response instead (ASGI's
                websocket.http.response), written as it comes, then the connection closes
    DONE        answered otherwise (a refusal, 403, 5xx), or closed

Deadlines (``tick(now)``, about once a second)
-----------------------------------------------
    state                  deadline                              then
    ---------------------  ------------------------------------  ------------------------------
    closing (our close     ping_timeout since the close frame    abort (the peer never
    frame sent, or half    or the half close                     answered or closed)
    closed)
    open, not reading      none: time we did not read is not     --
    (backpressure)         the peer's
    open, quiet            ping_interval since the last read     a ping
    a ping unanswered      ping_timeout since the ping           close 1011 and abort
"""
from __future__ import annotations

import codecs
import logging
import os
from http import HTTPStatus

from websockets.exceptions import InvalidState
from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from . import h1, h1_response, ws_frames
from .ws_frames import apply_mask, plain_message

log = logging.getLogger("sidecar.websocket")
# websockets logs "connection open/closed" at INFO for every connection: keep that quiet.
_proto_log = logging.getLogger("sidecar.websocket.protocol")
_proto_log.setLevel(logging.WARNING)

__all__ = ["WSConnection", "CONNECTING", "OPEN", "DENIAL", "DONE", "PRE_ACCEPT_BUFFER"]

_TEXT, _BINARY, _CONT, _PONG, _CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG,
                                        Opcode.CLOSE)
_OPEN = State.OPEN
_utf8 = codecs.getincrementaldecoder("utf-8")

CONNECTING, OPEN, DENIAL, DONE = range(4)
PRE_ACCEPT_BUFFER = 64 * 1024  # client bytes held before the 101 (clients should send none)
# close codes of our own that explain why the connection ended (given to the app as such)
_TELLING_CODES = (CloseCode.MESSAGE_TOO_BIG, CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA)


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


def subprotocols(headers) -> list[str]:
    """The subprotocols a client offers (Sec-WebSocket-Protocol, all its lines)."""
    out = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return out


class WSConnection:
    """The WebSocket side of one client connection (see the module docstring)."""

    def __init__(self, io, req: h1.Request, *, head_fields, max_size: int | None,
                 deflate: bool, ping_interval: float | None, ping_timeout: float,
                 trailing: bytes = b""):
        self.io = io
        self.req = req
        self.head_fields = head_fields   # date_value, server_header
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.stream = None               # set by the handler before anything can reach it
        self.phase = CONNECTING
        self.status = 0                  # answered: 101, or the refusal's (the access line)
        self.sent = 0                    # bytes written, all of them
        self.closed = False
        self.read_paused = False
        self.write_blocked = False
        self.gone_told = False           # stream.client_gone was called
        self._eof_after = False          # the protocol ended its output: half close
        self.pre_accept: list[bytes] = [trailing] if trailing else []
        self.pre_accept_bytes = len(trailing)
        self.msg_text = False
        self.decoder = None
        self.send_frag = False           # an app message is being sent in fragments
        self.denial_chunked = False
        self.chosen: str | None = None
        self.rx_seen = False
        self.last_rx = io.now()
        self.ping_sent: float | None = None
        self.close_deadline: float | None = None
        self.request = None
        # the frame fast path (ws_frames): bytes of an unfinished frame, and how many bytes
        # of the frame being handed to websockets are still to come
        self.rx_buf = bytearray()
        self.rx_through = 0

        extensions = []
        if deflate:   # websockets' server defaults: 4 KiB windows keep zlib's memory small
            extensions.append(ServerPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12,
                compress_settings={"memLevel": 5}))
        self.proto = proto = _ServerProtocol(
            extensions=extensions, select_subprotocol=lambda _p, _offered: self.chosen,
            max_size=max_size, logger=_proto_log)
        self.max_frame = self._max_frame(proto)
        # the handshake: the library parses the head we already parsed, and checks it
        proto.receive_data(self._upgrade_head(req))
        evs = proto.events_received()
        if not evs or not self._upgrade_method(req):
            self.refuse(400)
            return
        self.request = evs[0]
        probe = ServerProtocol(logger=_proto_log).accept(self.request)
        if probe.status_code != 101:
            log.info("WebSocket handshake refused (%d): %s", probe.status_code,
                     (probe.body or b"").decode(errors="replace").strip())
            self._reject(probe.serialize())
            return
        if self.pre_accept_bytes > PRE_ACCEPT_BUFFER:
            self.pause_reading()

    def _upgrade_head(self, req: h1.Request) -> bytes:
        """The upgrade request as HTTP/1.1 bytes, for websockets' handshake checks."""
        head = [b"GET ", req.target, b" HTTP/1.1\r\n"]
        for name, value in req.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def _upgrade_method(self, req: h1.Request) -> bool:
        return req.method == b"GET"

    # --- the app's answers (called by the stream) ----------------------------------------

    def accept(self, subprotocol: str | None, headers) -> None:
        """websocket.accept: the 101, then the bytes the client sent early."""
        if self.phase != CONNECTING or self.closed:
            return
        self.chosen = subprotocol
        response = self.proto.accept(self.request)
        if response.status_code != 101:
            self._reject(response.serialize())
            return
        try:
            for name, value in headers:
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
        except Exception as exc:  # a header the library will not serialize
            log.error("bad websocket.accept headers: %s", exc)
        self._send_accept(response)
        self.phase = OPEN
        self._pump()
        if self.pre_accept:
            data = b"".join(self.pre_accept)
            self.pre_accept.clear()
            self.pre_accept_bytes = 0
            self._feed(data)

    def _send_accept(self, response) -> None:
        """The 101 (websockets' handshake response, with the app's headers)."""
        if self.head_fields.server_header and "Server" not in response.headers:
            response.headers["Server"] = "sidecar"
        self.proto.send_response(response)
        self.status = 101

    def send_message(self, data, more: bool) -> None:
        """A chunk of an app message (str: text, bytes: binary); ``more``: not its end."""
        proto = self.proto
        if proto.state is not _OPEN or self.closed:
            return
        payload = data.encode() if type(data) is str else data
        if not more and not self.send_frag and ws_frames.speedups and not proto.extensions:
            self._write(ws_frames.server_frame(payload, type(data) is str))  # as websockets
            return
        try:
            if self.send_frag:
                proto.send_continuation(payload, not more)
            elif type(data) is str:
                proto.send_text(payload, not more)
            else:
                proto.send_binary(payload, not more)
        except (InvalidState, WSProtocolError):
            pass
        self.send_frag = more
        self._pump()

    def close(self, code: int, reason: str) -> None:
        """Our close frame (an invalid code or reason from the app becomes 1011)."""
        proto = self.proto
        if self.phase != OPEN or proto.state is not _OPEN or self.closed:
            return
        try:
            proto.send_close(code, reason)
        except (WSProtocolError, ValueError, InvalidState) as exc:
            log.error("invalid WebSocket close (%r, %r): %s; closing with 1011", code, reason,
                      exc)
            proto.send_close(CloseCode.INTERNAL_ERROR, "")
        self.close_deadline = self.io.now() + self.ping_timeout
        self._pump()

    def deny_start(self, status: int, headers) -> None:
        """websocket.http.response.start; ValueError/TypeError for an invalid response."""
        if self.phase != CONNECTING or self.closed:
            return
        req = self.req
        head, chunked, _length, _keep = h1_response.response_head(
            status, headers, method=b"GET", http_version=req.http_version, keep_alive=False,
            date=self.head_fields.date_value, server=self.head_fields.server_header)
        self.phase = DENIAL
        self.status = status
        self.denial_chunked = chunked
        self._write(head)

    def deny_body(self, data: bytes, more: bool) -> None:
        if self.phase != DENIAL:
            return
        if data:
            self._write(h1_response.encode_chunk(data) if self.denial_chunked else data)
        if not more:
            if self.denial_chunked:
                self._write(h1_response.LAST_CHUNK)
            self.phase = DONE
            self._close_after_write()

    def refuse(self, status: int, extra_headers=()) -> None:
        """The server's own HTTP answer instead of the upgrade, then the close."""
        self._reject(h1_response.simple_response(
            status, HTTPStatus(status).phrase, keep_alive=False,
            date=self.head_fields.date_value, extra_headers=extra_headers))

    def abort(self, why: str) -> None:
        """A denial response that cannot be finished: the connection is cut."""
        log.warning("closing WebSocket connection of %s: %s", self.req.target.decode("latin-1"),
                    why)
        self.closed = True
        self.io.flush()
        self.io.abort()

    def writable(self) -> bool:
        """Whether bytes written now reach the socket (credit may be granted for them)."""
        return not self.write_blocked

    def pause_receiving(self) -> None:
        """The app is a window behind: stop reading the socket."""
        self.pause_reading()

    def resume_receiving(self) -> None:
        if self.phase == OPEN:
            self.resume_reading()

    # --- the client's side ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self.rx_seen = True
        phase = self.phase
        if phase == OPEN:
            self._feed(data)
        elif phase == CONNECTING:
            self.pre_accept.append(data)
            self.pre_accept_bytes += len(data)
            if self.pre_accept_bytes > PRE_ACCEPT_BUFFER:
                self.pause_reading()
        # DENIAL/DONE: the connection closes after the response; input is dropped

    def receive_eof(self) -> None:
        if self.phase == OPEN:
            if self.rx_buf:   # an unfinished frame: websockets tells how the stream broke
                data, self.rx_buf = bytes(self.rx_buf), bytearray()
                self.proto.receive_data(data)
            self.proto.receive_eof()
            self._pump()

    def connection_lost(self) -> None:
        """The socket is gone: the stream is told, with the code that says why."""
        self.closed = True
        proto = self.proto
        if proto.close_rcvd is not None:
            code, reason = proto.close_rcvd.code, proto.close_rcvd.reason
        elif proto.close_sent is not None and proto.close_sent.code in _TELLING_CODES:
            code, reason = proto.close_sent.code, proto.close_sent.reason
        else:
            code, reason = CloseCode.ABNORMAL_CLOSURE, ""
        self._tell_gone(code, reason)

    def write_blocked_now(self) -> None:
        self.write_blocked = True

    def write_unblocked(self) -> None:
        self.write_blocked = False
        if not self.closed and self.stream is not None:
            self.stream.flush_owed()

    def _tell_gone(self, code: int, reason: str) -> None:
        if not self.gone_told:
            self.gone_told = True
            if self.stream is not None:
                self.stream.client_gone(int(code), reason or "")

    def _feed(self, data: bytes) -> None:
        """Client bytes: whole plain messages are taken here (ws_frames.plain_frames), every
        other frame is handed to websockets whole, from its first byte."""
        proto = self.proto
        if not ws_frames.speedups or proto.extensions:
            return self._feed_proto(data)
        buf = self.rx_buf
        if buf:
            buf += data
            data = buf
        pos, end = 0, len(data)
        while pos < end:
            through = self.rx_through
            if through:   # the rest of a frame websockets is parsing
                n = min(through, end - pos)
                self.rx_through = through - n
                self._feed_proto(data[pos:pos + n])
                pos += n
                continue
            if proto.state is not _OPEN:   # closing: websockets discards or fails the rest
                self.rx_through = end - pos
                continue
            if proto.current_size is None:   # (no fragmented message in websockets' hands)
                messages, pos = ws_frames.plain_frames(data, pos, self.max_frame)
                for payload in messages:
                    if not self.gone_told:
                        self.stream.on_body(payload, False)
                if pos == end:
                    break
            # the frame at pos is not a whole plain message: not all here yet, websockets'
            # to parse, or TEXT that is not UTF-8
            head = ws_frames.header(data, pos, end)
            if head is None:
                break   # the rest of the header is still to come
            b0, b1, n, size = head
            if not (plain_message(b0, b1) and proto.current_size is None
                    and n <= self.max_frame):
                self.rx_through = size + n   # websockets decides (and fails, if it must)
                continue
            if end - pos < size + n:
                break   # the rest of the payload is still to come
            # whole and plain, yet not taken: TEXT that is not UTF-8, failed as websockets
            # fails it (and should plain_frames ever stop at another, it is taken here)
            start = pos + size
            pos = start + n
            payload = apply_mask(data[start:pos], data[start - 4:start])
            if b0 & 0x0F == ws_frames.TEXT:
                try:
                    payload = payload.decode()
                except UnicodeDecodeError as exc:
                    proto.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                    self._pump()
                    continue
            if not self.gone_told:
                self.stream.on_body(payload, False)
        if pos == 0 and data is buf:
            return   # all of it is still an unfinished frame
        self.rx_buf = bytearray(data[pos:]) if pos < end else bytearray()

    @staticmethod
    def _max_frame(proto) -> int:
        """The largest first frame of a message websockets would take (its own rule)."""
        limit = getattr(proto, "max_message_size", getattr(proto, "max_size", None))
        fragment = getattr(proto, "max_fragment_size", None)
        if fragment is not None:
            limit = fragment if limit is None else min(limit, fragment)
        return (1 << 62) if limit is None else limit

    def _feed_proto(self, data) -> None:
        proto = self.proto
        proto.receive_data(data)
        for frame in proto.events_received():
            op = frame.opcode
            if op is _TEXT or op is _BINARY or op is _CONT:
                if not self._on_data_frame(frame):
                    break   # failed (bad UTF-8): frames parsed after it are not delivered
            elif op is _PONG:
                self.ping_sent = None
        self._pump()
        if proto.close_rcvd is not None:
            self._tell_gone(proto.close_rcvd.code, proto.close_rcvd.reason)

    def _on_data_frame(self, frame) -> bool:
        """A data frame websockets parsed, to the stream; False if it failed the connection."""
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
                return False
        elif type(data) is not bytes:
            data = bytes(data)
        if not data and not frame.fin:
            return True
        if not self.gone_told:
            self.stream.on_body(data, not frame.fin)
        return True

    # --- writing -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move what the protocol wants to send to the socket.  b"" means end of output: half
        close (closing outright could reset the connection while the client still sends, and
        lose our close frame), go on reading -- the protocol discards it -- until the client
        closes, for at most ping_timeout (``tick`` enforces it)."""
        for data in self.proto.data_to_send():
            if data:
                self._write(data)
            elif not self._eof_after:
                self._eof_after = True
                if self.close_deadline is None:
                    self.close_deadline = self.io.now() + self.ping_timeout
                if self.closed:
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

    def _close_after_write(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.close()

    def _reject(self, response: bytes) -> None:
        self.phase = DONE
        self.status = int(response[9:12])   # b"HTTP/1.1 403 ..."
        self._write(response)
        self._close_after_write()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.io.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.io.resume_reading()

    # --- deadlines, drain ----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Keepalive and the close deadline (the table in the module docstring)."""
        if self.closed or self.phase != OPEN:
            return
        if self.close_deadline is not None or self._eof_after:
            if now >= self.close_deadline:
                self.abort("no answer to our close frame")
            return
        if self.rx_seen or self.read_paused:
            self.rx_seen = False
            self.last_rx = now
            self.ping_sent = None
            return
        if self.ping_sent is not None:
            if now - self.ping_sent >= self.ping_timeout:
                log.info("WebSocket peer did not answer a ping in %.0fs: closing",
                         self.ping_timeout)
                self.proto.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._pump()
                self.abort("keepalive ping timeout")
            return
        interval = self.ping_interval
        if interval and now - self.last_rx >= interval and self.proto.state is _OPEN:
            self.proto.send_ping(os.urandom(4))
            self.ping_sent = now
            self._pump()

    def start_drain(self) -> None:
        """Shutdown/reload: an open WebSocket is closed 1012 (service restart); one still
        waiting for its app is answered 503."""
        if self.phase == OPEN:
            self.close(CloseCode.SERVICE_RESTART, "server shutting down")
        elif self.phase == CONNECTING and not self.closed:
            self.refuse(503)

    def stop_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.flush()
            self.io.abort()
