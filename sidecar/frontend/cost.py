"""Learned service time per route, for dispatch (see docs/operations.md, "Dispatch").

A worker that has just been handed a 20 ms CPU-bound request looks, for its first
milliseconds, exactly like one serving a 0.1 ms request: one stream in flight, no silence yet.
So the pool learns what each route costs and counts, per worker, the expected work still to do.

The rule, in one place:

- a route is ``(method, raw path, upgrade)``: the query string is not part of it;
- a sample is the time to APP_DONE from the stream's dispatch or from the worker's previous
  APP_DONE, whichever is later (``WorkerLink._stream_done``), as seen by the front-end's
  loop: a request queued behind a slow one on the same worker did not cost that long;
- a stream that lasted longer than ``MAX_SAMPLE`` (1 s) teaches nothing: SSE, long polls,
  slow downloads and WebSockets are wall time, not work, and would make a worker look busy
  for minutes.  A genuinely slow CPU-bound route is learned while it runs instead: when a
  worker's event loop is held (its heartbeat stops, ``WorkerLink.busy``), the route of the
  stream taken to hold it costs at least as long as it has held it (``floor``);
- each route keeps an EWMA (weight ``ALPHA`` for the new sample); the first sample is taken
  as is;
- unknown routes cost ``DEFAULT_COST`` (4 ms), the packing budget (``link.PACK_BUDGET``):
  a worker just handed a route not seen yet is not packed onto until its loop has been seen
  to run since (``WorkerLink.busy``);
- the table holds at most ``size`` routes (256); a new route past that evicts the oldest
  inserted one, so an app with ids in its paths churns the table instead of growing it.
"""
from __future__ import annotations

from operator import attrgetter

DEFAULT_COST = 0.004   # seconds: a route not seen yet
MAX_SAMPLE = 1.0       # seconds: longer streams teach nothing
ALPHA = 0.2            # EWMA weight of a new sample


#: route_of(req): the table key of a request (an h1.Request, or an HTTP/2 stream's): the tuple
#: (method, raw path, upgrade).  An attrgetter, a C call: it is asked at every dispatch.
route_of = attrgetter("method", "raw_path", "upgrade")


class _Table(dict):
    """route -> cost; a route not in it costs DEFAULT_COST (and is not added)."""

    __slots__ = ()

    def __missing__(self, key: tuple) -> float:
        return DEFAULT_COST


class RouteCosts:
    """Bounded table route -> EWMA of its service time in seconds."""

    __slots__ = ("table", "size", "expect")

    def __init__(self, size: int = 256):
        self.table: dict[tuple, float] = _Table()
        self.size = size
        #: expect(route): the route's expected service time, DEFAULT_COST if not learned
        #: yet.  The table's own lookup, a C call: it is asked at every dispatch.
        self.expect = self.table.__getitem__

    def learn(self, key: tuple, sample: float) -> None:
        if sample > MAX_SAMPLE or sample < 0.0:
            return
        table = self.table
        old = table.get(key)
        if old is None:
            if len(table) >= self.size:
                del table[next(iter(table))]
            table[key] = sample
        else:
            table[key] = old + ALPHA * (sample - old)

    def floor(self, key: tuple, at_least: float) -> None:
        """A stream of this route, not done yet, has held its worker's event loop for
        ``at_least`` seconds (``WorkerLink.busy``): the route costs at least that.  What a
        long CPU-bound request teaches while it runs, which its end cannot (MAX_SAMPLE)."""
        table = self.table
        old = table.get(key)
        if old is None:
            if len(table) >= self.size:
                del table[next(iter(table))]
            table[key] = at_least
        elif old < at_least:
            table[key] = at_least
