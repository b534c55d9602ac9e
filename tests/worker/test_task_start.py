"""How the worker starts a stream's task (``sidecar.worker.link.start_task``): eagerly from
Python 3.12 (the first step runs inside the call; a response that never waits is done before
the task is ever scheduled), scheduled on 3.11.  Whichever Python runs the suite: every
stream ends once, the worker's count of streams in flight and ended (``Worker.task_done``,
the load board's words) comes back to 0 and N, and the app's first step runs inside its own
task (anyio and sniffio need ``asyncio.current_task()``).

Each test runs twice: with the worker's C calls and with their Python twins (``speedups``).
In-process: the worker's real HostLink and a small host on a real ring pair, one event loop.
"""
from __future__ import annotations

import asyncio
import sys

import anyio
import pytest
import uvloop

from sidecar.events import APP_DONE, HTTP_REQUEST, RESPONSE_BODY, WS_CONNECT, WS_SEND, \
    WS_RECEIVE, WS_DISCONNECT, pack
from sidecar.ring import Consumer, Producer
from sidecar.ring_link import RingLink
from sidecar.worker import http_stream, link as worker_link
from sidecar.worker.link import HostLink
from sidecar.worker.process import Worker

TIMEOUT = 10.0
EAGER = sys.version_info >= (3, 12)
_START = {"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]}


@pytest.fixture(autouse=True, params=["c", "python"])
def speedups(request, monkeypatch):
    """Each test runs with the worker's C calls (native/worker_api.c: the scope, the response
    head) and with their Python twins alone."""
    monkeypatch.setattr(worker_link, "speedups", request.param == "c")
    monkeypatch.setattr(http_stream, "speedups", request.param == "c")
    return request.param


def _body(text: str) -> dict:
    return {"type": "http.response.body", "body": text.encode()}


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        return
    path = scope["path"]
    task = asyncio.current_task()
    assert task is not None   # the first step runs inside the stream's task
    if path == "/sync":       # never waits: done in its first step on 3.12+
        await send(_START)
        await send(_body("sync"))
    elif path == "/yield":    # resumed later by the same task
        await asyncio.sleep(0)
        assert asyncio.current_task() is task
        await send(_START)
        await send(_body("yield"))
    elif path == "/anyio":    # sniffio, a task group and a cancel scope in the first step
        results = []

        async def child(n):
            await anyio.sleep(0)
            results.append(n)

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(child, n)
        await send(_START)
        await send(_body(f"anyio {sorted(results)}"))
    elif path == "/raise":    # fails in its first step
        raise ValueError("first step")


class _Worker:
    """A Worker as HostLink sees it, with the real ``task_done`` and a load board's words."""

    task_done = Worker.task_done

    def __init__(self):
        self.app = app
        self.root_path = ""
        self.state: dict = {}
        self.tasks: set = set()
        self.limit_streams = 0
        self.draining = False
        self.pulse_timer = None
        self.pulses = 0
        self.board = type("Board", (), {"words": [0, 0]})()
        self._inflight_at, self._ended_at = 0, 1
        self.ended = 0

    def start_pulse(self) -> None:
        self.pulses += 1
        self.pulse_timer = asyncio.get_running_loop().call_later(3600, lambda: None)

    def cancel_task(self, task) -> None:
        task.cancel()

    def protocol_error(self, reason: str) -> None:
        raise AssertionError(reason)

    link_failed = protocol_error

    def internal_error(self, what: str, exc: BaseException) -> None:
        raise exc


class _Host(RingLink):
    """Collects the worker's events by stream; ``until(kind, count)`` waits for them."""

    __slots__ = ("events", "waiter")

    def __init__(self, producer, consumer):
        super().__init__(producer, consumer)
        self.events: list = []
        self.waiter = None

    def _on_records(self, evs) -> None:
        self.events.extend(evs)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _on_ring_error(self, exc) -> None:
        raise exc

    _write_failed = _on_ring_error

    async def until(self, kind: int, count: int) -> list:
        async with asyncio.timeout(TIMEOUT):
            while sum(ev[0] == kind for ev in self.events) < count:
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
        return self.events


def _request(sid: int, path: str) -> list:
    return [HTTP_REQUEST, sid, "GET", "http", path, path.encode(), b"", [[b"host", b"t"]],
            None, None, "1.1", "", b"", False]


def _run(scenario) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        to_worker, to_host = Producer.create(1 << 20), Consumer.create(1 << 20)
        worker = _Worker()
        link = HostLink(worker, 0, Consumer.attach(to_worker.spec().dup()),
                        Producer.attach(to_host.spec().dup()), 256 * 1024)
        host = _Host(to_worker, to_host)
        host.start(loop)
        link.start(loop)
        try:
            await host.until(32, 1)   # HELLO
            host.events.clear()
            await scenario(host, worker, link)
        finally:
            if worker.pulse_timer is not None:
                worker.pulse_timer.cancel()
            link.close()
            host.close()

    uvloop.run(main())


def test_streams_that_end_in_their_first_step_and_later_are_counted_once():
    paths = ["/sync", "/yield", "/anyio", "/raise"] * 8

    async def scenario(host, worker, link):
        # one batch: the worker reads them all in one go
        assert host.producer.try_write_many([pack(_request(sid, path))
                                             for sid, path in enumerate(paths, 1)]) == len(paths)
        events = await host.until(APP_DONE, len(paths))
        done = {ev[1]: ev[2] for ev in events if ev[0] == APP_DONE}
        assert len(done) == len(paths)   # one APP_DONE each
        bodies = {ev[1]: ev[2] for ev in events if ev[0] == RESPONSE_BODY}
        for sid, path in enumerate(paths, 1):
            if path == "/raise":
                assert done[sid] == "ValueError: first step" and sid not in bodies
            else:
                assert done[sid] is None
                assert bodies[sid] == {"/sync": b"sync", "/yield": b"yield",
                                       "/anyio": b"anyio [0, 1, 2]"}[path]
        assert worker.tasks == set() and link.streams == {}
        assert worker.board.words == [0, len(paths)]   # in flight, ended

    _run(scenario)


def test_a_response_that_never_waits_is_never_in_flight_on_3_12():
    async def scenario(host, worker, link):
        assert host.producer.try_write_many([pack(_request(sid, "/sync"))
                                             for sid in range(1, 9)]) == 8
        await host.until(APP_DONE, 8)
        assert worker.tasks == set() and worker.board.words == [0, 8]
        # eager: done before it was ever scheduled, so never in flight, and no pulse
        assert worker.pulses == (0 if EAGER else 1)

    _run(scenario)


def test_websockets_started_eagerly_echo_and_close():
    async def scenario(host, worker, link):
        for sid in (1, 2):
            host.send([WS_CONNECT, sid, "ws", "/", b"/", b"", [[b"host", b"t"]], None, None,
                       "1.1", "", []])
            host.send([WS_RECEIVE, sid, f"hello {sid}", False])
        events = await host.until(WS_SEND, 2)
        assert sorted(ev[2] for ev in events if ev[0] == WS_SEND) == ["hello 1", "hello 2"]
        assert len(worker.tasks) == 2   # both wait in receive()
        for sid in (1, 2):
            host.send([WS_DISCONNECT, sid, 1000, ""])
        events = await host.until(APP_DONE, 2)
        assert [ev[2] for ev in events if ev[0] == APP_DONE] == [None, None]
        assert worker.tasks == set() and worker.board.words == [0, 2]

    _run(scenario)
