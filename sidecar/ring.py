"""Shared-memory rings: reading and writing them -- with ``sidecar.ring_memory`` (segments,
doorbells, specs, errors), the only user of the compiled ``sidecar._ring``.

The C library decides *when* to ring a doorbell or sleep (the flag + fence protocol in
ring.c); this module does the syscalls and the asyncio integration (``loop.add_reader`` on
the eventfd).  A ``Producer`` writes records, one at a time or a packed batch of events at
once (native/frame.c); a ``Consumer`` reads decoded events a batch at a time: copied out,
framing-checked in C (native/frame.c) and decoded by one msgpack call.

Every name of ``sidecar.ring_memory`` is importable from here too.
"""
from __future__ import annotations

import asyncio
import os
import time
from array import array
from typing import Callable

import msgpack

from sidecar import events
from sidecar._ring import ffi, lib
from sidecar.ring_memory import (
    DEFAULT_CAPACITY, Doorbell, RecordTooBig, RingCorrupt, RingError, RingMismatch, RingSpec,
    Segment, _raise, max_record_for, new_generation, pid_alive,
)

__all__ = [
    "RingError", "RingCorrupt", "RingMismatch", "RecordTooBig",
    "Segment", "Doorbell", "Producer", "Consumer", "RingSpec", "EVENT",
    "DEFAULT_CAPACITY", "GATHER_BYTES", "SpinPolicy", "max_record_for", "new_generation",
    "pid_alive",
]

#: Record type of a msgpack-encoded event (docs/protocol.md).  Types are for framing only.
EVENT = 1
#: Bytes of records ``Consumer.read_events`` copies out and decodes with one msgpack call;
#: a record larger than this is decoded in place (a second copy of a big body costs more than
#: the per-record call it saves).  16 KiB, measured: the objects of a batch all live until
#: on_events returns, and once they outgrow the cyclic GC's young generation (700 containers;
#: an HTTP_REQUEST holds 11 lists) collections rescan and promote them -- 256 requests
#: (90 KB) decode at ~1540 ns an event, 64 (22 KB) at ~930; 64-byte bodies cost the same
#: (~75 ns) from 2 to 18 KB.
GATHER_BYTES = 16 * 1024

# msgpack >= 1.0 defaults (raw=False, use_list=True, strict_map_key=True) are what
# events.unpack asks for; spelling them out costs ~0.3 us a call in keyword parsing.
_unpackb = msgpack.unpackb


class _End:
    """State shared by both ends: the mapped segment, the handle and the two doorbells."""

    def __init__(self, segment: Segment, data: Doorbell, space: Doorbell, generation: int,
                 create: bool):
        self.segment = segment
        self.data_bell = data
        self.space_bell = space
        self.generation = generation
        self.handle = ffi.new("ring_t *")
        if create:
            rc = lib.ring_init(self.handle, segment.ptr, segment.size,
                               segment.size - lib.RING_HEADER_SIZE, generation)
        else:
            rc = lib.ring_attach(self.handle, segment.ptr, segment.size, generation)
        if rc < 0:
            _raise(rc, "attach" if not create else "init")
        self.capacity = self.handle.capacity
        self.max_record = self.handle.max_record

    def spec(self) -> RingSpec:
        return RingSpec(self.segment.fd, self.data_bell.fd, self.space_bell.fd, self.generation)

    def check(self) -> None:
        """Raise RingMismatch if the peer re-created the ring under us."""
        rc = lib.ring_check(self.handle, self.generation)
        if rc < 0:
            _raise(rc, "check")

    def stats(self) -> dict:
        out = ffi.new("ring_stats_t *")
        lib.ring_get_stats(self.handle, out)
        return {name: getattr(out, name) for name, _ in ffi.typeof(out[0]).fields}

    def used(self) -> int:
        return lib.ring_used(self.handle)

    # --- liveness: the peer's heartbeat (ring_heartbeat_*) and pid, as the peer wrote them --

    _PEER_PID = ""  # the other end's stats field, set by the subclasses
    _peer_beat_ns = None  # ring_<other end>_heartbeat_ns, set by the subclasses

    def peer_pid(self) -> int:
        """Pid the other end wrote with its last heartbeat (0: it never beat)."""
        out = ffi.new("ring_stats_t *")
        lib.ring_get_stats(self.handle, out)
        return getattr(out, self._PEER_PID)

    def peer_heartbeat_age(self) -> float | None:
        """Seconds since the other end's last heartbeat (CLOCK_MONOTONIC), None if never."""
        beat = self._peer_beat_ns(self.handle)
        if beat == 0:
            return None
        return max(0, lib.ring_now_ns() - beat) / 1e9

    def peer_beat(self) -> float:
        """The other end's last heartbeat in CLOCK_MONOTONIC seconds (the clock of
        ``loop.time()``), 0.0 if it never beat.  One relaxed load and no syscall: cheap enough
        for a host to read at every dispatch decision."""
        return self._peer_beat_ns(self.handle) * 1e-9

    def peer_alive(self, max_age: float | None = None) -> bool:
        """False once the other end's process is gone (or a zombie), or, with ``max_age``,
        once its heartbeat is older than that.  An end that never beat counts as dead."""
        if not pid_alive(self.peer_pid()):
            return False
        if max_age is not None:
            age = self.peer_heartbeat_age()
            return age is not None and age <= max_age
        return True

    def reinit(self, generation: int | None = None) -> int:
        """Re-format this ring in place, empty, with a new generation; returns it.

        Only once the peer is known dead (a live peer still writing would corrupt the new
        ring).  Nothing written under the old generation is ever delivered; a handle still
        holding the old generation fails ``check()`` and ``attach`` with RingMismatch.  Both
        doorbells are drained.  Pass the new ``spec()`` to the replacement peer.
        """
        generation = generation or new_generation()
        rc = lib.ring_init(self.handle, self.segment.ptr, self.segment.size, self.capacity,
                           generation)
        if rc < 0:
            _raise(rc, "reinit")
        self.generation = generation
        self.data_bell.drain()
        self.space_bell.drain()
        return generation

    def close(self) -> None:
        self.handle = None
        self.segment.close()
        self.data_bell.close()
        self.space_bell.close()


class Producer(_End):
    """The writing end.  ``try_write`` never blocks; ``write`` awaits space."""

    _PEER_PID, _peer_beat_ns = "consumer_pid", staticmethod(lib.ring_consumer_heartbeat_ns)

    def __init__(self, segment: Segment, data: Doorbell, space: Doorbell, generation: int,
                 create: bool = False):
        super().__init__(segment, data, space, generation, create)
        self._lens = ffi.new("uint32_t[]", 256)  # try_write_events: element lengths
        self._lens_max = 256
        self._wake = ffi.new("int *")  # try_write_events: ring the data doorbell
        self._waiters: list[asyncio.Future] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY, generation: int | None = None) -> "Producer":
        return cls(Segment.create(capacity), Doorbell(), Doorbell(),
                   generation or new_generation(), create=True)

    @classmethod
    def attach(cls, spec: RingSpec) -> "Producer":
        return cls(Segment.from_fd(spec.segment_fd), Doorbell(spec.data_fd),
                   Doorbell(spec.space_fd), spec.generation)

    def try_write(self, payload: bytes, type: int = EVENT) -> bool:
        """Publish one record; False when the ring is full.  Rings the doorbell if needed."""
        h = self.handle
        rc = lib.ring_try_write(h, type, payload, len(payload))
        if rc == 0:
            if lib.ring_producer_must_wake(h):
                os.eventfd_write(self.data_bell.fd, 1)
            return True
        if rc == lib.RING_AGAIN:
            return False
        _raise(rc, "write")

    def try_write_many(self, payloads: list[bytes], type: int = EVENT) -> int:
        """Publish as many of ``payloads`` as fit, in order, with one release; return the count."""
        if not payloads:
            return 0
        # array + from_buffer: half the cost of ffi.new from a list (~20 vs ~35 ns a record)
        lens = ffi.from_buffer("uint32_t[]", array("I", map(len, payloads)))
        rc = lib.ring_try_write_many(self.handle, type, b"".join(payloads), lens, len(payloads))
        return self._published(rc)

    def _published(self, rc: int) -> int:
        """ring_try_write_many's result as a count; rings the doorbell if the consumer sleeps."""
        if rc > 0:
            if lib.ring_producer_must_wake(self.handle):
                os.eventfd_write(self.data_bell.fd, 1)
            return rc
        if rc == 0 or rc == lib.RING_AGAIN:
            return 0
        _raise(rc, "write")

    def try_write_events(self, evs: list[list]) -> int:
        """Pack ``evs`` with one msgpack call and publish as many as fit, in order, one EVENT
        record each -- the records ``try_write_many([events.pack(ev) for ev in evs])`` would
        write, for less: the list is packed as one msgpack array, split into its elements,
        written and checked for a doorbell by one C call (``frame_write_events``).  Returns
        the count; repack the rest to retry.  Every element must be an event
        (``[int kind, int sid, ...]``), or bytes holding exactly one packed event (written as
        the record), or ValueError; RecordTooBig if the first is too big."""
        if not evs:
            return 0
        data = events.pack(evs)
        n = len(evs)
        if n > self._lens_max:
            self._lens = ffi.new("uint32_t[]", n)
            self._lens_max = n
        # one C call splits, writes and says whether to ring: the common case of a batch of
        # a few small events costs little more than its msgpack call
        rc = lib.frame_write_events(self.handle, EVENT, data, len(data), self._lens, n,
                                    self._wake)
        if rc > 0:
            if self._wake[0]:
                os.eventfd_write(self.data_bell.fd, 1)
            return rc
        if rc == 0:
            return 0
        if rc == lib.FRAME_ENOTEVENTS:
            raise ValueError("try_write_events: not a list of [int kind, int sid, ...] events")
        _raise(rc, "write")

    async def write(self, payload: bytes, type: int = EVENT) -> None:
        """Publish one record, waiting on the space doorbell while the ring is full."""
        while not self.try_write(payload, type):
            await self.wait_space(len(payload) + 16)

    async def wait_space(self, need: int) -> None:
        """Sleep until the consumer frees space (or at once if it already did)."""
        # A record that does not fit before the end of the data area also needs the bytes up
        # to the end (they become padding).  Without them, "need bytes are free" can hold
        # while try_write keeps failing, and the caller's retry loop would spin forever
        # without yielding.
        need = max(need, lib.ring_space_needed(self.handle, min(need, self.max_record)))
        if not lib.ring_producer_prepare_wait(self.handle, min(need, self.capacity)):
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First wait, or a new loop (asyncio.run twice): the doorbell must be watched by
            # the loop that awaits it, or the wait never ends.
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self.space_bell.fd)
            self._waiters = [f for f in self._waiters if f.get_loop() is loop]
            self._loop = loop
            loop.add_reader(self.space_bell.fd, self._on_space)
        fut = loop.create_future()
        self._waiters.append(fut)
        await fut

    def _on_space(self) -> None:
        self.space_bell.drain()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def free_space(self) -> int:
        return lib.ring_free_space(self.handle)

    def heartbeat(self) -> None:
        lib.ring_heartbeat_producer(self.handle, lib.ring_now_ns(), os.getpid())

    def reinit(self, generation: int | None = None) -> int:
        generation = super().reinit(generation)
        self._on_space()  # the ring is empty now: writers waiting for space may go on
        return generation

    def close(self) -> None:
        if self._loop is not None and self.space_bell.fd >= 0:
            self._loop.remove_reader(self.space_bell.fd)
            self._loop = None
        for fut in self._waiters:
            if not fut.done():
                fut.cancel()
        super().close()


class Consumer(_End):
    """The reading end: ``read_events`` / ``start_reading_events`` hand out decoded events, a
    batch at a time.  Records up to GATHER_BYTES are copied out (``ring_read_gather``), their
    space is released at once, their framing is checked in C (``frame_check_events``: exactly
    one msgpack value, ``[int, int, ...]``) and the whole batch is decoded by one msgpack call.
    Strictness is that of ``events.unpack`` per record: a batch that fails the fast path is
    decoded again record by record, and the first undecodable record is a ProtocolError.
    """

    _PEER_PID, _peer_beat_ns = "producer_pid", staticmethod(lib.ring_producer_heartbeat_ns)

    #: Longest poll, in seconds, of an empty ring before the reader arms the doorbell and
    #: sleeps.  0 (the default) sleeps at once.  A few tens of microseconds cut the round trip
    #: of request/response traffic to a fraction (no eventfd write, no epoll wake-up: see
    #: benchmarks/ring.py) at the price of that much CPU after each burst.  The spin is
    #: adaptive (``SpinPolicy``): it backs off while spins find nothing or lose the CPU to
    #: another process.  Polls go through ``loop.call_soon``, so other callbacks and tasks keep
    #: running meanwhile.
    spin = 0.0

    def __init__(self, segment: Segment, data: Doorbell, space: Doorbell, generation: int,
                 create: bool = False, batch: int = 256, gather_bytes: int | None = None):
        super().__init__(segment, data, space, generation, create)
        self._batch = batch
        self._flat = ffi.new("uint32_t[3]")  # (type, len, offset) of a record read in place
        self._view = memoryview(ffi.buffer(lib.ring_data(self.handle), self.capacity))
        self._reading = None
        self.spin_policy: SpinPolicy | None = None
        # read_events: gathered payloads behind a 5-byte array header, their ends, and the
        # (events, bytes) frame_gather_events reports
        gather = GATHER_BYTES if gather_bytes is None else gather_bytes
        cap = min(gather, self.max_record) + lib.FRAME_BATCH_HEADER
        self._gather = ffi.new("uint8_t[]", cap)
        self._gather_cap = cap
        self._gather_view = memoryview(ffi.buffer(self._gather))
        self._ends = ffi.new("uint32_t[]", batch)
        self._framing = ffi.new("uint32_t[2]")
        self._bad: Exception | None = None  # sticky: an undecodable record was met

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY, generation: int | None = None) -> "Consumer":
        return cls(Segment.create(capacity), Doorbell(), Doorbell(),
                   generation or new_generation(), create=True)

    @classmethod
    def attach(cls, spec: RingSpec, **options) -> "Consumer":
        """``options``: ``batch`` (records a read hands out at most), ``gather_bytes``
        (records up to this size are copied by read_events; default GATHER_BYTES)."""
        return cls(Segment.from_fd(spec.segment_fd), Doorbell(spec.data_fd),
                   Doorbell(spec.space_fd), spec.generation, **options)

    def read_events(self) -> list[list]:
        """Up to one batch of decoded events (``events.unpack`` of each EVENT record, in
        order); their ring space is already released.  [] when the ring is empty.

        An undecodable record, or one that is not ``[int kind, int sid, ...]``, is a
        ProtocolError (sid None: the ring cannot be trusted): the events before it are
        returned first, and this call and every later one raise it.  RingCorrupt when the
        ring's positions or record headers are impossible.
        """
        if self._bad is not None:
            raise self._bad
        h = self.handle
        framing = self._framing
        n = lib.frame_gather_events(h, EVENT, self._gather, self._gather_cap, self._ends,
                                    self._batch, framing)
        if n > 0:
            self.release()  # copied out: the producer may have the space back now
            if framing[0] == n:
                try:
                    return _unpackb(self._gather_view[:framing[1]])
                except Exception:
                    pass  # framing is sound but a value is not (bad UTF-8, depth, ...)
            return self._decode_each(n)
        if n < 0:
            _raise(n, "read")
        # Empty (skipped records still need releasing), or the next record is too large to
        # copy: decode that one in place.
        n = lib.ring_read_flat(h, self._flat, 1)
        try:
            if n <= 0:
                if n < 0:
                    _raise(n, "read")
                return []
            flat = self._flat
            if flat[0] != EVENT:
                return []
            offset = flat[2]
            try:
                return [events.unpack(self._view[offset:offset + flat[1]])]
            except events.ProtocolError as exc:
                self._bad = exc
                raise
        finally:
            self.release()

    def _decode_each(self, n: int) -> list[list]:
        """The reference path: ``events.unpack`` record by record, up to the first bad one."""
        out = []
        view, ends, start = self._gather_view, self._ends, lib.FRAME_BATCH_HEADER
        for i in range(n):
            end = lib.FRAME_BATCH_HEADER + ends[i]
            try:
                out.append(events.unpack(view[start:end]))
            except events.ProtocolError as exc:
                self._bad = exc
                break
            start = end
        if not out and self._bad is not None:
            raise self._bad
        return out

    def release(self) -> None:
        """Give the bytes of everything read so far back to the producer."""
        h = self.handle
        lib.ring_release(h)
        if lib.ring_consumer_must_wake(h):
            os.eventfd_write(self.space_bell.fd, 1)

    def prepare_sleep(self) -> bool:
        """True if the ring is still empty with the sleeping flag set: wait on ``data_bell``."""
        return bool(lib.ring_consumer_prepare_sleep(self.handle))

    def heartbeat(self) -> None:
        lib.ring_heartbeat_consumer(self.handle, lib.ring_now_ns(), os.getpid())

    def start_reading_events(self, loop: asyncio.AbstractEventLoop,
                             on_events: Callable[[list[list]], None],
                             on_error: Callable[[Exception], None], budget: int = 8) -> None:
        """Call ``on_events(events)`` for every batch of ``read_events``.

        Sleeps on the data doorbell only after the ring was seen empty with the sleeping flag
        set (no lost wake-up); reads at most ``budget`` batches per loop iteration so one busy
        ring cannot starve the rest of the event loop.  An undecodable record stops reading
        after the events before it were delivered, and ``on_error`` gets its ProtocolError
        (sid None); a corrupt ring, its RingCorrupt.
        """
        read = self.read_events

        def step() -> bool:
            evs = read()
            if not evs:
                return False
            on_events(evs)
            return True

        self._start(loop, step, on_error, budget)

    def _start(self, loop: asyncio.AbstractEventLoop, step: Callable[[], bool],
               on_error: Callable[[Exception], None], budget: int) -> None:
        """The read loop: ``step()`` reads and delivers one batch, False when it found none."""
        clock = time.perf_counter
        spin = self.spin_policy = SpinPolicy(self.spin)  # Consumer.spin as reading starts

        def pump() -> None:
            if self._reading is not loop:
                return  # stop_reading() since this call was scheduled
            try:
                for _ in range(budget):
                    if step():
                        if spin.until:
                            spin.found(clock())
                        continue
                    if spin.limit and spin.idle(clock()):
                        loop.call_soon(pump)  # poll again after the ready callbacks
                        return
                    if self.prepare_sleep():
                        return  # the producer will ring data_bell
                loop.call_soon(pump)  # more to do; let other callbacks run first
            except Exception as exc:  # corrupt ring, undecodable event, or a bug in on_*
                self.stop_reading()
                on_error(exc)

        def on_bell() -> None:
            self.data_bell.drain()
            pump()

        self._reading = loop
        loop.add_reader(self.data_bell.fd, on_bell)
        loop.call_soon(pump)

    def stop_reading(self) -> None:
        if self._reading is not None and self.data_bell.fd >= 0:
            self._reading.remove_reader(self.data_bell.fd)
        self._reading = None

    def close(self) -> None:
        self.stop_reading()
        self._view.release()
        self._gather_view.release()
        super().close()


class SpinPolicy:
    """When a reader that found its ring empty polls a little longer instead of sleeping.

    A spin pays when the next record comes sooner than a wake-up would take (request/response
    traffic: the peer answers within microseconds); it wastes a core when nothing comes, and
    it hurts when another process wants that core (our spin delays it, and the peer's reply
    with it).  So, like glibc's adaptive mutexes: spin up to ``limit`` seconds; after
    TOLERATED_MISSES spins in a row that found nothing, or during which this process lost the
    CPU (a poll-to-poll gap longer than the whole spin), skip the next 1, 2, 4 ... MAX_SKIP
    empty rings before spinning again; a clean hit resets that.  An idle ring therefore costs
    at most a few spins after its last burst: it sleeps in epoll_wait.

    Why tolerate a few misses: the first spin of an exchange often misses (the peer was
    asleep and needs a wake-up), and once a side sleeps, the kernel tends to wake its peer on
    the waker's CPU (wake-affine), where a spin only delays it.  Both sides spinning is the
    state that pays; one miss must not end it.
    """

    MAX_SKIP = 64  # empty rings skipped after repeated misses: 1/64 of the spin CPU left
    TOLERATED_MISSES = 4

    def __init__(self, limit: float):
        self.limit = max(0.0, float(limit))
        self.until = 0.0  # > 0 while spinning: the poll deadline
        self.last = 0.0  # time of the previous poll of this spin
        self.preempted = False
        self.skip = 0  # empty rings left to sleep on without spinning
        self.backoff = 1
        self.in_a_row = 0  # misses since the last hit
        self.hits = self.misses = 0

    def idle(self, now: float) -> bool:
        """The ring is empty now: True to poll again soon, False to sleep."""
        if self.until:
            if now - self.last > self.limit:
                self.preempted = True  # the loop or the CPU was elsewhere meanwhile
            self.last = now
            if now < self.until and not self.preempted:
                return True
            self._missed()
            return False
        if self.skip:
            self.skip -= 1
            return False
        self.until = now + self.limit
        self.last = now
        self.preempted = False
        return True

    def found(self, now: float) -> None:
        """Records came while spinning."""
        self.until = 0.0
        if self.preempted or now - self.last > self.limit:
            self._missed()  # it came, but only after we lost the CPU: no gain, a cost
        else:
            self.hits += 1
            self.backoff = 1
            self.in_a_row = 0

    def _missed(self) -> None:
        self.until = 0.0
        self.misses += 1
        self.in_a_row += 1
        if self.in_a_row >= self.TOLERATED_MISSES:
            self.skip = self.backoff
            self.backoff = min(self.backoff * 2, self.MAX_SKIP)
