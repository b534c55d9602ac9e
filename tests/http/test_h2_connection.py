"""H2Connection, event by event, with no sockets: an h2 client connection writes the frames,
the server state machine's bytes go back to it, and the tests read the client's events."""
from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame)
from hyperframe.frame import Frame

from sidecar.http.h1_connection import Timeouts
from sidecar.http.h2_connection import H2Connection, H2Limits

WINDOW = 256 * 1024
GET = [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/a?b=1")]
POST = [(":method", "POST"), (":scheme", "http"), (":authority", "example"), (":path", "/up")]


class IO:
    def __init__(self):
        self.out = bytearray()
        self.t = 0.0
        self.closed = self.aborted = False
        self.peer = "test"

    def write(self, data):
        assert not (self.closed or self.aborted), "write after close"
        self.out += data

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def now(self):
        return self.t


class FakeStream:
    """The stream layer's side: what the protocol calls on it."""

    def __init__(self, ex):
        self.ex = ex
        ex.stream = self
        self.body = []
        self.gone = self.done = False
        self.owed_flushes = 0

    def on_body(self, data, more):
        self.body.append((data, more))

    def client_gone(self):
        self.gone = True

    def finished(self):
        self.done = True

    def flush_owed(self):
        self.owed_flushes += 1


class Handler:
    def __init__(self):
        self.streams: dict[int, FakeStream] = {}

    def on_request(self, ex, body, more):
        assert body == b""
        self.streams[ex.sid] = FakeStream(ex)


class HeadFields:
    date_value = b"Mon, 07 Dec 2026 07:00:00 GMT"
    server_header = b"sidecar"
    extra_fields = ()


class Pair:
    """A server H2Connection and an h2 client joined in memory."""

    def __init__(self, limits=H2Limits(), timeouts=Timeouts(), client_settings=None):
        self.io = IO()
        self.handler = Handler()
        self.server = H2Connection(self.io, self.handler, limits, timeouts, 0.0,
                                   head_fields=HeadFields(), window=WINDOW)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.client = h2.connection.H2Connection(cfg)
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.events: list = []
        self.exchange()

    def exchange(self, raw: bytes = b"") -> list:
        """Client bytes (and raw extra bytes) to the server, its answer back; new events."""
        data = self.client.data_to_send() + raw
        if data:
            self.server.receive_data(data)
        new = []
        while self.io.out:
            out, self.io.out = bytes(self.io.out), bytearray()
            try:
                new += self.client.receive_data(out)
            except h2.exceptions.ProtocolError:
                break
            more = self.client.data_to_send()
            if more and not self.server.closed:
                self.server.receive_data(more)
        self.events += new
        return new

    def request(self, headers=GET, end=True) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=end)
        self.exchange()
        return sid

    def of(self, kind, sid=None):
        return [e for e in self.events if isinstance(e, kind)
                and (sid is None or getattr(e, "stream_id", None) == sid)]


def send_body(pair, sid, data: bytes) -> None:
    for i in range(0, len(data), 16384):
        pair.client.send_data(sid, data[i:i + 16384])


def respond(pair, sid, body=b"hello", headers=((b"content-type", b"text/plain"),)):
    ex = pair.handler.streams[sid].ex
    ex.start_response(ex, 200, list(headers))
    ex.send_data(ex, body, True)
    return pair.exchange()


def test_get_is_one_exchange_with_the_request_head_of_http1():
    p = Pair()
    sid = p.request()
    ex = p.handler.streams[sid].ex
    req = ex.req
    assert (req.method, req.path, req.raw_path, req.query_string, req.http_version) == \
        (b"GET", "/a", b"/a", b"b=1", "2")
    assert req.headers[0] == (b"host", b"example")   # :authority for HTTP/1.1 apps
    assert p.handler.streams[sid].body == []
    respond(p, sid)
    resp = p.of(h2.events.ResponseReceived, sid)[0]
    fields = dict(resp.headers)
    assert fields[":status"] == "200" and fields["server"] == "sidecar" and "date" in fields
    assert b"".join(e.data for e in p.of(h2.events.DataReceived, sid)) == b"hello"
    assert p.of(h2.events.StreamEnded, sid)
    assert p.handler.streams[sid].done and ex.complete and not p.server.exchanges


def test_cookies_are_joined_and_hop_by_hop_response_fields_dropped():
    p = Pair()
    sid = p.request(GET + [("cookie", "a=1"), ("cookie", "b=2")])
    assert (b"cookie", b"a=1; b=2") in p.handler.streams[sid].ex.req.headers
    respond(p, sid, headers=[(b"connection", b"close"), (b"transfer-encoding", b"chunked"),
                             (b"X-Up", b"1")])
    fields = dict(p.of(h2.events.ResponseReceived, sid)[0].headers)
    assert "connection" not in fields and "transfer-encoding" not in fields
    assert fields["x-up"] == "1"


def test_a_field_that_must_not_be_written_is_refused_before_anything_is_sent():
    p = Pair()
    sid = p.request()
    ex = p.handler.streams[sid].ex
    for bad in ([(b"x-evil", b"a\r\ninjected: 1")], [(b"bad name", b"v")], [(b"", b"v")]):
        with pytest.raises(ValueError):
            ex.start_response(ex, 200, bad)
    assert not ex.started
    ex.start_response(ex, 200, [(b"X-Pad", b" v \t")])
    ex.send_data(ex, b"", True)
    p.exchange()
    assert dict(p.of(h2.events.ResponseReceived, sid)[0].headers)["x-pad"] == "v"


def test_streams_are_independent_and_answered_in_any_order():
    p = Pair()
    a, b = p.request(), p.request()
    respond(p, b, b"second")
    assert p.of(h2.events.StreamEnded, b) and not p.of(h2.events.StreamEnded, a)
    respond(p, a, b"first")
    assert p.of(h2.events.StreamEnded, a)


def test_window_update_only_for_bytes_the_app_read():
    p = Pair()
    sid = p.request(POST, end=False)
    send_body(p, sid, b"x" * 200000)
    p.exchange()
    st = p.handler.streams[sid]
    assert b"".join(d for d, _ in st.body) == b"x" * 200000
    assert not p.of(h2.events.WindowUpdated, sid)   # nothing read yet: no window back
    st.ex.body_read(st.ex, 200000)
    p.exchange()
    assert sum(e.delta for e in p.of(h2.events.WindowUpdated, sid)) == 200000
    p.client.end_stream(sid)
    p.exchange()
    assert st.body[-1] == (b"", False)


def test_an_unread_stream_does_not_hold_the_connection_window_of_others():
    p = Pair()
    slow = p.request(POST, end=False)
    send_body(p, slow, b"s" * 65535)   # the whole default stream window, never read
    fast = p.request(POST, end=False)
    send_body(p, fast, b"f" * 65535)
    p.client.end_stream(fast)
    p.exchange()
    assert p.handler.streams[fast].body[-1] == (b"", False)
    assert sum(len(d) for d, _ in p.handler.streams[fast].body) == 65535


def test_response_bytes_wait_for_the_clients_window_and_credit_waits_with_them():
    p = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    sid = p.request()
    st = p.handler.streams[sid]
    ex = st.ex
    ex.start_response(ex, 200, [])
    ex.send_data(ex, b"y" * 5000, False)
    p.exchange()
    assert sum(len(e.data) for e in p.of(h2.events.DataReceived, sid)) == 1000
    assert not ex.writable(ex)          # the stream layer grants no ring credit now
    p.client.increment_flow_control_window(10000, sid)
    p.exchange()
    assert sum(len(e.data) for e in p.of(h2.events.DataReceived, sid)) == 5000
    assert ex.writable(ex) and st.owed_flushes >= 1


def test_a_response_the_app_finished_waits_for_the_window_not_for_the_app():
    """The app's last body arrives while bytes still wait for the client's window: the
    response is complete for the stream layer (its APP_DONE is no abort), and the END_STREAM
    follows the last byte when the window opens."""
    p = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    sid = p.request()
    st = p.handler.streams[sid]
    st.ex.start_response(st.ex, 200, [])
    st.ex.send_data(st.ex, b"w" * 300, True)
    p.exchange()
    assert st.ex.complete and not st.ex.ended and not st.done
    p.client.increment_flow_control_window(1000, sid)
    p.exchange()
    assert p.of(h2.events.StreamEnded, sid) and st.done
    assert sum(len(e.data) for e in p.of(h2.events.DataReceived, sid)) == 300


def test_a_stalled_stream_never_blocks_another():
    p = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    stalled, other = p.request(), p.request()
    ex = p.handler.streams[stalled].ex
    ex.start_response(ex, 200, [])
    ex.send_data(ex, b"z" * 1000, True)
    p.client.increment_flow_control_window(100, other)
    respond(p, other, b"o" * 100)
    assert p.of(h2.events.StreamEnded, other) and not p.of(h2.events.StreamEnded, stalled)


def test_zero_window_held_past_the_send_timeout_resets_that_stream_only():
    p = Pair(timeouts=Timeouts(send=5.0),
             client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = p.request()
    st = p.handler.streams[sid]
    st.ex.start_response(st.ex, 200, [])
    st.ex.send_data(st.ex, b"z" * 10, True)
    p.exchange()
    p.io.t = 6.0
    p.server.tick(6.0)
    p.exchange()
    resets = p.of(h2.events.StreamReset, sid)
    assert resets and resets[0].error_code == ErrorCodes.CANCEL
    assert st.gone and not p.server.closed


def test_trailers_end_the_stream_after_the_body():
    p = Pair()
    sid = p.request()
    ex = p.handler.streams[sid].ex
    ex.start_response(ex, 200, [(b"content-type", b"application/grpc")], True)
    ex.send_data(ex, b"msg", True)
    p.exchange()
    assert not p.of(h2.events.StreamEnded, sid)   # waits for the trailers
    ex.send_trailers(ex, [(b"grpc-status", b"0")])
    p.exchange()
    trailers = p.of(h2.events.TrailersReceived, sid)
    assert trailers and dict(trailers[0].headers)["grpc-status"] == "0"
    assert p.of(h2.events.StreamEnded, sid) and p.handler.streams[sid].done


def test_error_response_and_abort_are_per_stream():
    p = Pair()
    a, b = p.request(), p.request()
    ea, eb = p.handler.streams[a].ex, p.handler.streams[b].ex
    ea.error_response(ea, 503, ((b"retry-after", b"1"),))
    eb.start_response(eb, 200, [])
    eb.abort_response(eb, "worker lost")
    p.exchange()
    assert dict(p.of(h2.events.ResponseReceived, a)[0].headers)[":status"] == "503"
    assert p.of(h2.events.StreamReset, b)[0].error_code == ErrorCodes.INTERNAL_ERROR
    assert not p.server.closed


def test_client_reset_tells_the_stream():
    p = Pair()
    sid = p.request()
    p.client.reset_stream(sid, ErrorCodes.CANCEL)
    p.exchange()
    st = p.handler.streams[sid]
    assert st.gone and st.ex.closed
    assert st.ex.start_response(st.ex, 200, []) is False   # dropped, not an error


def goaway(p) -> h2.events.ConnectionTerminated:
    ends = p.of(h2.events.ConnectionTerminated)
    assert ends, "no GOAWAY"
    return ends[0]


def test_rapid_reset_gets_goaway_enhance_your_calm():
    p = Pair(limits=H2Limits(max_resets=20))
    for _ in range(30):
        sid = p.client.get_next_available_stream_id()
        p.client.send_headers(sid, GET, end_stream=True)
        p.client.reset_stream(sid, ErrorCodes.CANCEL)
    p.exchange()
    assert goaway(p).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert p.io.closed and all(s.gone for s in p.handler.streams.values())
    # the limit stops the streams at once, not at the end of the read
    assert len(p.handler.streams) == 21


@pytest.mark.parametrize("kind", ["PING", "SETTINGS", "PRIORITY"])
def test_control_frame_floods_get_goaway_enhance_your_calm(kind):
    p = Pair(limits=H2Limits(max_control_frames=50))
    f = {"PING": lambda: PingFrame(0, opaque_data=b"12345678"),
         "SETTINGS": lambda: SettingsFrame(0),
         "PRIORITY": lambda: PriorityFrame(1001, depends_on=0, stream_weight=1)}[kind]()
    p.exchange(f.serialize() * 100)
    assert goaway(p).error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_empty_data_flood_gets_goaway():
    p = Pair(limits=H2Limits(max_control_frames=50))
    sid = p.request(POST, end=False)
    for _ in range(100):
        p.client.send_data(sid, b"")
    p.exchange()
    assert goaway(p).error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_flood_counters_start_over_each_tick():
    p = Pair(limits=H2Limits(max_control_frames=50))
    for t in range(1, 5):
        p.exchange(PingFrame(0, opaque_data=b"12345678").serialize() * 40)
        p.server.tick(float(t))
    assert not p.of(h2.events.ConnectionTerminated) and not p.server.closed


def test_too_many_concurrent_streams_is_a_connection_error():
    p = Pair(limits=H2Limits(max_streams=4))
    for _ in range(4):
        p.request(end=False)
    # the client's own h2 would refuse: write the fifth HEADERS by hand
    enc = p.client.encoder
    f = HeadersFrame(p.client.get_next_available_stream_id())
    f.data = enc.encode(GET)
    f.flags.add("END_HEADERS")
    p.exchange(f.serialize())
    assert goaway(p).error_code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM)


def test_header_list_over_the_limit_is_431_and_the_connection_goes_on():
    """Its block is decoded to the end (the HPACK table stays in step), the app never sees
    it; with a body still coming, RST_STREAM NO_ERROR after the 431."""
    p = Pair(limits=H2Limits(max_header_list=4096))
    for end in (True, False):
        sid = p.request(GET + [("x-big", "v" * 8000)], end=end)
        assert sid not in p.handler.streams
        (resp,) = p.of(h2.events.ResponseReceived, sid)
        assert dict(resp.headers)[":status"] == "431"
        assert bool(p.of(h2.events.StreamReset, sid)) is not end
    # the same large field again, now from the client's table: still 431, still in step
    sid = p.request(GET + [("x-big", "v" * 8000)])
    assert dict(p.of(h2.events.ResponseReceived, sid)[0].headers)[":status"] == "431"
    sid = p.request(GET)
    respond(p, sid)
    assert p.of(h2.events.StreamEnded, sid) and not p.server.closed


def test_header_list_far_over_the_limit_is_the_connections_error():
    p = Pair(limits=H2Limits(max_header_list=4096))
    p.client.send_headers(1, GET + [("x-big", "v" * 17000)], end_stream=True)
    p.exchange()
    assert not p.handler.streams
    assert goaway(p).error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_hpack_bomb_is_bounded():
    """One large indexed field, then many references to it: each costs the decoder the
    field's size, so the header list limit stops it (RFC 7541 section 7.3)."""
    p = Pair(limits=H2Limits(max_header_list=16384))
    from hpack import Encoder
    enc = Encoder()
    block = enc.encode(GET + [("x-bomb", "b" * 4000)])
    p.exchange(_headers_frame(1, block))
    # the same field again, now from the dynamic table: one byte per copy
    block = enc.encode(GET + [("x-bomb", "b" * 4000)] * 50)
    p.exchange(_headers_frame(3, block))
    # h2 names an over-long header list a denial of service
    assert goaway(p).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert 3 not in p.handler.streams


def _headers_frame(sid, block, end_headers=True):
    f = HeadersFrame(sid)
    f.data = block
    f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def test_continuation_flood_gets_goaway():
    p = Pair()
    raw = _headers_frame(1, p.client.encoder.encode(GET), end_headers=False)
    for _ in range(200):
        c = ContinuationFrame(1)
        c.data = b"\x00" * 16
        raw += c.serialize()
    p.exchange(raw)
    assert goaway(p).error_code == ErrorCodes.PROTOCOL_ERROR
    assert p.io.closed


def test_idle_connection_gets_goaway_no_error_and_close():
    p = Pair(timeouts=Timeouts(keepalive=10.0))
    sid = p.request()
    respond(p, sid)
    p.io.t = 5.0
    p.server.tick(5.0)
    assert not p.io.closed
    p.server.tick(11.0)
    p.exchange()
    assert goaway(p).error_code == ErrorCodes.NO_ERROR and p.io.closed


def frames(data: bytes) -> list:
    """The frames in the server's raw bytes (the h2 client stops reading after a GOAWAY)."""
    out = []
    while data:
        f, length = Frame.parse_frame_header(memoryview(data[:9]))
        f.parse_body(memoryview(data[9:9 + length]))
        out.append(f)
        data = data[9 + length:]
    return out


def test_drain_finishes_streams_in_flight_and_refuses_new_ones():
    p = Pair()
    sid = p.request()
    p.server.start_drain()
    p.server.receive_data(_headers_frame(sid + 2, p.client.encoder.encode(GET)))
    assert sid + 2 not in p.handler.streams   # after the GOAWAY: refused, not dispatched
    ex = p.handler.streams[sid].ex
    ex.start_response(ex, 200, [])
    ex.send_data(ex, b"finished", True)
    out = frames(bytes(p.io.out))
    assert isinstance(out[0], GoAwayFrame)
    assert out[0].error_code == ErrorCodes.NO_ERROR and out[0].last_stream_id == sid
    refused = [f for f in out if isinstance(f, RstStreamFrame)]
    assert refused[0].stream_id == sid + 2 and refused[0].error_code == ErrorCodes.REFUSED_STREAM
    data = [f for f in out if isinstance(f, DataFrame)]
    assert b"".join(f.data for f in data) == b"finished" and "END_STREAM" in data[-1].flags
    assert p.io.closed   # the last stream ended: the connection closes


def test_body_timeout_answers_408_when_the_app_waits_for_a_body():
    p = Pair(timeouts=Timeouts(body=10.0))
    sid = p.request(POST, end=False)
    p.server.tick(11.0)
    p.exchange()
    assert dict(p.of(h2.events.ResponseReceived, sid)[0].headers)[":status"] == "408"
    assert p.handler.streams[sid].gone


def test_request_body_over_max_body_gets_413():
    p = Pair(limits=H2Limits(max_body=1000))
    sid = p.request(POST, end=False)
    send_body(p, sid, b"x" * 2000)
    p.exchange()
    assert dict(p.of(h2.events.ResponseReceived, sid)[0].headers)[":status"] == "413"


def test_h2c_upgrade_makes_the_http1_request_stream_1():
    from sidecar.http import h1
    import base64
    settings = base64.urlsafe_b64encode(SettingsFrame(0).serialize_body()).rstrip(b"=")
    req = h1.Request(b"GET", b"/u?x", "/u", b"/u", b"x", "1.1",
                     [(b"host", b"a"), (b"connection", b"Upgrade, HTTP2-Settings"),
                      (b"upgrade", b"h2c"), (b"http2-settings", settings)],
                     True, False, b"h2c", None, False)
    io, handler = IO(), Handler()
    conn = H2Connection(io, handler, H2Limits(), Timeouts(), 0.0, head_fields=HeadFields(),
                        window=WINDOW, upgrade=req)
    conn.upgraded_request(req)
    ex = handler.streams[1].ex
    assert ex.req.http_version == "2" and ex.req.headers == [(b"host", b"a")]
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_upgrade_connection()
    client.receive_data(bytes(io.out))
    io.out.clear()
    ex.start_response(ex, 200, [])
    ex.send_data(ex, b"up", True)
    evs = client.receive_data(bytes(io.out))
    assert [type(e).__name__ for e in evs] == ["ResponseReceived", "DataReceived", "StreamEnded"]


def test_garbage_after_the_preface_is_a_connection_error():
    p = Pair()
    p.exchange(b"\x00\x00\x04\x09\x00\x00\x00\x00\x01abcd")   # CONTINUATION out of place
    assert goaway(p).error_code == ErrorCodes.PROTOCOL_ERROR and p.io.closed


def test_a_bug_below_is_goaway_internal_error_not_a_crash(monkeypatch):
    p = Pair()

    def broken(data):
        raise RuntimeError("a bug")
    monkeypatch.setattr(p.server.h2, "receive_data", broken)
    p.server.receive_data(b"anything")
    out = frames(bytes(p.io.out))
    assert out[-1].error_code == ErrorCodes.INTERNAL_ERROR and p.io.closed
