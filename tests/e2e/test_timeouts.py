"""Client timeouts against a real sidecar: header deadline (slowloris), body idle timeout,
keep-alive timeout; the server's once-a-second sweep enforces them (so +1 s of slack)."""
import os
import socket
import time

import httpx
import pytest

from tests.e2e.util import wait_for
from tests.server import Sidecar

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 5.0
SEND_TIMEOUT = 2.0
# The sweep runs once a second and the machine is shared: how late a timeout may fire.
SLACK = 4.0


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.limit_apps:app", "--timeout-header", str(HEADER_TIMEOUT),
                 "--timeout-body", str(BODY_TIMEOUT), "--timeout-keep-alive",
                 str(KEEPALIVE_TIMEOUT), "--timeout-send", str(SEND_TIMEOUT),
                 ready_path="/pid") as s:
        yield s


def connect(sc) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", sc.port))
    s.settimeout(HEADER_TIMEOUT + BODY_TIMEOUT + KEEPALIVE_TIMEOUT + SLACK * 2)
    return s


def read_until_close(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def read_file(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def test_slowloris_gets_408_at_the_header_deadline(sc):
    """One header byte every 0.2 s: the deadline counts from the first byte, not the last."""
    s = connect(sc)
    s.settimeout(0.2)
    t0 = time.monotonic()
    s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    out = b""
    other = None
    while time.monotonic() - t0 < HEADER_TIMEOUT + SLACK + 5:
        try:
            s.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            break
        if other is None and time.monotonic() - t0 > HEADER_TIMEOUT / 2:
            other = httpx.get(sc.url + "/pid", timeout=10)  # others are served meanwhile
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    elapsed = time.monotonic() - t0
    s.close()
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert b"connection: close" in out.lower()
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + SLACK, elapsed
    assert other is not None and other.status_code == 200
    assert "request header timeout" in sc.log()


def test_silent_new_connection_is_closed_without_an_answer(sc):
    s = connect(sc)
    t0 = time.monotonic()
    assert read_until_close(s) == b""
    elapsed = time.monotonic() - t0
    s.close()
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + SLACK, elapsed


def test_stalled_body_gets_408_and_the_app_sees_disconnect(sc, tmp_path):
    marker = str(tmp_path / "disconnect")
    s = connect(sc)
    t0 = time.monotonic()
    s.sendall(b"POST /upload?marker=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
              % marker.encode() + b"x" * 10)
    with httpx.Client(base_url=sc.url, timeout=10) as other:  # not affected
        assert other.post("/upload", content=b"y" * 1000).text == "1000"
    out = read_until_close(s)
    elapsed = time.monotonic() - t0
    s.close()
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert BODY_TIMEOUT - 0.1 <= elapsed <= BODY_TIMEOUT + SLACK, elapsed
    wait_for(lambda: os.path.exists(marker), 10, what="the app to see the disconnect")
    assert read_file(marker) == "http.disconnect"


def test_stalled_chunked_body_after_the_response_started_closes(sc, tmp_path):
    marker = str(tmp_path / "disconnect")
    s = connect(sc)
    s.sendall(b"POST /respond-then-read?marker=%s HTTP/1.1\r\nHost: x\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" % marker.encode())
    out = read_until_close(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert b"started\n" in out
    assert not out.endswith(b"0\r\n\r\n"), out  # cut off: never presented as complete
    assert b"408" not in out
    wait_for(lambda: os.path.exists(marker), 10, what="the app to see the disconnect")
    assert read_file(marker) == "http.disconnect"


def test_body_timeout_waits_while_a_100_continue_client_waits_for_the_app(sc):
    """Expect: 100-continue: the client sends nothing until the app reads, however late."""
    delay = BODY_TIMEOUT + 1.5
    s = connect(sc)
    s.sendall(b"POST /read-later?delay=%.1f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n" % delay)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 100 "), first
    s.sendall(b"hello")
    rest = b""
    while b"\r\n\r\n" not in rest or not rest.endswith(b"5"):
        chunk = s.recv(65536)
        assert chunk, rest
        rest += chunk
    s.close()
    assert rest.startswith(b"HTTP/1.1 200 "), rest


def test_keepalive_idle_is_the_keepalive_timeout_not_the_header_timeout(sc):
    s = connect(sc)
    s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    # idle past the header timeout: still open (sleeping is the test here: nothing to poll)
    time.sleep(HEADER_TIMEOUT + 1.5)
    t1 = time.monotonic()
    s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert read_until_close(s) == b""   # then closed by the keep-alive timeout
    elapsed = time.monotonic() - t1
    s.close()
    assert KEEPALIVE_TIMEOUT - 0.1 <= elapsed <= KEEPALIVE_TIMEOUT + SLACK, elapsed


def test_empty_lines_do_not_keep_a_connection_open(sc):
    """CRLFs before a request line are skipped (RFC 9112 2.2) but start no request: the
    connection stays idle and the keep-alive timeout still closes it."""
    s = connect(sc)
    s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    t1 = time.monotonic()
    s.settimeout(0.5)
    out = b""
    while time.monotonic() - t1 < KEEPALIVE_TIMEOUT + SLACK + 3:
        try:
            s.sendall(b"\r\n")
            chunk = s.recv(100)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    elapsed = time.monotonic() - t1
    s.close()
    assert out == b""
    assert elapsed <= KEEPALIVE_TIMEOUT + SLACK, elapsed


def test_client_that_stops_reading_is_dropped_at_the_send_timeout(sc, tmp_path):
    """A client that takes no response bytes would hold its stream (and the app's send())
    forever: once our buffer for it stays full for the send timeout, it is aborted."""
    marker = str(tmp_path / "gone")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # fills at once
    s.connect(("127.0.0.1", sc.port))
    t0 = time.monotonic()
    s.sendall(b"GET /endless?marker=%s HTTP/1.1\r\nHost: x\r\n\r\n" % marker.encode())
    # the client reads nothing; the app sees the end as an error from its send()
    wait_for(lambda: os.path.exists(marker), SEND_TIMEOUT + SLACK + 10, interval=0.1,
             what="the app to see the client dropped")
    elapsed = time.monotonic() - t0
    s.close()
    assert read_file(marker) == "disconnected"
    assert SEND_TIMEOUT - 0.1 <= elapsed <= SEND_TIMEOUT + SLACK + 3, elapsed
    assert "send timeout" in sc.log()
