"""H2WSConnection (a WebSocket on one HTTP/2 stream, RFC 8441) with no sockets: an h2 client
connection writes the frames (carrying websockets' ClientProtocol frames), the server's bytes
go back to it, and the tests read both sides."""
from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.errors import ErrorCodes
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from sidecar.http.h1_connection import Timeouts
from sidecar.http.h2_connection import H2Connection, H2Limits
from sidecar.http.h2_ws import H2WSConnection
from sidecar.http.ws_connection import DONE, OPEN
from tests.http.test_h2_connection import IO, WINDOW, HeadFields, Pair

CONNECT = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
           (":authority", "example"), (":path", "/chat"), ("sec-websocket-version", "13"),
           ("sec-websocket-protocol", "chat, other")]


class WSStream:
    """The stream layer's side of a WebSocket (frontend/ws_stream.py's calls)."""

    def __init__(self, ws):
        ws.stream = self
        self.ws = ws
        self.messages = []
        self.gone = []
        self.flushes = 0

    def on_body(self, data, more):
        self.messages.append((data, more))

    def client_gone(self, code, reason):
        self.gone.append((code, reason))

    def flush_owed(self):
        self.flushes += 1


class WSHandler:
    def __init__(self):
        self.ws: dict[int, H2WSConnection] = {}

    def on_request(self, ex, body, more):
        raise AssertionError("not a WebSocket")

    def on_websocket(self, ex):
        ws = H2WSConnection(ex.conn, ex, head_fields=HeadFields(), max_size=None,
                            deflate=False, ping_interval=None, ping_timeout=5.0)
        WSStream(ws)
        self.ws[ex.sid] = ws


def pair(client_settings=None) -> Pair:
    p = Pair.__new__(Pair)
    p.io = IO()
    p.handler = WSHandler()
    p.server = H2Connection(p.io, p.handler, H2Limits(), Timeouts(), 0.0,
                            head_fields=HeadFields(), window=WINDOW)
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    p.client = h2.connection.H2Connection(cfg)
    p.client.initiate_connection()
    if client_settings:
        p.client.update_settings(client_settings)
    p.events = []
    p.exchange()
    return p


def opened(client_settings=None):
    p = pair(client_settings)
    sid = p.request(CONNECT, end=False)
    ws = p.handler.ws[sid]
    ws.accept("chat", [(b"x-app", b"1")])
    p.exchange()
    proto = ClientProtocol(parse_uri("ws://example/chat"), state=State.OPEN)
    return p, sid, ws, proto


def client_send(p, sid, proto) -> None:
    for data in proto.data_to_send():
        for i in range(0, len(data), 16384):
            p.client.send_data(sid, data[i:i + 16384])
    p.exchange()


def received(p, sid) -> bytes:
    return b"".join(e.data for e in p.events
                    if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)


def test_settings_allow_extended_connect_and_the_accept_is_a_200_left_open():
    p, sid, ws, proto = opened()
    assert p.client.remote_settings.enable_connect_protocol == 1
    head = next(e for e in p.events if isinstance(e, h2.events.ResponseReceived))
    fields = dict(head.headers)
    assert fields[":status"] == "200" and fields["sec-websocket-protocol"] == "chat"
    assert fields["x-app"] == "1" and "sec-websocket-accept" not in fields
    assert not [e for e in p.events if isinstance(e, h2.events.StreamEnded)]
    assert ws.phase == OPEN and ws.status == 200
    # frames both ways, as DATA of the stream
    proto.send_text(b"hi")
    client_send(p, sid, proto)
    assert ws.stream.messages == [("hi", False)]
    ws.send_message("yo", False)
    p.exchange()
    proto.receive_data(received(p, sid))
    frame = proto.events_received()[0]
    assert (frame.opcode, frame.data) == (Opcode.TEXT, b"yo")


def test_a_paused_websocket_acknowledges_nothing_until_it_resumes():
    p, sid, ws, proto = opened()
    ws.pause_receiving()
    proto.send_binary(b"x" * 200000)   # most of the 256 KiB window: h2 would update it
    client_send(p, sid, proto)
    assert ws.stream.messages[0][0] == b"x" * 200000   # handed on; only the window waits
    updates = [e for e in p.events if isinstance(e, h2.events.WindowUpdated)
               and e.stream_id == sid]
    assert updates == []
    ws.resume_receiving()
    p.exchange()
    updates = [e for e in p.events if isinstance(e, h2.events.WindowUpdated)
               and e.stream_id == sid]
    assert sum(e.delta for e in updates) >= 200000


def test_write_blocked_follows_the_clients_window():
    p, sid, ws, proto = opened({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    assert not ws.write_blocked
    ws.send_message(b"y" * 1000, False)
    p.exchange()
    assert ws.write_blocked and len(received(p, sid)) == 100
    p.client.increment_flow_control_window(5000, sid)
    p.exchange()
    assert not ws.write_blocked and ws.stream.flushes == 1
    proto.receive_data(received(p, sid))
    assert proto.events_received()[0].data == b"y" * 1000


def test_the_close_handshake_ends_the_stream_both_ways():
    p, sid, ws, proto = opened()
    proto.send_close(4000, "bye")
    client_send(p, sid, proto)
    assert ws.stream.gone == [(4000, "bye")]
    assert sid in [e.stream_id for e in p.events if isinstance(e, h2.events.StreamEnded)]
    proto.receive_data(received(p, sid))
    proto.receive_eof()
    assert proto.close_rcvd.code == 4000 and proto.state is State.CLOSED
    p.client.end_stream(sid)
    p.exchange()
    assert sid not in p.server.exchanges and ws.stream.gone == [(4000, "bye")]


def test_refusal_and_denial_are_responses_on_the_stream():
    p = pair()
    sid = p.request(CONNECT, end=False)
    ws = p.handler.ws[sid]
    ws.refuse(403)
    p.exchange()
    head = next(e for e in p.events if isinstance(e, h2.events.ResponseReceived))
    assert dict(head.headers)[":status"] == "403" and ws.phase == DONE
    assert sid in [e.stream_id for e in p.events if isinstance(e, h2.events.StreamEnded)]
    sid = p.request(CONNECT, end=False)
    ws = p.handler.ws[sid]
    ws.deny_start(418, [(b"content-type", b"text/plain")])
    ws.deny_body(b"no ", True)
    ws.deny_body(b"thanks", False)
    p.exchange()
    assert received(p, sid) == b"no thanks" and ws.sent == 9 and ws.phase == DONE
    assert not p.server.closed


def test_without_extended_connect_a_protocol_is_a_stream_error():
    io = IO()
    server = H2Connection(io, WSHandler(), H2Limits(), Timeouts(), 0.0,
                          head_fields=HeadFields(), window=WINDOW, extended_connect=False)
    p = pair()
    p.io, p.server = io, server
    p.client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    p.client.initiate_connection()
    p.events = []
    p.exchange()
    assert p.client.remote_settings.enable_connect_protocol == 0
    sid = p.request(CONNECT, end=False)
    reset = [e for e in p.events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in reset] == [(sid, ErrorCodes.PROTOCOL_ERROR)]
