"""Files as response bodies: ASGI's http.response.pathsend, as Starlette's FileResponse uses
it, sent by the front-end (sidecar/frontend/file_send.py): sendfile(2) on plain HTTP/1.1,
reads through the protocol on TLS and HTTP/2.  A real sidecar, real clients (httpx, curl,
raw sockets); the front-end's descriptors and memory are read from /proc."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time

import httpx
import pytest

from tests.e2e.h2client import H2Client, get
from tests.e2e.test_tls import TLSSidecar, make_cert, trusting
from tests.server import Sidecar, rss_kib

APP = "tests.e2e.file_apps:app"
MIB = 1024 * 1024
SIZE = 8 * MIB


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    data = os.urandom(SIZE)
    (d / "data").write_bytes(data)
    return d, data


@pytest.fixture(scope="module")
def sc(files):
    with Sidecar(APP, "--timeout-send", "2", workers=1, env={"SC_FILES": str(files[0])},
                 ready_path="/ext", capture_stdout=True) as s:
        yield s


@pytest.fixture(scope="module")
def tls(files, tmp_path_factory):
    cert, key = make_cert(tmp_path_factory.mktemp("tls"), "server")
    with TLSSidecar(APP, cert, key, "--timeout-send", "2", workers=1,
                    env={"SC_FILES": str(files[0])}, ready_path="/ext") as s:
        yield s


def access(sc) -> str:
    with open(sc.stdout_path) as fh:
        return fh.read()


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The front-end's descriptors once connections of earlier tests are closed: the least
    count seen over 0.3 s."""
    least = fds(pid)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        least = min(least, fds(pid))
        time.sleep(0.02)
    return least


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def sparse(directory, name: str, size: int) -> str:
    """A file of ``size`` zero bytes that takes no disk (holes)."""
    path = os.path.join(directory, name)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def test_the_extension_is_offered_and_a_file_is_sent_whole(sc, files):
    _, data = files
    with sc.client(timeout=30) as c:
        assert c.get("/ext").json() == ["http.response.pathsend"]
        r = c.get("/f/data")
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-length"] == str(SIZE)
        assert c.get("/f/data").content == data   # the connection stays alive
    with sc.client(uds=True, timeout=30) as c:   # a Unix socket: sendfile too
        assert c.get("/f/data").content == data
    # the access line counts the bytes sendfile sent
    assert wait_for(lambda: f'"GET /f/data HTTP/1.1" 200 {SIZE} ' in access(sc))
    assert "pathsend" not in sc.log()


def test_pipelined_files_come_in_order(sc, files):
    _, data = files
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.sendall(b"GET /f/data HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /f/data HTTP/1.1\r\nHost: x\r\nRange: bytes=3-5\r\n\r\n"
                  b"GET /f/data HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /f/data HTTP/1.1\r\nHost: x\r\nRange: bytes=-2\r\n"
                  b"Connection: close\r\n\r\n")
        out = bytearray()
        while chunk := s.recv(1 << 20):
            out += chunk
    bodies = []
    while out:   # every response has a Content-Length
        head, _, rest = bytes(out[:4096]).partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        start = len(head) + 4
        bodies.append(bytes(out[start:start + length]))
        del out[:start + length]
    assert bodies == [data, data[3:6], data, data[-2:]]


def test_ranges_and_head_through_starlette(sc, files):
    _, data = files
    with sc.client(timeout=30) as c:
        r = c.get("/f/data", headers={"range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        r = c.get("/f/data", headers={"range": f"bytes={SIZE - 10}-"})
        assert r.status_code == 206 and r.content == data[-10:]
        r = c.get("/f/data", headers={"range": "bytes=0-9,20-29"})
        assert r.status_code == 206 and data[0:10] in r.content and data[20:30] in r.content
        assert c.get("/f/data", headers={"range": f"bytes={SIZE}-"}).status_code == 416
        r = c.head("/f/data")
        assert r.status_code == 200 and r.headers["content-length"] == str(SIZE)
        assert r.content == b""
        # curl, resuming a download
        out = subprocess.run(["curl", "-sS", "-r", "1000-", f"{sc.url}/f/data"],
                             capture_output=True, timeout=30)
        assert out.returncode == 0 and out.stdout == data[1000:]


def test_a_vanished_file_aborts_the_response_and_nothing_else(sc, files):
    with sc.client(timeout=10) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/raw/gone?length=10")
        assert c.get("/f/data").status_code == 200
    assert "cannot open" in sc.log() and "gone" in sc.log()


def test_a_file_that_shrinks_while_being_sent_aborts_the_connection(sc, files):
    path = sparse(files[0], "shrinks", 48 * MIB)
    got = 0
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.sendall(b"GET /f/shrinks HTTP/1.1\r\nHost: x\r\n\r\n")
        while got < MIB:
            got += len(s.recv(65536))
        # socket buffers hold a few MiB at most: the front-end is well before 24 MiB
        os.truncate(path, 24 * MIB)
        while data := s.recv(1 << 20):
            got += len(data)
    head = 200   # (about: the head's bytes are in `got` too)
    assert 24 * MIB <= got < 24 * MIB + head + 300
    assert wait_for(lambda: "shrank while being sent" in sc.log())


def test_a_client_gone_mid_file_leaves_no_descriptor(sc, files):
    sparse(files[0], "big", 64 * MIB)
    pid = sc.proc.pid
    before = settled_fds(pid)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
            s.sendall(b"GET /f/big HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(65536)
            # the socket, the file and the dup the sender waits for room on
            assert wait_for(lambda: fds(pid) == before + 3)
    assert wait_for(lambda: fds(pid) == before), (fds(pid), before)
    with sc.client(timeout=30) as c:
        assert c.get("/f/data").content == files[1]


def test_a_stalled_client_holds_no_memory_and_meets_the_send_timeout(sc, files):
    sparse(files[0], "huge", 256 * MIB)
    pid = sc.proc.pid
    rss0 = rss_kib(pid)
    got = 0
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /f/huge HTTP/1.1\r\nHost: x\r\n\r\n")
        got += len(s.recv(65536))
        time.sleep(0.5)
        assert rss_kib(pid) - rss0 < 4 * 1024
        # --timeout-send 2: the front-end gives up on it, although its own buffer is empty
        assert wait_for(lambda: "send timeout" in sc.log(), 5)
        try:
            while data := s.recv(1 << 20):
                got += len(data)
        except ConnectionResetError:
            pass
        assert got < 32 * MIB


def test_http2_sends_the_file_as_data_frames(sc, files):
    _, data = files
    with httpx.Client(http1=False, http2=True, base_url=sc.url, timeout=30) as c:
        r = c.get("/f/data")
        assert r.http_version == "HTTP/2" and r.content == data
        r = c.get("/f/data", headers={"range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == data[5:10]
        with pytest.raises(httpx.RemoteProtocolError):   # a stream reset, not the connection
            c.get("/raw/gone?length=10")
        assert c.get("/f/data").content == data


def test_an_http2_stream_reset_mid_file_leaves_no_descriptor(sc, files):
    sparse(files[0], "h2big", 64 * MIB)
    pid = sc.proc.pid
    before = settled_fds(pid)
    c = H2Client(sc.port, auto_window=False)   # the client's windows stay at 64 KiB
    try:
        sid = c.request(get("/f/h2big"))
        c.until(lambda: len(c.bodies[sid]) >= 65535 - 16384, what="the first window")
        assert wait_for(lambda: fds(pid) == before + 2)   # the socket and the file
        c.conn.reset_stream(sid)
        c.flush()
        assert wait_for(lambda: fds(pid) == before + 1)   # the file is closed
        other = c.request(get("/ext"))   # the connection goes on
        c.conn.increment_flow_control_window(1 << 20)
        c.flush()
        assert b'"http.response.pathsend"' in c.response(other)[2]
    finally:
        c.sock.close()
    assert wait_for(lambda: fds(pid) == before)


def test_tls_sends_the_file_through_the_tls_layer(tls, files):
    _, data = files
    with tls.client() as c:
        assert c.get("/f/data").content == data
        r = c.get("/f/data", headers={"range": "bytes=7-"})
        assert r.status_code == 206 and r.content == data[7:]
    with httpx.Client(base_url=tls.url, verify=trusting(tls.cert), http2=True,
                      timeout=30) as c:
        r = c.get("/f/data")
        assert r.http_version == "HTTP/2" and r.content == data


def test_a_slow_tls_client_holds_bounded_memory(tls, files):
    sparse(files[0], "tlsbig", 128 * MIB)
    pid = tls.proc.pid
    rss0, before = rss_kib(pid), settled_fds(pid)
    with tls.client() as c, c.stream("GET", "/f/tlsbig") as r:
        got = 0
        for chunk in r.iter_bytes():
            got += len(chunk)
            if got > 4 * MIB:
                break
        time.sleep(0.5)   # the front-end reads the file only as the client takes it
        assert rss_kib(pid) - rss0 < 8 * 1024
    assert wait_for(lambda: fds(pid) == before)


def test_every_frontend_sends_files(files):
    """--frontends 2: the second front-end attaches to the workers as a host does, and is
    offered pathsend as front-end 0 is (W_ATTACH's HOST_FRONTEND flag); both send the file."""
    d, data = files
    with Sidecar(APP, "--frontends", "2", "--frontend-balance", "hash",   # (both: the hash)
                 "--access-log-format", "{frontend_pid} {path}", workers=1, env={"SC_FILES": str(d)}, ready_path="/ext",
                 capture_stdout=True) as s:
        served = set()
        for _ in range(60):   # new connections until both front-ends took some
            with httpx.Client(base_url=s.url, timeout=10) as c:
                assert "http.response.pathsend" in c.get("/ext").json()
                r = c.get("/f/data")
            assert r.status_code == 200 and r.content == data
            wait_for(lambda: access(s).count("/f/data") >= len(served) + 1, 5)
            served = {line.split()[0] for line in access(s).splitlines() if "/f/data" in line}
            if len(served) == 2:
                break
        assert served == {str(s.proc.pid)} | {str(p) for p in s.frontend_pids()}
