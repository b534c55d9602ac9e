"""The worker's own CPU cost per request, without HTTP, a front-end or wrk.

    python -m benchmarks.worker                                   # bare hello, 7 runs
    python -m benchmarks.worker --app benchmarks.apps:starlette_app --path /json
    python -m benchmarks.worker --requests 30000 --runs 7 --concurrency 64
    python -m benchmarks.worker --ws                              # WebSocket echo messages

One process, one uvloop: the worker's real ``HostLink`` (sidecar/worker/link.py) over a real
ring pair, serving the app, and the smallest host that keeps ``--concurrency`` streams in
flight, on the ring link every Python end uses (sidecar/ring_link.py): its HTTP_REQUEST
records are packed once and sent again under reused stream ids (batched per loop iteration,
as the front-end's are); it reads the responses as the front-end does (one msgpack call a
batch) and sends a new request for each APP_DONE.  So the figure is the worker's path --
decode, scope, task, app, send, records -- plus a little host, on one core, with no wake-ups
across processes.  ``--ws``: ``--concurrency`` WebSockets to the app instead (WS_CONNECT, then
64-character WS_RECEIVE messages, each sent when the echo of the previous one came back, with
SEND_CREDIT granted in batches as the front-end grants it), and the figure is per echoed message.  CPU time
(``time.process_time``) per request of each run is printed with the minimum and the median:
on a shared machine the minimum is the figure other load disturbs least.  Compare two
versions of the code by alternating them; ``python -m benchmarks.cpu`` measures a whole
server under wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from sidecar import gc_tuning
from sidecar.events import (
    APP_DONE, HTTP_REQUEST, MAX_CHUNK, SEND_CREDIT, WS_ACCEPT, WS_CONNECT, WS_DISCONNECT,
    WS_RECEIVE, WS_SEND, pack,
)
from sidecar.ring import Consumer, Producer
from sidecar.ring_link import RingLink
from sidecar.worker.link import HostLink
from sidecar.worker.loader import load_app
from sidecar.worker.process import PULSE

WINDOW = 256 * 1024
CAPACITY = 1 << 22


class _Worker:
    """What HostLink asks of a Worker (sidecar/worker/process.py), for one link."""

    def __init__(self, app):
        self.app = app
        self.root_path = ""
        self.state: dict = {}
        self.tasks: set = set()
        self.limit_streams = 0
        self.draining = False
        self.pulse_timer = None   # Worker.pulse: beats while streams are in flight, as the
        self.link = None          # real worker does (the host's dispatch reads the beat)
        self.board = None         # --frontends' load board and this worker's entry, when
        self.board_entry = None   # measured (benchmarks.frontend --board)
        self.ended = 0

    def start_pulse(self) -> None:
        self.pulse_timer = asyncio.get_running_loop().call_later(PULSE, self.pulse)
        if self.board is not None:
            self.board.set_inflight(self.board_entry, len(self.tasks))

    def pulse(self) -> None:
        if self.link is not None and not self.link.closed:   # not after close()
            self.link.producer.heartbeat()
        self.pulse_timer = (asyncio.get_running_loop().call_later(PULSE, self.pulse)
                            if self.tasks else None)

    def task_done(self, task) -> None:
        tasks = self.tasks
        n = len(tasks)
        tasks.discard(task)
        if self.board is not None and (len(tasks) < n or task is None):  # as Worker.task_done
            self.ended += 1
            words = self.board.words
            words[self._inflight_at] = len(tasks)
            words[self._ended_at] = self.ended

    def cancel_task(self, task) -> None:
        task.cancel()

    def protocol_error(self, reason: str) -> None:
        raise SystemExit(reason)

    def link_failed(self, link, reason: str) -> None:
        raise SystemExit(reason)

    def internal_error(self, what: str, exc: BaseException) -> None:
        raise exc


def _request(sid: int, path: str) -> bytes:
    """A GET as the front-end sends it for wrk (one header)."""
    return pack([HTTP_REQUEST, sid, "GET", "http", path, path.encode(), b"",
                 [[b"host", b"127.0.0.1:8000"]], ["127.0.0.1", 40000 + sid],
                 ["127.0.0.1", 8000], "1.1", "", b"", False])


class _Host(RingLink):
    """The smallest host: the shared ring link (sidecar/ring_link.py) of a Python host, keeping
    ``concurrency`` streams in flight by sending a new request for each APP_DONE."""

    __slots__ = ("records", "requests", "sent", "done", "hello", "finished")

    def __init__(self, producer: Producer, consumer: Consumer, records: dict, requests: int):
        super().__init__(producer, consumer)
        loop = asyncio.get_running_loop()
        self.records, self.requests = records, requests
        self.sent = self.done = 0
        self.hello, self.finished = loop.create_future(), loop.create_future()

    def open(self, sids) -> None:
        for sid in sids:
            self.send(self.records[sid])
        self.sent += len(sids)

    def _on_records(self, evs) -> None:
        again = []
        for ev in evs:
            if ev[0] == APP_DONE:
                self.done += 1
                again.append(ev[1])
            elif not self.hello.done():
                self.hello.set_result(None)
        if again and self.sent < self.requests:
            self.open(again[:self.requests - self.sent])
        if self.done >= self.requests and not self.finished.done():
            self.finished.set_result(None)

    def _on_ring_error(self, exc: Exception) -> None:
        for fut in (self.hello, self.finished):
            if not fut.done():
                fut.set_exception(exc)

    _write_failed = _on_ring_error


def _ws_connect(sid: int, path: str) -> bytes:
    """A WebSocket's WS_CONNECT as the front-end sends it (one header)."""
    return pack([WS_CONNECT, sid, "ws", path, path.encode(), b"",
                 [[b"host", b"127.0.0.1:8000"]], ["127.0.0.1", 40000 + sid],
                 ["127.0.0.1", 8000], "1.1", "", []])


class _WsHost(_Host):
    """The smallest WebSocket host: ``concurrency`` WebSockets, each sending its next message
    when the echo of the previous one came back, until ``requests`` messages were echoed; then
    every WebSocket is closed (WS_DISCONNECT) and ``finished`` waits for their APP_DONE."""

    __slots__ = ("message", "accepted", "owed", "credit_batch", "sockets")

    def __init__(self, producer: Producer, consumer: Consumer, records: dict, requests: int):
        super().__init__(producer, consumer, records, requests)
        self.message = "x" * 64
        self.accepted = asyncio.get_running_loop().create_future()
        self.sockets = len(records)
        self.owed = dict.fromkeys(records, 0)
        # as the front-end's WebSocketStream.credit_batch
        self.credit_batch = max(1, min(WINDOW // 4, WINDOW - min(MAX_CHUNK, WINDOW) + 1))

    def start_messages(self) -> None:
        self.sockets = len(self.records)   # now counting APP_DONEs
        for sid in self.records:
            self.send([WS_RECEIVE, sid, self.message, False])
            self.sent += 1

    def _on_records(self, evs) -> None:
        owed, send = self.owed, self.send
        for ev in evs:
            kind = ev[0]
            if kind == WS_SEND:
                sid = ev[1]
                self.done += 1
                due = owed[sid] + len(ev[2])
                if due >= self.credit_batch:
                    owed[sid] = 0
                    send([SEND_CREDIT, sid, due])
                else:
                    owed[sid] = due
                if self.sent < self.requests:
                    send([WS_RECEIVE, sid, self.message, False])
                    self.sent += 1
                elif self.done == self.requests:
                    for other in self.records:
                        send([WS_DISCONNECT, other, 1000, ""])
            elif kind == WS_ACCEPT:
                self.sockets -= 1
                if not self.sockets:
                    self.accepted.set_result(None)
            elif kind == APP_DONE:
                self.sockets -= 1
                if not self.sockets:
                    self.finished.set_result(None)
            elif not self.hello.done():
                self.hello.set_result(None)

    def _on_ring_error(self, exc: Exception) -> None:
        for fut in (self.hello, self.accepted, self.finished):
            if not fut.done():
                fut.set_exception(exc)

    _write_failed = _on_ring_error


async def run_once(app, path: str, requests: int, concurrency: int, ws: bool = False) -> float:
    """CPU µs per request (or, ``ws``, per echoed message) of one run."""
    loop = asyncio.get_running_loop()
    to_worker, to_host = Producer.create(CAPACITY), Consumer.create(CAPACITY)
    worker = _Worker(app)
    link = worker.link = HostLink(worker, 0, Consumer.attach(to_worker.spec().dup()),
                                  Producer.attach(to_host.spec().dup()), WINDOW)
    sids = range(1, min(concurrency, requests) + 1)
    if ws:
        host = _WsHost(to_worker, to_host, {sid: _ws_connect(sid, path) for sid in sids},
                       requests)
    else:
        host = _Host(to_worker, to_host, {sid: _request(sid, path) for sid in sids}, requests)
    host.start(loop)
    link.start(loop)
    try:
        await host.hello
        if ws:
            host.open(list(sids))
            await host.accepted
            host.sent = 0
            start = time.process_time()
            host.start_messages()
            await host.finished
        else:
            start = time.process_time()
            host.open(list(sids))
            await host.finished
        return (time.process_time() - start) / requests * 1e6
    finally:
        link.close()
        host.close()


def run_options(prog: str, description: str,
                concurrency_help: str) -> argparse.ArgumentParser:
    """The options benchmarks.worker and benchmarks.frontend share."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--app", default="benchmarks.apps:hello")
    ap.add_argument("--path", default="/")
    ap.add_argument("--requests", type=int, default=30000, help="per run")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=64, help=concurrency_help)
    return ap


def summary(result: list[float]) -> str:
    """The line under a CPU-per-request heading: min, median, every run."""
    return (f"min {min(result):.2f}  median {statistics.median(result):.2f}  "
            f"runs {[round(r, 2) for r in result]}")


def main(argv: list[str] | None = None) -> int:
    ap = run_options("python -m benchmarks.worker", __doc__.split("\n")[0],
                     "streams in flight")
    ap.add_argument("--ws", action="store_true",
                    help="WebSockets echoing 64-character messages; --requests counts messages")
    args = ap.parse_args(argv)
    app = load_app(args.app)
    gc_tuning.tune()   # as Worker.run does once the app is imported and started

    async def runs() -> list[float]:
        await run_once(app, args.path, args.requests // 4 or 1, args.concurrency,
                       args.ws)  # warm-up
        return [await run_once(app, args.path, args.requests, args.concurrency, args.ws)
                for _ in range(args.runs)]

    result = uvloop.run(runs())
    what = "echoed WebSocket message" if args.ws else "request"
    print(f"== worker CPU µs per {what}, {args.app} {args.path}, {args.concurrency} in flight, "
          f"{args.runs} runs of {args.requests}")
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
