"""Bounded memory for big and slow streams, end to end (issue #3).

A real sidecar, real sockets, real clients.  Each test samples the resident memory of the
front-end and of the workers while it runs and checks that it grows by a bounded amount
(generous: 64 MiB) while far more than that flows through: the backpressure described in
DESIGN.md ("Backpressure, end to end") at work.  Run with ``-s`` to see the figures.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import subprocess

import httpx
import pytest

from tests.e2e.util import (MiB, RssSampler, process_pids, recv_until_eof, wait_for,
                            wait_stable)
from tests.server import Sidecar, rss_kib

GiB = 1 << 30
RSS_BOUND_KIB = 64 * 1024  # growth allowed per process


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as s:
        yield s


def _assert_bounded(rss: RssSampler, label: str) -> None:
    print(f"\n[rss] {label}: {rss.report()}")
    for name, kib in rss.growth().items():
        assert kib < RSS_BOUND_KIB, f"{label}: {name} grew by {kib / 1024:.1f} MiB: {rss.report()}"


def _warm_up(sc) -> None:
    """One small upload and download first, so that one-off costs of a first request (lazy
    imports, allocator arenas) are not counted as growth due to the big transfer."""
    with sc.client(timeout=30) as c:
        for _ in range(2):
            assert c.post("/hash", content=os.urandom(4 * MiB)).json()["bytes"] == 4 * MiB
            with c.stream("GET", f"/zeros?n={8 * MiB}") as r:
                assert sum(len(b) for b in r.iter_raw()) > 0


def test_upload_1gib_streams_with_bounded_memory(sc):
    _warm_up(sc)
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    def body():
        for i in range(GiB // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]  # every chunk differs: order matters
            sent.update(chunk)
            yield chunk

    with RssSampler(process_pids(sc)) as rss:
        with sc.client(timeout=120) as c:
            r = c.post("/hash", content=body())  # chunked; the client holds 1 MiB at a time
    assert r.status_code == 200
    assert r.json() == {"bytes": GiB, "sha256": sent.hexdigest()}
    _assert_bounded(rss, "upload 1 GiB")


def test_download_1gib_streams_with_bounded_memory(sc):
    _warm_up(sc)
    with RssSampler(process_pids(sc)) as rss:
        # curl de-chunks and counts; it fails (exit 18) if the body ends before its last chunk
        out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w",
                              "%{http_code} %{size_download}", f"{sc.url}/zeros?n={GiB}"],
                             capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"200 {GiB}"
    _assert_bounded(rss, "download 1 GiB")


def _recv_exactly_some(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk, "server closed early"
        data += chunk
    return data


def test_slow_client_costs_a_bounded_buffer_and_blocks_nobody(tmp_path):
    """A client stops reading a 256 MiB download: the app's send() stops advancing (the
    worker is held by stream credit), the front-end's memory stays flat, and other requests
    -- on the same single worker -- are served meanwhile.  Then the client drains it all."""
    total = 256 * MiB
    marker = str(tmp_path / "progress")

    def produced() -> int:
        try:
            with open(marker) as fh:
                return int(fh.read() or 0)
        except FileNotFoundError:
            return 0

    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=1) as one:
        (worker,) = one.worker_pids()
        _warm_up(one)
        with RssSampler(process_pids(one)) as rss:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning
            s.connect(("127.0.0.1", one.port))
            s.settimeout(30)
            # HTTP/1.0: the body is close-delimited, so bytes after the head are the body
            s.sendall(b"GET /zeros-progress?n=%d&m=%s HTTP/1.0\r\n\r\n" % (total,
                                                                            marker.encode()))
            got = _recv_exactly_some(s, MiB)
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            received = len(body)

            # the client pauses; the app must stop advancing (its send() awaits credit)
            stalled_at = wait_stable(produced, settle=1.0, timeout=30)
            assert 0 < stalled_at < 48 * MiB, f"app produced {stalled_at} bytes while paused"

            # the slow client blocks nobody: the same (only) worker serves other requests
            with one.client(timeout=10) as c:
                for _ in range(10):
                    assert c.get("/pid").json()["pid"] == worker
                payload = os.urandom(MiB)
                assert c.post("/echo", content=payload).content == payload
                with c.stream("GET", f"/zeros?n={16 * MiB}") as r:
                    assert sum(len(b) for b in r.iter_bytes()) == 16 * MiB
            assert produced() < 48 * MiB  # still held back
            assert rss_kib(one.proc.pid) - rss.baseline["front-end"] < RSS_BOUND_KIB

            # now drain everything
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
                if chunk.strip(b"\0"):
                    raise AssertionError("non-zero byte in the body")
            s.close()
        assert received == total
        assert wait_for(lambda: produced() == total, 10, what="the app to finish")
    _assert_bounded(rss, f"slow client (app stalled at {stalled_at / MiB:.1f} MiB of "
                         f"{total // MiB} MiB)")


def test_slow_app_reader_bounds_frontend_memory(sc):
    """/slow-reader takes a while over each chunk: a 96 MiB upload completes, correct, and
    the front-end does not buffer what the app has not asked for yet."""
    _warm_up(sc)
    size = 96 * MiB
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    def body():
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            yield chunk

    with RssSampler(process_pids(sc)) as rss:
        with sc.client(timeout=120) as c:
            r = c.post("/slow-reader", content=body())
    assert r.json() == {"bytes": size, "sha256": sent.hexdigest()}
    _assert_bounded(rss, "slow app reader, 96 MiB upload")


def test_app_not_reading_stops_the_frontend_reading_the_socket(sc, tmp_path):
    """An app that stops reading its body: the front-end stops reading the client's socket
    once the stream's window is used, so the client cannot push more than the window plus
    the kernel's socket buffers.  Once the app reads again the whole body arrives."""
    size = 64 * MiB
    marker = tmp_path / "go"
    data_block = os.urandom(MiB)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.connect(("127.0.0.1", sc.port))
    s.sendall(b"POST /stall-reader?m=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n" % (str(marker).encode(), size))
    s.setblocking(False)
    sent, h = 0, hashlib.sha256()

    def push() -> bool:
        """Send what the socket takes now; False once it would block."""
        nonlocal sent
        while sent < size:
            off = sent % MiB
            try:
                n = s.send(data_block[off:])
            except BlockingIOError:
                return False
            h.update(data_block[off:off + n])
            sent += n
        return True

    front = sc.proc.pid
    base = rss_kib(front)
    # push until the socket stays unwritable for a second: the front-end stopped reading
    while True:
        assert not push(), "the whole body went in although the app reads nothing"
        _, writable, _ = select.select([], [s], [], 1.0)
        if not writable:
            break
    accepted = sent
    print(f"\n[stall] client could push {accepted / MiB:.2f} MiB of {size // MiB} MiB "
          f"while the app did not read; front-end RSS +{(rss_kib(front) - base) / 1024:.1f} MiB")
    assert accepted < 24 * MiB
    assert rss_kib(front) - base < RSS_BOUND_KIB

    marker.write_text("go")
    s.setblocking(True)
    s.settimeout(60)
    while sent < size:
        off = sent % MiB
        n = s.send(data_block[off:])
        h.update(data_block[off:off + n])
        sent += n
    out = recv_until_eof(s)
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out[:200]
    assert json.loads(body) == {"bytes": size, "sha256": h.hexdigest()}
