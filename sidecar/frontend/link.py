"""The front-end's side of one worker: its ring pair, the streams on it, and what dispatch
knows of the worker (its load, learned from the streams' routes and its heartbeat).

ASGI events leave the front-end here (``send``, the shared ring link's batching:
sidecar/ring_link.py) and come back here (``_on_records``: ring -> msgpack -> the stream
object that owns the stream id).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Protocol

from sidecar import events
from sidecar.events import RESPONSE_BODY, RESPONSE_START
from sidecar.frontend.cost import ALPHA, DEFAULT_COST, MAX_SAMPLE, RouteCosts
from sidecar.ring import Consumer, Producer
from sidecar.ring_link import EARLY_RECORDS, Batcher, RingLink
from sidecar.http import h1
from sidecar.worker.config import LinkConfig

try:   # events.check_all's C twin (native/h1_api.c), once a batch; SIDECAR_NO_SPEEDUPS: Python
    from sidecar._h1api import check_all as _c_check_all
except ImportError:
    _c_check_all = None

log = logging.getLogger("sidecar.frontend")

# Dispatch key terms, all in seconds of expected work (see WorkerLink.load)
PULSE = 0.005             # a worker with streams in flight beats this often on the ring it
                          # produces (sidecar.worker.process.PULSE)
HELD = 0.012              # no sign of life for longer than this: the worker's event loop is
                          # held.  Above PULSE by what a timer's lateness (~1 ms) and being
                          # scheduled out on a busy machine (a few ms) add to a beat's age
STREAM_COST = 0.001       # per in-flight stream, whatever its route: many long-lived quiet
                          # streams (WebSockets) must outweigh one stalled one
FILL_COST = 0.001         # a full ring to the worker (scaled by its fill); as much for a backlog
# Packing (Dispatcher.pick, dispatch.py): a request of a route learned to cost under
# PACK_ROUTE goes to the first worker that is expected to start it within PACK_BUDGET and
# holds fewer than PACK_STREAMS streams, before any other is woken.  Spreading light requests
# over idle workers cost more than it bought: each worker's batches got smaller and its
# wake-ups more frequent.  bare hello, --workers 2, wrk -c64 on 2 cores (benchmarks.cpu): CPU per request
# 33.2 -> 28.4 µs, 40.1k -> 50.7k req/s.  Routes not learned yet (among them every
# long-lived stream: SSE, WebSockets, downloads) and costly ones are spread as before: they
# would hold up the cheap requests packed behind them.  The samples include the front-end's
# own loop time (~65 µs for hello at wrk -c64, where the worker spends 9 µs), so the budget is
# set above that times the streams a busy front-end keeps in flight.
PACK_ROUTE = 0.001
PACK_BUDGET = DEFAULT_COST   # 4 ms: a worker just handed a route not seen yet is not packed onto
PACK_STREAMS = 64
# The ring counters `sidecar status` and the metrics show (ring_stats_t names -> ours): both
# rings' producers' and consumers' counters, kept by the C code in the shared header.
RING_COUNTERS = (("records_written", "records"), ("bytes_written", "bytes"),
                 ("full_events", "full"), ("consumer_wakeups", "wakeups"))


class Stream(Protocol):
    """What a link needs from a stream (an HTTP request or a WebSocket on a connection).  The
    stream sets its dispatch fields itself, from what ``open_stream`` returns; the link
    reads them while the stream is on it."""

    route: str          # its route (frontend/cost.py route_of)
    cost: float         # the route's expected cost as it was dispatched
    t_dispatch: float   # loop time it was dispatched

    def on_worker_event(self, ev: list) -> None: ...
    def on_response(self, start: list, body: list) -> bool | None: ...
    def on_worker_lost(self) -> None: ...


class WorkerLink(RingLink):
    """Rings to and from one worker process, as seen by this host."""

    __slots__ = ("to_worker", "to_host", "index", "costs", "work_end", "last_done", "ready",
                 "draining", "pid", "requests", "last_progress", "_held_since",
                 "_held_stream", "_on_failure", "_final_counters", "_on_hello",
                 "on_stream_end", "waiting", "board", "board_entry", "costly_at")

    def __init__(self, index: int, capacity: int,
                 on_failure: Callable[["WorkerLink", str], None], batcher: Batcher,
                 costs: RouteCosts | None = None, rings: tuple | None = None):
        """New rings of ``capacity`` bytes, or ``rings``: (Producer, Consumer) a front-end
        was given over the attach protocol (--frontends, frontend/host_pool.py)."""
        if rings is not None:
            to_worker, to_host = rings
        else:
            to_worker = Producer.create(capacity)
            try:
                to_host = Consumer.create(capacity)
            except BaseException:
                to_worker.close()
                raise
        super().__init__(to_worker, to_host, batcher)
        self.to_worker = to_worker   # the role-named ends (the ring pair's names, ring.md)
        self.to_host = to_host
        self.index = index
        self.costs = costs if costs is not None else RouteCosts()  # the pool's, shared
        self.work_end = 0.0       # loop time the worker should be done with its streams by
        self.last_done = 0.0      # loop time of its last APP_DONE
        self.streams: dict[int, Stream] = {}
        self.ready = False
        self.draining = False
        self.pid: int | None = None
        self.requests = 0
        self.last_progress = 0.0  # loop time of the last record, or of going busy
        self.costly_at = -1e9     # loop time it was last handed a stream not known to be cheap
        self._held_since = -1.0   # the `alive` time _held_stream was found for
        self._held_stream = None  # the stream taken to hold the worker's loop since then
        self._on_failure = on_failure
        self._final_counters: dict | None = None   # ring_counters() as the rings closed
        self._on_hello: Callable[[WorkerLink], None] | None = None
        # the pool's: a stream ended, and streams wait for a worker (``waiting``, the
        # dispatcher's deque of them, when the pool gave it) or this link has none left
        # (a draining worker is done); not called otherwise: once a request, it would find
        # nothing to do
        self.on_stream_end: Callable[[WorkerLink], None] | None = None
        self.waiting = None
        # with --frontends N > 1: the worker's entry on the load board (sidecar/load_board.py),
        # where the other front-ends' work on it shows; None with one front-end
        self.board = None
        self.board_entry: int | None = None   # its index there (front-end 0 only)

    # --- lifecycle -----------------------------------------------------------------------

    def worker_config(self) -> LinkConfig:
        """The ring part of the worker's SIDECAR_WORKER config (fds are passed with pass_fds)."""
        return LinkConfig(host=0, to_worker=self.to_worker.spec(), to_host=self.to_host.spec(),
                          frontend=True)

    def start(self, loop: asyncio.AbstractEventLoop,
              on_hello: Callable[["WorkerLink"], None]) -> None:
        self._on_hello = on_hello
        super().start(loop)

    def close(self) -> None:
        """Forget the worker: streams still on it are told, rings are unmapped."""
        if self.closed:
            return
        self.closed = True
        self.ready = False
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            try:
                stream.on_worker_lost()
            except Exception:
                log.exception("stream failed while its worker was lost")
        self.backlog.clear()
        self._final_counters = self.ring_counters()
        super().close()

    def ring_counters(self) -> dict[str, dict[str, int]]:
        """Per direction, the rings' lifetime counters (RING_COUNTERS): records and bytes
        written, writes refused for lack of space (backpressure), doorbells rung to wake the
        reader.  After close(), their values as the rings closed."""
        if self._final_counters is not None:
            return self._final_counters
        out = {}
        for direction, ring in (("to_worker", self.to_worker), ("to_host", self.to_host)):
            stats = ring.stats()
            out[direction] = {ours: stats[theirs] for theirs, ours in RING_COUNTERS}
        return out

    def heartbeat_age(self) -> float | None:
        """Seconds since the worker's last heartbeat (its event loop writes one every 0.5 s
        into the ring it produces), None if it never beat.  Read by the hang watchdog."""
        if self.closed:
            return None
        return self.to_host.peer_heartbeat_age()

    # --- load ----------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self.streams)

    def global_inflight(self) -> int:
        """Streams on the worker from every front-end (the load board), at least ours."""
        n = len(self.streams)
        if self.board is not None:
            other = self.board.inflight()
            if other > n:
                return other
        return n

    def alive_at(self) -> float:
        """Loop time the worker's event loop last showed that it runs: its heartbeat (every
        PULSE while it has streams, see sidecar.worker.process), a record from it, or being
        handed work while idle (``last_progress``), whichever is latest."""
        beat = self.to_host.peer_beat()
        last = self.last_progress
        return beat if beat > last else last

    def busy(self, now: float) -> float:
        """Seconds the worker is expected to need before it could start a new stream:

        - ring fill (and a backlog) up to FILL_COST;
        - while it has streams, the learned cost of the work queued on it not yet done
          (``work_end``, kept as a queue: each stream opened adds its route's expected
          service time, see ``sidecar.frontend.cost``; a stream that ends early takes its
          unused part back);
        - the time since its event loop last showed life (``alive_at``).  Once that is
          longer than HELD while it has streams, the loop is *held* (CPU-bound code, a
          blocking call), and what has run that long is not expected to end at once: the
          time counts again as what is left of it, without a cap.  Its queue has not moved
          since a PULSE after it was last seen to run, and the route of the stream taken to
          hold it is learned to cost at least as long as it has held it (``_held``).  A
          worker whose streams wait (slow readers, WebSockets, long polls) keeps beating, so
          it is not busy for having them; one just handed a stream is, until it has beaten
          since (its first beat comes PULSE after the stream opened).
        """
        busy = self.to_worker.used() / self.to_worker.capacity * FILL_COST
        if self.backlog:
            busy += FILL_COST
        board = self.board
        # --frontends: a worker with other front-ends' streams only is watched for a held
        # loop too.  What they queued there is not added here but in load(): the route costs
        # this front-end learned on a worker it shares already include the time the worker
        # spent on theirs, so adding their queue would count it twice and a worker that
        # keeps up would not be packed onto (both front-ends spread, and each request cost
        # more CPU: packing's reason, dispatch.py)
        streams = self.streams or board.inflight() if board is not None else self.streams
        if streams:
            alive = self.alive_at()
            lag = now - alive
            if lag > HELD:
                ahead = self.work_end - alive - PULSE
                self._held(alive, now)
            else:
                ahead = self.work_end - now
            if lag > 0.0:
                busy += lag
            if ahead > 0.0:
                busy += ahead
        return busy

    def _held(self, alive: float, now: float) -> None:
        """The loop has not run since ``alive``: the stream holding it is, of those the worker
        could have started before its next beat was due, the one expected to cost most (the
        latest of equals; dict order is dispatch order).  Its route costs at least as long as
        it has run."""
        if alive != self._held_since:
            self._held_since = alive
            held = None
            limit = alive + 2 * PULSE   # the beat due, and a timer's lateness
            for s in self.streams.values():
                if s.t_dispatch <= limit and (held is None or s.cost >= held.cost):
                    held = s
            self._held_stream = held
        stream = self._held_stream
        if stream is not None:
            start = stream.t_dispatch if stream.t_dispatch > alive else alive
            self.costs.floor(stream.route, now - start)

    def load(self, now: float) -> float:
        """The dispatch key among busy workers: ``busy`` plus STREAM_COST per in-flight
        stream (a worker holding forty quiet WebSockets keeps beating: without it, it would
        look as free as an idle one)."""
        if self.board is not None:   # --frontends: every front-end's streams and queued work
            return self.busy(now) + self.board.others_ahead(now) + \
                self.global_inflight() * STREAM_COST
        return self.busy(now) + len(self.streams) * STREAM_COST

    # --- events out ----------------------------------------------------------------------

    def open_stream(self, sid: int, stream: Stream, record: list | bytes,
                    route: str) -> tuple[float, float]:
        """Put ``stream`` on this worker and send its first record; returns the route's
        expected cost and the dispatch time, which the stream keeps (``Stream``)."""
        now = self.loop.time()
        streams = self.streams
        if not streams:
            # an idle worker handed a stream is alive as of now, whenever it last beat
            self.last_progress = start = now
            self.work_end = now
        elif now - self.last_progress <= HELD:
            # seen to run within HELD (a record from it): not held, whatever its heartbeat
            # says (alive_at is at least last_progress), so the ring's beat is not read
            start = now
        else:
            # a held worker's queue has not moved since it was last seen to run (busy)
            alive = self.alive_at()
            start = alive + PULSE if now - alive > HELD else now
        cost = self.costs.expect(route)
        if cost >= PACK_ROUTE:
            self.costly_at = now
        work_end = self.work_end
        self.work_end = (work_end if work_end > start else start) + cost
        streams[sid] = stream
        self.requests += 1
        board = self.board
        if board is not None:   # board.publish(work_end), without the call (per request)
            board.times[board.mine] = self.work_end
        if self.backlog or self.closed:
            self.send(record)
            return cost, now
        # RingLink.send's usual case, written out (change both together): once a request
        pending = self.pending
        pending.append(record)
        if len(pending) >= EARLY_RECORDS:
            self._write_pending()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            if self.batcher is None:
                self.loop.call_soon(self.flush)
            else:
                self.batcher.add(self)
        return cost, now

    # --- events in -----------------------------------------------------------------------

    def _on_records(self, evs: list) -> None:
        """A batch of decoded events (``Consumer.read_events``: each ``[int, int, ...]``)."""
        self.last_progress = now = self.loop.time()
        check, streams = events.check, self.streams
        # the usual batch passes as a whole (one call); else each event is checked
        checked = (_c_check_all(evs) if _c_check_all is not None and h1.speedups
                   else events.check_all(evs))
        i, n = 0, len(evs)
        while i < n:
            ev = evs[i]
            i += 1
            if not checked:
                try:
                    check(ev)
                except events.ProtocolError as exc:
                    if exc.sid is None or exc.sid == 0:
                        raise
                    log.error("worker %d: protocol error on stream %d: %s", self.index,
                              exc.sid, exc)
                    stream = streams.pop(exc.sid, None)
                    if stream is not None:
                        stream.on_worker_lost()
                    continue
            sid = ev[1]
            if sid:
                stream = streams.get(sid)
                if stream is not None:
                    if ev[0] == events.APP_DONE:
                        del streams[sid]
                        self._stream_done(stream, now)
                        stream.on_worker_event(ev)
                        end = self.on_stream_end
                        if end is not None and (self.waiting is None or self.waiting
                                                or not streams):
                            end(self)
                        continue
                    if (ev[0] == RESPONSE_START and i < n and checked and not ev[4]
                            and evs[i][1] == sid and evs[i][0] == RESPONSE_BODY
                            and not evs[i][3]):
                        # a whole response in one batch (the usual case): one call
                        whole = stream.on_response(ev, evs[i])
                        i += 1
                        if (whole and i < n and evs[i][1] == sid and evs[i][0] == events.APP_DONE
                                and evs[i][2] is None and streams.get(sid) is stream):
                            # and its APP_DONE with it (the keep-alive cycle's usual batch):
                            # the APP_DONE branch above, without on_worker_event's call --
                            # for a response that is whole already (on_response said so),
                            # all it would do is mark the app done
                            i += 1
                            del streams[sid]
                            stream.app_done = True
                            self._stream_done(stream, now)
                            end = self.on_stream_end
                            if end is not None and (self.waiting is None or self.waiting
                                                    or not streams):
                                end(self)
                        continue
                    stream.on_worker_event(ev)
            elif ev[0] == events.HELLO:
                self.pid = ev[3]
                # a worker's window bounds what this process buffers: keep it sane
                self.set_window(min(max(ev[4], 4096), 16 << 20))
                self.ready = True
                if self._on_hello is not None:
                    self._on_hello(self)

    def _stream_done(self, stream, now: float) -> None:
        """Learn the route's cost; give back the part of its expected work it did not use."""
        if stream is self._held_stream:
            self._held_stream = None
        elapsed = now - stream.t_dispatch
        # the sample is the time since the stream was dispatched or since the worker last
        # finished a stream, whichever is later: a request queued behind a 20 ms one did not
        # cost 20 ms (learning that would send the next ones away from an idle worker)
        done = self.last_done
        self.last_done = now
        sample = now - done if done > stream.t_dispatch else elapsed
        if 0.0 <= sample <= MAX_SAMPLE:
            # RouteCosts.learn, written out (change both together): once a request
            costs = self.costs
            table = costs.table
            key = stream.route
            old = table.get(key)
            if old is None:
                if len(table) >= costs.size:
                    del table[next(iter(table))]
                table[key] = sample
            else:
                table[key] = old + ALPHA * (sample - old)
        if not self.streams:
            self.work_end = now
        else:
            unused = stream.cost - elapsed
            if unused > 0.0:
                self.work_end -= unused
        board = self.board
        if board is not None:   # board.publish(work_end), without the call (per request)
            board.times[board.mine] = self.work_end

    def _on_ring_error(self, exc: Exception) -> None:
        log.error("worker %d: ring protocol error: %s", self.index, exc)
        self._on_failure(self, f"protocol error: {exc}")

    _write_failed = _on_ring_error
