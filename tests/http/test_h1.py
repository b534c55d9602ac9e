"""sidecar.http.h1: tables of request bytes and the events (or status) they must give.

Every parsing row is run three ways: all at once, byte by byte, and in random pieces. The
events must be the same each time (Body events merged, as their boundaries follow the reads).
"""
from __future__ import annotations

import random

import h11
import pytest

from sidecar.http.h1 import Body, EndOfMessage, Limits, ProtocolError, Request, RequestParser
from sidecar.http.h1_response import (
    LAST_CHUNK, HeaderError, encode_chunk, response_framing, serialize_response_head,
    simple_response,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def merged(events):
    """Join adjacent Body events: their split depends on how the bytes arrived."""
    out = []
    for ev in events:
        if type(ev) is Body and out and type(out[-1]) is Body:
            out[-1] = Body(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def feed_whole(data, limits=Limits()):
    return RequestParser(limits).feed(data)


def feed_bytewise(data, limits=Limits()):
    p = RequestParser(limits)
    events = []
    for i in range(len(data)):
        events += p.feed(data[i:i + 1])
    return events


def feed_random(data, limits=Limits(), seed=0):
    rnd = random.Random(seed)
    p = RequestParser(limits)
    events, i = [], 0
    while i < len(data):
        n = rnd.randint(1, 40)
        events += p.feed(data[i:i + n])
        i += n
    return events


FEEDERS = [feed_whole, feed_bytewise, feed_random]


def parse_all_ways(data, limits=Limits()):
    """Events from feeding data whole, checked equal when fed byte by byte and randomly."""
    whole = merged(feed_whole(data, limits))
    assert merged(feed_bytewise(data, limits)) == whole, "byte-by-byte differs"
    for seed in range(3):
        assert merged(feed_random(data, limits, seed)) == whole, f"random split {seed} differs"
    return whole


def req(data, limits=Limits()) -> Request:
    events = parse_all_ways(data, limits)
    assert type(events[0]) is Request, events
    return events[0]


# --- rejected input: status, and the connection is finished ------------------------------

H = b"Host: a\r\n"
BIG = Limits()
# Every rejected row also closes the connection: check_rejected asserts that nothing after
# it is ever parsed (tests/e2e/test_limits.py checks the close over a real socket).
REJECT = [
    # Host (RFC 9112 3.2)
    ("no host on 1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("two identical hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("two hosts on 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host with space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host with bad port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
    ("host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    # field syntax
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    ("space in name", b"GET / HTTP/1.1\r\n" + H + b"X Y: z\r\n\r\n", 400),
    ("obs-fold space", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    ("obs-fold tab", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n", 400),
    ("space before first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("bare CR in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400),
    ("bare CR ends request line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    ("bare CR ends field", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare LF ends field", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("SOH in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("ESC in value", b"GET / HTTP/1.1\r\n" + H + b"X: \x1b[31m\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("NUL in name", b"GET / HTTP/1.1\r\n" + H + b"X\x00Y: a\r\n\r\n", 400),
    ("vertical tab in name", b"GET / HTTP/1.1\r\n" + H + b"\x0bX: a\r\n\r\n", 400),
    ("CR alone as a line", b"GET / HTTP/1.1\r\n" + H + b"\r\r\n\r\n", 400),
    ("paren in name", b"GET / HTTP/1.1\r\n" + H + b"X(: a\r\n\r\n", 400),
    ("non-ascii name", b"GET / HTTP/1.1\r\n" + H + b"X\x80: a\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    ("no colon", b"GET / HTTP/1.1\r\n" + H + b"X\r\n\r\n", 400),
    # request line
    ("double space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double space before version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("leading space", b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("trailing space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("no target", b"GET HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("no version", b"GET /\r\n" + H + b"\r\n", 400),
    ("TLS on plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
    ("unknown method", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("lowercase method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("method not a token", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    # llhttp stops at the first byte outside its method table; the status still depends
    # only on the whole token and the byte after it, never on where a read ended
    ("unknown method sharing a prefix", b"GEGET / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("unknown method, tab after it", b"GEGET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown method, bad version", b"PGET / HTTP/3.0\r\n" + H + b"\r\n", 501),
    ("method alone on the line", b"10000000000000000\r\n" + H + b"\r\n", 400),
    ("relative target", b"GET x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("DEL in target", b"GET /\x7f HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("non-ascii target", b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("NUL in target", b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment in absolute-form", b"GET http://a/#b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk with GET", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    # version
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("HTTP/0.9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("HTTP/3.0", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("version garbage", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("version leading zero", b"GET / HTTP/01.1\r\n" + H + b"\r\n", 400),
    ("version two digits", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("version no dot", b"GET / HTTP/11\r\n" + H + b"\r\n", 400),
    ("version lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("version RTSP", b"GET / RTSP/1.0\r\n" + H + b"\r\n", 400),
    ("version ICE", b"SOURCE / ICE/1.0\r\n" + H + b"\r\n", 400),
    ("version 3.0 then garbage", b"GET // HTTP/3.0GE0T \r\n" + H + b"\r\n", 505),
    ("version 1.1 then garbage", b"GET / HTTP/1.1x\r\n" + H + b"\r\n", 400),
    # Content-Length (RFC 9112 6.3, RFC 9110 8.6)
    ("CL plus sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("CL list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 10\r\n\r\nhello", 400),
    ("CL identical list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("CL two values", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("CL two identical", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL letters", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("CL hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("CL inner space", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\n", 400),
    ("CL empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("CL overflow", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    ("CL 19 digits", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 1000000000000000000\r\n\r\n", 400),
    ("CL exponent", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1e3\r\n\r\n", 400),
    ("CL decimal", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5.0\r\n\r\nhello", 400),
    ("CL fullwidth digit", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: \xef\xbc\x95\r\n\r\nhello", 400),
    ("CL empty then a value", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: \r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL space before colon", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length : 5\r\n\r\nhello", 400),
    # Transfer-Encoding (RFC 9112 6.1, 6.3)
    ("TE gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("TE identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 501),
    ("TE chunked with params", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 501),
    ("TE chunked not last", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("TE gzip then chunked", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE chunked twice", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked in two lines", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE gzip line then chunked line", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE chunked line then gzip line", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("TE empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n", 400),
    ("TE xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 501),
    ("TE chunked with a vertical tab", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("TE space before colon", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE identity with CL", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # request smuggling: both framings
    ("CL then TE", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     + b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("TE then CL", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\n"
     + b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("TE uppercase then CL", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: CHUNKED\r\nContent-Length: 30\r\n\r\n0\r\n\r\n", 400),
]
# rows whose error comes from the body: a Request is emitted first
CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
REJECT_BODY = [
    ("chunk size overflow", CHUNKED + b"1ffffffffffffffff\r\n", 400),
    ("chunk size 0x in the middle", CHUNKED + b"5x\r\nhello\r\n0\r\n\r\n", 400),
    ("last chunk then no CRLF", CHUNKED + b"0\r\nGET / HTTP/1.1\r\n\r\n", 400),
    ("chunk data then a smuggled request", CHUNKED + b"5\r\nhelloGET /x HTTP/1.1\r\n", 400),
    ("chunk size not hex", CHUNKED + b"zz\r\n", 400),
    ("chunk size negative", CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size 17 digits", CHUNKED + b"1" + b"0" * 16 + b"\r\n", 400),
    ("chunk size leading space", CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size trailing space", CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size empty", CHUNKED + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size 0x prefix", CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size bare LF", CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext no name", CHUNKED + b"5;=x\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext CTL", CHUNKED + b"5;a=\x01\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext unterminated quote", CHUNKED + b'5;a="x\r\nhello\r\n0\r\n\r\n', 400),
    ("chunk line too long", CHUNKED + b"5;a=" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk line too long, unterminated", CHUNKED + b"5;a=" + b"x" * 5000, 400),
    ("data longer than size", CHUNKED + b"3\r\nhello\r\n0\r\n\r\n", 400),
    ("no CRLF after data", CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400),
    ("LF only after data", CHUNKED + b"5\r\nhello\n0\r\n\r\n", 400),
    ("CR only after data", CHUNKED + b"5\r\nhello\r0\r\n\r\n", 400),
    ("forbidden trailer content-length", CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n", 400),
    ("forbidden trailer transfer-encoding",
     CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("forbidden trailer host", CHUNKED + b"0\r\nHost: evil\r\n\r\n", 400),
    ("forbidden trailer uppercase", CHUNKED + b"0\r\nCONTENT-LENGTH: 5\r\n\r\n", 400),
    ("trailer space before colon", CHUNKED + b"0\r\nX : y\r\n\r\n", 400),
    ("trailer obs-fold", CHUNKED + b"0\r\nX: y\r\n z\r\n\r\n", 400),
    ("trailer bare CR", CHUNKED + b"0\r\nX: a\rb\r\n\r\n", 400),
    ("trailer NUL", CHUNKED + b"0\r\nX: a\x00b\r\n\r\n", 400),
    ("too many trailers", CHUNKED + b"0\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ("trailers too large", CHUNKED + b"0\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n", 431),
]
LIMITED = Limits(max_request_line=100, max_header_bytes=300, max_headers=5, max_body=10)
REJECT_LIMITS = [
    ("request line too long", b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("request line too long, unterminated", b"GET /" + b"a" * 200, 414),
    ("request line too long, no head end", b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n", 414),
    ("head too large", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 300 + b"\r\n\r\n", 431),
    ("head too large, unterminated", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 400, 431),
    ("too many headers", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n" * 5 + b"\r\n", 431),
    # llhttp sees what lies within a limit before the limit applies, however bytes arrive
    ("bad request line inside the limit", b"GET / HTTP/1.1GET /" + b"a" * 100 + b"\r\n\r\n", 400),
    ("bad field inside the limit", b"GET / HTTP/1.1\r\nX : y\r\n" + b"Y: " + b"a" * 300
     + b"\r\n\r\n", 400),
    ("bad field past the limit", b"GET / HTTP/1.1\r\nY: " + b"a" * 300 + b"\r\nX : y\r\n\r\n",
     431),
    ("CL over max_body", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n", 413),
]
REJECT_LIMITS_BODY = [
    ("chunked over max_body", CHUNKED + b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", 413),
    ("chunked one chunk over max_body", CHUNKED + b"b\r\nhello world\r\n0\r\n\r\n", 413),
]


def check_rejected(data, status, limits, request_first):
    events = parse_all_ways(data, limits)
    assert type(events[-1]) is ProtocolError, events
    assert events[-1].status == status, events[-1]
    assert events[-1].reason
    kinds = [type(e) for e in events[:-1]]
    if request_first:
        assert kinds[:1] == [Request] and set(kinds[1:]) <= {Body}, events
    else:
        assert kinds == [], events
    # the connection is finished: nothing more is ever parsed
    p = RequestParser(limits)
    p.feed(data)
    assert p.feed(GET) == []
    assert p.feed(GET) == []


@pytest.mark.parametrize("data,status", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_rejected_head(data, status):
    check_rejected(data, status, Limits(), request_first=False)


@pytest.mark.parametrize("data,status", [r[1:] for r in REJECT_BODY],
                         ids=[r[0] for r in REJECT_BODY])
def test_rejected_body(data, status):
    check_rejected(data, status, Limits(), request_first=True)


@pytest.mark.parametrize("data,status", [r[1:] for r in REJECT_LIMITS],
                         ids=[r[0] for r in REJECT_LIMITS])
def test_rejected_limits(data, status):
    check_rejected(data, status, LIMITED, request_first=False)


@pytest.mark.parametrize("data,status", [r[1:] for r in REJECT_LIMITS_BODY],
                         ids=[r[0] for r in REJECT_LIMITS_BODY])
def test_rejected_limits_body(data, status):
    check_rejected(data, status, LIMITED, request_first=True)


def test_smuggled_request_is_never_parsed():
    for _, data, _ in REJECT:
        if b"smuggled" in data:
            for feed in FEEDERS:
                assert not any(type(e) is Request for e in feed(data)), data


def test_incomplete_head_garbage_is_refused_before_the_head_ends():
    p = RequestParser()
    assert p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00") == []  # line not complete yet
    (err,) = p.feed(b"\r\n")
    assert err.status == 400
    p = RequestParser()
    (err,) = p.feed(b"\x16\x03\x01\x02\x00\n")
    assert err.status == 400


def test_unbounded_input_is_refused_at_the_limit():
    """Bytes without a line end are refused once past the limit, not buffered forever."""
    p = RequestParser(LIMITED)
    assert p.feed(b"GET /") == []
    assert p.feed(b"a" * 90) == []
    assert p.feed(b"a" * 20) == [ProtocolError(414, "request line too long")]
    p = RequestParser(LIMITED)
    assert p.feed(b"GET / HTTP/1.1\r\nX: ") == []
    assert [e.status for e in p.feed(b"a" * 300)] == [431]


# --- accepted input ----------------------------------------------------------------------

def test_simple_get():
    events = parse_all_ways(b"GET /a%20b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8000\r\n"
                            b"User-Agent: t\r\n\r\n")
    assert events == [
        Request(method=b"GET", target=b"/a%20b?x=1&y=%20", path="/a b", raw_path=b"/a%20b",
                query_string=b"x=1&y=%20", http_version="1.1",
                headers=[(b"host", b"example.com:8000"), (b"user-agent", b"t")],
                keep_alive=True, expect_continue=False, upgrade=None, content_length=None,
                chunked=False),
        EndOfMessage(),
    ]


PATHS = [
    (b"/", "/", b"/", b""),
    (b"/a%20b", "/a b", b"/a%20b", b""),
    (b"/a%2Fb", "/a/b", b"/a%2Fb", b""),
    (b"/%E2%82%AC", "/\u20ac", b"/%E2%82%AC", b""),
    (b"/%e2%82%ac", "/\u20ac", b"/%e2%82%ac", b""),
    (b"/%FF%FE", "/\xff\xfe", b"/%FF%FE", b""),       # not UTF-8: latin-1, every byte kept
    (b"/%zz%4", "/%zz%4", b"/%zz%4", b""),            # invalid escapes stay as they are
    (b"/a+b", "/a+b", b"/a+b", b""),                  # '+' is not a space in a path
    (b"/p?", "/p", b"/p", b""),
    (b"/p?x=1&y=2", "/p", b"/p", b"x=1&y=2"),
    (b"/p?a?b", "/p", b"/p", b"a?b"),
    (b"/p?q=%20", "/p", b"/p", b"q=%20"),             # query string is never decoded
    (b"/{}|^`", "/{}|^`", b"/{}|^`", b""),
    (b"//double//slash", "//double//slash", b"//double//slash", b""),
    (b"http://example.com/p?q", "/p", b"/p", b"q"),   # absolute-form
    (b"http://example.com", "/", b"/", b""),
    (b"http://example.com?q", "/", b"/", b"q"),
    (b"https://u@h:1/x%41", "/xA", b"/x%41", b""),
]


@pytest.mark.parametrize("target,path,raw_path,query", PATHS)
def test_target(target, path, raw_path, query):
    r = req(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.target, r.path, r.raw_path, r.query_string) == (target, path, raw_path, query)


def test_options_asterisk():
    r = req(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.method, r.target, r.path, r.raw_path, r.query_string) == (
        b"OPTIONS", b"*", "*", b"*", b"")


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH",
                                    b"OPTIONS", b"TRACE", b"PROPFIND", b"QUERY", b"PURGE"])
def test_methods(method):
    assert req(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n").method == method


def test_headers_order_duplicates_case_and_whitespace():
    r = req(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nCookie: a=b\r\n"
            b"X-B:\t tabs and spaces \t \r\nX-Empty:\r\nX-Obs: caf\xc3\xa9 \x80\xff\r\n"
            b"X-A: 3\r\nX-Inner: a  b\tc\r\n\r\n")
    assert r.headers == [
        (b"host", b"a"), (b"x-a", b"1"), (b"x-a", b"2"), (b"cookie", b"a=b"),
        (b"x-b", b"tabs and spaces"), (b"x-empty", b""), (b"x-obs", b"caf\xc3\xa9 \x80\xff"),
        (b"x-a", b"3"), (b"x-inner", b"a  b\tc"),
    ]


@pytest.mark.parametrize("host", [b"", b"a", b"a:80", b"a:", b"127.0.0.1:8000", b"[::1]",
                                  b"[::1]:443", b"xn--bcher-kva.example", b"a_b.c-d~"])
def test_valid_hosts(host):
    assert req(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").headers == [(b"host", host)]


def test_http10_needs_no_host_and_closes():
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.0\r\n\r\n" + GET)
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert events[0].http_version == "1.0"
    assert events[0].keep_alive is False
    assert p.feed(GET) == []   # bytes after a request that closes are never parsed


KEEP_ALIVE = [
    (b"1.1", b"", True),
    (b"1.1", b"Connection: close\r\n", False),
    (b"1.1", b"Connection: CLOSE\r\n", False),
    (b"1.1", b"Connection: keep-alive, close\r\n", False),
    (b"1.1", b"Connection: foo\r\nConnection: close\r\n", False),
    (b"1.1", b"Connection: keep-alive\r\n", True),
    (b"1.1", b"Connection: closed\r\n", True),
    (b"1.0", b"", False),
    (b"1.0", b"Connection: keep-alive\r\n", True),
    (b"1.0", b"Connection: Keep-Alive\r\n", True),
    (b"1.0", b"Connection: keep-alive, close\r\n", False),
    (b"1.0", b"Connection: foo\r\n", False),
]


@pytest.mark.parametrize("version,fields,keep_alive", KEEP_ALIVE)
def test_keep_alive(version, fields, keep_alive):
    head = b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + fields + b"\r\n"
    assert req(head).keep_alive is keep_alive
    p = RequestParser()
    events = p.feed(head + GET)
    assert len(events) == (4 if keep_alive else 2)


def test_connection_close_then_pipelined_request_is_dropped():
    p = RequestParser()
    events = p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n"
                    b"\r\nhi" + GET)
    assert [type(e) for e in events] == [Request, Body, EndOfMessage]
    assert p.feed(GET) == []


EXPECT = [
    (b"1.1", b"Expect: 100-continue\r\n", True),
    (b"1.1", b"Expect: 100-Continue\r\n", True),
    (b"1.1", b"Expect: 100-continue \r\n", True),
    (b"1.1", b"", False),
    (b"1.1", b"Expect: something-else\r\n", False),
    (b"1.0", b"Expect: 100-continue\r\n", False),   # RFC 9110 10.1.1: ignore on HTTP/1.0
]


@pytest.mark.parametrize("version,fields,expected", EXPECT)
def test_expect_continue(version, fields, expected):
    head = (b"POST / HTTP/" + version + b"\r\nHost: a\r\nContent-Length: 3\r\n" + fields
            + b"\r\n")
    events = parse_all_ways(head + b"abc")
    assert events[0].expect_continue is expected
    assert events[1:] == [Body(b"abc"), EndOfMessage()]
    # the head alone is enough to decide (the body waits for the 100 Continue)
    p = RequestParser()
    (r,) = p.feed(head)
    assert r.expect_continue is expected and p.expecting_body


def test_expect_continue_over_max_body_is_refused_before_the_body():
    p = RequestParser(Limits(max_body=10))
    assert p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 11\r\n\r\n") == [ProtocolError(413, "request body too large")]


WEBSOCKET = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
             b"Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("feed", FEEDERS)
def test_websocket_upgrade_stops_parsing(feed):
    frames = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" + GET
    p = RequestParser()
    if feed is feed_whole:
        events = p.feed(WEBSOCKET + frames)
    else:
        events = [e for i in range(len(WEBSOCKET + frames))
                  for e in p.feed((WEBSOCKET + frames)[i:i + 1])]
    assert len(events) == 1
    assert events[0].upgrade == b"websocket" and events[0].path == "/ws"
    assert p.take_trailing() == frames
    assert p.take_trailing() == b""
    assert p.feed(b"more") == []
    assert p.take_trailing() == b"more"
    assert not p.expecting_body


def test_declined_upgrade_goes_on_with_http():
    p = RequestParser()
    (r,) = p.feed(WEBSOCKET + GET[:10])
    assert r.upgrade == b"websocket"
    assert p.feed(GET[10:]) == []
    events = p.decline_upgrade()
    assert [type(e) for e in events] == [EndOfMessage, Request, EndOfMessage]
    assert [type(e) for e in p.feed(GET)] == [Request, EndOfMessage]


UPGRADES = [
    # fields, upgrade value, stops parsing
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\n", b"websocket", True),
    (b"Connection: upgrade\r\nUpgrade: h2c\r\n", b"h2c", False),   # reported, not stopped
    (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQC\r\n",
     b"h2c", False),
    (b"Upgrade: websocket\r\n", None, False),                      # no Connection: upgrade
    (b"Connection: upgrade\r\n", None, False),                     # no Upgrade
]


@pytest.mark.parametrize("fields,upgrade,stops", UPGRADES)
def test_upgrade_detection(fields, upgrade, stops):
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n" + GET)
    assert events[0].upgrade == upgrade
    if stops:
        assert len(events) == 1 and p.take_trailing() == GET
    else:
        assert [type(e) for e in events] == [Request, EndOfMessage, Request, EndOfMessage]


def test_upgrade_ignored_on_http10_and_with_a_body():
    r = req(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.upgrade is None
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                            b"Upgrade: websocket\r\nContent-Length: 3\r\n\r\nabc" + GET)
    assert events[0].upgrade is None
    assert events[1:] == [Body(b"abc"), EndOfMessage(), events[3], EndOfMessage()]


def test_pipelining_three_requests_in_one_feed():
    data = (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    events = RequestParser().feed(data)
    assert [(type(e).__name__, getattr(e, "path", getattr(e, "data", None)))
            for e in events] == [
        ("Request", "/1"), ("EndOfMessage", None),
        ("Request", "/2"), ("Body", b"hello"), ("EndOfMessage", None),
        ("Request", "/3"), ("Body", b"abc"), ("Body", b"de"), ("EndOfMessage", None),
    ]
    assert events[3].data == b"hello"
    assert (events[2].content_length, events[2].chunked) == (5, False)
    assert (events[5].content_length, events[5].chunked) == (None, True)
    assert merged(events) == parse_all_ways(data)


def test_chunked_byte_by_byte():
    data = (CHUNKED + b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n" + b"x" * 16
            + b"\r\n0\r\nX-Trailer: t\r\n\r\n" + GET)
    p = RequestParser()
    events = []
    for i in range(len(data)):
        events += p.feed(data[i:i + 1])
    assert merged(events) == [events[0], Body(b"hello " + b"x" * 16), EndOfMessage(),
                              events[-2], EndOfMessage()]
    assert events[0].chunked and events[-2].path == "/"
    # each body byte came as its own event, never as an empty Body
    assert all(e.data for e in events if type(e) is Body)


CHUNKED_OK = [
    (b"0\r\n\r\n", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", b"helloworld"),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"0005\r\nhello\r\n0000\r\n\r\n", b"hello"),
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b'5;name="quoted \\" value";x\r\nhello\r\n0\r\n\r\n', b"hello"),
    (b"5 ; name = value\r\nhello\r\n0\r\n\r\n", b"hello"),          # BWS, RFC 9112 7.1.1
    (b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: \r\n\r\n", b"hello"),  # trailers dropped
    (b"5\r\n\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r\n\r"),              # CRLFs as data
]


@pytest.mark.parametrize("body,decoded", CHUNKED_OK)
def test_chunked_bodies(body, decoded):
    events = parse_all_ways(CHUNKED + body + GET)
    assert events[0].chunked and events[0].content_length is None
    expected = ([Body(decoded)] if decoded else []) + [EndOfMessage()]
    assert events[1:-2] == expected
    assert type(events[-2]) is Request and events[-1] == EndOfMessage()


def test_content_length_bodies():
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" + GET)
    assert events[0].content_length == 0
    assert [type(e) for e in events] == [Request, EndOfMessage, Request, EndOfMessage]
    # leading zeros are digits; CRLF CRLF inside a body is only data
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000014\r\n\r\n"
                            b"hello\r\n\r\nworld")
    assert events[0].content_length == 14
    assert events[1:] == [Body(b"hello\r\n\r\nworld"), EndOfMessage()]


def test_content_length_body_is_exact():
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                            + GET)
    assert events[1:3] == [Body(b"hello"), EndOfMessage()]
    assert [type(e) for e in events[3:]] == [Request, EndOfMessage]


def test_body_streams_as_it_arrives():
    p = RequestParser()
    (r,) = p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
    assert r.content_length == 10 and p.expecting_body
    assert p.feed(b"abc") == [Body(b"abc")]
    assert p.feed(b"defghij" + GET[:5]) == [Body(b"defghij"), EndOfMessage()]
    assert not p.expecting_body
    assert [type(e) for e in p.feed(GET[5:])] == [Request, EndOfMessage]


def test_http10_body_without_content_length_is_empty():
    events = parse_all_ways(b"POST / HTTP/1.0\r\n\r\nthis is not a body")
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert events[0].content_length is None and not events[0].chunked


def test_empty_lines_before_request_line_are_skipped():
    events = parse_all_ways(b"\r\n\r\n\r\n" + GET + b"\r\n" + GET)
    assert [type(e) for e in events] == [Request, EndOfMessage, Request, EndOfMessage]


def test_limits_are_inclusive():
    lim = Limits(max_request_line=16, max_header_bytes=48, max_headers=2, max_body=5)
    line = b"GET /23 HTTP/1.1"
    assert len(line) == 16
    head = line + b"\r\nHost: a\r\nX: 12345678901234\r\n\r\n"
    assert len(head) == 48
    assert type(req(head, lim)) is Request
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", lim)
    assert events[1:] == [Body(b"hello"), EndOfMessage()]
    events = parse_all_ways(b"POST / HTTP/1.1\r\nHost:a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", Limits(max_body=5))
    assert events[1:] == [Body(b"hello"), EndOfMessage()]


def test_max_body_is_per_request():
    lim = Limits(max_body=5)
    one = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    events = parse_all_ways(one * 3, lim)
    assert [type(e) for e in events] == [Request, Body, EndOfMessage] * 3


def test_default_limits():
    assert Limits() == Limits(max_request_line=8192, max_header_bytes=65536, max_headers=100,
                              max_body=None)
    big = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * 60000 + b"\r\n\r\n"
    assert type(RequestParser().feed(big)[0]) is Request
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 99 + b"\r\n"
    assert type(RequestParser().feed(many)[0]) is Request
    assert RequestParser().feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 100
                                + b"\r\n")[0].status == 431


def test_events_are_frozen():
    r = req(GET)
    with pytest.raises(AttributeError):
        r.method = b"POST"
    assert r == Request(**{f: getattr(r, f) for f in Request._fields})
    assert hash(Body(b"x")) == hash(Body(b"x"))


def test_nothing_after_protocol_error():
    p = RequestParser()
    (err,) = p.feed(b"GET / HTTP/1.1\r\n\r\n" + GET)
    assert err == ProtocolError(400, "missing Host header")
    assert p.feed(GET) == [] and p.take_trailing() == b""


def test_large_body_in_one_feed_is_not_copied_piecemeal():
    body = b"x" * (1 << 20)
    events = RequestParser().feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                                  % len(body) + body)
    assert events[1] == Body(body) and events[2] == EndOfMessage()


# --- responses -----------------------------------------------------------------------------

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"


def head(status=200, headers=(), **kw):
    args = dict(http_version="1.1", keep_alive=True, chunked=False, date=DATE, server=b"sidecar",
                head_request=False)
    args.update(kw)
    return serialize_response_head(status, list(headers), **args)


def test_serialize_basic():
    assert head(200, [(b"content-type", b"text/plain"), (b"content-length", b"2")]) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
        b"server: sidecar\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n")


SERIALIZE = [
    # (status, headers, kwargs, expected lines after the status line)
    (404, [], {}, [b"server: sidecar", b"date: " + DATE]),
    (200, [(b"Date", b"x"), (b"Server", b"app")], {}, [b"Date: x", b"Server: app"]),
    (200, [], dict(date=None, server=None), []),
    (200, [], dict(keep_alive=False, date=None, server=None), [b"connection: close"]),
    (200, [], dict(http_version="1.0", date=None, server=None), [b"connection: keep-alive"]),
    (200, [], dict(http_version="1.0", keep_alive=False, date=None, server=None),
     [b"connection: close"]),
    (200, [], dict(chunked=True, date=None, server=None), [b"transfer-encoding: chunked"]),
    (200, [], dict(chunked=True, head_request=True, date=None, server=None), []),
    # the server owns framing: the app's Transfer-Encoding / Connection are dropped...
    (200, [(b"transfer-encoding", b"chunked"), (b"connection", b"keep-alive")],
     dict(chunked=True, date=None, server=None), [b"transfer-encoding: chunked"]),
    # ... except that an app asking to close is honoured
    (200, [(b"Connection", b"Close")], dict(date=None, server=None), [b"connection: close"]),
    # and a 101 is the app's (or the websocket layer's) to write
    (101, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
     dict(date=None, server=None, keep_alive=False), [b"upgrade: websocket",
                                                      b"connection: Upgrade"]),
    (299, [], dict(date=None, server=None), []),
]


@pytest.mark.parametrize("status,headers,kw,lines", SERIALIZE)
def test_serialize_rows(status, headers, kw, lines):
    out = head(status, headers, **kw)
    first, *rest = out[:-4].split(b"\r\n")
    assert out.endswith(b"\r\n\r\n")
    from http import HTTPStatus
    phrase = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ \
        else b""
    assert first == b"HTTP/1.1 %d %s" % (status, phrase)
    assert rest == lines


BAD_HEADS = [
    (200, [(b"x y", b"v")]),
    (200, [(b"x:y", b"v")]),
    (200, [(b"", b"v")]),
    (200, [(b"x\r\nInjected", b"v")]),
    (200, [(b"x", b"a\r\nInjected: 1")]),
    (200, [(b"x", b"a\nb")]),
    (200, [(b"x", b"a\rb")]),
    (200, [(b"x", b"a\x00b")]),
    (200, [("x", b"v")]),
    (200, [(b"x", "v")]),
    (200, [(b"x", 5)]),
    (99, []), (600, []), ("200", []), (200.0, []), (True, []),
]


@pytest.mark.parametrize("status,headers", BAD_HEADS)
def test_serialize_refuses_bad_heads(status, headers):
    with pytest.raises(HeaderError):
        head(status, headers)
    assert issubclass(HeaderError, ValueError)


def test_serialize_refuses_bad_server_or_date():
    with pytest.raises(HeaderError):
        head(200, [], server=b"a\r\nb")


FRAMING = [
    # status, headers, method, version -> (chunked, content_length)
    (200, [], b"GET", "1.1", (True, None)),
    (200, [], b"GET", "1.0", (False, None)),
    (200, [(b"content-length", b"12")], b"GET", "1.1", (False, 12)),
    (200, [(b"Content-Length", b" 12 ")], b"GET", "1.0", (False, 12)),
    (200, [(b"content-length", b"3"), (b"content-length", b"3")], b"GET", "1.1", (False, 3)),
    (200, [(b"transfer-encoding", b"chunked")], b"GET", "1.0", (False, None)),
    (200, [(b"content-length", b"12")], b"HEAD", "1.1", (False, 0)),
    (200, [], b"HEAD", "1.1", (False, 0)),
    (204, [], b"GET", "1.1", (False, 0)),
    (304, [(b"content-length", b"100")], b"GET", "1.1", (False, 0)),
    (101, [], b"GET", "1.1", (False, 0)),
    (103, [], b"GET", "1.1", (False, 0)),
]


@pytest.mark.parametrize("status,headers,method,version,expected", FRAMING)
def test_response_framing(status, headers, method, version, expected):
    assert response_framing(status, headers, method=method, http_version=version) == expected


@pytest.mark.parametrize("value", [b"-1", b"+1", b"1.5", b"abc", b"", b"1, 1",
                                   b"1" * 19])
def test_response_framing_refuses_bad_content_length(value):
    with pytest.raises(HeaderError):
        response_framing(200, [(b"content-length", value)], method=b"GET", http_version="1.1")


def test_response_framing_refuses_conflicting_content_length():
    with pytest.raises(HeaderError):
        response_framing(200, [(b"content-length", b"1"), (b"content-length", b"2")],
                         method=b"GET", http_version="1.1")


def test_encode_chunk():
    assert encode_chunk(b"") == b""
    assert encode_chunk(b"abc") == b"3\r\nabc\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


def h11_read(data, method=b"GET"):
    """Read our bytes with h11's client: an independent check that they are valid HTTP."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    events = []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            break
        events.append(ev)
        if type(ev) is h11.EndOfMessage:
            break
    return conn, events


def test_chunked_response_reads_back():
    data = (head(200, [(b"content-type", b"text/plain")], chunked=True)
            + encode_chunk(b"hello ") + encode_chunk(b"") + encode_chunk(b"world") + LAST_CHUNK)
    conn, events = h11_read(data)
    assert events[0].status_code == 200
    assert b"".join(e.data for e in events if type(e) is h11.Data) == b"hello world"
    assert type(events[-1]) is h11.EndOfMessage


@pytest.mark.parametrize("status", [400, 408, 413, 414, 431, 500, 501, 502, 503, 505])
def test_simple_response(status):
    from http import HTTPStatus
    data = simple_response(status, HTTPStatus(status).phrase, date=DATE)
    conn, events = h11_read(data)
    resp, body, end = events
    assert resp.status_code == status
    hdrs = dict(resp.headers)
    assert hdrs[b"connection"] == b"close"
    assert hdrs[b"content-type"] == b"text/plain; charset=utf-8"
    assert hdrs[b"date"] == DATE
    assert body.data == HTTPStatus(status).phrase.encode() + b"\n"
    assert type(end) is h11.EndOfMessage


def test_simple_response_keep_alive_and_extra_headers():
    data = simple_response(503, "busy", keep_alive=True, extra_headers=[(b"retry-after", b"1")],
                           date=None)
    conn, (resp, body, end) = h11_read(data)
    hdrs = dict(resp.headers)
    assert b"connection" not in hdrs and hdrs[b"retry-after"] == b"1"
    assert b"date" not in hdrs   # --no-date-header
    assert body.data == b"busy\n"
    assert conn.our_state is h11.DONE and conn.their_state is h11.DONE


def test_parsed_request_roundtrips_through_h11():
    """h11's client writes, we read: the two agree on every field."""
    conn = h11.Connection(h11.CLIENT)
    data = conn.send(h11.Request(method="POST", target="/up%2Fload?a=b",
                                 headers=[("Host", "x"), ("Transfer-Encoding", "chunked"),
                                          ("X-Dup", "1"), ("X-Dup", "2")]))
    data += conn.send(h11.Data(data=b"hello")) + conn.send(h11.Data(data=b" world"))
    data += conn.send(h11.EndOfMessage())
    events = parse_all_ways(data)
    r = events[0]
    assert (r.method, r.path, r.raw_path, r.query_string, r.chunked) == (
        b"POST", "/up/load", b"/up%2Fload", b"a=b", True)
    assert r.headers[-2:] == [(b"x-dup", b"1"), (b"x-dup", b"2")]
    assert events[1:] == [Body(b"hello world"), EndOfMessage()]


# --- split independence, fuzzed --------------------------------------------------------------

def test_mutated_inputs_give_the_same_events_however_they_are_split():
    """Mutations of the rows above: no exception escapes, and whole / byte-by-byte / random
    feeding agree (a deterministic slice of the longer fuzzing done during development)."""
    seeds = ([r[1] for r in REJECT + REJECT_BODY] + [CHUNKED + b for b, _ in CHUNKED_OK]
             + [GET * 3, WEBSOCKET + b"xyz",
                b"POST /x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + GET])
    alphabet = b"\r\n \t:;,0aAfF9-\x00\x80\"=/?%#"
    rnd = random.Random(20240601)
    small = Limits(max_request_line=60, max_header_bytes=200, max_headers=4, max_body=20)
    for n in range(400):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randint(0, len(data))
            op = rnd.randint(0, 2)
            if op == 0:
                data[i:i] = bytes([rnd.choice(alphabet)])
            elif op == 1 and len(data) > 1:
                del data[min(i, len(data) - 1)]
            else:
                data[i:i] = rnd.choice(seeds)[:rnd.randint(0, 30)]
        data = bytes(data)
        for limits in (Limits(), small):
            whole = merged(feed_whole(data, limits))
            assert merged(feed_bytewise(data, limits)) == whole, data
            assert merged(feed_random(data, limits, seed=n)) == whole, data


# --- what the connection's timeouts look at ----------------------------------------------

def test_head_pending_follows_a_partial_head():
    p = RequestParser()
    assert not p.head_pending
    p.feed(b"\r\n\r\n")             # empty lines before a request are not a request
    assert not p.head_pending
    p.feed(b"GET / HT")
    assert p.head_pending
    evs = p.feed(b"TP/1.1\r\nHost: a\r\n\r\nGET /2")   # one done, the next one begun
    assert [type(e) for e in evs] == [Request, EndOfMessage] and p.head_pending
    p.feed(b" HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    assert not p.head_pending and p.expecting_body


def test_stop_ends_parsing():
    p = RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHo")
    p.stop()
    assert not p.head_pending
    assert p.feed(b"st: a\r\n\r\n" + GET) == []


def test_body_left_counts_down_a_known_length_and_is_none_otherwise():
    """What the front-end weighs when an answered request's body is still coming."""
    p = RequestParser()
    assert p.body_left is None
    p.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert p.body_left == 7
    p.feed(b"defghij")
    assert p.body_left is None   # the message ended: no body is being read
    p.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert p.body_left is None   # chunked: the length is not known
