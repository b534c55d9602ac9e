"""An app that answers without reading the request body (a Starlette 404 for a large POST).

The front-end stops reading a body the app does not take (backpressure); once the answer is
out, the rest of that body must be read and dropped -- up to a limit, keeping the connection
alive -- or the connection closed lingering.  Either way no connection may be left holding
its socket: these tests failed (a wedged, leaked connection) before the fix.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.e2e.util import MiB, wait_for
from tests.server import Sidecar

GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
# Starlette's own 404 for a route it does not have, at once (the report's reproduction:
# whether the front-end had stopped reading by then is a matter of timing), and a 404 after
# 300 ms, when the window is surely full and the front-end has stopped reading.
AT_ONCE, LATE = b"/no/such/route", b"/late-404?ms=300"


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.framework_apps:app", workers=2, ready_path="/hello") as s:
        yield s


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict, bytes]:
    """One response with a Content-Length body from ``sock`` (``buf`` keeps what follows)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before a response head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).split(b"\r\n")
    del buf[:end + 4]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed inside a response body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def closed_by_server(sock: socket.socket, buf: bytearray) -> bool:
    """True once the server closed (EOF or reset) with nothing more to read."""
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        return True
    buf += chunk
    return not chunk


class Uploader(threading.Thread):
    """Sends ``data`` in pieces (``pause`` seconds apart once ``slow_after`` bytes are sent);
    records how it ended."""

    def __init__(self, sock: socket.socket, data: bytes, piece: int = 64 * 1024,
                 pause: float = 0.0, slow_after: int = 0):
        super().__init__(daemon=True)
        self.sock, self.data, self.piece, self.pause = sock, data, piece, pause
        self.slow_after = slow_after
        self.outcome = None   # "sent", or the error that ended the upload

    def run(self) -> None:
        view = memoryview(self.data)
        try:
            for i in range(0, len(view), self.piece):
                self.sock.sendall(view[i:i + self.piece])
                if self.pause and i >= self.slow_after:
                    time.sleep(self.pause)
            self.outcome = "sent"
        except OSError as exc:   # the server closed: a reset or a broken pipe
            self.outcome = type(exc).__name__


def post_head(size: int | None, path: bytes = AT_ONCE) -> bytes:
    framing = (b"Transfer-Encoding: chunked\r\n" if size is None
               else b"Content-Length: %d\r\n" % size)
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n"


def chunked(size: int, piece: int = 64 * 1024) -> bytes:
    out = bytearray()
    for i in range(0, size, piece):
        n = min(piece, size - i)
        out += b"%x\r\n" % n + b"x" * n + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


def upload_unread(sc, size: int, *, path: bytes = AT_ONCE, use_chunked: bool = False,
                  pause: float = 0.0, piece: int = 64 * 1024, slow_after: int = 0) -> tuple[socket.socket, bytearray, Uploader]:
    """POST ``size`` bytes to a route the app has no handler for; return once the 404 is read."""
    sock = socket.create_connection(("127.0.0.1", sc.port))
    sock.settimeout(20)
    body = chunked(size) if use_chunked else b"x" * size
    sock.sendall(post_head(None if use_chunked else size, path))
    up = Uploader(sock, body, piece=piece, pause=pause, slow_after=slow_after)
    up.start()
    buf = bytearray()
    status, _, _ = read_response(sock, buf)
    assert status == 404
    return sock, buf, up


FRAMINGS = pytest.mark.parametrize("use_chunked", [False, True],
                                   ids=["content-length", "chunked"])
ANSWERS = pytest.mark.parametrize("path", [AT_ONCE, LATE], ids=["at-once", "late"])


@FRAMINGS
@ANSWERS
def test_small_unread_body_is_dropped_and_the_connection_kept(sc, use_chunked, path):
    """Up to the discard limit the rest of the body is read and dropped: the upload finishes
    and the next request on the connection is answered."""
    sock, buf, up = upload_unread(sc, 1 * MiB, path=path, use_chunked=use_chunked)
    with sock:
        up.join(20)
        assert up.outcome == "sent"
        sock.sendall(GET)
        status, _, body = read_response(sock, buf)
        assert status == 200 and body == b"hello"


@FRAMINGS
@ANSWERS
def test_large_unread_body_closes_the_connection(sc, use_chunked, path):
    """Past the limit the connection is closed after the answer (lingering: the client read
    its 404 whole), so the upload ends instead of stalling forever."""
    sock, buf, up = upload_unread(sc, 20 * MiB, path=path, use_chunked=use_chunked)
    with sock:
        up.join(30)
        assert not up.is_alive(), "the upload stalled: the server stopped reading"
        wait_for(lambda: closed_by_server(sock, buf), 30, what="the server to close")
        assert not buf


def test_pipelined_request_behind_an_unread_body(sc):
    """A request pipelined right behind the body is answered, in order."""
    size = 1 * MiB
    sock = socket.create_connection(("127.0.0.1", sc.port))
    sock.settimeout(20)
    up = Uploader(sock, post_head(size, LATE) + b"x" * size + GET)
    up.start()
    with sock:
        buf = bytearray()
        assert read_response(sock, buf)[0] == 404
        status, _, body = read_response(sock, buf)
        assert status == 200 and body == b"hello"
        up.join(20)
        assert up.outcome == "sent"


def test_slow_client_after_an_early_answer(sc):
    """A client still dribbling its body after the answer is read to the end (the body
    timeout, not a wedge, is what bounds it) and then served again.  The first 768 KiB come
    at once (more than a window: the front-end stops reading), then 64 KiB every 0.1 s."""
    sock, buf, up = upload_unread(sc, 2 * MiB, path=LATE, pause=0.1, slow_after=768 * 1024)
    with sock:
        up.join(20)
        assert up.outcome == "sent"
        sock.sendall(GET)
        assert read_response(sock, buf)[0] == 200


def test_no_connection_outlives_its_client(sc):
    """Four large unread uploads at once (the report's reproduction): each client closes
    after its 404, and the front-end lets go of every socket."""
    pid = sc.proc.pid
    before = fd_count(pid)
    uploads = [upload_unread(sc, 2 * MiB, path=path) for path in (AT_ONCE, LATE) * 2]
    for sock, _, up in uploads:
        sock.shutdown(socket.SHUT_RDWR)   # also ends a sendall still blocked in the thread
        up.join(20)
        sock.close()
    wait_for(lambda: fd_count(pid) <= before, 20,
             what=f"the front-end's fds to fall back to {before}")
    # and the server still serves
    with sc.client() as client:
        assert client.get("/hello").status_code == 200
