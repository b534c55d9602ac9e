"""ASGI response trailers (http.response.trailers) on HTTP/1.1: in the last chunk of a
chunked response when the request said TE: trailers, and the extension is offered only then
(HTTP/2 trailers: test_grpc.py, tests/http/test_h2_connection.py)."""
from __future__ import annotations

import socket

import h11
import pytest

from sidecar.http import h1_response
from tests.server import Sidecar

APP = "tests.e2e.grpc_app:app"
MESSAGE = b"\0\0\0\0\x02hi"


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, workers=1) as s:
        yield s


def exchange(sc, te: bool) -> tuple[h11.Response, bytes, list]:
    head = (b"POST /test.Echo/Unary HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc\r\n"
            + (b"TE: trailers\r\n" if te else b"") + b"content-length: %d\r\n\r\n" % len(MESSAGE))
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as sock:
        sock.sendall(head + MESSAGE)
        resp, body, trailers = None, b"", []
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return resp, body, list(ev.headers)


def test_trailers_in_the_last_chunk_when_the_client_takes_them(sc):
    resp, body, trailers = exchange(sc, te=True)
    assert resp.status_code == 200 and (b"transfer-encoding", b"chunked") in resp.headers
    assert body == b"\0\0\0\0\x02HI"
    assert (b"grpc-status", b"0") in trailers


def test_no_trailers_extension_without_te_trailers(sc):
    resp, body, trailers = exchange(sc, te=False)
    assert resp.status_code == 415 and trailers == []


def test_last_chunk_with_drops_fields_kept_out_of_trailers_and_refuses_bad_ones():
    assert h1_response.last_chunk_with([(b"Grpc-Status", b"0"), (b"content-length", b"9")]) \
        == b"0\r\ngrpc-status: 0\r\n\r\n"
    with pytest.raises(ValueError):
        h1_response.last_chunk_with([(b"x", b"a\r\nb: c")])
    assert h1_response.takes_trailers([(b"te", b"deflate, Trailers")])
    assert not h1_response.takes_trailers([(b"te", b"deflate")])
