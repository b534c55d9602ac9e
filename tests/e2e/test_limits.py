"""Request limits, strictness, response header validation, connection and stream limits,
end to end: a real sidecar, raw sockets (so exactly the bytes under test are sent)."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.limit_apps import BAD_HEADERS
from tests.e2e.util import recv_until_eof, wait_for
from tests.server import Sidecar

LIMIT_CONCURRENCY = 3


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.limit_apps:app", "--max-request-line", "200",
                 "--max-header-bytes", "1k", "--max-headers", "10", "--max-body", "1k",
                 "--limit-concurrency", str(LIMIT_CONCURRENCY), ready_path="/pid") as s:
        yield s


def connect(sc, timeout: float = 15) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", sc.port))
    s.settimeout(timeout)
    return s


def exchange(sc, data: bytes, timeout: float = 15) -> tuple[bytes, bool]:
    """Send data; return (all bytes read, whether the server closed the connection) --
    reading until the close, or for ``timeout`` seconds if it stays open."""
    s = connect(sc, timeout)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    s.close()
    return out, closed


H = b"Host: x\r\n"
# name, request bytes, status, connection closed after the answer
ROWS = [
    ("request line at the limit", b"GET /" + b"a" * 186 + b" HTTP/1.1\r\n" + H
     + b"Connection: close\r\n\r\n", 404, True),
    ("request line over the limit", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n",
     414, True),
    ("header section over the limit", b"GET /pid HTTP/1.1\r\n" + H + b"X: " + b"a" * 1100
     + b"\r\n\r\n", 431, True),
    ("too many header fields", b"GET /pid HTTP/1.1\r\n" + H + b"X: a\r\n" * 10 + b"\r\n",
     431, True),
    ("Content-Length over max body", b"POST /upload HTTP/1.1\r\n" + H
     + b"Content-Length: 1025\r\n\r\n", 413, True),
    ("chunked body over max body", b"POST /upload HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"a" * 512 + b"\r\n"
     + b"201\r\n" + b"a" * 513 + b"\r\n0\r\n\r\n", 413, True),
    ("body at max body", b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 1024\r\n"
     b"Connection: close\r\n\r\n" + b"a" * 1024, 200, True),
    ("bad chunk size: the waiting app's request is answered", b"POST /upload HTTP/1.1\r\n"
     + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", 400, True),
    ("no Host", b"GET /pid HTTP/1.1\r\n\r\n", 400, True),
    ("two Hosts", b"GET /pid HTTP/1.1\r\n" + H + H + b"\r\n", 400, True),
    ("obs-fold", b"GET /pid HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400, True),
    ("HTTP/2.0", b"GET /pid HTTP/2.0\r\n" + H + b"\r\n", 505, True),
    ("Transfer-Encoding gzip", b"POST /upload HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip\r\n\r\n", 501, True),
    ("CL and TE: the smuggled request is never answered", b"POST /upload HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     + b"GET /pid HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("keep-alive request stays open", b"GET /pid HTTP/1.1\r\n" + H + b"\r\n", 200, False),
]


@pytest.mark.parametrize("data,status,closes", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_request_limits_and_strictness(sc, data, status, closes):
    out, closed = exchange(sc, data, timeout=15 if closes else 1.5)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, out   # one answer, nothing smuggled
    assert closed == closes


def test_early_413_lingers_so_a_client_still_sending_reads_it(sc):
    """Refused on its Content-Length, the client keeps sending the body it announced: the
    server answers, half-closes and drops what follows (lingering close) instead of closing
    with unread bytes, which resets the connection under a client that is still sending."""
    size = 64 << 20
    s = connect(sc)
    s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % size)
    chunk = b"x" * 65536
    for _ in range(size // len(chunk)):
        s.sendall(chunk)   # ConnectionResetError here without lingering close
    out = recv_until_eof(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    assert b"connection: close" in out.lower()


def test_lingering_close_ends_when_the_client_goes_quiet(sc):
    """A refused client that stops sending but never closes is closed for good after the
    lingering timeout (5 s without a byte), not kept half-open."""
    s = connect(sc, timeout=30)
    s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1000000\r\n\r\n"
              + b"x" * 4096)
    out = recv_until_eof(s)   # to the server's FIN: it still reads (and drops) what we send
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    s.sendall(b"x" * 1024)   # still accepted: the server is lingering, not gone
    time.sleep(0.5)
    s.sendall(b"x")
    time.sleep(8)            # quiet past the 5 s lingering timeout (swept once a second)
    reset = False
    try:
        for _ in range(3):   # the first send to a closed peer draws its RST; a later one fails
            s.sendall(b"x")
            time.sleep(0.3)
    except (BrokenPipeError, ConnectionResetError):
        reset = True
    s.close()
    assert reset, "the server never closed a lingering connection"


@pytest.fixture(scope="module")
def sc_unchecked():
    with Sidecar("tests.e2e.unchecked_app:app", workers=1, ready_path="/pid") as s:
        yield s


@pytest.mark.parametrize("kind", sorted(BAD_HEADERS))
@pytest.mark.parametrize("checked", [True, False], ids=["worker-checks", "front-end-only"])
def test_bad_response_header_is_500_and_never_written(request, kind, checked):
    """The worker refuses the header at send() (the app sees ValueError); a worker that does
    not is stopped by the front-end, which trusts no worker: 500 either way, and a log line."""
    sc = request.getfixturevalue("sc" if checked else "sc_unchecked")
    line = ("app error in GET /bad-header" if checked
            else "invalid response from the app for GET /bad-header")
    seen = sc.log().count(line)
    out, closed = exchange(sc, b"GET /bad-header?kind=%s HTTP/1.1\r\n" % kind.encode() + H
                           + b"\r\n")
    assert out.startswith(b"HTTP/1.1 500 "), out
    assert b"never" not in out and b"nject" not in out and b"evil" not in out, out
    assert closed
    wait_for(lambda: sc.log().count(line) > seen, 10, what="the log line")


def test_connections_beyond_limit_concurrency_get_503_and_close(sc):
    def served_connection():
        # earlier tests' connections may not have been seen closing yet: poll
        s = connect(sc)
        s.sendall(b"GET /pid HTTP/1.1\r\n" + H + b"\r\n")
        if s.recv(65536).startswith(b"HTTP/1.1 200 "):
            return s
        s.close()
        return None

    held = []
    try:
        for _ in range(LIMIT_CONCURRENCY):   # each is served (and counted) in turn
            held.append(wait_for(served_connection, 10, interval=0.1,
                                 what="a connection under the limit"))
        out, closed = exchange(sc, b"GET /pid HTTP/1.1\r\n" + H + b"\r\n")
        assert out.startswith(b"HTTP/1.1 503 "), out
        assert b"retry-after: 5\r\n" in out.lower()
        assert closed
        # the held connections still work
        held[0].sendall(b"GET /pid HTTP/1.1\r\n" + H + b"\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in held:
            s.close()
    # once they are gone, new connections are served again (the close is seen async)
    def served():
        out, _ = exchange(sc, b"GET /pid HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        return out.startswith(b"HTTP/1.1 200 ")
    wait_for(served, 10, interval=0.1, what="a connection under the limit to be served")
    assert "over --limit-concurrency" in sc.log()


# --- stream limits: one worker taking one stream at a time, two streams in all -------------

DISPATCH_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def sc_streams():
    with Sidecar("tests.e2e.limit_apps:app", "--limit-worker-streams", "1",
                 "--limit-streams", "2", "--timeout-dispatch", str(DISPATCH_TIMEOUT),
                 workers=1, ready_path="/pid") as s:
        yield s


class Hold:
    """A /hold request in a thread: running in the app until release()."""

    def __init__(self, sc, tmp_path, name: str):
        self.started = str(tmp_path / f"{name}.started")
        self.release_path = str(tmp_path / f"{name}.release")
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(sc,), daemon=True)
        self.thread.start()
        wait_for(lambda: os.path.exists(self.started), 15, what=f"{name} to run in the app")

    def _run(self, sc) -> None:
        self.result = exchange(sc, b"GET /hold?started=%s&release=%s HTTP/1.1\r\n"
                               % (self.started.encode(), self.release_path.encode()) + H
                               + b"Connection: close\r\n\r\n")[0]

    def release(self) -> bytes:
        open(self.release_path, "w").close()
        self.thread.join(15)
        return self.result


def background(sc, data: bytes) -> dict:
    out: dict = {}

    def run():
        t0 = time.monotonic()
        out["response"] = exchange(sc, data)[0]
        out["elapsed"] = time.monotonic() - t0
    out["thread"] = t = threading.Thread(target=run, daemon=True)
    t.start()
    return out


PID = b"GET /pid HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"


def test_full_worker_queues_then_serves_and_total_limit_answers_503(sc_streams, tmp_path):
    hold = Hold(sc_streams, tmp_path, "first")           # the worker is full
    queued = background(sc_streams, PID)                 # waits for the worker
    wait_for(lambda: "thread" in queued, 5)
    time.sleep(0.3)   # let it reach the queue (no event to wait for from outside)
    assert "response" not in queued
    t0 = time.monotonic()
    out, closed = exchange(sc_streams, PID)               # third stream: over --limit-streams
    assert out.startswith(b"HTTP/1.1 503 "), out
    assert b"retry-after: 5\r\n" in out.lower() and closed
    assert time.monotonic() - t0 < DISPATCH_TIMEOUT       # at once, not after a wait
    assert hold.release().startswith(b"HTTP/1.1 200 ")
    queued["thread"].join(15)
    assert queued["response"].startswith(b"HTTP/1.1 200 "), queued  # served when the worker
    assert queued["elapsed"] < DISPATCH_TIMEOUT + 5                  # freed up


def test_full_worker_past_the_dispatch_timeout_answers_503(sc_streams, tmp_path):
    hold = Hold(sc_streams, tmp_path, "second")
    t0 = time.monotonic()
    out, closed = exchange(sc_streams, PID)
    elapsed = time.monotonic() - t0
    assert out.startswith(b"HTTP/1.1 503 "), out
    assert b"retry-after: 5\r\n" in out.lower() and closed
    assert DISPATCH_TIMEOUT - 0.1 <= elapsed <= DISPATCH_TIMEOUT + 4, elapsed
    assert hold.release().startswith(b"HTTP/1.1 200 ")
    out, _ = exchange(sc_streams, PID)   # and the worker serves again
    assert out.startswith(b"HTTP/1.1 200 ")


# --- settings: flags, SIDECAR_* and TOML; a mistake is one line and exit 2 ----------------

def test_limit_and_timeout_settings(tmp_path):
    from sidecar.cli import load_config

    c = load_config(["x:app"], environ={})
    assert (c.limit_concurrency, c.limit_streams, c.limit_worker_streams) == (0, 0, 1000)
    assert (c.header_timeout, c.body_timeout, c.keepalive_timeout) == (60.0, 60.0, 75.0)
    c = load_config(["x:app", "--limit-concurrency", "500", "--limit-streams", "800",
                     "--limit-worker-streams", "50", "--timeout-header", "10",
                     "--timeout-body", "2.5", "--timeout-dispatch", "4"], environ={})
    assert (c.limit_concurrency, c.limit_streams, c.limit_worker_streams) == (500, 800, 50)
    assert (c.header_timeout, c.body_timeout, c.dispatch_timeout) == (10.0, 2.5, 4.0)
    assert load_config(["x:app"], environ={"SIDECAR_DISPATCH_TIMEOUT": "7"}).dispatch_timeout \
        == 7.0
    toml = tmp_path / "s.toml"
    toml.write_text('limit-concurrency = 7\nheader_timeout = 3\n')
    c = load_config(["x:app", "--config", str(toml)],
                    environ={"SIDECAR_BODY_TIMEOUT": "4", "SIDECAR_LIMIT_STREAMS": "9"})
    assert (c.limit_concurrency, c.header_timeout, c.body_timeout, c.limit_streams) \
        == (7, 3.0, 4.0, 9)


@pytest.mark.parametrize("args, words", [
    (["--limit-concurrency", "-1"], ["--limit-concurrency", "0"]),
    (["--limit-worker-streams", "-5"], ["--limit-worker-streams"]),
    (["--timeout-header", "0"], ["--timeout-header", "positive"]),
    (["--timeout-body", "-1"], ["--timeout-body", "positive"]),
    (["--timeout-body", "soon"], ["--timeout-body", "soon"]),
    (["--timeout-dispatch", "0"], ["--timeout-dispatch", "positive"]),
])
def test_bad_limit_or_timeout_is_one_line_and_exit_2(tmp_path, args, words):
    out = subprocess.run([sys.executable, "-m", "sidecar", "tests.e2e.limit_apps:app",
                          "--uds", str(tmp_path / "s.sock"), *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("sidecar: error: ") and "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], lines[0]
