"""The workers as an extra front-end sees them (--frontends N): ring pairs given to it over the
attach protocol, as to any attached host (docs/protocol.md, "Attaching a host").

Front-end 0 (the main process) supervises the workers (pool.py).  Front-ends 1 … N-1 are its
children: each is a host on the supervisor's attach server, reached through a socketpair
made at spawn instead of the attach socket.  This module reads that connection and keeps
what ``WorkerPool`` keeps for front-end 0, for the same ``Dispatcher``: a ``WorkerLink``
per worker (taking streams once it said HELLO, none once it drains), and the worker's entry
on the load board, where this front-end publishes the work it queued there and reads what
every other front-end queued (sidecar/load_board.py).

WORKER_GONE closes the link (its streams get 502 or are aborted, as for front-end 0); BYE
or the connection closing means the supervisor is gone or cut this front-end off: it stops.
A worker that breaks the ring protocol towards this front-end is dropped by it alone; the
supervisor replaces a worker only for what it sees itself.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable

from sidecar import attach_protocol as ap
from sidecar.frontend.dispatch import Dispatcher
from sidecar.frontend.link import WorkerLink
from sidecar.ring import Consumer, Producer, RingSpec

log = logging.getLogger("sidecar.frontend")


class HostPool:
    """The ``pool`` of an extra front-end: what FrontEnd and the metrics read of it."""

    def __init__(self, config, loop: asyncio.AbstractEventLoop, conn: socket.socket, batcher,
                 on_lost: Callable[[str], None], board=None, index: int = 1,
                 frontends: int = 2):
        self.config = config
        self.loop = loop
        self.conn = conn
        self.batcher = batcher
        self.on_lost = on_lost      # the supervisor is gone or cut us off: stop
        self.board = board
        self.index = index
        self.frontends = frontends
        self.links: dict[int, WorkerLink] = {}   # worker id (serial) -> link
        self.dispatcher = Dispatcher(config, loop, lambda: self.links.values())
        self.costs = self.dispatcher.costs
        self.stopping = False
        self.ever_ready = False
        self.host_id = 0
        self.past_requests: dict[int, int] = {}   # per worker index, of links closed
        self._ready = asyncio.Event()

    def start(self) -> None:
        self.conn.setblocking(False)
        self.loop.add_reader(self.conn.fileno(), self._on_control)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def requests(self) -> dict[int, int]:
        """Streams this front-end sent to each worker slot (index), ever."""
        out = dict(self.past_requests)
        for link in self.links.values():
            out[link.index] = out.get(link.index, 0) + link.requests
        return out

    def inflight(self) -> int:
        return sum(len(link.streams) for link in self.links.values())

    # --- the supervisor's messages ---------------------------------------------------------

    def _on_control(self) -> None:
        for _ in range(64):
            try:
                got = ap.recv(self.conn)
            except BlockingIOError:
                return
            except (OSError, ap.ChannelError) as exc:
                self._lost(f"attach connection: {exc}")
                return
            if got is None:
                self._lost("the supervisor closed the attach connection")
                return
            msg, fds = got
            try:
                self._dispatch(msg, fds)
            except Exception as exc:   # a message we cannot use: the supervisor is broken
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                self._lost(f"attach message {msg[:2]!r}: {exc}")
                return

    def _dispatch(self, msg: list, fds: list[int]) -> None:
        kind = msg[0]
        if kind == ap.H_WELCOME:
            self.host_id = msg[2]
        elif kind == ap.H_WORKER:
            _, serial, index, gen_in, gen_out = msg
            self._worker(serial, index, fds, gen_in, gen_out)
        elif kind == ap.H_WORKER_GONE:
            self._gone(msg[1])
        elif kind == ap.H_WORKER_DRAINING:
            link = self.links.get(msg[1])
            if link is not None:
                self._drain(link)
        elif kind == ap.H_BYE:
            self._lost(f"the supervisor said: {msg[1]}")
        else:
            raise ValueError("unknown kind")

    def _worker(self, serial: int, index: int, fds, gen_in: int, gen_out: int) -> None:
        producer = Producer.attach(RingSpec(*fds[:3], gen_in))
        try:
            consumer = Consumer.attach(RingSpec(*fds[3:], gen_out))
        except BaseException:
            producer.close()
            raise
        link = WorkerLink(index, 0, self._on_link_failure, self.batcher, self.costs,
                          rings=(producer, consumer))
        if self.board is not None:
            entry = self.board.find(serial)
            if entry is not None:
                link.board = self.board.view(entry, self.index, self.frontends)
        self.links[serial] = link
        link.on_stream_end = self.dispatcher.on_stream_end
        link.waiting = self.dispatcher.waiting   # (the link calls it only when it has work)
        link.start(self.loop, self._on_hello)

    def _on_hello(self, link: WorkerLink) -> None:
        if self.stopping or link.draining:
            return
        self.dispatcher.add(link)
        if not self.ever_ready and all(ln.ready for ln in self.links.values()):
            self.ever_ready = True
            self._ready.set()

    def _gone(self, serial: int) -> None:
        link = self.links.pop(serial, None)
        if link is None:
            return
        self.dispatcher.remove(link)
        self.past_requests[link.index] = self.past_requests.get(link.index, 0) + link.requests
        if link.board is not None:
            link.board.clear()
        lost = len(link.streams)
        link.close()
        if lost and not self.stopping:
            log.warning("worker %d (pid %s) is gone; %d stream(s) lost", link.index, link.pid,
                        lost)

    def _drain(self, link: WorkerLink) -> None:
        """No new streams for it; WebSockets on it close 1012, event streams are told to end
        after --drain-grace (as front-end 0 does for the workers it drains: pool.py)."""
        if link.draining:
            return
        link.draining = True
        self.dispatcher.remove(link)
        for stream in list(link.streams.values()):
            stream.drain_start()

        def notice() -> None:
            for stream in list(link.streams.values()):
                stream.drain_notice()
        self.loop.call_later(max(self.config.drain_grace, 0.0), notice)

    def _on_link_failure(self, link: WorkerLink, reason: str) -> None:
        log.error("worker %d: %s; this front-end stops using it", link.index, reason)
        self.dispatcher.remove(link)
        link.close()

    def _lost(self, why: str) -> None:
        try:
            self.loop.remove_reader(self.conn.fileno())
        except (ValueError, OSError):
            pass
        if not self.stopping:
            self.on_lost(why)

    # --- stopping --------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Shutdown: no new streams; wait for ours to end (up to ``timeout``), close the links
        (the supervisor drains the workers themselves)."""
        self.stopping = True
        self.dispatcher.clear()
        deadline = self.loop.time() + timeout
        while any(link.streams for link in self.links.values()) and \
                self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for link in self.links.values():
            link.flush()
        for serial in list(self.links):
            self._gone(serial)
        try:
            self.loop.remove_reader(self.conn.fileno())
        except (ValueError, OSError):
            pass
        self.conn.close()

    def cancel_background(self) -> None:
        pass
