"""HTTP/2 limits and known attacks against a live sidecar, with raw frames over real sockets.

Each attack: the attacker's connection gets GOAWAY with the error code the RFC or the
advisory names, then the close; a log line says why; the front-end's memory stays bounded;
and a probe connection opened before the attack is served throughout.
"""
from __future__ import annotations

import time

import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame)

from tests.e2e.h2client import H2Client, get
from tests.e2e.util import RssSampler, wait_for
from tests.server import Sidecar

APP = "tests.e2e.apps:app"
FLAGS = ("--h2-max-control-frames", "200", "--h2-max-resets", "50",
         "--h2-max-concurrent-streams", "16", "--max-header-bytes", "16k",
         "--timeout-send", "2", "--timeout-keep-alive", "4")


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, *FLAGS, workers=1) as s:
        yield s


def headers_frame(sid: int, block: bytes, end_headers: bool = True, end_stream: bool = True):
    f = HeadersFrame(sid)
    f.data = block
    if end_stream:
        f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def header_block(sid: int, block: bytes) -> bytes:
    """A header block as HEADERS and CONTINUATION frames of at most 16 KiB each."""
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = headers_frame(sid, pieces[0], end_headers=len(pieces) == 1)
    for i, piece in enumerate(pieces[1:], 2):
        c = ContinuationFrame(sid)
        c.data = piece
        if i == len(pieces):
            c.flags.add("END_HEADERS")
        out += c.serialize()
    return out


def ping_flood(cl):
    return PingFrame(0, opaque_data=b"12345678").serialize() * 2000


def settings_flood(cl):
    return SettingsFrame(0).serialize() * 2000


def priority_flood(cl):
    return b"".join(PriorityFrame(2 * i + 101, depends_on=0, stream_weight=1).serialize()
                    for i in range(2000))


def empty_data_flood(cl):
    sid = cl.request([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                      (":path", "/echo")], open_body=True)
    return DataFrame(sid).serialize() * 2000


def rapid_reset(cl):
    out = []
    enc = cl.conn.encoder
    for i in range(500):
        sid = 2 * i + 1001
        out.append(headers_frame(sid, enc.encode(get("/sleep?s=0.5"))))
        rst = RstStreamFrame(sid)
        rst.error_code = ErrorCodes.CANCEL
        out.append(rst.serialize())
    return b"".join(out)


def continuation_flood(cl):
    raw = headers_frame(1001, cl.conn.encoder.encode(get("/pid")), end_headers=False)
    c = ContinuationFrame(1001)
    c.data = b"\x00" * 1024
    return raw + c.serialize() * 2000


def hpack_bomb(cl):
    """One 4 KiB field into the dynamic table, then a block of 1-byte references to it."""
    enc = Encoder()
    first = headers_frame(1001, enc.encode(get("/pid") + [("x-bomb", "b" * 4000)]))
    bomb = headers_frame(1003, enc.encode(get("/pid") + [("x-bomb", "b" * 4000)] * 400))
    return first + bomb


def oversized_header_list(cl):
    """Past 4 x --max-header-bytes (16k): a bomb, not a big cookie (the 431 test below)."""
    return header_block(1001, cl.conn.encoder.encode(get("/pid") + [("x-big", "v" * 70000)]))


def too_many_streams(cl):
    enc = cl.conn.encoder
    block = enc.encode(get("/sleep?s=2"))
    return b"".join(headers_frame(2 * i + 1001, block, end_stream=False) for i in range(40))


ATTACKS = {
    "ping flood": (ping_flood, ErrorCodes.ENHANCE_YOUR_CALM, "control frame flood"),
    "settings flood": (settings_flood, ErrorCodes.ENHANCE_YOUR_CALM, "control frame flood"),
    "priority flood": (priority_flood, ErrorCodes.ENHANCE_YOUR_CALM, "control frame flood"),
    "empty data flood": (empty_data_flood, ErrorCodes.ENHANCE_YOUR_CALM,
                         "control frame flood"),
    "rapid reset (CVE-2023-44487)": (rapid_reset, ErrorCodes.ENHANCE_YOUR_CALM, "rapid reset"),
    "CONTINUATION flood (CVE-2024-27316)": (continuation_flood, ErrorCodes.PROTOCOL_ERROR,
                                            "too many continuation frames"),
    "HPACK bomb": (hpack_bomb, ErrorCodes.ENHANCE_YOUR_CALM, "HTTP/2 connection error"),
    "header list 4x over --max-header-bytes": (oversized_header_list,
                                            ErrorCodes.ENHANCE_YOUR_CALM,
                                            "HTTP/2 connection error"),
    "streams over --h2-max-concurrent-streams": (too_many_streams, ErrorCodes.PROTOCOL_ERROR,
                                                 "HTTP/2 connection error"),
}


def served(probe: H2Client) -> None:
    sid = probe.request(get("/pid"))
    status, _, body = probe.response(sid)
    assert status == 200 and b"pid" in body


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_gets_goaway_and_nothing_else_is_disturbed(sc, name):
    attack, code, logged = ATTACKS[name]
    with H2Client(sc.port) as probe, H2Client(sc.port) as cl, \
            RssSampler({"front-end": sc.proc.pid}) as rss:
        served(probe)
        cl.pump(0.2)   # our SETTINGS, its ACK: the limits are in force
        try:
            cl.flush(attack(cl))
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server closed before reading it all: what it read sufficed
        cl.wait_closed()
        end = cl.goaway()
        assert end is not None and end.error_code == code, (end, sc.log()[-2000:])
        served(probe)
    assert rss.growth()["front-end"] < 32 * 1024, rss.report()
    wait_for(lambda: logged.lower() in sc.log().lower(), 5, what=f"a log line with {logged!r}")


def test_header_list_over_max_header_bytes_is_431_on_its_stream_alone(sc):
    """Over --max-header-bytes (16k), under 4x: that stream gets 431, as on HTTP/1.1, and the
    connection goes on (its HPACK table still in step with the client's)."""
    with H2Client(sc.port) as cl:
        big = cl.request(get("/pid") + [("x-big", "v" * 20000)])
        again = cl.request(get("/pid") + [("x-big", "v" * 20000)])   # indexed this time
        assert cl.response(big)[0] == cl.response(again)[0] == 431
        served(cl)
        assert cl.goaway() is None
    wait_for(lambda: "header list over --max-header-bytes" in sc.log(), 5, what="a log line")


def test_zero_window_held_past_the_send_timeout_resets_only_that_stream(sc):
    with H2Client(sc.port, settings={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}) as cl:
        cl.pump(0.2)
        held = cl.request(get("/zeros?n=1000000"))
        t0 = time.monotonic()
        cl.until(lambda: any(isinstance(e, h2.events.StreamReset) and e.stream_id == held
                             for e in cl.events), timeout=10, what="the held stream's reset")
        assert time.monotonic() - t0 >= 1.5   # --timeout-send 2 (checked once a second)
        reset = [e for e in cl.events if isinstance(e, h2.events.StreamReset)][0]
        assert reset.error_code == ErrorCodes.CANCEL
        # the connection goes on: a new stream whose window is opened is served
        sid = cl.request(get("/pid"))
        cl.conn.increment_flow_control_window(65535, sid)
        cl.flush()
        assert cl.response(sid)[0] == 200 and cl.goaway() is None
    assert "send timeout (2s)" in sc.log()


def test_idle_connection_gets_goaway_no_error(sc):
    with H2Client(sc.port) as cl:
        served(cl)
        cl.wait_closed(timeout=10)   # --timeout-keep-alive 4, checked once a second
        assert cl.goaway().error_code == ErrorCodes.NO_ERROR


def test_a_connection_over_limit_concurrency_gets_goaway_naming_no_stream():
    import socket as socket_
    with Sidecar(APP, "--limit-concurrency", "1", workers=1) as s:
        with socket_.create_connection(("127.0.0.1", s.port)) as held:
            held.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(100).startswith(b"HTTP/1.1 200")
            with H2Client(s.port) as cl:
                try:
                    cl.request(get("/pid"))
                except OSError:
                    pass   # closed already: the GOAWAY is in our receive buffer
                cl.wait_closed()
                end = cl.goaway()
                assert end.error_code == ErrorCodes.NO_ERROR and end.last_stream_id == 0
        assert "over --limit-concurrency" in s.log()
