"""One HTTP/2 stream of an ``H2Connection`` (sidecar/http/h2_connection.py): its state, its
port of the stream interface, and its request head in the form the HTTP/1.1 code has it.

An ``H2Exchange`` is its own port of the stream interface (``sidecar/frontend/stream.py``):
the stream layer calls ``proto.start_response(ex, ...)`` with ``proto is ex``, and
``ex.closed`` is true once the client reset the stream or the connection is gone -- one
stream's end is never another's.  Every method of that interface hands over to the
connection, which owns the h2 state machine; ``pump`` moves the stream's waiting response
bytes into it as the client's windows allow.
"""
from __future__ import annotations

import logging
from collections import deque

import h2.exceptions
from h2.errors import ErrorCodes

from . import h1, h2_fast
from .fields import check_fields
from .h1_head import decode_path

__all__ = ["H2Exchange", "request_head", "response_fields"]

log = logging.getLogger("sidecar.frontend")

# Response fields HTTP/2 forbids (RFC 9113 section 8.2.2): connection-specific ones.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                         b"transfer-encoding", b"upgrade"))
_SERVER_FIELDS = frozenset((b"date", b"server"))


class H2Exchange:
    """One HTTP/2 stream, and the stream layer's port to it (see the module docstring)."""

    __slots__ = ("conn", "sid", "req", "stream", "closed", "started", "complete", "ended",
                 "head_only",
                 "status", "sent_bytes", "out", "out_end", "trailers", "want_trailers",
                 "blocked_since", "body_done", "body_bytes", "unacked", "last_read", "gone", "ws")

    def __init__(self, conn, sid: int, req: h1.Request, now: float):
        self.conn = conn
        self.sid = sid                # the HTTP/2 stream id
        self.req = req
        self.stream = None            # the stream layer's Stream
        self.closed = False           # reset by the client, or the connection is gone
        self.gone = False             # finished with: a late event is dropped
        self.started = False
        self.complete = False         # the app's response is all here (maybe not yet sent)
        self.ended = False            # END_STREAM sent, or the stream reset
        self.head_only = req.method == b"HEAD"
        self.status = 0
        self.sent_bytes = 0
        self.out: deque[bytes] = deque()   # response bytes the client's window did not take
        self.out_end = False          # the last of them ends the body
        self.trailers: list | None = None  # trailer fields, sent after the last byte
        self.want_trailers = False    # the app announced trailers (RESPONSE_START)
        self.blocked_since: float | None = None  # out held by a zero window since
        self.body_done = False        # the client's END_STREAM came
        self.body_bytes = 0
        self.unacked = 0              # received flow-controlled bytes not yet acknowledged
        self.last_read = now          # the last DATA (or the HEADERS): --timeout-body/request
        self.ws = None                # an H2WSConnection: this stream is a WebSocket (RFC 8441)

    # --- the stream interface: the stream layer calls proto.X(ex, ...) with proto is ex ---

    def start_response(self, ex, status: int, headers, trailers: bool = False) -> bool:
        return self.conn.start_response(self, status, headers, trailers)

    def send_data(self, ex, data: bytes, end: bool = False) -> None:
        self.conn.send_data(self, data, end)

    def respond(self, ex, status: int, headers, body: bytes) -> None:
        self.conn.respond(self, status, headers, body)

    def send_trailers(self, ex, headers) -> None:
        self.conn.send_trailers(self, headers)

    def end_response(self, ex) -> None:
        self.conn.send_data(self, b"", True)

    def end_open_response(self, ex) -> None:
        self.conn.send_data(self, b"", True)

    def error_response(self, ex, status: int, extra_headers=()) -> None:
        self.conn.error_response(self, status, extra_headers)

    def abort_response(self, ex, why: str) -> None:
        self.conn.reset(self, ErrorCodes.INTERNAL_ERROR, why)

    def writable(self, ex) -> bool:
        return not self.out and self.conn.write_blocked_since is None

    def send_continue(self, ex) -> None:
        pass   # HTTP/2 clients do not wait for 100 (curl sends no Expect over h2)

    def pause_body(self, ex) -> None:
        pass   # the stream's window stops the client: nothing is acknowledged until read

    def resume_body(self, ex) -> None:
        pass

    def body_read(self, ex, n: int) -> None:
        self.conn.body_read(self, n)

    # --- sending: the connection calls pump when bytes or window came -------------------

    def pump(self) -> None:
        """Move the waiting response bytes (``out``) into h2 as far as the client's windows
        allow: the end of the stream (or the trailers) after the last; ``blocked_since`` set
        while a window holds them back, and the stream layer told when they all left."""
        ex, owner = self, self.conn
        conn, out, sid = owner.h2, self.out, self.sid
        try:
            while out:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    if ex.blocked_since is None:
                        ex.blocked_since = owner.io.now()
                    return
                data = out[0]
                if len(data) > room:
                    out[0] = data[room:]
                    data = data[:room]
                    last = False
                else:
                    out.popleft()
                    last = not out
                end = last and ex.out_end and not ex.want_trailers
                frame = h2_fast.response_data(conn, sid, data, end)
                if frame is None:
                    conn.send_data(sid, data, end_stream=end)
                else:   # the common case, past h2's frame objects (h2_fast.py)
                    conn._data_to_send += frame
                if last and ex.out_end and not ex.want_trailers:
                    owner._ended(ex)
                    return
            ex.blocked_since = None
            if ex.out_end:
                if ex.want_trailers:
                    if ex.trailers is None:
                        return   # the app's trailers are still to come
                    conn.send_headers(sid, ex.trailers, end_stream=True)
                else:
                    frame = h2_fast.response_data(conn, sid, b"", True)
                    if frame is None:
                        conn.end_stream(sid)
                    else:
                        conn._data_to_send += frame
                owner._ended(ex)
            elif ex.stream is not None:
                ex.stream.flush_owed()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            # the client closed the stream under us (its reset's event is on its way)
            log.debug("HTTP/2 stream %d: %s", sid, exc)
            out.clear()
            owner._stream_gone(ex)


def request_head(headers) -> h1.Request | None:
    """The request head of an HTTP/2 stream as the HTTP/1.1 code has it (h1.Request), with
    ``http_version`` "2"; None if it is malformed (h2 checked the pseudo-fields already)."""
    method = path = authority = protocol = None
    fields = []
    cookies = []
    host = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":   # extended CONNECT (RFC 8441): its upgrade
                protocol = value.lower()
            continue
        if name == b"cookie":   # RFC 9113 8.2.3: one field again for an HTTP/1.1 app
            cookies.append(value)
            continue
        if name == b"host":
            host = True
        fields.append((name, value))
    if method is None or not path or (path[:1] != b"/" and path != b"*"):
        return None
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    if authority is not None and not host:
        fields.insert(0, (b"host", authority))
    raw_path, _, query = path.partition(b"?")
    length = None
    for name, value in fields:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return h1.Request(method, path, decode_path(raw_path), raw_path, query, "2", fields,
                      True, False, protocol, length, False)


def response_fields(status: int, headers, hf) -> tuple[list, bytes | None]:
    """A response head's HTTP/2 fields (the app's, checked, without those HTTP/2 forbids, and
    the server's: ``hf`` has server_header, date_value, extra_fields), and its content-length
    value if it has one.  ValueError for a field that cannot be sent."""
    check_fields(headers)
    fields = [(b":status", b"%d" % status)]
    length = None
    for name, value in headers:
        name = name.lower()
        if name in _HOP_BY_HOP:
            continue
        if name in _SERVER_FIELDS and (hf.date_value if name == b"date"
                                       else hf.server_header) is not None:
            continue   # the server's own, unless it sends none (--no-date-header...)
        if name == b"content-length":
            length = value
        fields.append((name, value.strip(b" \t")))
    if hf.server_header is not None:
        fields.append((b"server", hf.server_header))
    if hf.date_value is not None:
        fields.append((b"date", hf.date_value))
    fields.extend(hf.extra_fields)
    return fields, length
