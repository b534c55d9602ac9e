"""Streams of real frameworks (Starlette, sse-starlette) when the client leaves and when the
server drains: what users of uvicorn see, end to end."""
from __future__ import annotations

import os
import signal
import socket
import threading

import httpx
import pytest

from tests.e2e.util import wait_for
from tests.server import Sidecar

APP = "tests.e2e.framework_apps:app"


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, workers=2, ready_path="/hello") as s:
        yield s


def marker(sc, name: str) -> str:
    return os.path.join(sc.tmp.name, name)


def test_quiet_stream_learns_at_once_that_its_client_left(sc):
    """A Starlette StreamingResponse waiting for an event that never comes is ended as soon
    as its client leaves (ASGI spec 2.3: Starlette listens for http.disconnect), not when it
    next sends -- it never would."""
    done = marker(sc, "quiet")
    with socket.create_connection(("127.0.0.1", sc.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /quiet?m=%s HTTP/1.1\r\nHost: x\r\n\r\n" % done.encode())
        got = b""
        while b"first" not in got:
            got += sock.recv(4096)
    wait_for(lambda: os.path.exists(done), 10, what="the quiet stream to be ended")


def test_scope_reports_asgi_spec_2_3(sc):
    """Starlette decides on this whether it listens for http.disconnect while streaming."""
    with sc.client() as client:
        assert client.get("/asgi").json() == {"version": "3.0", "spec_version": "2.3"}


class Download(threading.Thread):
    """GET url in a thread; keeps the status, the number of body bytes and any error."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.status = self.size = None
        self.error: Exception | None = None
        self.started = threading.Event()   # the response head arrived

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=30) as r:
                self.status = r.status_code
                self.started.set()
                self.size = sum(len(c) for c in r.iter_bytes())
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.started.set()


class Feed(threading.Thread):
    """An SSE client: reads events until the server ends the response."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.events = 0
        self.started = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=60) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        self.events += 1
                        self.started.set()
        except httpx.HTTPError as exc:   # e.g. a chunked body cut off without its end
            self.error = exc
        finally:
            self.started.set()


@pytest.mark.parametrize("how", ["sigterm", "sighup"])
def test_drain_ends_an_endless_event_stream_cleanly(how):
    """On SIGTERM (or a reload), an endless sse-starlette feed is told http.disconnect after
    --drain-grace and its response ends cleanly, long before the graceful-shutdown timeout
    (30 s here) -- while downloads with and without a Content-Length, which run longer than
    the grace, still complete in full."""
    with Sidecar(APP, "--timeout-graceful-shutdown", "30", "--drain-grace", "0.5",
                 workers=2, ready_path="/hello") as sc:
        feed = Feed(f"{sc.url}/sse?m={marker(sc, 'sse')}")
        feed.start()
        assert feed.started.wait(10) and feed.error is None
        downloads = [Download(f"{sc.url}/finite?chunks=25&delay=0.1&length={n}")
                     for n in (1, 0)]
        for d in downloads:
            d.start()
        for d in downloads:   # in flight before the drain begins
            assert d.started.wait(10) and d.error is None
        wait_for(lambda: feed.events >= 2, 10, what="two events")
        sc.proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
        feed.join(15)   # the shutdown timeout is 30 s: without the notice it would hang
        assert not feed.is_alive(), "the event stream was not ended"
        assert feed.error is None, f"the event stream did not end cleanly: {feed.error!r}"
        wait_for(lambda: os.path.exists(marker(sc, "sse")), 10, what="the feed's app to stop")
        for d in downloads:
            d.join(30)
            assert (d.status, d.size, d.error) == (200, 25 * 1024, None)
        if how == "sighup":   # the client reconnects, to a new worker
            again = Feed(f"{sc.url}/sse")
            again.start()
            wait_for(lambda: again.events >= 1, 15, what="an event after the reload")
            assert again.error is None
        else:
            assert sc.proc.wait(30) == 0
        assert "Traceback" not in sc.log()
