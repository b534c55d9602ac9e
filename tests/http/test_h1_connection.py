"""The HTTP/1.1 connection state machine, driven byte by byte and event by event: no sockets,
no event loop, no processes.  ``Conn`` is the machine with a recording ``io`` and stream
layer; the time is whatever the test says."""
from __future__ import annotations

import re

import pytest

from sidecar.http import h1
from sidecar.http.h1_connection import (CONTINUE, DISCARD_MAX, LINGER_TIME, LINGER_TIMEOUT,
                                        MAX_PIPELINE, UNSTAMPED, H1Connection,
                                        Timeouts)

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
T = Timeouts(header=10, body=20, keepalive=30, send=40)


class Fields:
    date_value = b"Mon, 07 Dec 2026 00:00:00 GMT"
    server_header = b"sidecar"
    extra_fields = ()


class IO:
    """Records what the machine does to the socket."""

    def __init__(self):
        self.out = bytearray()
        self.calls: list[str] = []
        self.clock = 0.0
        self.peer = "test peer"
        self.reading = True

    def write(self, data):
        self.out += data

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def pause_reading(self):
        assert self.reading
        self.reading = False
        self.calls.append("pause")

    def resume_reading(self):
        assert not self.reading
        self.reading = True
        self.calls.append("resume")

    def close(self):
        self.calls.append("close")

    def linger(self):
        self.calls.append("linger")

    def abort(self):
        self.calls.append("abort")

    def can_linger(self):
        return True

    def now(self):
        return self.clock


class FakeStream:
    def __init__(self, ex, body, more):
        self.ex, self.sid = ex, id(ex) % 1000
        self.body = [(body, more)]
        self.gone = self.finished_count = self.owed_flushes = 0

    def on_body(self, data, more):
        self.body.append((data, more))

    def client_gone(self):
        self.gone += 1

    def flush_owed(self):
        self.owed_flushes += 1

    def finished(self):
        self.finished_count += 1

    def request_timed_out(self, seconds):   # what the stream layer does: 504 for the app
        self.timed_out = seconds
        self.conn.error_response(self.ex, 504)


class Conn(H1Connection):
    def __init__(self, upgrades=True, now=0.0, h2c=False):
        self.rec = IO()
        self.rec.clock = now
        self.streams: list[FakeStream] = []
        self.upgraded = []
        super().__init__(self.rec, self, h1.Limits(max_body=1 << 30), T, now,
                         head_fields=Fields, upgrades=upgrades, h2c=h2c, max_first_body=1024)

    # the handler
    def on_request(self, ex, body, more):
        ex.stream = FakeStream(ex, body, more)
        ex.stream.conn = self
        self.streams.append(ex.stream)

    def on_upgrade(self, req):
        self.upgraded.append(req)

    def feed(self, data: bytes, now: float | None = None, bytewise: bool = False):
        if now is not None:
            self.rec.clock = now
        chunks = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
        for chunk in chunks:
            self.receive_data(chunk)

    def answer(self, i: int, status=200, body=b"ok", headers=None):
        ex = self.streams[i].ex
        if headers is None:
            headers = [(b"content-length", b"%d" % len(body))]
        self.start_response(ex, status, headers)
        self.send_data(ex, body)
        self.end_response(ex)


def status_lines(data: bytes) -> list[bytes]:
    """The status lines in ``data`` (bodies here never contain one)."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", data)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_request_response_keep_alive(bytewise):
    c = Conn()
    c.feed(GET % b"a", bytewise=bytewise)
    assert len(c.streams) == 1 and c.streams[0].body == [(b"", False)]
    c.answer(0)
    out = c.rec.take()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok")
    assert c.streams[0].finished_count == 1
    assert not c.pipeline and not c.closed and c.idle_since == UNSTAMPED
    c.feed(GET % b"b", bytewise=bytewise)
    assert len(c.streams) == 2


def test_small_body_rides_with_its_request_and_a_larger_one_follows():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert c.streams[0].body == [(b"abc", False)]
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"y" * 2000)
    assert c.streams[1].body == [(b"", True), (b"y" * 2000, True), (b"", False)]


def test_pipelined_responses_are_written_in_request_order():
    c = Conn()
    c.feed(GET % b"1" + GET % b"2" + GET % b"3")
    assert len(c.streams) == 3
    c.answer(2, body=b"three")
    c.answer(1, body=b"two")
    assert c.rec.take() == b""            # the head has not answered: the others buffer
    assert c.streams[1].finished_count == 1
    c.answer(0, body=b"one")
    out = c.rec.take()
    assert out.index(b"one") < out.index(b"two") < out.index(b"three")
    assert not c.pipeline


def test_a_buffered_exchange_is_not_writable_until_it_is_the_head():
    c = Conn()
    c.feed(GET % b"1" + GET % b"2")
    first, second = (s.ex for s in c.streams)
    assert c.writable(first) and not c.writable(second)
    c.answer(0)
    assert c.writable(second) and c.streams[1].owed_flushes == 1


def test_pipeline_limit_pauses_reading_until_answers_go_out():
    c = Conn()
    c.feed((GET % b"x") * MAX_PIPELINE)
    assert c.rec.calls == ["pause"]
    c.answer(0)
    assert c.rec.calls == ["pause", "resume"]


@pytest.mark.parametrize("request_head, closes", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
])
def test_keep_alive_rules(request_head, closes):
    c = Conn()
    c.feed(request_head)
    c.answer(0)
    assert (c.rec.calls == ["close"]) == closes
    assert c.closed == closes


def test_close_delimited_body_for_http10_without_length_closes_after_it():
    c = Conn()
    c.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    ex = c.streams[0].ex
    assert c.start_response(ex, 200, []) is True      # open-ended
    c.send_data(ex, b"all of it")
    c.end_response(ex)
    assert c.rec.calls == ["close"] and c.rec.take().endswith(b"\r\n\r\nall of it")


def test_chunked_response_and_app_connection_close():
    c = Conn()
    c.feed(GET % b"")
    ex = c.streams[0].ex
    assert c.start_response(ex, 200, [(b"connection", b"close")]) is True
    c.send_data(ex, b"abc")
    c.end_response(ex)
    out = c.rec.take()
    assert b"transfer-encoding: chunked" in out and out.endswith(b"3\r\nabc\r\n0\r\n\r\n")
    assert c.rec.calls == ["close"]


def test_head_request_gets_no_body_bytes():
    c = Conn()
    c.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    c.answer(0, body=b"hidden")
    assert not c.rec.take().endswith(b"hidden")


def test_invalid_head_from_the_app_raises_and_writes_nothing():
    c = Conn()
    c.feed(GET % b"")
    with pytest.raises((ValueError, TypeError)):
        c.start_response(c.streams[0].ex, 200, [(b"bad name", b"x")])
    assert c.rec.take() == b""


def test_expect_continue_is_sent_when_the_app_asks_for_the_body():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    ex = c.streams[0].ex
    assert c.rec.take() == b""
    c.send_continue(ex)
    c.send_continue(ex)            # once only
    assert c.rec.take() == CONTINUE


def test_expect_continue_answered_without_reading_closes():
    """The client never sent the body it announced: the connection cannot be reused."""
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    c.answer(0, status=417, body=b"")
    assert b"connection: close" in c.rec.take().lower()
    assert c.rec.calls[-1] in ("close", "linger") and c.closed


def test_body_backpressure_pauses_and_resumes_reading_per_exchange():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"z" * 10)
    ex = c.streams[0].ex
    c.pause_body(ex)
    c.pause_body(ex)
    assert c.rec.calls == ["pause"]
    c.resume_body(ex)
    assert c.rec.calls == ["pause", "resume"]


@pytest.mark.parametrize("chunked", [False, True])
def test_unread_body_is_dropped_after_the_answer_and_the_connection_kept(chunked):
    c = Conn()
    if chunked:
        c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nabcd\r\n")
    else:
        c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabcd")
    s = c.streams[0]
    c.pause_body(s.ex)              # the app stopped reading
    c.answer(0, status=404, body=b"")
    assert c.rec.calls == ["pause", "resume"]   # reading again: to drop the rest
    n = len(s.body)
    c.feed(b"4\r\nefgh\r\n0\r\n\r\n" if chunked else b"x" * (100000 - 4))
    assert len(s.body) == n         # dropped, not handed to the stream
    c.feed(GET % b"next")
    assert len(c.streams) == 2 and not c.closed


def test_unread_body_known_to_be_too_long_closes_lingering():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nab" % (DISCARD_MAX + 10))
    c.answer(0, status=404, body=b"")
    assert c.rec.calls == ["linger"] and c.closed


def test_unread_chunked_body_past_the_limit_closes():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.answer(0, status=404, body=b"")
    piece = b"%x\r\n" % 65536 + b"q" * 65536 + b"\r\n"
    for _ in range(DISCARD_MAX // 65536):
        c.feed(piece)
    assert not c.closed
    c.feed(piece)
    assert c.closed and c.rec.calls[-1] == "linger"


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                         # no Host
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
])
def test_bad_request_is_answered_and_closed(data, status):
    c = Conn()
    c.feed(data)
    assert status_lines(c.rec.take())[0].split()[1] == b"%d" % status
    assert c.closed and c.rec.calls[-1] in ("close", "linger") and not c.streams


def test_bad_request_behind_pipelined_ones_is_answered_after_them():
    c = Conn()
    c.feed(GET % b"ok" + b"GET / HTTP/1.1\r\n\r\n")
    assert c.rec.take() == b""
    c.answer(0)
    assert [line.split()[1] for line in status_lines(c.rec.take())] == [b"200", b"400"]
    assert c.rec.calls[-1] in ("close", "linger")


def test_bad_chunk_in_a_body_answers_for_the_exchange():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    s = c.streams[0]
    assert s.gone == 1 and s.finished_count == 1
    assert status_lines(c.rec.take())[0].startswith(b"HTTP/1.1 400")


def test_bad_chunk_after_the_response_started_aborts():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.start_response(c.streams[0].ex, 200, [])
    c.feed(b"zz\r\n")
    assert c.streams[0].gone == 1 and c.rec.calls[-1] == "close" and c.closed


def test_error_and_abort_responses():
    c = Conn()
    c.feed(GET % b"1")
    c.error_response(c.streams[0].ex, 502)
    assert status_lines(c.rec.take()) == [b"HTTP/1.1 502 Bad Gateway"]
    assert c.rec.calls == ["close"]
    c = Conn()
    c.feed(GET % b"1" + GET % b"2")
    c.start_response(c.streams[1].ex, 200, [])
    c.abort_response(c.streams[1].ex, "worker lost")   # never reached the socket: reset
    assert c.rec.calls == ["abort"]


def test_upgrade_is_handed_over_and_refused_behind_pipelined_requests():
    ws = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    c = Conn()
    c.feed(ws)
    assert len(c.upgraded) == 1 and c.closed and not c.streams
    c = Conn()
    c.feed(GET % b"" + ws)
    assert not c.upgraded
    c.answer(0)
    assert [line.split()[1] for line in status_lines(c.rec.take())] == [b"200", b"400"]
    c = Conn(upgrades=False)   # no WebSocket support: served as plain HTTP
    c.feed(ws)
    assert not c.upgraded and len(c.streams) == 1


H2C = (b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"Upgrade: h2c\r\n%sContent-Length: %d\r\n\r\n")


def test_h2c_upgrade_is_handed_over_with_the_bytes_after_it():
    c = Conn(h2c=True)
    c.feed(H2C % (b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n", 0) + b"PRI * HTTP/2.0")
    assert [r.upgrade for r in c.upgraded] == [b"h2c"] and c.closed and not c.streams
    assert c.parser.take_trailing() == b"PRI * HTTP/2.0"


@pytest.mark.parametrize("case", ["no HTTP2-Settings", "two", "a body", "h2c off"])
def test_h2c_upgrade_declined_is_served_as_http1(case):
    settings = b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    head = H2C % ({"no HTTP2-Settings": b"", "two": settings * 2}.get(case, settings),
                  3 if case == "a body" else 0)
    c = Conn(h2c=case != "h2c off")
    c.feed(head + (b"abc" if case == "a body" else b""))
    assert not c.upgraded and len(c.streams) == 1
    assert c.streams[0].body[-1][1] is False   # the whole request, as HTTP/1.1


def test_connection_over_the_limit_gets_503_at_its_first_request():
    c = Conn()
    c.over_limit = True
    c.feed(GET % b"")
    out = c.rec.take()
    assert out.startswith(b"HTTP/1.1 503") and b"retry-after: 5" in out.lower()
    assert c.closed and not c.streams


# --- deadlines ------------------------------------------------------------------------------

def test_fresh_connection_that_sends_nothing_is_closed_silently():
    c = Conn()
    c.tick(T.header - 0.1)
    assert not c.closed
    c.tick(T.header)
    assert c.closed and c.rec.calls == ["close"] and c.rec.take() == b""


def test_slowloris_head_gets_408_however_it_dribbles():
    c = Conn()
    for i in range(5):
        c.feed(b"GET / HTTP/1.1\r\nX: "[i:i + 1], now=float(i))
    c.tick(T.header)     # from the first byte, not the last
    assert status_lines(c.rec.take())[0].startswith(b"HTTP/1.1 408") and c.closed


def test_body_timeout_answers_408_and_tells_the_stream():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", now=1.0)
    c.tick(1.0 + T.body - 0.1)
    assert not c.closed
    c.tick(1.0 + T.body)
    assert c.streams[0].gone == 1
    assert status_lines(c.rec.take())[0].startswith(b"HTTP/1.1 408") and c.closed


def test_body_timeout_waits_for_a_100_continue_client_until_the_app_asks():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    c.tick(T.body * 3)
    assert not c.closed
    c.send_continue(c.streams[0].ex)
    c.rec.clock = T.body * 3
    c.feed(b"a")
    c.tick(T.body * 4)
    assert c.closed


def test_no_client_deadline_runs_while_we_are_not_reading():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", now=0.0)
    c.pause_body(c.streams[0].ex)
    c.tick(T.body * 10)
    assert not c.closed
    c.rec.clock = T.body * 10
    c.resume_body(c.streams[0].ex)        # the clock starts over
    c.tick(T.body * 10 + T.body - 0.1)
    assert not c.closed


def test_request_timeout_is_off_by_default():
    c = Conn()
    c.feed(GET % b"", now=0.0)
    c.tick(1000.0)
    assert not c.closed and not hasattr(c.streams[0], "timed_out")


def request_timeout_conn() -> Conn:
    c = Conn()
    c.timeouts = Timeouts(header=10, body=20, keepalive=30, send=40, request=5)
    return c


def test_request_timeout_answers_504_for_a_request_with_no_response_start():
    c = request_timeout_conn()
    c.feed(GET % b"a" + GET % b"b", now=1.0)
    c.answer(0)
    c.tick(5.9)
    assert not hasattr(c.streams[1], "timed_out")
    c.tick(6.0)
    assert c.streams[1].timed_out == 5
    assert status_lines(c.rec.take()) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 504 Gateway Timeout"]
    assert c.closed and "close" in c.rec.calls


def test_request_timeout_runs_from_the_end_of_the_body_and_not_once_started():
    c = request_timeout_conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab", now=0.0)
    c.feed(b"c", now=4.0)
    c.tick(8.0)                            # 8 s since the head, 4 since the last byte
    assert not hasattr(c.streams[0], "timed_out")
    c.feed(b"d", now=8.5)                  # received whole at 8.5
    c.tick(13.0)
    assert not hasattr(c.streams[0], "timed_out")
    c.tick(13.5)
    assert c.streams[0].timed_out == 5
    c2 = request_timeout_conn()
    c2.feed(GET % b"", now=0.0)
    c2.start_response(c2.streams[0].ex, 200, [])
    c2.tick(100.0)
    assert not hasattr(c2.streams[0], "timed_out") and not c2.closed


def test_request_timeout_runs_while_we_do_not_read():
    """An app that reads none of a body holds the client back: the time is the app's."""
    c = request_timeout_conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", now=0.0)
    c.pause_body(c.streams[0].ex)
    c.tick(5.0)
    assert c.streams[0].timed_out == 5
    assert status_lines(c.rec.take()) == [b"HTTP/1.1 504 Gateway Timeout"]


def test_keep_alive_timeout_closes_an_idle_connection_only():
    c = Conn()
    c.feed(GET % b"", now=0.0)
    c.tick(T.keepalive * 2)
    assert not c.closed            # a request in flight: not idle
    c.rec.clock = 100.0
    c.answer(0)
    c.tick(100.5)                  # the first tick after the answer starts the idle clock
    c.tick(100.5 + T.keepalive - 0.1)
    assert not c.closed
    c.tick(100.5 + T.keepalive)
    assert c.closed and c.rec.calls == ["close"]


def test_send_timeout_aborts_a_client_that_takes_nothing():
    c = Conn()
    c.feed(GET % b"")
    c.write_blocked(5.0)
    assert not c.writable(c.streams[0].ex)
    c.tick(5.0 + T.send - 0.1)
    assert not c.closed
    c.tick(5.0 + T.send)
    assert c.rec.calls == ["abort"]


def test_write_unblocked_lets_the_head_grant_what_it_owes():
    c = Conn()
    c.feed(GET % b"")
    c.write_blocked(1.0)
    c.write_unblocked()
    assert c.streams[0].owed_flushes == 1 and c.writable(c.streams[0].ex)


def test_lingering_ends_when_the_client_pauses_or_at_the_limit():
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (DISCARD_MAX * 2),
           now=0.0)
    c.answer(0, status=413, body=b"")
    assert c.rec.calls == ["linger"]
    for t in range(1, 40):           # the client keeps sending: dropped
        c.feed(b"x" * 100, now=float(t))
        c.tick(float(t))
        if "close" in c.rec.calls:
            break
    assert c.rec.calls == ["linger", "close"] and t == int(LINGER_TIME)
    c = Conn()
    c.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (DISCARD_MAX * 2))
    c.answer(0, status=413, body=b"")
    c.tick(LINGER_TIMEOUT - 0.1)
    assert c.rec.calls == ["linger"]
    c.tick(LINGER_TIMEOUT)
    assert c.rec.calls == ["linger", "close"]


# --- draining and the end --------------------------------------------------------------------

def test_drain_closes_idle_at_once_and_busy_after_their_response():
    c = Conn()
    c.start_drain()
    assert c.rec.calls == ["close"]
    c = Conn()
    c.feed(GET % b"")
    c.start_drain()
    assert not c.closed
    c.answer(0)
    assert b"connection: close" in c.rec.take().lower() and c.rec.calls == ["close"]


def test_stop_now_answers_503_to_a_request_not_started_and_tells_its_stream():
    c = Conn()
    c.feed(GET % b"")
    c.stop_now()
    assert status_lines(c.rec.take())[0].startswith(b"HTTP/1.1 503")
    assert c.streams[0].gone == 1 and c.rec.calls[-1] == "abort"


def test_connection_lost_tells_every_stream_in_flight():
    c = Conn()
    c.feed(GET % b"1" + GET % b"2")
    c.connection_lost()
    assert [s.gone for s in c.streams] == [1, 1] and c.closed


# --- respond(): a whole response in one call, the twin of start_response + send_data(end) --

RESPOND_CASES = [
    # request bytes, status, headers, body
    (GET % b"", 200, [(b"content-length", b"2")], b"ok"),
    (GET % b"", 200, [(b"content-type", b"text/plain")], b"chunk me"),
    (GET % b"", 200, [], b""),
    (GET % b"", 204, [], b""),
    (GET % b"", 304, [(b"content-length", b"9")], b""),
    (GET % b"", 404, [(b"connection", b"close")], b"gone"),
    (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 200, [(b"content-length", b"6")], b"hidden"),
    (b"GET / HTTP/1.0\r\n\r\n", 200, [], b"until the close"),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, [(b"content-length", b"1")],
     b"x"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 413,
     [(b"content-length", b"0")], b""),
    (GET % b"1" + GET % b"2", 200, [(b"content-length", b"3")], b"one"),   # pipelined
    (GET % b"", 200, [(b"bad name", b"x")], b"refused"),
    (GET % b"", 200, [(b"x", b"a\r\nInjected: 1")], b"refused"),
    (GET % b"", 200, [(b"x", b"v")], b"y" * 70_000),   # over the C buffer: the Python path
]


def _run_response(whole: bool, request: bytes, status, headers, body, last: bool):
    """Answer the first (or, ``last``, the last) request of ``request``, whole or in steps;
    what an observer sees: the bytes, the socket calls, the exchange, the error if any."""
    c = Conn()
    c.feed(request)
    ex = c.streams[-1 if last else 0].ex
    try:
        if whole:
            c.respond(ex, status, list(headers), body)
        else:
            c.start_response(ex, status, list(headers))
            c.send_data(ex, body, True)
        error = None
    except (ValueError, TypeError) as exc:
        error = type(exc)
    state = (ex.started, ex.complete, ex.status, ex.chunked, ex.keep_alive, ex.sent_bytes)
    return (c.rec.take(), c.rec.calls, error, state, c.closed, len(c.pipeline),
            [s.finished_count for s in c.streams], b"".join(ex.buffer or ()))


@pytest.mark.parametrize("last", [False, True], ids=["head", "behind"])
@pytest.mark.parametrize("case", RESPOND_CASES, ids=range(len(RESPOND_CASES)))
def test_respond_is_start_response_and_send_data_in_one_call(case, last):
    assert _run_response(True, *case, last) == _run_response(False, *case, last)


# --- the keep-alive cycle's hot path: receive_data and respond written out for the usual read

def _cycle(general: bool, monkeypatch, script):
    """Run ``script`` (reads, answers, drains) on a Conn; what an observer sees after each
    step.  ``general``: every read through feed and the event loop (the hot path's twin)."""
    with monkeypatch.context() as m:
        if general:
            m.setattr(h1.RequestParser, "feed_one", h1.RequestParser.feed)
        c = Conn()
        seen = []
        for step, arg in script:
            if step == "read":
                c.rec.clock += 1.0
                c.feed(arg)
            elif step == "respond":
                ex = c.streams[arg].ex
                c.respond(ex, 200, [(b"content-length", b"2")], b"ok")
            elif step == "over":
                c.over_limit = True
            else:
                c.start_drain()
            seen.append((c.rec.take(), list(c.rec.calls), c.closed, len(c.pipeline),
                         c.head_since, c.idle_since, sorted(c.paused_by), c.next_key,
                         [(s.body, s.finished_count, s.ex.key, s.ex.body_done, s.ex.keep_alive,
                           s.ex.since, s.ex.buffer, s.ex.stream is None) for s in c.streams]))
        return seen


CYCLES = [
    [("read", GET % b"a"), ("respond", 0), ("read", GET % b"b"), ("respond", 1)],
    [("read", GET % b"a"), ("read", GET % b"b"), ("respond", 1), ("respond", 0)],
    [("read", GET % b"a"), ("read", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
     ("respond", 0), ("respond", 1)],
    [("read", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), ("respond", 0)],
    [("read", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"), ("respond", 0)],
    [("read", b"GET / HTTP/1.0\r\n\r\n"), ("respond", 0)],
    [("read", GET % b"a"), ("drain", None), ("respond", 0)],
    [("over", None), ("read", GET % b"a")],
    [("read", (GET % b"a")[:7]), ("read", (GET % b"a")[7:]), ("respond", 0)],
    [("read", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"), ("respond", 0),
     ("read", GET % b"b"), ("respond", 1)],
]


@pytest.mark.parametrize("script", CYCLES, ids=range(len(CYCLES)))
def test_the_hot_path_is_its_general_twin(monkeypatch, script):
    assert _cycle(False, monkeypatch, script) == _cycle(True, monkeypatch, script)
