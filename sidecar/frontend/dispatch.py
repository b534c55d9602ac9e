"""Which worker takes each new stream, and the streams waiting for one.

The supervisor (pool.py) decides which workers exist and which may take streams (``add``,
``remove``, ``clear``: ready and not draining); this module only chooses among them, one
stream at a time (docs/operations.md, "Dispatch"):

- a request of a route learned to be cheap goes to the first worker (in the order they became
  ready) that keeps up -- light traffic packs onto few workers, the others sleep;
- any other stream, or when none keeps up, to the worker with the least expected work ahead
  (``WorkerLink.busy``/``load``: learned route costs, what its loop is seen doing);
- a worker at --limit-worker-streams takes none; when no worker can take a stream it waits
  here, in order, for up to --timeout-dispatch, then gets 503;
- past --limit-streams in flight, a new stream gets 503 at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Iterable

from sidecar.config import Config
from sidecar.frontend.cost import RouteCosts, route_of
from sidecar.frontend.link import (HELD, PACK_BUDGET, PACK_ROUTE, PACK_STREAMS, PULSE,
                                   WorkerLink)
from sidecar.frontend.ratelog import RateLimitedLog

log = logging.getLogger("sidecar.supervisor")


class Dispatcher:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 all_links: Callable[[], Iterable[WorkerLink]]):
        self.config = config
        self.loop = loop
        self.links: list[WorkerLink] = []  # ready, not draining: the candidates, ready order
        self.waiting: deque = deque()      # (stream, body, more, deadline) parked for a worker
        self.costs = RouteCosts()  # learned per-route service time, shared by the links
        self._all_links = all_links        # every worker's link, draining ones included
        self._log_over_limit = RateLimitedLog(log)  # a line a second at most under overload
        self._wait_timer: asyncio.TimerHandle | None = None
        # the supervisor's hook, when --max-requests counts: a stream went to ``link``
        self.on_dispatched: Callable[[WorkerLink], None] | None = None

    # --- the candidates (the supervisor's side) --------------------------------------------

    def add(self, link: WorkerLink) -> None:
        """``link``'s worker is ready to take streams: waiting streams may go to it."""
        self.links.append(link)
        self.serve_waiting()

    def remove(self, link: WorkerLink) -> None:
        """``link``'s worker takes no new stream (draining, gone)."""
        if link in self.links:
            self.links.remove(link)

    def clear(self) -> None:
        self.links.clear()

    def on_stream_end(self, link: WorkerLink) -> None:
        """A stream ended on ``link`` (WorkerLink.on_stream_end): a stream waiting for a full
        worker may go there."""
        if self.waiting:
            self.serve_waiting()

    # --- choosing --------------------------------------------------------------------------

    def pick(self, stream=None) -> WorkerLink | None:
        """The worker for ``stream`` (docs/operations.md, "Dispatch"), None if every worker
        is at --limit-worker-streams."""
        links = self.links
        cap = self.config.limit_worker_streams
        n = len(links)
        if n == 1:   # one worker: it, unless it is at its limit
            link = links[0]
            return link if not cap or len(link.streams) < cap else None
        if cap:   # a worker at its limit takes no new stream (rare: filter only then)
            for link in links:
                if len(link.streams) >= cap:
                    links = [link for link in links if len(link.streams) < cap]
                    n = len(links)
                    break
        if n == 0:
            return None
        if n == 1:
            return links[0]
        now = self.loop.time()
        # packing: a request of a route known to be cheap goes to the first worker (in the
        # order they became ready) that keeps up.  One handed a stream not known to be cheap
        # (a route not seen yet, a costly one) must have shown life PULSE after that, or be
        # done with its streams: a beat or a record just after the hand-over may come from
        # before the new stream began (a timer due in the same turn, an earlier stream's last
        # records), while its expected cost runs down as if it were being served; and
        # `busy` sums to exactly PACK_BUDGET for a route not seen yet, which float rounding
        # left below it about half the time.  (A cheap request fired while /block's
        # time.sleep() had just begun was packed behind it: test_request_timeout.)
        if stream is not None:
            if self.costs.expect(route_of(stream.req)) < PACK_ROUTE:
                for link in links:
                    if len(link.streams) < PACK_STREAMS and link.busy(now) < PACK_BUDGET and (
                            not link.streams or now - link.costly_at > HELD
                            or link.alive_at() - link.costly_at >= PULSE):
                        return link
        # anything else, or none keeps up: the least expected work ahead; ties to the first
        best, best_load = None, None
        for link in links:
            load = link.load(now)
            if best is None or load < best_load:
                best, best_load = link, load
        return best

    def in_flight(self) -> int:
        """Streams on any worker, plus those waiting for one."""
        return len(self.waiting) + sum(len(link.streams) for link in self._all_links())

    def dispatch(self, stream, body: bytes, more: bool) -> None:
        """Send a new stream (its first body bytes with it) to a worker, or park it."""
        limit = self.config.limit_streams
        if limit and self.in_flight() >= limit:
            self._log_over_limit("%d streams in flight (--limit-streams): answering 503", limit)
            stream.overloaded()
            return
        links = self.links
        if len(links) == 1:   # pick()'s first rule, without the call: one worker
            link = links[0]
            cap = self.config.limit_worker_streams
            if cap and len(link.streams) >= cap:
                link = None
        else:
            link = self.pick(stream)
        if link is not None and not self.waiting:
            stream.dispatch(link, body, more)
            if self.on_dispatched is not None:
                self.on_dispatched(link)
            return
        self.waiting.append((stream, body, more, time.monotonic() + self.config.dispatch_timeout))
        if link is not None:
            self.serve_waiting()
        elif self._wait_timer is None:
            self._wait_timer = self.loop.call_later(1.0, self._expire_waiting)

    def serve_waiting(self) -> None:
        while self.waiting:
            link = self.pick(self.waiting[0][0])
            if link is None:
                return
            stream, body, more, _ = self.waiting.popleft()
            if not stream.conn.closed and not stream.app_done:
                stream.dispatch(link, body, more)
                if self.on_dispatched is not None:
                    self.on_dispatched(link)

    def _expire_waiting(self) -> None:
        self._wait_timer = None
        now = time.monotonic()
        while self.waiting and self.waiting[0][3] <= now:
            stream = self.waiting.popleft()[0]
            if not stream.conn.closed and not stream.app_done:
                log.warning("no worker could take a stream for %.0fs: answering 503",
                            self.config.dispatch_timeout)
                stream.overloaded()
        if self.waiting:
            self._wait_timer = self.loop.call_later(1.0, self._expire_waiting)
