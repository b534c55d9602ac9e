"""Helpers of the worker-lifecycle tests (test_faults.py, test_reload.py): the worker set
settling after a change, and a slow streamed response read by hand over a raw socket."""
from __future__ import annotations

import socket

from tests.e2e.util import alive, wait_for


def settled_workers(sc, n: int, exclude: set[int] = frozenset(), timeout: float = 30) -> list:
    """Wait until the sidecar has exactly n live worker processes, none of them in exclude."""
    def check():
        pids = [p for p in sc.worker_pids() if alive(p)]
        return pids if len(pids) == n and not set(pids) & set(exclude) else None
    return wait_for(check, timeout, what=f"{n} workers, none of {sorted(exclude)}")


def slow_stream(sc, n: int, d: float) -> tuple[socket.socket, bytes]:
    """A raw request for /tick, read until the first chunk arrived (the response started)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sc.uds)
    s.settimeout(30)
    s.sendall(b"GET /tick?n=%d&d=%g HTTP/1.1\r\nHost: x\r\n\r\n" % (n, d))
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 10:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    return s, got


def read_chunked(s: socket.socket, got: bytes) -> tuple[bytes, bytes, bool]:
    """(head, decoded body, complete) of a chunked response; complete = the last chunk came."""
    while True:
        head, _, rest = got.partition(b"\r\n\r\n")
        body, complete, i = b"", False, 0
        while True:
            j = rest.find(b"\r\n", i)
            if j < 0:
                break
            size = int(rest[i:j], 16)
            if size == 0:
                complete = rest.endswith(b"\r\n\r\n", j)
                break
            if len(rest) < j + 2 + size + 2:
                break
            body += rest[j + 2:j + 2 + size]
            i = j + 2 + size + 2
        if complete:
            return head, body, True
        chunk = s.recv(65536)
        if not chunk:
            return head, body, False
        got += chunk
