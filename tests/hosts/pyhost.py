"""A minimal attached host in Python, written from docs/protocol.md ("Attaching a host"), for
the tests: connects to the attach socket, maps the ring pairs it is given and runs HTTP
streams over them with the ring link the front-end and the workers use (sidecar/ring_link.py).

Run as a script it attaches, starts ``GET /disconnect?marker=FILE`` on the first worker, prints
``started`` once the response has begun, and waits to be killed.
"""
from __future__ import annotations

import asyncio
import itertools
import socket
import sys

from sidecar import attach_protocol as ap
from sidecar import events as ev
from sidecar.ring import Consumer, Producer, RingSpec
from sidecar.ring_link import RingLink


class Worker(RingLink):
    """One worker's ring pair, on the shared ring link (sidecar/ring_link.py): events out are
    batched per loop iteration, events in are dispatched by stream id to a queue."""

    __slots__ = ("serial", "index", "hello", "pid", "gone")

    def __init__(self, host, serial, index, fds, gen_in, gen_out):
        producer = Producer.attach(RingSpec(*fds[:3], gen_in))
        try:
            consumer = Consumer.attach(RingSpec(*fds[3:], gen_out))
        except BaseException:
            producer.close()
            raise
        super().__init__(producer, consumer)
        self.serial, self.index = serial, index
        loop = asyncio.get_running_loop()
        self.hello = loop.create_future()
        self.pid = None
        self.gone = False
        self.start(loop)

    def _on_records(self, evs):
        for e in evs:
            if e[0] == ev.HELLO:
                self.pid = e[3]
                self.set_window(e[4])
                if not self.hello.done():
                    self.hello.set_result(e)
            elif e[1] in self.streams:
                self.streams[e[1]].put_nowait(e)

    def _on_ring_error(self, exc):
        self.close()

    def _write_failed(self, exc):
        self.close()

    def close(self):
        if not self.gone:
            self.gone = True
            for q in self.streams.values():
                q.put_nowait(None)
            super().close()


class PyHost:
    def __init__(self):
        self.workers: dict[int, Worker] = {}
        self.host_id = None
        self.bye: str | None = None
        self.draining: set[int] = set()  # worker ids announced as draining
        self.closed = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self.sids = itertools.count(1)

    async def connect(self, path: str) -> "PyHost":
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_control)
        return self

    def _on_control(self):
        try:
            got = ap.recv(self.sock)
        except BlockingIOError:
            return
        if got is None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            if not self.closed.done():
                self.closed.set_result(self.bye)
            return
        msg, fds = got
        if msg[0] == ap.H_WELCOME:
            self.host_id = msg[2]
        elif msg[0] == ap.H_WORKER:
            _, serial, index, gen_in, gen_out = msg
            self.workers[serial] = Worker(self, serial, index, fds, gen_in, gen_out)
        elif msg[0] == ap.H_WORKER_GONE:
            w = self.workers.pop(msg[1], None)
            if w is not None:
                w.close()
        elif msg[0] == ap.H_WORKER_DRAINING:
            self.draining.add(msg[1])
        elif msg[0] == ap.H_BYE:
            self.bye = msg[1]
        self.changed.set()

    async def ready_workers(self, n: int, timeout: float = 20.0) -> list[Worker]:
        """Wait until ``n`` workers said HELLO on our rings."""
        async def wait():
            while True:
                ws = [w for w in self.workers.values() if w.hello.done()]
                if len(ws) >= n:
                    return ws
                self.changed.clear()
                pending = [w.hello for w in self.workers.values() if not w.hello.done()]
                await asyncio.wait([asyncio.ensure_future(self.changed.wait()), *pending],
                                   return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
        return await asyncio.wait_for(wait(), timeout)

    def open(self, w: Worker, method: str, path: str, body: bytes = b"",
             more: bool = False) -> tuple[int, asyncio.Queue]:
        sid = next(self.sids)
        q = w.streams[sid] = asyncio.Queue()
        raw, _, qs = path.partition("?")
        w.send([ev.HTTP_REQUEST, sid, method, "http", raw, raw.encode(), qs.encode(),
                [[b"host", b"attached"]], None, None, "1.1", "", body, more])
        return sid, q

    async def request(self, w: Worker, method: str, path: str, body: bytes = b"",
                      timeout: float = 10.0):
        """One buffered request: (status, headers, body, error)."""
        sid, q = self.open(w, method, path, body)
        status, headers, chunks = None, None, []
        while True:
            e = await asyncio.wait_for(q.get(), timeout)
            if e is None:
                raise ConnectionError("worker gone")
            if e[0] == ev.RESPONSE_START:
                status, headers = e[2], e[3]
            elif e[0] == ev.RESPONSE_BODY:
                chunks.append(e[2])
                w.send([ev.SEND_CREDIT, sid, len(e[2])])
            elif e[0] == ev.APP_DONE:
                del w.streams[sid]
                return status, headers, b"".join(chunks), e[2]

    def close(self):
        loop = asyncio.get_running_loop()
        try:
            loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        for w in self.workers.values():
            w.close()


async def _main(path: str, marker: str) -> None:
    host = await PyHost().connect(path)
    (w,) = (await host.ready_workers(1))[:1]
    sid, q = host.open(w, "GET", f"/disconnect?marker={marker}")
    while (await q.get())[0] != ev.RESPONSE_BODY:
        pass
    print("started", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
