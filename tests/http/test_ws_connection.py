"""The WebSocket connection state machine, driven frame by frame and event by event: no
sockets, no event loop, no processes.  The client is websockets' own sans-I/O
ClientProtocol, so every byte the machine writes is parsed as a real client would."""
from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from sidecar.http import h1
from sidecar.http.ws_connection import (CONNECTING, DENIAL, DONE, OPEN, PRE_ACCEPT_BUFFER,
                                        WSConnection, subprotocols)
from tests.http.test_h1_connection import IO as H1IO

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
PING_INTERVAL, PING_TIMEOUT = 20.0, 10.0


class Fields:
    date_value = b"Mon, 07 Dec 2026 00:00:00 GMT"
    server_header = b"sidecar"


class IO(H1IO):
    """test_h1_connection's recording io, with ``flush`` (WSConnection flushes before an
    abort) and no write once the socket is closed or aborted."""

    def write(self, data):
        assert "abort" not in self.calls and "close" not in self.calls
        super().write(data)

    def flush(self):
        self.calls.append("flush")


class Stream:
    """Records what the machine hands the stream layer."""

    def __init__(self):
        self.messages: list = []
        self.gone: list = []
        self.owed_flushes = 0

    def on_body(self, data, more):
        self.messages.append((data, more))

    def client_gone(self, code, reason):
        self.gone.append((code, reason))

    def flush_owed(self):
        self.owed_flushes += 1


def upgrade_request(method=b"GET", key=KEY, extra=()) -> h1.Request:
    headers = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
               (b"sec-websocket-version", b"13")]
    if key is not None:
        headers.append((b"sec-websocket-key", key))
    headers += list(extra)
    return h1.Request(method, b"/ws", "/ws", b"/ws", b"", "1.1", headers, True, False,
                      b"websocket", None, False)


def make(req=None, trailing=b"", max_size=1 << 20, deflate=False):
    io, stream = IO(), Stream()
    ws = WSConnection(io, req or upgrade_request(), head_fields=Fields, max_size=max_size,
                      deflate=deflate, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                      trailing=trailing)
    ws.stream = stream
    return ws, io, stream


def client() -> ClientProtocol:
    c = ClientProtocol(parse_uri("ws://x/ws"), state=State.OPEN)
    return c


def frames_from(data: bytes) -> list[Frame]:
    c = client()
    c.receive_data(data)
    return c.events_received()


def masked(opcode, data, fin=True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


def parse_response(data: bytes) -> Response:
    reader = StreamReader()
    reader.feed_data(data)
    gen = Response.parse(reader.read_line, reader.read_exact, reader.read_to_eof)
    try:
        next(gen)
    except StopIteration as stop:
        return stop.value
    raise AssertionError(f"incomplete response: {data!r}")


def opened(**kw):
    ws, io, stream = make(**kw)
    ws.accept(None, [])
    head, _, rest = io.take().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return ws, io, stream


# --- the handshake --------------------------------------------------------------------------

def test_a_valid_upgrade_waits_for_the_app():
    ws, io, stream = make()
    assert ws.phase == CONNECTING and io.out == b"" and io.calls == []


@pytest.mark.parametrize("req", [upgrade_request(method=b"POST"), upgrade_request(key=None)])
def test_an_invalid_upgrade_is_answered_400_and_closed(req):
    ws, io, _ = make(req)
    assert ws.phase == DONE and ws.status == 400
    assert io.take().startswith(b"HTTP/1.1 400 ") and io.calls == ["close"]


def test_a_bad_version_is_refused_as_websockets_says():
    req = upgrade_request()
    req = req._replace(headers=[(n, b"8" if n == b"sec-websocket-version" else v)
                                for n, v in req.headers])
    ws, io, _ = make(req)
    data = io.take()
    assert ws.phase == DONE and ws.status == 400 and data.startswith(b"HTTP/1.1 400 ")
    assert b"invalid Sec-WebSocket-Version header: 8" in data and io.calls == ["close"]


def test_accept_sends_101_with_subprotocol_headers_and_server():
    req = upgrade_request(extra=[(b"sec-websocket-protocol", b"a, b"),
                                 (b"sec-websocket-protocol", b"c")])
    assert subprotocols(req.headers) == ["a", "b", "c"]
    ws, io, _ = make(req)
    ws.accept("b", [(b"x-app", b"1")])
    resp = parse_response(io.take())
    assert resp.status_code == 101 and ws.status == 101 and ws.phase == OPEN
    assert resp.headers["Sec-WebSocket-Protocol"] == "b"
    assert resp.headers["X-App"] == "1" and resp.headers["Server"] == "sidecar"
    assert resp.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_bytes_before_the_101_are_held_then_delivered_in_order():
    early = masked(Opcode.TEXT, b"one")
    ws, io, stream = make(trailing=early[:3])
    ws.receive_data(early[3:] + masked(Opcode.BINARY, b"two"))
    assert stream.messages == []
    ws.accept(None, [])
    assert stream.messages == [("one", False), (b"two", False)]


def test_too_many_bytes_before_the_101_pause_reading():
    ws, io, stream = make()
    ws.receive_data(b"x" * PRE_ACCEPT_BUFFER)
    assert io.calls == []
    ws.receive_data(b"x")
    assert io.calls == ["pause"]
    ws.receive_data(b"y")   # already paused: nothing more
    assert io.calls == ["pause"]


def test_a_denial_response_is_written_chunked_and_closes():
    ws, io, _ = make()
    ws.deny_start(403, [(b"content-type", b"text/plain")])
    assert ws.phase == DENIAL and ws.status == 403
    ws.deny_body(b"no", True)
    ws.deny_body(b"", False)
    data = io.take()
    assert data.startswith(b"HTTP/1.1 403 ") and b"transfer-encoding: chunked" in data.lower()
    assert data.endswith(b"2\r\nno\r\n0\r\n\r\n")
    assert ws.phase == DONE and io.calls == ["close"]


def test_an_invalid_denial_raises_for_the_stream_to_answer():
    ws, io, _ = make()
    with pytest.raises((ValueError, TypeError)):
        ws.deny_start(99, [])
    assert ws.phase == CONNECTING and io.out == b""


def test_refuse_answers_with_the_status_and_closes():
    ws, io, _ = make()
    ws.refuse(503, ((b"retry-after", b"1"),))
    data = io.take()
    assert data.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in data.lower()
    assert ws.phase == DONE and ws.status == 503 and io.calls == ["close"]
    ws.accept(None, [])     # too late: nothing happens
    assert io.out == b"" and ws.phase == DONE


# --- frames ---------------------------------------------------------------------------------

def test_messages_arrive_as_chunks_fragments_included_byte_by_byte():
    ws, io, stream = opened()
    data = (masked(Opcode.TEXT, "hé".encode()[:2], fin=False)
            + masked(Opcode.CONT, "hé".encode()[2:] + b"!", fin=True)
            + masked(Opcode.BINARY, b"\x00\x01"))
    for i in range(len(data)):
        ws.receive_data(data[i:i + 1])
    assert stream.messages == [("h", True), ("é!", False), (b"\x00\x01", False)]


def test_invalid_utf8_fails_the_connection_1007():
    ws, io, stream = opened()
    ws.receive_data(masked(Opcode.TEXT, b"\xff"))
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data).code == CloseCode.INVALID_DATA
    assert "linger" in io.calls
    ws.connection_lost()
    assert stream.gone == [(CloseCode.INVALID_DATA, "invalid start byte at position 0")]


def test_a_message_over_max_size_is_closed_1009_and_the_app_told_so():
    ws, io, stream = opened(max_size=10)
    ws.receive_data(masked(Opcode.BINARY, b"x" * 11))
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data).code == CloseCode.MESSAGE_TOO_BIG
    ws.connection_lost()
    assert stream.gone[0][0] == CloseCode.MESSAGE_TOO_BIG and stream.messages == []


def test_client_close_is_answered_and_told_once():
    ws, io, stream = opened()
    ws.receive_data(masked(Opcode.CLOSE, Close(CloseCode.GOING_AWAY, "bye").serialize()))
    assert stream.gone == [(CloseCode.GOING_AWAY, "bye")]
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data).code == CloseCode.GOING_AWAY
    assert "linger" in io.calls       # half close once our close frame is written
    ws.connection_lost()
    assert stream.gone == [(CloseCode.GOING_AWAY, "bye")]


def test_a_lost_socket_is_1006():
    ws, io, stream = opened()
    ws.connection_lost()
    assert stream.gone == [(CloseCode.ABNORMAL_CLOSURE, "")] and ws.closed


def test_send_message_text_binary_and_fragments():
    ws, io, _ = opened()
    ws.send_message("hi", False)
    ws.send_message(b"a", True)
    ws.send_message(b"b", False)
    frames = frames_from(io.take())
    assert [(f.opcode, f.data, f.fin) for f in frames] == [
        (Opcode.TEXT, b"hi", True), (Opcode.BINARY, b"a", False), (Opcode.CONT, b"b", True)]


def test_close_from_the_app_and_an_invalid_code_becomes_1011():
    ws, io, _ = opened()
    ws.close(1005, "")      # a code that may not be sent
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data).code == CloseCode.INTERNAL_ERROR
    ws.send_message("late", False)   # after the close: dropped
    assert io.out == b""


def test_write_unblocked_asks_the_stream_for_its_owed_credit():
    ws, io, stream = opened()
    assert ws.writable()
    ws.write_blocked_now()
    assert not ws.writable()
    ws.write_unblocked()
    assert ws.writable() and stream.owed_flushes == 1


def test_pause_and_resume_receiving():
    ws, io, _ = opened()
    ws.pause_receiving()
    ws.resume_receiving()
    assert io.calls == ["pause", "resume"]


def test_resume_receiving_waits_for_the_101():
    ws, io, _ = make()
    ws.receive_data(b"x" * (PRE_ACCEPT_BUFFER + 1))
    ws.resume_receiving()
    assert io.calls == ["pause"]


# --- deadlines ------------------------------------------------------------------------------

def test_a_quiet_peer_is_pinged_then_closed_if_it_never_answers():
    ws, io, _ = opened()
    ws.tick(PING_INTERVAL - 1)
    assert io.out == b""
    ws.tick(PING_INTERVAL)
    (ping,) = frames_from(io.take())
    assert ping.opcode == Opcode.PING
    ws.tick(PING_INTERVAL + PING_TIMEOUT - 1)
    assert "abort" not in io.calls
    ws.tick(PING_INTERVAL + PING_TIMEOUT)
    (close,) = frames_from(io.take())
    assert Close.parse(close.data).code == CloseCode.INTERNAL_ERROR
    assert io.calls[-2:] == ["flush", "abort"] and ws.closed


def test_a_pong_or_any_read_keeps_the_connection():
    ws, io, _ = opened()
    ws.tick(PING_INTERVAL)
    ping = frames_from(io.take())[0]
    ws.receive_data(masked(Opcode.PONG, ping.data))
    ws.tick(PING_INTERVAL + PING_TIMEOUT)      # the read resets the clock
    ws.tick(PING_INTERVAL + PING_TIMEOUT + 1)
    assert "abort" not in io.calls and io.out == b""


def test_not_reading_is_not_the_peers_fault():
    ws, io, _ = opened()
    ws.pause_receiving()
    for t in range(0, 200, 5):
        ws.tick(float(t))
    assert io.out == b"" and "abort" not in io.calls


def test_our_close_frame_unanswered_is_aborted_after_ping_timeout():
    ws, io, _ = opened()
    io.clock = 100.0
    ws.close(1000, "")
    ws.tick(100.0 + PING_TIMEOUT - 1)
    assert "abort" not in io.calls
    ws.tick(100.0 + PING_TIMEOUT)
    assert io.calls[-1] == "abort"


# --- drain and stop -------------------------------------------------------------------------

def test_drain_closes_an_open_websocket_1012():
    ws, io, _ = opened()
    ws.start_drain()
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data).code == CloseCode.SERVICE_RESTART


def test_drain_answers_a_waiting_upgrade_503():
    ws, io, _ = make()
    ws.start_drain()
    assert io.take().startswith(b"HTTP/1.1 503 ") and ws.phase == DONE


def test_stop_now_aborts():
    ws, io, _ = opened()
    ws.stop_now()
    assert io.calls == ["flush", "abort"] and ws.closed
    ws.stop_now()
    assert io.calls == ["flush", "abort"]
