"""WebSockets over HTTP/2 (RFC 8441) from the client's side, for the tests: python-hyper's h2
as the HTTP/2 client (tests/e2e/h2client.py, over a real socket) carrying the frames of
websockets' own sans-I/O ``ClientProtocol`` on an extended CONNECT stream."""
from __future__ import annotations

import h2.events
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.e2e.h2client import H2Client


def connect_headers(path: str, subprotocols=(), extra=()) -> list:
    fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
              (":authority", "sidecar"), (":path", path), ("sec-websocket-version", "13")]
    if subprotocols:
        fields.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    return fields + list(extra)


class H2WebSocket:
    """One WebSocket on a stream of ``client`` (an H2Client).  ``status`` and ``headers``: the
    server's answer to the CONNECT; ``messages`` (str or bytes) as they come whole."""

    def __init__(self, client: H2Client, path: str, subprotocols=(), extra=(),
                 timeout: float = 10.0, stalled: bool = False):
        self.client = client
        self.sid = client.request(connect_headers(path, subprotocols, extra), open_body=True)
        if stalled:   # the client never opens this stream's window
            client.stalled.add(self.sid)
        self.seen = 0                  # client.bodies[sid] bytes given to the protocol
        self.eof = False
        self.half_closed = False
        head = client.until(lambda: self._head(), timeout, f"answer on stream {self.sid}")
        self.headers = dict(head.headers)
        self.status = int(self.headers[":status"])
        self.proto = ClientProtocol(parse_uri("ws://sidecar" + path), state=State.OPEN,
                                    max_size=None)
        self.messages: list = []
        self._parts: list = []

    def _head(self):
        for e in self.client.events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == self.sid:
                return e
        return None

    def _out(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.client.send_body(self.sid, data, end=False)
            else:   # the protocol's EOF: our half close
                if not self.half_closed:
                    self.half_closed = True
                    self.client.conn.end_stream(self.sid)
                    self.client.flush()

    def _in(self) -> None:
        body = self.client.bodies.get(self.sid, b"")
        if len(body) > self.seen:
            self.proto.receive_data(bytes(body[self.seen:]))
            self.seen = len(body)
        if self.sid in self.client.ended and not self.eof:
            self.eof = True   # the server's END_STREAM: its half close
            self.proto.receive_eof()
        for ev in self.proto.events_received():
            if isinstance(ev, Frame) and ev.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._parts.append(ev)
                if ev.fin:
                    first = self._parts[0]
                    data = b"".join(bytes(f.data) for f in self._parts)
                    self.messages.append(data.decode() if first.opcode is Opcode.TEXT else data)
                    self._parts = []
        self._out()

    def send(self, data, fragments: int = 1) -> None:
        """A message (str: text), in ``fragments`` frames."""
        payload = data.encode() if isinstance(data, str) else data
        step = -(-len(payload) // fragments) if payload else 0
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for i, piece in enumerate(pieces):
            fin = i == len(pieces) - 1
            if i:
                self.proto.send_continuation(piece, fin)
            elif isinstance(data, str):
                self.proto.send_text(piece, fin)
            else:
                self.proto.send_binary(piece, fin)
            self._out()

    def recv(self, timeout: float = 10.0):
        def got():
            self._in()
            return bool(self.messages)
        self.client.until(got, timeout, f"a message on stream {self.sid}")
        return self.messages.pop(0)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.proto.send_close(code, reason)
        self._out()

    def wait_closed(self, timeout: float = 10.0):
        """Until the server's close frame came and its END_STREAM (or a reset): the code."""
        def done():
            self._in()
            return self.proto.state is State.CLOSED or self.sid in self.client.ended \
                or self.reset() is not None
        self.client.until(done, timeout, f"the close of stream {self.sid}")
        self._in()
        return self.proto.close_rcvd.code if self.proto.close_rcvd else None

    def reset(self):
        for e in self.client.events:
            if isinstance(e, h2.events.StreamReset) and e.stream_id == self.sid:
                return e
        return None
