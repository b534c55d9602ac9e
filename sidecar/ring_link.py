"""One ring pair as either end sees it: the link of the front-end to a worker
(``frontend/link.py`` WorkerLink), of a worker to a host (``worker/link.py`` HostLink), and of
a host written in Python (``tests/hosts/pyhost.py``, ``benchmarks/worker.py``).

Outbound, events go out in FIFO order.  ``send`` queues an event (a list, or bytes holding one
packed event) and nobody waits for it; ``push`` does the same for an app's response records and
returns a future to await while the ring is full (ring-level backpressure).  What a loop
iteration queues is published together at its end (``Batcher``: one ring write, at most one
doorbell -- ringing per record would wake the peer once per record), or as soon as
EARLY_RECORDS are waiting (the peer starts on the first records of a burst while this side
produces the rest), or at once for a record of EAGER_BYTES and more (a big body must find out
now if the ring is full), or when the owner asks (``publish``: a worker's stream has ended, and
the next task may not yield for long).  A batch of unpacked events is packed by one msgpack
call and written by one C call (``Producer.try_write_events``); packed ones go in as they are.
When the ring is full, records wait in ``backlog`` and one task, woken by the ring's space
doorbell, writes them in order (``_drain_backlog``); while it has any, new records queue
behind them.

Inbound, ``start`` reads batches of decoded events (``Consumer.start_reading_events``: one
msgpack call a batch) and hands them to the subclass's ``_on_records``, which dispatches them
by stream id to ``streams``; ring errors (a corrupt ring, an undecodable record) go to its
``_on_ring_error``.

Credit: ``set_window`` gives the per-stream window both directions use (docs/protocol.md) and
what follows from it for this ring: ``chunk``, the largest body piece one record carries, and
``credit_batch``, how many consumed bytes are worth a credit record.
"""
from __future__ import annotations

import asyncio
from collections import deque
from itertools import islice

from sidecar.events import DEFAULT_WINDOW, pack, max_chunk
from sidecar.ring import Consumer, Producer, RingError

__all__ = ["Batcher", "RingLink", "EARLY_RECORDS", "EAGER_BYTES"]

#: Publish once this many records wait, not only at the end of the loop iteration: with 64
#: keep-alive clients, waiting for the whole iteration made the front-end and the worker take
#: turns (the worker idle while the front-end parsed 64 requests, the front-end idle while the
#: worker ran them).  Measured bare hello w1, wrk -c64: median 20.3k -> 27.8k req/s.
EARLY_RECORDS = 16
#: A record this large is written at once rather than at the end of the loop iteration:
#: batching saves doorbells for small records, and a large one must find out now if the ring
#: is full.  Such a record is packed at once, and not packed again into a batch (a copy).
EAGER_BYTES = 16 * 1024
#: Records the backlog task writes per ring call.
_BACKLOG_BATCH = 64


class Batcher:
    """One flush per event-loop iteration.  Everything produced while the loop handles one
    batch of readiness events (many requests parsed, many ring records decoded) is written
    once at the end of the iteration: one ``send()`` per client socket, then one ring
    publication per link.  Under load that turns a syscall per event into a syscall per
    iteration; when idle it costs one call_soon.

    Two lists: ``sockets``, the front-end's socket adapters with bytes to send
    (frontend/transport.py ``Transport``), each sent here without a flush call per socket
    (``Transport.write`` appends itself once an iteration, when its first bytes come:
    ``add_socket``, written out there); and ``add``'s objects (ring links, the access log:
    anything with ``flush()``).  Sockets first: with the records first, the worker woke
    into the front-end's sends on a 2-core machine and the client woke more often per
    request (pinned.py free, bare: wrk 0.31 voluntary switches a request against 0.28-0.29
    with one list in the order of the adds, or sockets first)."""

    __slots__ = ("loop", "_dirty", "sockets", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._dirty: list = []
        self.sockets: list = []   # Transports with bytes of this iteration (``out``)
        self.scheduled = False    # run is due at the end of this iteration

    def add(self, obj) -> None:
        """Flush ``obj`` (anything with a ``flush()`` method) at the end of this iteration.
        Callers add an object only when its pending output goes from empty to non-empty."""
        self._dirty.append(obj)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def add_socket(self, io) -> None:
        """Send ``io``'s bytes (a Transport's ``out``) at the end of this iteration; once an
        iteration, when its first bytes come (Transport.write does this without the call)."""
        self.sockets.append(io)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        """The end of the loop iteration: every socket's bytes, then every link's records."""
        self.scheduled = False
        sockets = self.sockets
        if sockets:
            self.sockets = []
            for io in sockets:
                # Transport.flush, written out (change both together): once a connection
                # and loop iteration.  Its bytes may be gone already: close, linger and
                # drained flush at once.
                out = io.out
                if out:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    out.clear()
                    transport = io.transport
                    if not transport.is_closing():
                        transport.write(data)
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for obj in dirty:
                obj.flush()


class RingLink:
    """A Producer (records out) and a Consumer (records in) of one ring pair, and the streams
    on it.  Subclasses implement ``_on_records(events)``, ``_on_ring_error(exc)`` (the
    Consumer's errors) and ``_write_failed(exc)`` (a RingError writing).

    Slots, here and in the subclasses: a link is read on every record, and past 30 instance
    attributes CPython (3.11) stops sharing the keys of instance dicts, which made every
    attribute read slower (+2.4k instructions a request, callgrind)."""

    __slots__ = ("producer", "consumer", "max_record", "batcher", "loop", "streams", "pending",
                 "pending_packed", "_flush_scheduled", "small_event", "backlog", "flusher",
                 "closed", "window", "chunk", "credit_batch")

    def __init__(self, producer: Producer, consumer: Consumer, batcher: Batcher | None = None,
                 window: int = DEFAULT_WINDOW):
        self.producer = producer
        self.consumer = consumer
        self.max_record = producer.max_record
        # the end of the loop iteration: a Batcher shared with other links and sockets (the
        # front-end's), or None: this link's own call_soon (a worker's)
        self.batcher = batcher
        self.loop: asyncio.AbstractEventLoop | None = None
        self.streams: dict = {}
        # Queued during this loop iteration, written at its end: events not yet packed, or
        # packed ones (bytes).  pending_packed: one of them is EAGER_BYTES or more (written
        # with try_write_many rather than packed again).
        self.pending: list = []
        self.pending_packed = False
        self._flush_scheduled = False  # in the batcher's list for this iteration
        # push() packs an event this large at once: it may be eager, or too big for a record
        self.small_event = min(EAGER_BYTES, self.max_record)
        self.backlog: deque = deque()  # (payload, future | None) waiting for ring space
        self.flusher: asyncio.Task | None = None
        self.closed = False        # closed or broken: records go nowhere
        self.set_window(window)

    def set_window(self, window: int) -> None:
        """The per-stream flow-control window (HELLO's), and what follows for this ring."""
        self.window = window
        # a body record must fit the ring, and a chunk the window, or it would wait for
        # credit forever
        self.chunk = max_chunk(self.max_record, window)
        self.credit_batch = max(1, window // 4)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the inbound ring from now on."""
        self.loop = loop
        self.consumer.start_reading_events(loop, self._on_records, self._on_ring_error)

    def stop_reading(self) -> None:
        self.consumer.stop_reading()

    def heartbeat(self) -> None:
        """Beat on both rings (the peer's hang watchdog and dispatch read it)."""
        self.consumer.heartbeat()
        self.producer.heartbeat()

    def close(self) -> None:
        """Unmap the rings; records queued or sent later go nowhere."""
        self.closed = True
        if self.flusher is not None:
            self.flusher.cancel()
        self.pending.clear()
        self.consumer.close()
        self.producer.close()

    # --- inbound (subclasses) --------------------------------------------------------------

    def _on_records(self, evs: list) -> None:
        raise NotImplementedError

    def _on_ring_error(self, exc: Exception) -> None:
        raise NotImplementedError

    def _write_failed(self, exc: RingError) -> None:
        raise NotImplementedError

    # --- outbound --------------------------------------------------------------------------

    def send(self, ev: list | bytes) -> None:
        """Queue an event for the peer in FIFO order; nobody waits for it (the per-stream
        window bounds what can pile up).  ``ev`` is a list, or bytes: one event packed
        already.  The caller must not change ``ev`` (or what it holds) afterwards."""
        if self.closed:
            return
        if self.backlog:   # behind it, in order (pending is empty while there is one)
            self._enqueue(ev if type(ev) is bytes else pack(ev), None)
            return
        pending = self.pending
        pending.append(ev)
        if len(pending) >= EARLY_RECORDS:
            self._write_pending()  # let the peer start on these while we make the rest
        elif not self._flush_scheduled:
            # once per iteration, not once per record: publish() empties pending many
            # times an iteration, and a flush that finds nothing still costs a call
            self._flush_scheduled = True
            if self.batcher is None:
                self.loop.call_soon(self.flush)
            else:
                self.batcher.add(self)

    def push(self, ev: list | bytes, size: int) -> asyncio.Future | None:
        """``send``, for records an app waits on: returns a future to await while the ring
        is full (backpressure), else None.  ``size`` is an upper bound of the packed event's
        bytes (for bytes, its length): a small event is queued as it is (a list is packed with
        its batch), a large one packed and written at once."""
        if size < self.small_event and not self.backlog:
            # send(ev), spelled out: once or twice a request (if closed, _write_pending
            # drops it)
            pending = self.pending
            pending.append(ev)
            if len(pending) >= EARLY_RECORDS:
                self._write_pending()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                if self.batcher is None:
                    self.loop.call_soon(self.flush)
                else:
                    self.batcher.add(self)
            return None
        payload = ev if type(ev) is bytes else pack(ev)
        if len(payload) > self.max_record:
            raise ValueError(f"event of {len(payload)} bytes exceeds the ring's largest "
                             f"record ({self.max_record} bytes)")
        if self.closed:
            return None  # going down; nobody reads this ring any more
        if self.backlog:
            return self._enqueue(payload, self.loop.create_future())
        if len(payload) < EAGER_BYTES:
            self.send(payload)
            return None
        self.pending.append(payload)
        self.pending_packed = True
        self._write_pending()
        if self.backlog:  # it did not fit: it is the last one queued; wait for it
            fut = self.loop.create_future()
            self.backlog[-1] = (payload, fut)
            return fut
        return None

    def publish(self) -> None:
        """Write what this iteration queued now rather than at its end."""
        if self.pending:
            self._write_pending()

    def flush(self) -> None:
        """The end of the loop iteration (called by the Batcher, or call_soon)."""
        self._flush_scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        """Everything queued, published with one release and at most one doorbell."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        packed, self.pending_packed = self.pending_packed, False
        if self.closed:
            return  # closed since these were queued
        written = 0
        if not self.backlog:
            try:
                if not packed:  # events, and small packed ones: the common case
                    written = self.producer.try_write_events(pending)
                else:
                    pending = [p if type(p) is bytes else pack(p) for p in pending]
                    written = self.producer.try_write_many(pending)
            except RingError as exc:
                self._write_failed(exc)
                return
            if written == len(pending):
                return
        for payload in islice(pending, written, None):
            self._enqueue(payload if type(payload) is bytes else pack(payload), None)

    def _enqueue(self, payload: bytes, fut: asyncio.Future | None):
        self.backlog.append((payload, fut))
        if self.flusher is None:
            self.flusher = self.loop.create_task(self._drain_backlog())
        return fut

    async def _drain_backlog(self) -> None:
        backlog = self.backlog
        producer = self.producer
        try:
            while backlog and not self.closed:
                batch = [payload for payload, _ in islice(backlog, _BACKLOG_BATCH)]
                written = producer.try_write_many(batch)
                for _ in range(written):
                    _, fut = backlog.popleft()
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                if not written:  # wait_space adds the padding a record needs at the wrap
                    await producer.wait_space(len(batch[0]) + 16)
        except RingError as exc:
            self._write_failed(exc)
        finally:
            self.flusher = None
            if self.closed:
                for _, fut in backlog:
                    if fut is not None and not fut.done():
                        fut.cancel()
                backlog.clear()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for queued records to reach the ring; True if they did."""
        self._write_pending()
        flusher = self.flusher
        if flusher is not None:
            await asyncio.wait([flusher], timeout=timeout)
        return not self.backlog
