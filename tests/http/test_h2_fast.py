"""sidecar/http/h2_fast.py against h2 itself: the same client bytes into an H2Connection with
the fast path and into one without it give the same bytes out, read by read, and the HPACK
caches decode and encode as hpack does while the table changes under them."""
from __future__ import annotations

import random
import types

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.stream import StreamClosedBy
from hpack import Decoder as HpackDecoder, Encoder as HpackEncoder

from sidecar import events
from sidecar.http import h2_fast
from sidecar.http.h1_connection import Timeouts
from sidecar.http.h2_connection import H2Connection, H2Limits

from tests.http.test_h2_connection import IO, FakeStream, HeadFields

WINDOW = 256 * 1024


class Answering:
    """The stream layer of a server that answers each request as ``answer`` says."""

    def __init__(self, answer):
        self.answer = answer
        self.pending = []

    def on_request(self, ex, body, more):
        FakeStream(ex)
        self.pending.append(ex)


def _server():
    io = IO()
    return io, H2Connection(io, None, H2Limits(), Timeouts(), 0.0, head_fields=HeadFields,
                            window=WINDOW)


def _run(chunks, answer, fast: bool, monkeypatch) -> list[bytes]:
    """Every read's answer from a server with or without the fast path."""
    monkeypatch.setattr(h2_fast, "speedups", fast)
    io, server = _server()
    handler = server.handler = Answering(answer)
    outs = []
    for chunk in chunks:
        server.receive_data(chunk)
        for ex in handler.pending:
            answer(ex)
        handler.pending.clear()
        outs.append(bytes(io.out))
        io.out.clear()
    return outs


def _conversation(requests, answer, monkeypatch, settings=None) -> list[bytes]:
    """The client's reads, made against the reference server (h2 alone): ``requests(client,
    n)`` sends round n's frames, None when done."""
    monkeypatch.setattr(h2_fast, "speedups", False)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    if settings:
        client.update_settings(settings)
    io, server = _server()
    handler = server.handler = Answering(answer)
    chunks = []
    n = 0
    while True:
        chunk = client.data_to_send()
        chunks.append(chunk)
        server.receive_data(chunk)
        for ex in handler.pending:
            answer(ex)
        handler.pending.clear()
        for ev in client.receive_data(bytes(io.out)):
            if isinstance(ev, h2.events.DataReceived):
                client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        io.out.clear()
        if requests(client, n) is None:
            chunks.append(client.data_to_send())
            return chunks
        n += 1


def _get(path=b"/", method=b"GET"):
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"example"),
            (b":path", path), (b"user-agent", b"h2load nghttp2/1.52.0")]


def _same_both_ways(requests, answer, monkeypatch, settings=None):
    chunks = _conversation(requests, answer, monkeypatch, settings)
    fast = _run(chunks, answer, True, monkeypatch)
    slow = _run(chunks, answer, False, monkeypatch)
    assert fast == slow
    assert sum(map(len, fast)) > 0


def test_whole_responses_in_one_call_as_event_by_event(monkeypatch):
    """``respond`` (a start and its last body in one batch from the worker) writes what
    start_response + send_data write, with the fast path or without, bodies past the windows
    and HEAD included."""
    def requests(client, n):
        if n >= 4:
            return None
        for method, path in ((b"GET", b"/"), (b"HEAD", b"/"), (b"GET", b"/big")):
            client.send_headers(client.get_next_available_stream_id(), _get(path, method),
                                end_stream=True)
        return True

    def body(ex):
        return b"z" * 50000 if ex.req.raw_path == b"/big" else b"Hello, world!"

    def by_events(ex):
        ex.start_response(ex, 200, [(b"content-type", b"text/plain")])
        ex.send_data(ex, body(ex), True)

    def whole(ex):
        ex.respond(ex, 200, [(b"content-type", b"text/plain")], body(ex))

    chunks = _conversation(requests, by_events, monkeypatch)
    reference = _run(chunks, by_events, False, monkeypatch)
    assert _run(chunks, whole, True, monkeypatch) == reference
    assert _run(chunks, whole, False, monkeypatch) == reference


def test_many_streams_and_changing_paths(monkeypatch):
    """Repeated heads (the caches' hits) and new paths (literals that change both tables)."""
    rng = random.Random(7)

    def requests(client, n):
        if n >= 30:
            return None
        for _ in range(8):
            path = b"/" if rng.random() < 0.6 else b"/p%d" % rng.randrange(200)
            client.send_headers(client.get_next_available_stream_id(), _get(path),
                                end_stream=True)
        return True

    def answer(ex):
        ex.start_response(ex, 200, [(b"content-type", b"text/plain"),
                                    (b"x-path", ex.req.raw_path)])
        ex.send_data(ex, ex.req.raw_path * 3, True)

    _same_both_ways(requests, answer, monkeypatch)


def test_large_bodies_windows_and_head_requests(monkeypatch):
    """Bodies past the client's windows and frame size (h2 takes over where the fast path
    refuses), empty bodies, HEAD."""
    def requests(client, n):
        if n >= 6:
            return None
        for method in (b"GET", b"HEAD", b"GET"):
            client.send_headers(client.get_next_available_stream_id(),
                                _get(b"/big%d" % n, method), end_stream=True)
        return True

    def answer(ex):
        size = 40000 if ex.sid % 3 else 0
        ex.start_response(ex, 200, [(b"content-length", b"%d" % size)])
        if size:
            ex.send_data(ex, b"x" * 10000)
            ex.send_data(ex, b"y" * (size - 10000), True)
        else:
            ex.send_data(ex, b"", True)

    _same_both_ways(requests, answer, monkeypatch,
                    settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 30000})


def test_trailers_bodies_still_coming_and_big_heads(monkeypatch):
    """Trailers, a response that ends before the request body (the stream open: h2's path),
    a head past the frame size (CONTINUATION) and a smaller HPACK table from the client."""
    def requests(client, n):
        if n >= 2:
            return None
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, _get(b"/t", b"POST"))
        client.send_data(sid, b"body")
        client.send_headers(client.get_next_available_stream_id(), _get(b"/big-head"),
                            end_stream=True)
        client.send_headers(client.get_next_available_stream_id(), _get(b"/trailers"),
                            end_stream=True)
        return True

    def answer(ex):
        if ex.req.raw_path == b"/trailers":
            ex.start_response(ex, 200, [(b"content-type", b"application/grpc")], trailers=True)
            ex.send_data(ex, b"msg", True)
            ex.send_trailers(ex, [(b"grpc-status", b"0")])
        elif ex.req.raw_path == b"/big-head":
            ex.start_response(ex, 200, [(b"x-big", b"v" * 17000)])
            ex.send_data(ex, b"ok", True)
        else:
            ex.start_response(ex, 200, [])
            ex.send_data(ex, b"early", True)

    _same_both_ways(requests, answer, monkeypatch,
                    settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 256})


def test_decoder_cache_follows_the_table():
    """The same block means other fields once the table changed: hpack's answer each time."""
    h2_fast_was = h2_fast.speedups
    h2_fast.speedups = True
    try:
        enc = HpackEncoder()
        ours, ref = h2_fast.Decoder(), HpackDecoder()
        rng = random.Random(3)
        for _ in range(400):
            fields = [(b":method", b"GET"), (b":path", b"/%d" % rng.randrange(6)),
                      (b"x-v", b"%d" % rng.randrange(4))]
            if rng.random() < 0.05:   # the client's SETTINGS_HEADER_TABLE_SIZE
                size = rng.choice((0, 64, 4096))
                ours.max_allowed_table_size = ref.max_allowed_table_size = size
                enc.header_table_size = size   # its next block starts with the update
            block = enc.encode(fields)
            assert ours.decode(block, raw=True) == ref.decode(block, raw=True) == fields
        # a hit: the block of indexed fields, decoded twice with the table unchanged
        block = enc.encode(fields)
        assert ours.decode(block, raw=True) == ours.decode(block, raw=True) == fields
    finally:
        h2_fast.speedups = h2_fast_was


@pytest.mark.parametrize("seed", [1, 2])
def test_encoder_cache_follows_the_table(seed):
    ours, ref = h2_fast.Encoder(), HpackEncoder()
    rng = random.Random(seed)
    for _ in range(300):
        fields = [(b":status", b"200"), (b"date", b"d%d" % rng.randrange(3)),
                  (b"content-length", b"13")]
        if rng.random() < 0.05:
            ours.header_table_size = ref.header_table_size = rng.choice((0, 100, 4096))
        assert ours.encode_block(fields) == ref.encode(fields)


def _stream_state(conn, sid: int) -> dict:
    """An h2 stream's attributes, its state machine's and window manager's unfolded."""
    stream = conn.streams[sid]
    state = dict(vars(stream))
    state["state_machine"] = dict(vars(state["state_machine"]))
    state["_inbound_window_manager"] = dict(vars(state["_inbound_window_manager"]))
    state["config"] = stream.config is conn.config
    return state


def test_streams_made_past_h2_are_h2s_own(monkeypatch):
    """A bodiless request's stream made by h2_fast._open_stream has h2's attributes, value
    for value, right after the request and once answered; heads with content-length or a
    :status field (h2 checks those) still go through h2's calls, with the same answer."""
    def answer(ex):
        pass

    heads = [_get(), _get(b"/x", b"HEAD"), _get() + [(b"content-length", b"0")],
             _get() + [(b"content-length", b"x")]]
    states = {}
    for fast in (True, False):
        monkeypatch.setattr(h2_fast, "speedups", fast)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                      header_encoding=None))
        client.initiate_connection()
        io, server = _server()
        server.handler = handler = Answering(answer)
        client.send_headers(1, _get(), end_stream=True)   # h2 opens the connection on it
        server.receive_data(client.data_to_send())
        for head in heads[:3]:
            client.send_headers(client.get_next_available_stream_id(), head, end_stream=True)
        server.receive_data(client.data_to_send())
        assert sorted(server.h2.streams) == [1, 3, 5, 7]
        got = [_stream_state(server.h2, sid) for sid in (3, 5, 7)]
        ex = handler.pending[1]
        ex.respond(ex, 200, [], b"ok")
        got.append(_stream_state(server.h2, 3))
        client.send_headers(client.get_next_available_stream_id(), heads[3], end_stream=True)
        server.receive_data(client.data_to_send())   # h2's ProtocolError: GOAWAY
        got.append(bytes(io.out))
        got.append((sorted(server.h2.streams), dict(server.h2._closed_streams)))
        states[fast] = got
    assert states[True] == states[False]
    assert states[True][-2][-17 + 3] == 0x7   # the bad content-length's GOAWAY
    assert states[True][-1][1] == {3: StreamClosedBy.SEND_END_STREAM}   # forgotten when 9 came


def test_response_heads_made_once_per_head_and_date(monkeypatch):
    """Response heads as the worker gives them (lists of [name, value]), a few repeated, a
    bad one refused each time it comes, and the server's Date changing under them: the same
    bytes with the fast path (ResponseHeads) as without."""
    from tests.http.test_h2_connection import HeadFields

    monkeypatch.setattr(HeadFields, "date_value", HeadFields.date_value)
    rng = random.Random(3)

    def requests(client, n):
        if n >= 12:
            return None
        for _ in range(6):
            client.send_headers(client.get_next_available_stream_id(),
                                _get(b"/%d" % rng.randrange(4)), end_stream=True)
        return True

    def answer(ex):
        HeadFields.date_value = b"Mon, 07 Dec 2026 07:00:%02d GMT" % (ex.sid // 16)
        path = ex.req.raw_path
        headers = [[b"content-type", b"text/plain"], [b"content-length", b"2"]]
        if path == b"/1":
            headers.append([b"x-one", b"1 "])
        elif path == b"/2":
            headers.append([b"bad name", b"x"])   # refused every time: 500
        elif path == b"/3":
            headers = [[b"Connection", b"close"], [b"server", b"app"]] + headers
        try:
            ex.respond(ex, 200 + len(path), headers, b"ok")
        except ValueError:
            ex.error_response(ex, 500)

    _same_both_ways(requests, answer, monkeypatch)


class _Scope:
    """HTTPConnection's part of a request's scope (req_scope, tls), as HTTP2Connection reads
    it."""

    def __init__(self, tls=None):
        self.tls = tls
        self._packed_tls = None if tls is None else events.pack(tls)

    def req_scope(self, req):
        return (req.method.decode(), "https" if self.tls else "http", req.path, req.raw_path,
                req.query_string, req.headers, ["127.0.0.1", 5000], ["127.0.0.1", 80], "2",
                "")


@pytest.mark.parametrize("tls", [None, [None, [], None, None, 0x304, 0x1301]])
def test_request_records_packed_once_per_head_are_the_list_events(tls, monkeypatch):
    """HTTP2Connection's HTTP_REQUEST from a head's scope packed once (pack_scope, kept on the
    head by H2Connection's RequestHeads) is, byte for byte, the list event packed; an extended
    CONNECT's head has none (a WebSocket's scope is made apart)."""
    from sidecar.frontend.h2_conn import HTTP2Connection

    monkeypatch.setattr(h2_fast, "speedups", True)   # (without: no head is kept, nor packed)
    front = object.__new__(HTTP2Connection)
    front.scope_of = _Scope(tls)
    io, server = _server()
    server.handler = handler = Answering(lambda ex: None)
    handler.pack_scope = front.pack_scope
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    for path in (b"/a%20b?q=1", b"/", b"/a%20b?q=1"):
        client.send_headers(client.get_next_available_stream_id(), _get(path), end_stream=True)
    client.send_headers(client.get_next_available_stream_id(),
                        [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                         (b":scheme", b"http"), (b":authority", b"example"),
                         (b":path", b"/ws")])
    handler.on_websocket = lambda ex: handler.pending.append(ex)
    server.receive_data(client.data_to_send())
    first, _, again, ws = handler.pending
    assert again.req is first.req and first.req.packed is not None
    assert ws.req.packed is None
    for ex in handler.pending[:3]:
        stream = types.SimpleNamespace(sid=ex.sid * 1000, req=ex.req)
        record = front.request_event(stream, b"body", True)
        stream.req = ex.req._replace(packed=None)
        listed = front.request_event(stream, b"body", True)
        assert type(record) is bytes and type(listed) is list
        assert record == events.pack(listed)


def test_open_streams_counted_as_h2_counts_them():
    """h2_fast._open_inbound: h2's open_inbound_streams, the closed streams forgotten alike,
    over streams open, half-closed, answered and reset."""
    import copy

    io, server = _server()
    server.handler = handler = Answering(lambda ex: None)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    for n in range(12):
        client.send_headers(client.get_next_available_stream_id(), _get(), end_stream=n % 3 == 0)
    server.receive_data(client.data_to_send())
    for ex in handler.pending[::4]:
        ex.respond(ex, 200, [], b"ok")
    client.reset_stream(3)
    client.reset_stream(9)
    server.receive_data(client.data_to_send())
    other = copy.deepcopy(server.h2)
    assert h2_fast._open_inbound(server.h2) == other.open_inbound_streams
    assert server.h2.streams.keys() == other.streams.keys()
    assert dict(server.h2._closed_streams) == dict(other._closed_streams)
    assert 0 < len(server.h2.streams) < 12 and server.h2._closed_streams
