"""h1_pack_request (native/events.c): the HTTP_REQUEST fields the C parser packs for a connection
(RequestParser.pack_requests) must be, byte for byte, what sidecar.events.pack makes of the
Request the parser returns -- the scope the front-end would otherwise build in Python
(HTTPConnection.req_scope).  native/tests/h1_unit.c checks the same function under ASan/UBSan;
tests/e2e check that apps see these scopes through a real server.

The rest of the one event codec is here too: the worker's check of what it is sent
(``events.check_request``) accepts every record the C packer makes over the same corpus and
gives back the headers as they came in, refuses every malformed one the way ``events.check``
does, and the framing bounds (``events.FRAMING``, ``HEADER_FRAMING``, ``max_chunk``) by which
records are sized before they are packed hold for what ``pack`` makes.
"""
from __future__ import annotations

import random

import msgpack
import pytest

from sidecar import events
from sidecar.http import h1
from sidecar.http.h1 import Limits, Request, RequestParser

from tests.http.test_h1_speedups import ACCEPTED, BROWSER, LIMITS, WRK, mutate

pytestmark = pytest.mark.skipif(not h1.HAVE_SPEEDUPS, reason="sidecar._h1 not built")

pack = events.pack
CLIENT, SERVER = ["127.0.0.1", 50123], ["127.0.0.1", 8000]


@pytest.fixture(autouse=True)
def speedups(monkeypatch):
    """Packing is a C path: these tests run with it on (not both ways, as conftest does)."""
    monkeypatch.setattr(h1, "speedups", True)


def parser(scheme="http", client=CLIENT, server=SERVER, root="", limits=Limits(), rescope=None):
    p = RequestParser(limits)
    p.pack_requests(pack(scheme), pack(client) + pack(server), root.encode(), rescope)
    return p


def expected(req: Request, scheme="http", client=CLIENT, server=SERVER, root="") -> bytes:
    """What HTTPConnection.req_scope + events.pack make of req: fields 2 to 11."""
    fields = [req.method.decode("ascii"), scheme, root + req.path, root.encode() + req.raw_path,
              req.query_string, req.headers, client, server, req.http_version, root]
    return pack(fields)[1:]   # without the array header


def requests(evs):
    return [e for e in evs if type(e) is Request]


@pytest.mark.parametrize("root", ["", "/api", "/r\u00e9sum\u00e9", "/a%20b"])
def test_accepted_heads_pack_as_msgpack_would(root):
    for data in ACCEPTED:
        (req,) = requests(parser(root=root).feed(data))
        assert req.packed == expected(req, root=root), data


@pytest.mark.parametrize("path,decoded", [
    (b"/a%20b", "/a b"),
    (b"/%E2%82%AC/%e2%82%ac", "/\u20ac/\u20ac"),
    (b"/%zz%4%41%%41", "/%zz%4A%A"),          # unquote_to_bytes: a bad escape stays
    (b"/%ff", "/\u00ff"),                      # not UTF-8: latin-1, every byte kept
    (b"/%C3%A9%ff", "/\u00c3\u00a9\u00ff"),    # one bad byte: the whole path as latin-1
    (b"/%ED%A0%80", "/\u00ed\u00a0\u0080"),    # a surrogate is not UTF-8 to Python
    (b"/%C0%AF", "/\u00c0\u00af"),             # nor an overlong form
    (b"/%F4%90%80%80", "/\u00f4\u0090\u0080\u0080"),   # nor above U+10FFFF
    (b"/%F0%9F%98%80", "/\U0001F600"),
    (b"/%00", "/\x00"),
])
def test_percent_decoding(path, decoded):
    data = b"GET " + path + b"?q=%20 HTTP/1.1\r\nHost: a\r\n\r\n"
    (req,) = requests(parser().feed(data))
    assert req.path == decoded and req.packed == expected(req)
    fields = msgpack.unpackb(b"\x9a" + req.packed, raw=False)
    assert fields[2] == decoded and fields[3] == path and fields[4] == b"q=%20"


def test_long_fields_use_wider_msgpack_forms():
    value = b"v" * 40000   # bin16 (the C parser takes up to 64 KiB of fields)
    data = (b"POST /" + b"p" * 300 + b"?" + b"q" * 300 + b" HTTP/1.1\r\nHost: a\r\n"
            + b"X-Big: " + value + b"\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(20))
            + b"\r\n")
    (req,) = requests(parser(limits=Limits(max_header_bytes=1 << 17)).feed(data))
    assert req.packed is not None and req.packed == expected(req)


def test_packed_is_not_part_of_the_value():
    """A Request compares and prints the same with or without its packed fields."""
    (packed,) = requests(parser().feed(WRK))
    (plain,) = requests(RequestParser().feed(WRK))
    assert packed.packed is not None and plain.packed is None
    assert packed == plain and repr(packed) == repr(plain)


def test_python_path_and_no_scope_leave_packed_none(monkeypatch):
    assert requests(RequestParser().feed(BROWSER))[0].packed is None
    monkeypatch.setattr(h1, "speedups", False)
    assert requests(parser().feed(BROWSER))[0].packed is None


def test_rescope_is_asked_only_with_proxy_fields():
    asked = []

    def rescope(headers):
        asked.append(headers)
        return (pack("https"), pack(["10.0.0.7", 0]) + pack(SERVER)) if len(asked) == 2 else None

    p = parser(rescope=rescope)
    plain = WRK
    xff = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
    proto = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n"
    fwd = b"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=10.0.0.7\r\n\r\n"
    reqs = requests(p.feed(plain + xff + proto + fwd))
    assert len(asked) == 3   # not for the plain one
    assert reqs[0].packed == expected(reqs[0])
    assert reqs[1].packed == expected(reqs[1])   # rescope said None: the connection's
    assert reqs[2].packed == expected(reqs[2], scheme="https", client=["10.0.0.7", 0])
    assert reqs[3].packed == expected(reqs[3])


def test_proxy_answers_are_read_in_c_once_known():
    """pack_requests' ``proxy`` dict: rescope is asked once per distinct set of proxy fields
    (it keeps its answer there by h1.proxy_key, as http_conn._proxy_scope does); after that
    the C parser finds the answer itself (native/h1_api.c's proxy_key makes the same key from
    the parsed head) and packs the request with it."""
    asked = []
    proxy: dict = {}
    https = (pack("https"), pack(["10.0.0.7", 0]) + pack(SERVER))

    def rescope(headers):
        asked.append(headers)
        mine = https if any(b"https" in v for _, v in headers) else None
        proxy[h1.proxy_key(headers)] = mine
        return mine

    p = RequestParser(Limits())
    p.pack_requests(pack("http"), pack(CLIENT) + pack(SERVER), b"", rescope, proxy)
    heads = [
        b"GET /a HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: a\r\nx-forwarded-for:  10.0.0.8 \r\n\r\n",
        # two lines of one field, another field between them, mixed case
        b"GET /c HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nX-FORWARDED-FOR: 10.0.0.7"
        b"\r\nForwarded: for=10.0.0.7;proto=https\r\n\r\n",
        b"POST /d?x=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nContent-Length: 2\r\n\r\nhi",
    ]
    scopes = [https, None, https, https]
    for rnd in range(3):
        for head, mine in zip(heads, scopes):
            (req,) = requests(p.feed(head))
            want = (expected(req) if mine is None else
                    expected(req, scheme="https", client=["10.0.0.7", 0]))
            assert req.packed == want, (rnd, head)
        assert len(asked) == len(heads)   # asked the first time only
    assert set(proxy) == {h1.proxy_key(a) for a in asked}
    # the key is the proxy fields alone: other fields and the path do not split it
    (req,) = requests(p.feed(b"GET /other HTTP/1.1\r\nHost: b\r\nX-Forwarded-For:"
                             b" 10.0.0.8\r\nAccept: */*\r\n\r\n"))
    assert len(asked) == len(heads) and req.packed == expected(req)


def test_record_is_the_event_pack_makes():
    """events.request_record (what HTTPConnection.request_event sends) around the C packer's
    fields is byte for byte the event ``pack`` makes."""
    (req,) = requests(parser().feed(WRK))
    for body, more in ((b"", False), (b"", True), (b"x" * 300, False)):
        record = events.request_record(2**40, req.packed, body, more)
        ev = [events.HTTP_REQUEST, 2**40, "GET", "http", "/", b"/", b"", req.headers, CLIENT,
              SERVER, "1.1", "", body, more]
        assert record == pack(ev)
        events.check_request(events.unpack(record))


def test_differential_mutated_heads():
    """Mutated heads: every Request the C path packs packs as msgpack would."""
    rnd = random.Random(20261204)
    packed = 0
    for n in range(20000):
        data = mutate(rnd, rnd.choice(ACCEPTED))
        root = rnd.choice(("", "", "/api", "/\u00e9"))
        for req in requests(parser(root=root, limits=LIMITS[n % len(LIMITS)]).feed(data)):
            if req.packed is not None:
                packed += 1
                assert req.packed == expected(req, root=root), data
    assert packed > 5000, packed


def _worker_sees(record: bytes) -> list:
    """What the worker's link does with a record: decode, then events.check_request."""
    ev = events.unpack(record)
    return events.check_request(ev)


def test_worker_check_accepts_every_packed_corpus_record():
    """Every record the C path makes for the corpus (and mutations of it) passes the check the
    worker makes, which hands back the request's headers as (name, value) tuples."""
    rnd = random.Random(20261207)
    checked = 0
    heads = list(ACCEPTED) + [mutate(rnd, rnd.choice(ACCEPTED)) for _ in range(3000)]
    for n, data in enumerate(heads):
        root = ("", "/api", "/\u00e9")[n % 3]
        for req in requests(parser(root=root).feed(data)):
            if req.packed is None:
                continue
            for body, more in ((b"", False), (b"abc", True)):
                record = events.request_record(n + 1, req.packed, body, more)
                assert _worker_sees(record) == [tuple(h) for h in req.headers], data
                checked += 1
    assert checked > 1000, checked


def _good(kind):
    if kind == events.HTTP_REQUEST:
        return [kind, 7, "GET", "http", "/", b"/", b"", [[b"host", b"a"]], ["1.2.3.4", 5],
                ["/run/s.sock", None], "1.1", "", b"", False]
    return [kind, 7, "ws", "/", b"/", b"", [[b"host", b"a"]], None, ["h", 80], "1.1", "",
            ["chat"]]


@pytest.mark.parametrize("kind", [events.HTTP_REQUEST, events.WS_CONNECT])
def test_worker_check_refuses_each_malformed_field(kind):
    """Each field of a request given a wrong type (and every field count but the right one)
    is a ProtocolError for that stream -- from check_request, which the worker calls, and
    from events.check, which every other kind goes through."""
    good = _good(kind)
    assert events.check_request(list(good)) == [(b"host", b"a")]
    events.check(list(good))
    bad_values = [1.5, None, 7, "s", b"b", [b"x"], [[b"a"]], [[b"a", "v"]], ["h", "80"],
                  ["h", 80, 1], {}, True]
    refused = 0
    for i in range(2, len(good)):
        for value in bad_values:
            ev = list(good)
            ev[i] = value
            try:
                events.check_request(list(ev))
            except events.ProtocolError as exc:
                assert exc.sid == 7
                with pytest.raises(events.ProtocolError):
                    events.check(list(ev))
                refused += 1
            else:   # accepted: the value has a type the field allows
                events.check(list(ev))
                assert (i, repr(value)) in _ALLOWED[kind], (i, value)
    assert refused > 10 * (len(good) - 2)
    for n in range(2, len(good) + 3):
        if n != len(good):
            ev = (good + [b""] * 3)[:n]
            with pytest.raises(events.ProtocolError, match="fields|tls"):
                events.check_request(ev)


TLS = ["-----BEGIN CERTIFICATE-----\n...", ["-----BEGIN CERTIFICATE-----\n..."], "CN=c", None,
       0x0304, 0x1302]


@pytest.mark.parametrize("kind", [events.HTTP_REQUEST, events.WS_CONNECT])
def test_worker_check_takes_the_optional_tls_field(kind):
    """A TLS connection's records carry the ASGI tls extension as one more field; each of
    its six values of a wrong type is a ProtocolError for the stream."""
    good = _good(kind)
    assert events.check_request(good + [TLS]) == [(b"host", b"a")]
    events.check(good + [TLS])
    assert events.check_request(good + [[None, [], None, None, 0x0303, 0xC02F]])
    for i, value in enumerate([7, [1], 7, 7, "v", None]):
        tls = list(TLS)
        tls[i] = value
        with pytest.raises(events.ProtocolError, match="tls") as exc:
            events.check_request(good + [tls])
        assert exc.value.sid == 7
    assert events.tls_scope(TLS)["cipher_suite"] == 0x1302


# The replacements test_worker_check_refuses_each_malformed_field finds accepted: types the
# field allows (client/server may be nil, a header list may be empty, and so on).
_ALLOWED = {
    events.HTTP_REQUEST: {(2, "'s'"), (3, "'s'"), (4, "'s'"), (5, "b'b'"), (6, "b'b'"),
                          (8, "None"), (9, "None"), (10, "'s'"), (11, "'s'"), (12, "b'b'"),
                          (13, "True")},
    events.WS_CONNECT: {(2, "'s'"), (3, "'s'"), (4, "b'b'"), (5, "b'b'"), (7, "None"),
                        (8, "None"), (9, "'s'"), (10, "'s'"), (11, "['h', '80']")},
}


@pytest.mark.parametrize("n", [0, 1, 31, 32, 255, 256, 65535, 65536, 70000])
def test_framing_bounds_hold(n):
    """A record sized with the bounds of events.py is never larger than that: body and
    WebSocket records, and response heads of many headers."""
    sid = 2**63 - 1   # the largest stream id: the widest int
    for kind in (events.RESPONSE_BODY, events.HTTP_BODY, events.WS_SEND, events.WS_RECEIVE):
        assert len(pack([kind, sid, b"x" * n, True])) <= n + events.FRAMING
    assert len(pack([events.WS_SEND, sid, "x" * n, False])) <= n + events.FRAMING
    headers = [(b"n" * (n % 300), b"v" * n)] * 3 + [(b"a", b"")] * 20
    size = events.FRAMING + sum(len(a) + len(b) + events.HEADER_FRAMING for a, b in headers)
    assert len(pack([events.RESPONSE_START, sid, 599, headers, False])) <= size


def test_max_chunk_fits_a_record_and_the_window():
    for max_record, window in ((512 * 1024, 256 * 1024), (8192, 256 * 1024), (1 << 20, 4096)):
        chunk = events.max_chunk(max_record, window)
        assert chunk <= window and chunk <= events.MAX_CHUNK
        assert len(pack([events.RESPONSE_BODY, 2**63 - 1, b"x" * chunk, True])) <= max_record
