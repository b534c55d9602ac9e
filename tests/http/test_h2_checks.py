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
