"""A WebSocket's stream on the stream layer, event by event: the WebSocket state machine with a
recording socket on one side and a recording worker link on the other.  Credit both ways and
the error policy, with no sockets, loop or processes."""
from __future__ import annotations

from websockets.frames import Close, CloseCode, Opcode

from sidecar.events import (APP_DONE, DISCONNECT, MAX_CHUNK, RECV_CREDIT, RESPONSE_BODY, RESPONSE_START,
                            SEND_CREDIT, WS_ACCEPT, WS_CLOSE, WS_CONNECT, WS_DISCONNECT,
                            WS_RECEIVE, WS_SEND)
from sidecar.events import max_chunk
from sidecar.frontend.ws_stream import WebSocketStream
from sidecar.http.ws_connection import DONE, OPEN
from tests.http.test_ws_connection import frames_from, make, masked, upgrade_request

WINDOW = 1000
SCOPE = ("GET", "https", "/ws", b"/ws", b"", [], ["1.2.3.4", 5], ["h", 80], "1.1", "")


class Ring:
    max_record = 4096


class Link:
    def __init__(self, window=WINDOW):
        self.window = window
        self.chunk = max_chunk(Ring.max_record, window)
        self.draining = False
        self.streams: dict = {}
        self.sent: list = []

    def open_stream(self, sid, stream, ev, route):
        self.streams[sid] = stream
        self.sent.append(ev)
        return 0.001, 0.0

    def send(self, ev):
        self.sent.append(ev)

    def take(self) -> list:
        out, self.sent = self.sent, []
        return out


class Conn:
    window = WINDOW


def setup(req=None, window=WINDOW, accept=True):
    ws, io, _ = make(req or upgrade_request(extra=[(b"sec-websocket-protocol", b"p1")]))
    stream = WebSocketStream(Conn(), ws, 7, SCOPE)
    link = Link(window)
    stream.dispatch(link, b"", False)
    (connect,) = link.take()
    assert connect[:3] == [WS_CONNECT, 7, "wss"] and connect[-1] == ["p1"]
    if accept:
        stream.on_worker_event([WS_ACCEPT, 7, None, []])
        assert ws.phase == OPEN
        io.take()
    return stream, ws, io, link


def test_client_data_waits_for_credit_and_splits_to_records():
    stream, ws, io, link = setup()
    assert stream.chunk == WINDOW   # min(MAX_CHUNK, window, max_record - slack)
    ws.receive_data(masked(Opcode.BINARY, b"a" * 1500))
    assert link.take() == [[WS_RECEIVE, 7, b"a" * 1000, True]]
    stream.on_worker_event([RECV_CREDIT, 7, 1000])
    assert link.take() == [[WS_RECEIVE, 7, b"a" * 500, False]]


def test_non_ascii_text_is_split_so_a_chunk_fits_a_record_once_encoded():
    stream, ws, io, link = setup()
    ws.receive_data(masked(Opcode.TEXT, ("é" * 300).encode()))
    sent = link.take()
    assert [len(ev[2]) for ev in sent] == [250, 50] and [ev[3] for ev in sent] == [True, False]


def test_a_window_of_data_waiting_pauses_reading_until_credit():
    stream, ws, io, link = setup()
    ws.receive_data(masked(Opcode.BINARY, b"x" * 1000) + masked(Opcode.BINARY, b"y" * 1001))
    assert "pause" in io.calls and stream.pending_bytes == 1001
    stream.on_worker_event([RECV_CREDIT, 7, 1000])
    assert io.calls[-1] == "resume" and link.take()[-1] == [WS_RECEIVE, 7, b"y" * 1000, True]


def test_send_credit_is_batched_and_held_while_the_socket_is_backed_up():
    stream, ws, io, link = setup(window=4 * MAX_CHUNK)
    batch = stream.credit_batch
    assert batch == MAX_CHUNK      # the worker still has a chunk of credit when one is held
    stream.on_worker_event([WS_SEND, 7, b"a" * (batch - 100), False])
    assert link.take() == []                       # under the batch: held
    stream.on_worker_event([WS_SEND, 7, "b" * 100, False])
    assert link.take() == [[SEND_CREDIT, 7, batch]]
    assert [len(f.data) for f in frames_from(io.take())] == [batch - 100, 100]
    ws.write_blocked_now()
    stream.on_worker_event([WS_SEND, 7, b"c" * batch, False])
    assert link.take() == []                       # not written yet: owed
    ws.write_unblocked()
    assert link.take() == [[SEND_CREDIT, 7, batch]]


def test_a_window_no_larger_than_a_chunk_grants_every_byte():
    stream, ws, io, link = setup()
    stream.on_worker_event([WS_SEND, 7, b"a", False])
    assert stream.credit_batch == 1 and link.take() == [[SEND_CREDIT, 7, 1]]


def test_client_close_tells_the_app_once_and_drops_what_waits():
    stream, ws, io, link = setup()
    ws.receive_data(masked(Opcode.BINARY, b"z" * 1500))
    link.take()
    ws.receive_data(masked(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "ok").serialize()))
    assert link.take() == [[WS_DISCONNECT, 7, 1000, "ok"]] and stream.pending_bytes == 0
    ws.connection_lost()
    assert link.take() == []


def test_app_done_after_accept_closes_1000_or_1011():
    for error, code in ((None, CloseCode.NORMAL_CLOSURE), ("boom", CloseCode.INTERNAL_ERROR)):
        stream, ws, io, link = setup()
        stream.on_worker_event([APP_DONE, 7, error])
        (frame,) = frames_from(io.take())
        assert Close.parse(frame.data).code == code
        ws.connection_lost()
        assert link.take() == []                   # the app is gone: not told


def test_before_accept_close_is_403_app_done_403_or_500_worker_lost_502():
    cases = [([WS_CLOSE, 7, 1000, ""], 403), ([APP_DONE, 7, None], 403),
             ([APP_DONE, 7, "boom"], 500)]
    for ev, status in cases:
        stream, ws, io, link = setup(accept=False)
        stream.on_worker_event(ev)
        assert io.take().startswith(b"HTTP/1.1 %d " % status) and ws.phase == DONE
    stream, ws, io, link = setup(accept=False)
    stream.on_worker_lost()
    assert io.take().startswith(b"HTTP/1.1 502 ")


def test_worker_lost_after_accept_is_1011():
    stream, ws, io, link = setup()
    stream.on_worker_lost()
    (frame,) = frames_from(io.take())
    assert Close.parse(frame.data) == Close(CloseCode.INTERNAL_ERROR, "worker lost")


def test_a_denial_response_cut_short_aborts():
    stream, ws, io, link = setup(accept=False)
    stream.on_worker_event([RESPONSE_START, 7, 401, [(b"content-length", b"10")]])
    stream.on_worker_event([RESPONSE_BODY, 7, b"12345", True])
    assert link.take() == [[SEND_CREDIT, 7, 5]]
    stream.on_worker_event([APP_DONE, 7, None])
    assert io.calls[-1] == "abort"


def test_an_invalid_denial_is_500():
    stream, ws, io, link = setup(accept=False)
    stream.on_worker_event([RESPONSE_START, 7, 1234, []])
    assert io.take().startswith(b"HTTP/1.1 500 ")


def test_accepted_by_a_draining_worker_closes_1012():
    stream, ws, io, link = setup(accept=False)
    link.draining = True
    stream.on_worker_event([WS_ACCEPT, 7, None, []])
    frames = frames_from(io.take().partition(b"\r\n\r\n")[2])
    assert Close.parse(frames[0].data).code == CloseCode.SERVICE_RESTART


def test_a_worker_protocol_error_drops_the_stream():
    stream, ws, io, link = setup(accept=False)
    stream.on_worker_event([WS_SEND, 7, b"x", False])     # before accept
    assert link.take() == [[DISCONNECT, 7]] and 7 not in link.streams
    assert io.take().startswith(b"HTTP/1.1 502 ")


def test_overloaded_is_503_with_retry_after():
    ws, io, _ = make()
    stream = WebSocketStream(Conn(), ws, 7, SCOPE)
    stream.overloaded()
    data = io.take()
    assert data.startswith(b"HTTP/1.1 503 ") and b"retry-after" in data.lower()
