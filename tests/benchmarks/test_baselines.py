"""The benchmarks' baselines (benchmarks/_servers.py BASELINES) serve what the bare app serves,
over real sockets: a table's floor rows are only a floor if they answer each request."""
import shutil
import socket

import pytest

from benchmarks import floor
from benchmarks._servers import start_server, stop_server


@pytest.mark.parametrize("kind", ["floor", "nginx"])
def test_baseline_answers_each_request_on_a_kept_connection(kind):
    if kind == "nginx" and shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/setup.sh installs nginx-light)")
    handle = start_server(kind, "benchmarks.apps:hello")
    try:
        with socket.create_connection(("127.0.0.1", handle.port), timeout=5) as sock:
            head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            # one head, two pipelined, one split over two writes
            for data in (head, head * 2, head[:10], head[10:]):
                sock.sendall(data)
            answers = b""
            while answers.count(b"Hello, world!") < 4:
                chunk = sock.recv(65536)
                assert chunk, answers
                answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK\r\n") == 4
    finally:
        stop_server(handle)


def test_floor_response_is_the_bare_apps_size():
    """Content-Length matches the body, and the head carries what sidecar's does."""
    data = floor.response()
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == floor.BODY
    assert b"content-length: %d" % len(body) in head
    assert b"\r\ndate: " in head and b"\r\nserver: sidecar" in head
