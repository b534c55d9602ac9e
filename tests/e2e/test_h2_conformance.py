"""HTTP/2 conformance: the cases h2spec checks (RFC 9113 and RFC 7541), as one table.

h2spec itself cannot be installed here, so each of its cases is written out: raw frames over
a real socket to a real running sidecar, and the answer the RFC requires --

    conn(CODE)      a connection error: GOAWAY with CODE (then the close)
    stream(CODE)    a stream error: RST_STREAM with CODE on that stream, and the connection
                    goes on (a new request on it is served)
    escalated(CODE) a stream error h2 makes a connection error, which RFC 9113 5.4 allows:
                    GOAWAY with CODE
    ignored         the frame is ignored: the connection answers a PING afterwards
    ping            a PING ACK with the same payload
    settings_ack    a SETTINGS ACK

Each case's id starts with the section of the RFC that requires the answer.
"""
from __future__ import annotations

import socket
import struct
import time

import pytest
from h2.errors import ErrorCodes as E
from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

from tests.server import Sidecar

APP = "tests.e2e.apps:app"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, "--h2-max-concurrent-streams", "8", workers=1) as s:
        yield s


# --- a raw HTTP/2 client: frames in, frames out, nothing checked -------------------------

def raw(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + \
        struct.pack(">I", sid) + payload


class Raw:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.enc = Encoder()
        self.dec = Decoder()
        self.buf = b""
        self.frames: list = []
        self.closed = False
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        # the server's SETTINGS (ACKed) and its ACK of ours: the connection is established
        self.until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        self.until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def block(self, fields) -> bytes:
        return self.enc.encode(fields)

    def headers(self, sid: int, fields, end_stream: bool = True, end_headers: bool = True
                ) -> bytes:
        f = HeadersFrame(sid, data=self.block(fields))
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f.serialize()

    def _read_frame(self, deadline: float):
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    frame, _ = Frame.parse_frame_header(memoryview(self.buf[:9]))
                    frame.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    if isinstance(frame, HeadersFrame) and "END_HEADERS" in frame.flags:
                        frame.fields = self.dec.decode(frame.data, raw=True)
                    return frame
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer in time; frames so far: {self.frames}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
            self.buf += data

    def until(self, predicate, timeout: float = 15.0):
        """The first frame from the server for which predicate is true (None: closed)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._read_frame(deadline)
            if frame is None:
                return None
            self.frames.append(frame)
            if predicate(frame):
                return frame

    def close(self) -> None:
        self.sock.close()


def get(path: str = "/pid") -> list:
    return [(":method", "GET"), (":scheme", "http"), (":authority", "sidecar"),
            (":path", path)]


def connect(protocol: str = "websocket") -> list:
    """An extended CONNECT (RFC 8441 section 4)."""
    return [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
            (":authority", "sidecar"), (":path", "/ws"), ("sec-websocket-version", "13")]


def post(path: str = "/echo") -> list:
    return [(":method", "POST"), (":scheme", "http"), (":authority", "sidecar"),
            (":path", path)]


# --- the cases: each builds its bytes (given the client, for its HPACK state) -------------
# A stream the server holds open, half-closed (remote): a GET with END_STREAM to /sleep.

SLOW = "/sleep?s=4"


def settings(*pairs) -> bytes:
    return raw(0x4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(sid: int, inc: int) -> bytes:
    return raw(0x8, 0, sid, struct.pack(">I", inc))


def conn(code):
    return ("conn", code)


def stream(code, sid=1):
    return ("stream", code, sid)


def escalated(code):
    """A stream error that h2 makes a connection error (GOAWAY with the stream error's code),
    as RFC 9113 section 5.4 allows ("An endpoint MAY choose to treat a stream error as a
    connection error"): h2 raises ProtocolError from its frame handling for these (priority
    on itself, WINDOW_UPDATE of 0 or a PRIORITY of the wrong size on a stream, trailers
    without END_STREAM, a body that disagrees with content-length), and a ProtocolError
    ends its connection.  Asserted as it is, so that a change either way shows.  (Malformed
    request fields are stream errors: sidecar checks them itself, sidecar/http/h2_checks.py.)"""
    return ("conn", code)


IGNORED = ("ignored",)


def huffman_field(value: bytes) -> bytes:
    """A literal field x-h (not indexed) whose value is the given Huffman-coded bytes."""
    return b"\x00\x03x-h" + bytes((0x80 | len(value),)) + value

CASES = [
    # RFC 9113 section 4: frames
    ("9113-4.1 unknown frame type is ignored", lambda c: raw(0xEE, 0, 0, b"hello"), IGNORED),
    ("9113-4.1 unknown flags are ignored",
     lambda c: raw(0x6, 0x16, 0, b"12345678"), ("ping",)),
    ("9113-4.1 reserved bit of the stream id is ignored",
     lambda c: raw(0x1, 0x5, 1 | 1 << 31, c.block(get())), ("response", 1)),
    ("9113-4.2 DATA over SETTINGS_MAX_FRAME_SIZE -> FRAME_SIZE_ERROR",
     lambda c: c.headers(1, post(), end_stream=False) + raw(0x0, 0, 1, b"x" * (MAX_FRAME + 1)),
     conn(E.FRAME_SIZE_ERROR)),
    ("9113-4.2 HEADERS over SETTINGS_MAX_FRAME_SIZE -> FRAME_SIZE_ERROR",
     lambda c: raw(0x1, 0x5, 1, c.enc.encode(get() + [("x-big", "v" * MAX_FRAME)],
                                               huffman=False)),
     conn(E.FRAME_SIZE_ERROR)),
    ("9113-4.3 invalid header block fragment -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, b"\x00\x00\x00\x00\x00"), conn(E.COMPRESSION_ERROR)),
    ("9113-4.3 PRIORITY between HEADERS and CONTINUATION -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(), end_headers=False)
     + PriorityFrame(1, depends_on=0, stream_weight=16).serialize()
     + raw(0x9, 0x4, 1, b""), conn(E.PROTOCOL_ERROR)),
    # 5.1: stream states
    ("9113-5.1 DATA on an idle stream -> PROTOCOL_ERROR",
     lambda c: raw(0x0, 0x1, 1, b"x"), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1 RST_STREAM on an idle stream -> PROTOCOL_ERROR",
     lambda c: raw(0x3, 0, 1, struct.pack(">I", 8)), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1 WINDOW_UPDATE on an idle stream -> PROTOCOL_ERROR",
     lambda c: window_update(1, 100), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1 CONTINUATION on an idle stream -> PROTOCOL_ERROR",
     lambda c: raw(0x9, 0x4, 1, c.block(get())), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1 DATA on a half-closed (remote) stream -> STREAM_CLOSED",
     lambda c: c.headers(1, get(SLOW)) + raw(0x0, 0x1, 1, b"x"), stream(E.STREAM_CLOSED)),
    ("9113-5.1 HEADERS on a half-closed (remote) stream -> STREAM_CLOSED",
     lambda c: c.headers(1, get(SLOW)) + c.headers(1, [("x-trailer", "t")]),
     stream(E.STREAM_CLOSED)),
    ("9113-5.1 CONTINUATION on a half-closed (remote) stream -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + raw(0x9, 0x4, 1, c.block([("x-a", "b")])),
     conn(E.PROTOCOL_ERROR)),
    ("9113-5.1 DATA on a closed stream (after RST_STREAM) -> STREAM_CLOSED",
     lambda c: c.headers(1, post(), end_stream=False) + raw(0x3, 0, 1, struct.pack(">I", 8))
     + raw(0x0, 0x1, 1, b"x"), stream(E.STREAM_CLOSED)),
    ("9113-5.1.1 even stream id from a client -> PROTOCOL_ERROR",
     lambda c: c.headers(2, get()), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1.1 decreasing stream id -> PROTOCOL_ERROR",
     lambda c: c.headers(5, get(SLOW)) + c.headers(3, get()), conn(E.PROTOCOL_ERROR)),
    ("9113-5.1.2 streams over SETTINGS_MAX_CONCURRENT_STREAMS -> PROTOCOL_ERROR",
     lambda c: b"".join(c.headers(2 * i + 1, get(SLOW)) for i in range(9)),
     conn(E.PROTOCOL_ERROR)),
    ("9113-5.3.1 HEADERS depending on itself -> PROTOCOL_ERROR",
     lambda c: raw(0x1, 0x25, 1, struct.pack(">IB", 1, 15) + c.block(get())),
     escalated(E.PROTOCOL_ERROR)),
    ("9113-5.3.1 PRIORITY depending on itself -> PROTOCOL_ERROR",
     lambda c: raw(0x2, 0, 1, struct.pack(">IB", 1, 15)), escalated(E.PROTOCOL_ERROR)),
    ("9113-5.5 unknown frame in a header block -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(), end_headers=False) + raw(0xEE, 0, 1, b"x")
     + raw(0x9, 0x4, 1, b""), conn(E.PROTOCOL_ERROR)),
    # 6.1 DATA
    ("9113-6.1 DATA on stream 0 -> PROTOCOL_ERROR",
     lambda c: raw(0x0, 0x1, 0, b"x"), conn(E.PROTOCOL_ERROR)),
    ("9113-6.1 DATA with a pad length past the payload -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post(), end_stream=False) + raw(0x0, 0x9, 1, b"\x08abc"),
     conn(E.PROTOCOL_ERROR)),
    # 6.2 HEADERS
    ("9113-6.2 HEADERS on stream 0 -> PROTOCOL_ERROR",
     lambda c: raw(0x1, 0x5, 0, c.block(get())), conn(E.PROTOCOL_ERROR)),
    ("9113-6.2 HEADERS with a pad length past the payload -> PROTOCOL_ERROR",
     lambda c: raw(0x1, 0xD, 1, b"\xff" + c.block(get())), conn(E.PROTOCOL_ERROR)),
    ("9113-6.2 HEADERS without END_HEADERS, then DATA -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post(), end_stream=False, end_headers=False)
     + raw(0x0, 0x1, 1, b"x"), conn(E.PROTOCOL_ERROR)),
    # 6.3 PRIORITY
    ("9113-6.3 PRIORITY on stream 0 -> PROTOCOL_ERROR",
     lambda c: raw(0x2, 0, 0, struct.pack(">IB", 1, 15)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.3 PRIORITY of length 4 -> FRAME_SIZE_ERROR",
     lambda c: c.headers(1, get(SLOW)) + raw(0x2, 0, 1, struct.pack(">I", 0)),
     escalated(E.FRAME_SIZE_ERROR)),
    # 6.4 RST_STREAM
    ("9113-6.4 RST_STREAM on stream 0 -> PROTOCOL_ERROR",
     lambda c: raw(0x3, 0, 0, struct.pack(">I", 8)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.4 RST_STREAM of length 3 -> FRAME_SIZE_ERROR",
     lambda c: c.headers(1, get(SLOW)) + raw(0x3, 0, 1, b"\x00\x00\x08"),
     conn(E.FRAME_SIZE_ERROR)),
    # 6.5 SETTINGS
    ("9113-6.5 SETTINGS ACK with a payload -> FRAME_SIZE_ERROR",
     lambda c: raw(0x4, 0x1, 0, struct.pack(">HI", 3, 10)), conn(E.FRAME_SIZE_ERROR)),
    ("9113-6.5 SETTINGS on a stream -> PROTOCOL_ERROR",
     lambda c: raw(0x4, 0, 1, struct.pack(">HI", 3, 10)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.5 SETTINGS of a length not a multiple of 6 -> FRAME_SIZE_ERROR",
     lambda c: raw(0x4, 0, 0, b"\x00\x03\x00\x00\x00"), conn(E.FRAME_SIZE_ERROR)),
    ("9113-6.5.2 SETTINGS_ENABLE_PUSH of 2 -> PROTOCOL_ERROR",
     lambda c: settings((2, 2)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.5.2 SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1 -> FLOW_CONTROL_ERROR",
     lambda c: settings((4, 1 << 31)), conn(E.FLOW_CONTROL_ERROR)),
    ("9113-6.5.2 SETTINGS_MAX_FRAME_SIZE under 16384 -> PROTOCOL_ERROR",
     lambda c: settings((5, 16383)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.5.2 SETTINGS_MAX_FRAME_SIZE over 2^24-1 -> PROTOCOL_ERROR",
     lambda c: settings((5, 1 << 24)), conn(E.PROTOCOL_ERROR)),
    ("9113-6.5.2 unknown setting is ignored (ACKed)",
     lambda c: settings((0xFF, 1)), ("settings_ack",)),
    # 6.7 PING
    ("9113-6.7 PING is answered with the same payload",
     lambda c: PingFrame(0, opaque_data=b"h2spec!!").serialize(), ("ping",)),
    ("9113-6.7 PING on a stream -> PROTOCOL_ERROR",
     lambda c: raw(0x6, 0, 1, b"12345678"), conn(E.PROTOCOL_ERROR)),
    ("9113-6.7 PING of length 7 -> FRAME_SIZE_ERROR",
     lambda c: raw(0x6, 0, 0, b"1234567"), conn(E.FRAME_SIZE_ERROR)),
    # 6.8 GOAWAY
    ("9113-6.8 GOAWAY on a stream -> PROTOCOL_ERROR",
     lambda c: raw(0x7, 0, 1, struct.pack(">II", 0, 0)), conn(E.PROTOCOL_ERROR)),
    # 6.9 WINDOW_UPDATE
    ("9113-6.9 WINDOW_UPDATE of 0 on the connection -> PROTOCOL_ERROR",
     lambda c: window_update(0, 0), conn(E.PROTOCOL_ERROR)),
    ("9113-6.9 WINDOW_UPDATE of 0 on a stream -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + window_update(1, 0), escalated(E.PROTOCOL_ERROR)),
    ("9113-6.9 WINDOW_UPDATE of length 3 -> FRAME_SIZE_ERROR",
     lambda c: raw(0x8, 0, 0, b"\x00\x00\x01"), conn(E.FRAME_SIZE_ERROR)),
    ("9113-6.9.1 connection window past 2^31-1 -> FLOW_CONTROL_ERROR",
     lambda c: window_update(0, (1 << 31) - 1) * 2, conn(E.FLOW_CONTROL_ERROR)),
    ("9113-6.9.1 stream window past 2^31-1 -> FLOW_CONTROL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + window_update(1, (1 << 31) - 1),
     stream(E.FLOW_CONTROL_ERROR)),
    ("9113-6.9.2 SETTINGS_INITIAL_WINDOW_SIZE overflowing a stream -> FLOW_CONTROL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + window_update(1, (1 << 31) - 65536)
     + settings((4, 65537)), conn(E.FLOW_CONTROL_ERROR)),
    # 6.10 CONTINUATION
    ("9113-6.10 CONTINUATION after END_HEADERS -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + raw(0x9, 0x4, 1, c.block([("x-a", "b")])),
     conn(E.PROTOCOL_ERROR)),
    ("9113-6.10 CONTINUATION on another stream -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(), end_headers=False) + raw(0x9, 0x4, 3, b""),
     conn(E.PROTOCOL_ERROR)),
    ("9113-6.10 CONTINUATION on stream 0 -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(), end_headers=False) + raw(0x9, 0x4, 0, b""),
     conn(E.PROTOCOL_ERROR)),
    ("9113-6.10 DATA interleaved in a header block -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post(), end_stream=False, end_headers=False)
     + raw(0x0, 0, 1, b"x") + raw(0x9, 0x4, 1, b""), conn(E.PROTOCOL_ERROR)),
    # 8: HTTP semantics (malformed requests are stream errors)
    ("9113-8.1 trailers without END_STREAM -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post(), end_stream=False)
     + raw(0x0, 0, 1, b"x") + c.headers(1, [("x-t", "1")], end_stream=False),
     escalated(E.PROTOCOL_ERROR)),
    ("9113-8.1.1 DATA longer than content-length -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post() + [("content-length", "1")], end_stream=False)
     + raw(0x0, 0x1, 1, b"xy"), escalated(E.PROTOCOL_ERROR)),
    ("9113-8.1.1 DATA shorter than content-length -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post() + [("content-length", "3")], end_stream=False)
     + raw(0x0, 0x1, 1, b"xy"), escalated(E.PROTOCOL_ERROR)),
    ("9113-8.2 uppercase field name -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [("X-Upper", "1")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.2.2 connection-specific field (connection) -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [("connection", "keep-alive")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.2.2 connection-specific field (transfer-encoding) -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [("transfer-encoding", "chunked")]),
     stream(E.PROTOCOL_ERROR)),
    ("9113-8.2.2 TE other than trailers -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [("te", "gzip")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3 unknown pseudo-header -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [(":foo", "bar")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3 response pseudo-header in a request -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [(":status", "200")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3 pseudo-header after a regular field -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get()[:3] + [("x-a", "b"), (":path", "/pid")]),
     stream(E.PROTOCOL_ERROR)),
    ("9113-8.3 pseudo-header in trailers -> PROTOCOL_ERROR",
     lambda c: c.headers(1, post(), end_stream=False) + c.headers(1, [(":path", "/x")]),
     stream(E.PROTOCOL_ERROR)),
    ("9113-8.3.1 duplicate :method -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [(":method", "POST")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3.1 missing :method -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get()[1:]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3.1 missing :scheme -> PROTOCOL_ERROR",
     lambda c: c.headers(1, [f for f in get() if f[0] != ":scheme"]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3.1 missing :path -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get()[:3]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.3.1 empty :path -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get()[:3] + [(":path", "")]), stream(E.PROTOCOL_ERROR)),
    ("9113-8.4 PUSH_PROMISE from a client -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get(SLOW)) + raw(0x5, 0x4, 1, struct.pack(">I", 2) + c.block(get())),
     conn(E.PROTOCOL_ERROR)),
    # RFC 8441: WebSockets over HTTP/2 (extended CONNECT; tests/e2e/test_websocket_h2.py
    # runs them with a WebSocket client)
    ("8441-3 SETTINGS_ENABLE_CONNECT_PROTOCOL is 1 in the server's SETTINGS",
     lambda c: b"", ("setting", 0x8, 1)),
    ("8441-4 extended CONNECT for websocket -> 200, the stream left open",
     lambda c: c.headers(1, connect(), end_stream=False), ("response", 1)),
    ("8441-4 :protocol on a GET -> PROTOCOL_ERROR",
     lambda c: c.headers(1, get() + [(":protocol", "websocket")]), stream(E.PROTOCOL_ERROR)),
    ("8441-4 extended CONNECT without :path -> PROTOCOL_ERROR",
     lambda c: c.headers(1, [f for f in connect() if f[0] != ":path"], end_stream=False),
     stream(E.PROTOCOL_ERROR)),
    ("8441-4 extended CONNECT without :scheme -> PROTOCOL_ERROR",
     lambda c: c.headers(1, [f for f in connect() if f[0] != ":scheme"], end_stream=False),
     stream(E.PROTOCOL_ERROR)),
    ("8441-4 extended CONNECT of a protocol not spoken -> 501",
     lambda c: c.headers(1, connect("webtransport"), end_stream=False), ("status", 1, b"501")),
    ("8441-5 a websocket CONNECT that ends its stream -> 400",
     lambda c: c.headers(1, connect()), ("status", 1, b"400")),
    ("8441-5 a websocket CONNECT of a version not 13 (RFC 6455 4.2.1) -> 400",
     lambda c: c.headers(1, connect()[:-1] + [("sec-websocket-version", "8")],
                         end_stream=False), ("status", 1, b"400")),
    # RFC 7541: HPACK (a decoding error is a connection error, RFC 9113 4.3)
    ("7541-2.3.3 index past the tables -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, b"\xff\x7f"), conn(E.COMPRESSION_ERROR)),
    ("7541-6.1 index 0 -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, b"\x80"), conn(E.COMPRESSION_ERROR)),
    ("7541-4.2 table size update over SETTINGS_HEADER_TABLE_SIZE -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, b"\x3f\xe2\x1f" + c.block(get())), conn(E.COMPRESSION_ERROR)),
    ("7541-4.2 table size update after a field -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, c.block(get()) + b"\x20"), conn(E.COMPRESSION_ERROR)),
    ("7541-5.2 Huffman string with padding over 7 bits -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, c.block(get()) + huffman_field(b"\x1f\xff")),
     conn(E.COMPRESSION_ERROR)),
    ("7541-5.2 Huffman string with padding not all ones -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, c.block(get()) + huffman_field(b"\x18")),
     conn(E.COMPRESSION_ERROR)),
    ("7541-5.2 Huffman string with EOS -> COMPRESSION_ERROR",
     lambda c: raw(0x1, 0x5, 1, c.block(get()) + huffman_field(b"\xff\xff\xff\xff")),
     conn(E.COMPRESSION_ERROR)),
]

def _outcome(cl: Raw, want) -> None:
    kind = want[0]
    if kind == "conn":
        f = cl.until(lambda f: isinstance(f, (GoAwayFrame, RstStreamFrame)))
        assert isinstance(f, GoAwayFrame), f"wanted GOAWAY {want[1].name}, got {f}"
        assert f.error_code == want[1], \
            f"GOAWAY {E(f.error_code).name}, wanted {want[1].name} ({f.additional_data!r})"
        # the close follows
        assert cl.until(lambda f: False, timeout=15) is None
    elif kind == "stream":
        f = cl.until(lambda f: isinstance(f, (GoAwayFrame, RstStreamFrame)))
        assert isinstance(f, RstStreamFrame), \
            f"wanted RST_STREAM {want[1].name}, got {f} " \
            f"({E(f.error_code).name if f is not None else 'closed'})"
        assert (f.stream_id, f.error_code) == (want[2], want[1]), \
            f"RST_STREAM {E(f.error_code).name} on {f.stream_id}, wanted {want[1].name}"
        _served(cl, 101)
    elif kind == "ignored":
        cl.send(PingFrame(0, opaque_data=b"stillup!").serialize())
        f = cl.until(lambda f: isinstance(f, (GoAwayFrame, PingFrame)))
        assert isinstance(f, PingFrame) and f.opaque_data == b"stillup!", f
    elif kind == "ping":
        f = cl.until(lambda f: isinstance(f, (GoAwayFrame, PingFrame)))
        assert isinstance(f, PingFrame) and "ACK" in f.flags, f
    elif kind == "settings_ack":
        f = cl.until(lambda f: isinstance(f, (GoAwayFrame, SettingsFrame)))
        assert isinstance(f, SettingsFrame) and "ACK" in f.flags, f
        _served(cl, 1)
    elif kind == "response":
        _answered(cl, want[1])
    elif kind == "status":
        _answered(cl, want[1], want[2])
        _served(cl, 3)
    elif kind == "setting":   # in the server's first SETTINGS (read as the client connected)
        first = next(f for f in cl.frames if isinstance(f, SettingsFrame))
        assert first.settings.get(want[1]) == want[2], first.settings


def _served(cl: Raw, sid: int) -> None:
    """The connection goes on: a new request is served."""
    cl.send(cl.headers(sid, get()))
    _answered(cl, sid)


def _answered(cl: Raw, sid: int, status: bytes = b"200") -> None:
    f = cl.until(lambda f: isinstance(f, (GoAwayFrame, HeadersFrame)) and
                 (isinstance(f, GoAwayFrame) or f.stream_id == sid))
    assert isinstance(f, HeadersFrame), f"wanted a response on stream {sid}, got {f}"
    assert (b":status", status) in f.fields, f.fields


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES])
def test_h2spec_case(sc, case):
    _name, build, want = case
    cl = Raw(sc.port)
    try:
        cl.send(build(cl))
        _outcome(cl, want)
    finally:
        cl.close()


@pytest.mark.parametrize("preface", [b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
                                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r" + b"\0" * 9])
def test_3_4_bad_preface_is_protocol_error(sc, preface):
    """RFC 9113 3.4: an invalid connection preface is PROTOCOL_ERROR -- our SETTINGS, GOAWAY
    naming no stream, the close -- not an HTTP/1.1 request."""
    with socket.create_connection(("127.0.0.1", sc.port), timeout=15) as sock:
        sock.sendall(preface)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    settings, _ = Frame.parse_frame_header(memoryview(data[:9]))
    assert isinstance(settings, SettingsFrame) and "ACK" not in settings.flags, data
    goaway, length = Frame.parse_frame_header(memoryview(data[9:18]))
    goaway.parse_body(memoryview(data[18:18 + length]))
    assert isinstance(goaway, GoAwayFrame), data
    assert (goaway.error_code, goaway.last_stream_id) == (E.PROTOCOL_ERROR, 0)
    assert len(data) == 18 + length


def test_3_4_not_a_preface_is_http1(sc):
    """A first line that leaves the preface before its end is HTTP/1.1's to answer."""
    with socket.create_connection(("127.0.0.1", sc.port), timeout=15) as sock:
        sock.sendall(b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 ")
