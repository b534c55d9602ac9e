"""The C fast path of the request-head parser (native/h1.c) against its Python twin.

The rule: for any input, h1_parse_head either declines (or waits for more bytes) or gives
exactly what the Python path gives. The differential test below mutates real heads byte-wise
and field-wise and compares the events of a parser with the speedup to one without; the
unit rows pin what the fast path must take (else it speeds nothing up) and what it must
leave to Python (every refusal, every limit). native/tests/h1_unit.c runs the C alone under
ASan/UBSan (tests/native/test_ring_c.py).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from sidecar.http import h1
from sidecar.http.h1 import Limits, Request, RequestParser

from tests.http.test_h1 import (
    CHUNKED_OK, LIMITED, REJECT, REJECT_BODY, REJECT_LIMITS, REJECT_LIMITS_BODY, merged,
)

pytestmark = pytest.mark.skipif(not h1.HAVE_SPEEDUPS, reason="sidecar._h1 not built")

if h1.HAVE_SPEEDUPS:
    ffi, lib = h1._ffi, h1._lib

BROWSER = (b"GET /static/app.js?v=3&lang=en HTTP/1.1\r\n"
           b"Host: example.com\r\n"
           b"Connection: keep-alive\r\n"
           b"sec-ch-ua: \"Chromium\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
           b"sec-ch-ua-mobile: ?0\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           b"Chrome/124.0.0.0 Safari/537.36\r\n"
           b"sec-ch-ua-platform: \"Linux\"\r\n"
           b"Accept: */*\r\n"
           b"Sec-Fetch-Site: same-origin\r\n"
           b"Sec-Fetch-Mode: no-cors\r\n"
           b"Sec-Fetch-Dest: script\r\n"
           b"Referer: https://example.com/\r\n"
           b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
           b"Accept-Language: en-US,en;q=0.9\r\n"
           b"Cookie: session=abc123; theme=dark\r\n\r\n")
WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
CURL = (b"POST /api/items HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/7.88.1\r\n"
        b"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
NGINX = (b"PUT /up%20load/%E2%82%AC?x=%20 HTTP/1.0\r\nHost: app\r\nX-Real-IP: 10.0.0.1\r\n"
         b"X-Forwarded-For: 10.0.0.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc")
CHUNKED = (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
           b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
WEBSOCKET = (b"GET /ws HTTP/1.1\r\nHost: a:80\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
OPTIONS = b"OPTIONS /x HTTP/1.1\r\nHost: [::1]:8080\r\nX-Empty:\r\nX-Tab:\t v \t\r\n\r\n"
ACCEPTED = [BROWSER, WRK, CURL, NGINX, CHUNKED, WEBSOCKET, OPTIONS,
            b"DELETE /a?b?c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            b"PATCH /p HTTP/1.1\r\nhost: \r\nContent-Length: 0\r\nUpgrade: h2c\r\n"
            b"Connection: upgrade, close\r\n\r\n",
            b"GET /%zz%4 HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9 \x80\xff\r\n\r\n"]

# Field lines and fragments the mutations insert: each a reason the Python path refuses a
# head or reads it in some particular way.
LINES = [b"Host: b\r\n", b"Host: a\r\n", b"host: a b\r\n", b"Host: [::1\r\n", b"Host: u@a\r\n",
         b"Content-Length: 5\r\n", b"Content-Length: 5, 5\r\n", b"content-length: +1\r\n",
         b"Content-Length: 0000000000000000001\r\n", b"Content-Length: 999999999999999999\r\n",
         b"Content-Length:\t7\t\r\n", b"Transfer-Encoding: chunked\r\n",
         b"Transfer-Encoding: gzip, chunked\r\n", b"transfer-encoding: CHUNKED , \r\n",
         b"Transfer-Encoding: identity\r\n", b"Connection: close\r\n",
         b"Connection: keep-alive, Upgrade\r\n", b"Connection: upgrade\r\n",
         b"Connection: ,,close ,\r\n", b"Upgrade: websocket\r\n", b"Upgrade: WebSocket, h2c\r\n",
         b"Expect: 100-continue\r\n", b"Expect: 100-Continue \r\n", b"Expect: 100-continue, x\r\n",
         b"Proxy-Connection: upgrade\r\n", b"X: a\r\n b\r\n", b"X: a\r\n\tb\r\n", b" X: y\r\n",
         b"X : y\r\n", b"X:\x01\r\n", b"X: \x7f\r\n", b"X: a\rb\r\n", b"X: a\nb\r\n",
         b"X\x00: a\r\n", b": a\r\n", b"X\r\n", b"X-\xc3\xa9: a\r\n", b"X: \xc3\xa9\r\n",
         b"Cookie: a=b; c=d\r\n", b"X:\r\n", b"X: \t \r\n", b"Trailer: x\r\n", b"TE: trailers\r\n"]
FRAGMENTS = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b",", b"\x00", b"\x80", b"\x7f", b"%",
             b"?", b"#", b"*", b"/", b"@", b"[", b"]", b"\"", b"HTTP/1.0", b"HTTP/1.2", b"0",
             b"9", b"http://a", b"GET", b"CONNECT", b"QUERY", b"get", b"chunked", b"close",
             b"upgrade", b"keep-alive", b"100-continue", b"{", b"|", b"\\", b"^", b"`", b"<",
             b"'", b"!", b"$", b"&", b"(", b")", b"+", b";", b"=", b"~"]
SMALL = Limits(max_request_line=60, max_header_bytes=200, max_headers=4, max_body=20)
LIMITS = [Limits(), SMALL, Limits(max_headers=12), Limits(max_body=0)]


@pytest.fixture(autouse=True)
def speedups():
    """These tests pick the path themselves (overrides tests/http/conftest.py's both-ways)."""


def parse(data: bytes, limits: Limits, fast: bool, monkeypatch) -> list:
    monkeypatch.setattr(h1, "speedups", fast)
    return merged(RequestParser(limits).feed(data))


def c_parse(data: bytes, limits: Limits = Limits(), start: int = 0):
    """h1_parse_head itself: (result, facts, headers from the spans)."""
    head = ffi.new("h1_head_t *")
    fields = ffi.new("char[]", 1 << 16)
    head.fields, head.fields_cap = fields, 1 << 16
    n = lib.h1_parse_head(data, start, len(data), h1._c_limits(limits), head)
    if n <= 0:
        return n, None, None
    facts = head.facts
    s = list(head.spans[0:4 * facts[lib.H1_FIELDS]])
    headers = [(data[s[i]:s[i + 1]].lower(), data[s[i + 2]:s[i + 3]])
               for i in range(0, len(s), 4)]
    return n, list(facts), headers


def mutate(rnd: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        i = rnd.randint(0, len(data))
        op = rnd.randrange(8)
        if op == 0:                          # a field line somewhere at a line start
            starts = [j + 2 for j in range(len(data) - 1) if data[j:j + 2] == b"\r\n"]
            if starts:
                k = rnd.choice(starts[:-1] or starts)
                data[k:k] = rnd.choice(LINES)
        elif op == 1:
            data[i:i] = rnd.choice(FRAGMENTS)
        elif op == 2 and data:
            del data[min(i, len(data) - 1)]
        elif op == 3 and data:
            data[min(i, len(data) - 1)] = rnd.randrange(256)
        elif op == 4 and data:               # flip the case of a letter
            j = min(i, len(data) - 1)
            if 65 <= data[j] <= 90 or 97 <= data[j] <= 122:
                data[j] ^= 0x20
        elif op == 5:                        # whitespace around a colon
            j = data.find(b":", i)
            if j > 0:
                data[j:j + 1] = rnd.choice((b" :", b": ", b":\t", b"::", b"\t:", b":  \t"))
        elif op == 6:                        # duplicate or drop a field line
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 3:
                k = rnd.randrange(1, len(lines) - 2)
                if rnd.random() < 0.5:
                    lines.insert(k, lines[k])
                else:
                    del lines[k]
                data = bytearray(b"\r\n".join(lines))
        else:                                # many fields (the limits), or a pipelined head
            n = rnd.choice((1, 3, 11, 12, 13, 99, 100, 101, 130))
            extra = b"".join(b"X-%d: v\r\n" % k for k in range(n))
            j = data.find(b"\r\n")
            data[j + 2:j + 2] = extra if j >= 0 else b""
            if rnd.random() < 0.2:
                data += rnd.choice(ACCEPTED)
    return bytes(data)


def test_fast_path_takes_ordinary_heads():
    for data in ACCEPTED:
        head_len = data.index(b"\r\n\r\n") + 4
        n, facts, headers = c_parse(data)
        assert n == head_len, data
        assert headers == RequestParser().feed(data)[0].headers


def test_fast_path_declines_every_refusal():
    """Each row the Python path refuses (tests/http/test_h1.py) is left to it."""
    rows = [(d, Limits()) for _, d, _ in REJECT + REJECT_BODY]
    rows += [(d, LIMITED) for _, d, _ in REJECT_LIMITS + REJECT_LIMITS_BODY]
    for data, limits in rows:
        n, _, _ = c_parse(data, limits)
        if n > 0:   # a head the Python path accepts (the refusal is in the body)
            assert type(RequestParser(limits).feed(data)[0]) is Request, data


@pytest.mark.parametrize("limits", LIMITS, ids=["default", "small", "12 headers", "no body"])
def test_fast_path_respects_limits(limits):
    for data in ACCEPTED:
        head = data[:data.index(b"\r\n\r\n") + 4]
        rl = head.index(b"\r\n")
        nfields = head.count(b"\r\n") - 2
        n, facts, _ = c_parse(data, limits)
        over = (rl > limits.max_request_line or len(head) > limits.max_header_bytes
                or nfields > limits.max_headers
                or (limits.max_body is not None and b"Content-Length: 0" not in head
                    and b"Content-Length" in head and limits.max_body < 1))
        assert (n <= 0) == over, (data, limits)


def test_incomplete_and_offsets():
    for data in ACCEPTED:
        head_len = data.index(b"\r\n\r\n") + 4
        for cut in range(head_len):
            n, _, _ = c_parse(data[:cut])
            assert n == lib.H1_INCOMPLETE, (data[:cut], n)
        prefix = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"   # a previous request in the buffer
        n, facts, headers = c_parse(prefix + data, start=len(prefix))
        assert n == head_len and facts[lib.H1_METHOD_END] > len(prefix)
        assert headers == c_parse(data)[2]
    assert c_parse(b"\r\n" + WRK)[0] == lib.H1_DECLINE      # empty lines first: Python's job


@pytest.mark.parametrize("entry", ["_api_parse_request", "_h1_parse_request"])
def test_parser_uses_the_fast_path(monkeypatch, entry):
    """The C-API call (sidecar._h1api) where it is built; the cffi call without it."""
    if entry == "_api_parse_request" and h1._api_parse_request is None:
        pytest.fail("sidecar._h1api is not built (pip install -e .)")
    if entry == "_h1_parse_request":
        monkeypatch.setattr(h1, "_api_parse_request", None)
    calls = []
    real = getattr(h1, entry)

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(h1, entry, spy)
    monkeypatch.setattr(h1, "speedups", True)
    events = RequestParser().feed(WRK + BROWSER + CURL)
    assert [type(e).__name__ for e in events] == [
        "Request", "EndOfMessage", "Request", "EndOfMessage", "Request", "Body", "EndOfMessage"]
    sizes = [c if type(c) is int else c[0] for c in calls]
    assert len(calls) == 3 and all(n > 0 for n in sizes)
    calls.clear()
    monkeypatch.setattr(h1, "speedups", False)
    assert RequestParser().feed(WRK + BROWSER + CURL) == events and not calls


def test_c_api_and_cffi_paths_agree_on_mutated_heads(monkeypatch):
    """The two entries to the same C parser (sidecar._h1api and cffi) give the same events,
    packed fields included, on heads of every kind, packed for a connection or not."""
    if h1._api_parse_request is None:
        pytest.fail("sidecar._h1api is not built (pip install -e .)")
    api = h1._api_parse_request
    monkeypatch.setattr(h1, "speedups", True)
    rnd = random.Random(25)
    corpus = ACCEPTED + [d for _, d, _ in REJECT] + [CHUNKED + b for b, _ in CHUNKED_OK] + [
        b"GET /p HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        b"GET /%41 HTTP/1.1\r\nHost: a\r\nForwarded: for=10.0.0.1;proto=https\r\n\r\n"]
    trusted = lambda headers: (b"\xa5https", b"\xc0\xc0")   # noqa: E731 (a peer's proxy fields)
    for n in range(3000):
        data = mutate(rnd, rnd.choice(corpus)) if n % 4 else rnd.choice(corpus)
        outcomes = []
        for entry in (api, None):
            monkeypatch.setattr(h1, "_api_parse_request", entry)
            parser = RequestParser()
            if n % 2:
                parser.pack_requests(b"\xa4http", b"\xc0\xc0",   # client, server: nil
                                     b"/root" if n % 3 == 0 else b"",
                                     trusted if n % 5 == 1 else None)
            events = parser.feed(data)
            outcomes.append([(e, e.packed) if type(e) is Request else e for e in events])
        assert outcomes[0] == outcomes[1], data


def test_differential_mutated_heads(monkeypatch):
    """Many mutated heads: the fast path declines, or the events are the Python path's."""
    others = [d for _, d, _ in REJECT] + [CHUNKED + b for b, _ in CHUNKED_OK]
    rnd = random.Random(20261203)
    taken = declined = 0
    for n in range(20000):
        data = mutate(rnd, rnd.choice(ACCEPTED if n % 3 else others))
        limits = LIMITS[n % len(LIMITS)]
        result, facts, headers = c_parse(data, limits)
        slow = parse(data, limits, False, monkeypatch)
        fast = parse(data, limits, True, monkeypatch)
        assert fast == slow, data
        if result > 0:
            taken += 1
            assert type(slow[0]) is Request and slow[0].headers == headers, data
        else:
            declined += 1
    assert taken > 4000 and declined > 4000, (taken, declined)


@pytest.mark.parametrize("value,enabled", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_environment_switch(value, enabled):
    """SIDECAR_NO_SPEEDUPS turns the fast path off for a whole process (read at import)."""
    code = "from sidecar.http import h1; print(h1.speedups)"
    env = {**os.environ, "SIDECAR_NO_SPEEDUPS": value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == str(enabled)


def test_feed_one_is_feed_with_the_usual_head_handed_back_alone(monkeypatch):
    """RequestParser.feed_one (the connection's per-read call): where a read is exactly one
    usual head, the Request itself, else feed's events; either way what feed gives, on the
    same reads, with the parser in the same state after -- with the C-API speedup and without
    (tests/http/conftest.py runs both: without it, feed_one is feed)."""
    close = b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    reads = [[WRK], [WRK, WRK, BROWSER], [WRK + WRK], [WRK + CURL, WRK], [CURL, WRK],
             [CHUNKED, WRK], [CHUNKED[:-3], CHUNKED[-3:] + WRK], [WRK[:10], WRK[10:], WRK],
             [WEBSOCKET + b"rest"], [close, WRK], [close + WRK], [b"\r\n" + WRK, WRK],
             [NGINX], [OPTIONS, b"GET /bad\r\n\r\n", WRK]]
    alone = 0
    for seq in reads:
        one, every = RequestParser(), RequestParser()
        for data in seq:
            got = one.feed_one(data)
            want = every.feed(data)
            if type(got) is Request:
                alone += 1
                assert want == [got, h1._END] and got.content_length in (None, 0), data
                assert got.upgrade is None and not got.chunked
            else:
                assert got == want, data
            assert (one.head_pending, one.mid_request, one.expecting_body) == (
                every.head_pending, every.mid_request, every.expecting_body), data
    assert alone == (11 if h1.speedups and h1._api_parse_request is not None else 0)


def test_usual_heads_share_their_common_names_and_method():
    """The C-API path makes the usual methods and field names once (native/h1_api.c
    shared_bytes): two requests' equal names are one object, and a name or method not in
    the table is still a new bytes object of the right value."""
    a = RequestParser().feed(BROWSER)[0]
    b = RequestParser().feed(BROWSER.replace(b"/static/app.js", b"/other.js"))[0]
    odd = RequestParser().feed(b"PURGE / HTTP/1.1\r\nHost: x\r\nX-Odd: 1\r\n\r\n")[0]
    assert type(a) is Request and type(b) is Request and type(odd) is Request
    assert a.headers == b.headers and len(a.headers) == 14
    assert odd.method == b"PURGE" and odd.headers == [(b"host", b"x"), (b"x-odd", b"1")]
    shared = [x is y for (x, _), (y, _) in zip(a.headers, b.headers)]
    if h1.speedups and h1._api_parse_request is not None:
        assert a.method is b.method and all(shared), shared
    else:
        assert not any(shared)   # the Python path makes each request's own
