"""The C paths of the HTTP/1.1 front-end and their Python twins (SIDECAR_NO_SPEEDUPS=1) give
the same bytes on the wire: one server of each, the same requests, the answers compared byte
for byte (no Date field: --no-date-header).  The unit tests compare the twins function by
function (tests/http/test_response_head.py, test_h1_connection.py); this is the whole path."""
import socket

import pytest

from tests.server import Sidecar

ARGS = ("--no-date-header",)


@pytest.fixture(scope="module")
def twins():
    with Sidecar("tests.e2e.shapes_app:app", *ARGS, workers=1) as c, \
            Sidecar("tests.e2e.shapes_app:app", *ARGS, workers=1,
                    env={"SIDECAR_NO_SPEEDUPS": "1"}) as py:
        yield c, py


REQUESTS = [
    b"GET /?b=hello&h=content-length=5 HTTP/1.1",
    b"GET /?b=hello&h=content-type=text/plain HTTP/1.1",            # chunked
    b"GET /?b=hello&n=3 HTTP/1.1",                                  # chunked, 3 messages
    b"GET /?s=204 HTTP/1.1",
    b"GET /?s=304&h=content-length=9 HTTP/1.1",
    b"GET /?s=404&b=nope&h=Connection=close HTTP/1.1",
    b"HEAD /?b=hidden&h=content-length=6 HTTP/1.1",
    b"GET /?s=299&b=x&h=X-A=1;x-b=;Server=app HTTP/1.1",
    b"GET /?b=bad&h=bad%20name=x HTTP/1.1",                         # refused: 500
    b"GET /?b=bad&h=x=a%0d%0ab:1 HTTP/1.1",                         # refused: 500
    b"GET /?b=" + b"y" * 3000 + b" HTTP/1.1",
]


def _exchange(sc: Sidecar, data: bytes) -> bytes:
    s = socket.create_connection(("127.0.0.1", sc.port), timeout=10)
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


@pytest.mark.parametrize("line", REQUESTS, ids=range(len(REQUESTS)))
def test_c_and_python_answer_the_same_bytes(twins, line):
    c, py = twins
    # keep-alive first, then a close: both answers on one connection, pipelined
    data = line + b"\r\nHost: x\r\n\r\n" + line + b"\r\nHost: x\r\nConnection: close\r\n\r\n"
    got = _exchange(c, data)
    assert got.startswith(b"HTTP/1.1 "), got[:200]
    assert got == _exchange(py, data)


def test_http10_close_delimited_body_is_the_same(twins):
    c, py = twins
    data = b"GET /?b=until%20the%20close HTTP/1.0\r\n\r\n"
    got = _exchange(c, data)
    assert got.endswith(b"\r\n\r\nuntil the close") and got == _exchange(py, data)


def _one_per_read(sc: Sidecar, lines: list[bytes]) -> list[bytes]:
    """Each request alone on the wire, its answer read before the next is sent: the
    keep-alive cycle's hot path (one head a read, the whole response in one batch)."""
    s = socket.create_connection(("127.0.0.1", sc.port), timeout=10)
    answers = []
    try:
        for line in lines:
            s.sendall(line + b"\r\nHost: x\r\n\r\n")
            out = b""
            while b"\r\n\r\n" not in out:
                out += s.recv(65536)
            head, _, body = out.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += s.recv(65536)
            answers.append(out[:len(head) + 4] + body)
    finally:
        s.close()
    return answers


def test_keep_alive_one_request_per_read_is_the_same(twins):
    c, py = twins
    lines = [b"GET /?b=one&h=content-length=3 HTTP/1.1",
             b"GET /?s=404&b=no&h=content-length=2 HTTP/1.1",
             b"GET /?b=" + b"z" * 2000 + b"&h=content-length=2000 HTTP/1.1",
             b"GET /?b=bad&h=bad%20name=x HTTP/1.1"]   # refused: 500, and the close
    got = _one_per_read(c, lines)
    assert [a.split(b"\r\n", 1)[0] for a in got] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK",
        b"HTTP/1.1 500 Internal Server Error"]
    assert got == _one_per_read(py, lines)
