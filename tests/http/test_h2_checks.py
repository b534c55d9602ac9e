"""sidecar/http/h2_checks.py: the request checks sidecar runs per stream (h2's inbound check
is off) and the RFC error codes it names where h2 says PROTOCOL_ERROR.  The same cases
against a live server, as frames on a socket: tests/e2e/test_h2_conformance.py."""
from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.exceptions
import pytest
from h2.errors import ErrorCodes

from sidecar.http.h2_checks import rfc_code, valid_fields

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")]


@pytest.mark.parametrize("extra, ok", [
    ([], True),
    ([(b"x-ok", b"1"), (b"te", b"trailers")], True),
    ([(b"X-Upper", b"1")], False),
    ([(b"connection", b"close")], False),
    ([(b"transfer-encoding", b"chunked")], False),
    ([(b"te", b"gzip")], False),
    ([(b":foo", b"1")], False),
    ([(b":status", b"200")], False),
    ([(b":method", b"POST")], False),
    ([(b"x-bad", b"a\r\nb")], False),
])
def test_valid_fields_of_a_request(extra, ok):
    assert valid_fields(GET + extra) is ok


def test_missing_or_empty_pseudo_fields_and_pseudo_fields_after_regular_ones():
    assert not valid_fields(GET[1:])                             # no :method
    assert not valid_fields(GET[:3])                             # no :path
    assert not valid_fields(GET[:3] + [(b":path", b"")])
    assert not valid_fields(GET[:2] + [(b"x-a", b"b")] + GET[2:])


def test_trailers_take_no_pseudo_fields():
    assert valid_fields([(b"grpc-status", b"0")], trailers=True)
    assert not valid_fields([(b":path", b"/")], trailers=True)


def _raw(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + \
        struct.pack(">I", sid) + payload


@pytest.mark.parametrize("frame, code", [
    (_raw(0x1, 0x5, 1, b"\x80"), ErrorCodes.COMPRESSION_ERROR),              # HPACK index 0
    (_raw(0x4, 0x1, 0, struct.pack(">HI", 3, 10)), ErrorCodes.FRAME_SIZE_ERROR),  # ACK+payload
    (_raw(0x0, 0x1, 0, b"x"), None),                                        # h2's own code
])
def test_rfc_code_of_h2s_protocol_errors(frame, code):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    with pytest.raises(h2.exceptions.ProtocolError) as err:
        conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _raw(0x4, 0, 0, b"") + frame)
    assert rfc_code(err.value) == code


def _reference(headers, trailers: bool = False) -> bool:
    """h2's validate_headers alone: the definition valid_fields' fast path answers for."""
    from h2.utilities import validate_headers
    from sidecar.http import h2_checks
    flags = h2_checks._TRAILERS if trailers else h2_checks._REQUEST
    try:
        for _ in validate_headers(headers, flags):
            pass
    except h2.exceptions.ProtocolError:
        return False
    return True


def _heads():
    """Request blocks around the usual ones: each field of a few real clients' heads changed
    in every way the checks look at, fields added, dropped, duplicated and moved."""
    bases = [
        GET + [(b"user-agent", b"h2load nghttp2/1.52.0")],
        [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/svc.Echo/Say"),
         (b":authority", b"api:443"), (b"content-type", b"application/grpc"),
         (b"te", b"trailers"), (b"grpc-timeout", b"1S")],
        [(b":method", b"GET"), (b":path", b"/users/7?page=1"), (b":scheme", b"http"),
         (b"host", b"x"), (b"accept", b"*/*"), (b"cookie", b"a=b"), (b"x-empty", b"")],
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
         (b":path", b"/ws"), (b":authority", b"x")],
        [(b":method", b"CONNECT"), (b":authority", b"x:443")],
    ]
    names = [b"", b"X-Up", b"a b", b"a:b", b":path", b":status", b":protocol", b"\x7f",
             b"\xc3", b"host", b"te", b"connection", b"keep-alive", b"upgrade", b"ok!#$%&'*+-.^_`|~"]
    values = [b"", b" x", b"x ", b"\tx", b"x\t", b"a\x00", b"a\nb", b"a\rb", b"x", b"trailers",
              b"TRAILERS", b"gzip", b"\xff\xfe", b"CONNECT", b"/"]
    for base in bases:
        yield base
        for i in range(len(base)):
            yield base[:i] + base[i + 1:]                              # dropped
            yield base[:i] + [base[i]] + base[i:]                      # duplicated
            yield base[i:i + 1] + base[:i] + base[i + 1:]              # moved first
            yield base[:i] + base[i + 1:] + base[i:i + 1]              # moved last
            for name in names:
                yield base[:i] + [(name, base[i][1])] + base[i + 1:]
            for value in values:
                yield base[:i] + [(base[i][0], value)] + base[i + 1:]
        for name in names:
            for value in values:
                yield base + [(name, value)]


def test_usual_request_answers_only_where_h2_passes_the_block():
    """The fast path's True is always h2's (False is no verdict: the reference decides), and
    valid_fields says what h2 says on every block."""
    from sidecar.http.h2_checks import usual_request
    fast = total = 0
    for headers in _heads():
        reference = _reference(headers)
        if usual_request(headers):
            assert reference, headers
            fast += 1
        assert valid_fields(headers) is reference, headers
        assert valid_fields(headers, trailers=True) is _reference(headers, trailers=True)
        total += 1
    assert total > 1500 and fast > 100   # the corpus reaches both sides


def test_usual_request_takes_the_usual_heads():
    from sidecar.http.h2_checks import usual_request
    assert usual_request(GET + [(b"user-agent", b"h2load nghttp2/1.52.0")])
    assert usual_request([(b":method", b"GET"), (b":path", b"/u/7"), (b":scheme", b"http"),
                          (b"host", b"x"), (b"accept", b"*/*"), (b"x-empty", b"")])
    assert usual_request(GET + [(b"host", b"x")])         # host and :authority agree
    assert not usual_request(GET + [(b"host", b"y")])     # (h2 refuses: the reference says so)
