"""gRPC over sidecar's HTTP/2 with a real grpcio client: unary and bidi streaming RPCs,
grpc-status in the trailers (ASGI http.response.trailers), and a deadline that expires.
Directly over h2c (TCP), and through nginx grpc_pass to the Unix socket."""
from __future__ import annotations

import os

import grpc
import pytest

from tests.e2e.util import wait_for
from tests.nginx import NginxServer
from tests.server import ROOT, Sidecar

APP = "tests.e2e.grpc_app:app"


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, workers=2, ready_path="/") as s:
        yield s


def calls(target: str):
    channel = grpc.insecure_channel(target)
    unary = channel.unary_unary("/test.Echo/Unary")
    bidi = channel.stream_stream("/test.Echo/Bidi")
    fail = channel.unary_unary("/test.Echo/Fail")
    sleep = channel.unary_unary("/test.Echo/Sleep")
    return channel, unary, bidi, fail, sleep


def check_rpcs(target: str, tmp_path, cancel_reaches_app: bool = True) -> None:
    """``cancel_reaches_app``: the proxy passes the client's cancel on as RST_STREAM (Caddy
    2.6 does not: the app then learns of the deadline from grpc-timeout, as gRPC servers
    do)."""
    channel, unary, bidi, fail, sleep = calls(target)
    with channel:
        assert unary(b"hello", timeout=10) == b"HELLO"
        # full duplex: each answer comes before the next request is sent
        import queue
        requests: queue.Queue = queue.Queue()
        requests.put(b"one")

        def gen():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item
        replies = bidi(gen(), timeout=10)
        got = []
        for word in (b"two", b"three", None):
            got.append(next(replies))
            requests.put(word)
        got += list(replies)
        assert got == [b"ONE", b"TWO", b"THREE"]
        with pytest.raises(grpc.RpcError) as err:
            fail(b"x", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "bad argument"
        marker = str(tmp_path / f"sleep-{os.getpid()}-{id(channel)}")
        with pytest.raises(grpc.RpcError) as err:
            sleep(marker.encode(), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        if cancel_reaches_app:   # the app is told (http.disconnect), long before its 10 s
            wait_for(lambda: os.path.exists(marker), 5, what="the app to see the cancel")
        assert unary(b"after", timeout=10) == b"AFTER"   # the connection goes on


def test_grpcio_over_h2c(sc, tmp_path):
    check_rpcs(f"127.0.0.1:{sc.port}", tmp_path)


def test_grpcio_over_the_unix_socket(sc, tmp_path):
    check_rpcs(f"unix:{sc.uds}", tmp_path)


def test_grpcio_through_nginx_grpc_pass_to_the_unix_socket(sc, tmp_path):
    with NginxServer(sc.uds, site=ROOT / "examples" / "nginx" / "grpc.conf") as url:
        check_rpcs(url.removeprefix("http://"), tmp_path)
