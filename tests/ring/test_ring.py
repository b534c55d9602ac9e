"""The Python ring wrapper in one process: framing, wrap, full, errors, stats, doorbells.

Producer and consumer share one segment here (the consumer attaches to duplicated descriptors
of the producer's spec); the two-process behaviour is in test_two_process.py.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct

import pytest
import uvloop

from sidecar import events
from sidecar.ring import (
    EVENT, Consumer, Producer, RecordTooBig, RingCorrupt, RingError, RingMismatch, RingSpec,
    max_record_for, new_generation, pid_alive,
)
from tests.ring.raw import drain, read

CAP = 4096
MAX = max_record_for(CAP)  # 504: capacity/8 minus the record header
TYPE_PADDING = 0xFFFFFFFF
DATA = 2048  # data area offset in the segment (RING_HEADER_SIZE)


def total(n: int) -> int:
    """Bytes a record of n payload bytes takes in the ring: 8-byte header, padded to 8."""
    return (8 + n + 7) & ~7


def header_at(prod: Producer, index: int) -> tuple[int, int]:
    """(length, type) of the record header at a data-area index, read straight from memory."""
    return struct.unpack_from("<II", prod.segment.map, DATA + index)


# --- framing ---------------------------------------------------------------------------------


def test_round_trip_keeps_bytes_and_order(make_pair):
    prod, cons = make_pair()
    payloads = [b"", b"a", b"1234567", b"12345678", b"123456789", bytes(range(256)) * 1,
                b"\xff" * MAX]
    for p in payloads:
        assert prod.try_write(p)
    got = drain(cons)
    assert got == payloads
    assert prod.used() == 0 and cons.used() == 0


def test_max_record_is_capacity_over_8(make_pair):
    prod, cons = make_pair()
    assert prod.max_record == cons.max_record == CAP // 8 - 8
    assert prod.try_write(b"m" * MAX)
    with pytest.raises(RecordTooBig):
        prod.try_write(b"m" * (MAX + 1))
    with pytest.raises(ValueError):  # RecordTooBig is a ValueError too
        prod.try_write(b"m" * (MAX + 1))
    assert drain(cons) == [b"m" * MAX]


def test_empty_read_returns_empty_list(make_pair):
    prod, cons = make_pair()
    assert cons.read_events() == []
    cons.release()  # releasing nothing is harmless
    assert cons.read_events() == []
    assert cons.stats()["records_read"] == 0


def test_wrap_writes_padding_then_record_at_zero(make_pair):
    prod, cons = make_pair()
    # fill to index 4000: 7 records of 504 bytes + one of 472
    for n in [496] * 7 + [464]:
        assert prod.try_write(b"a" * n)
    assert prod.handle.write_pos == 4000
    assert len(drain(cons)) == 8
    # 96 bytes to the end: a 100-byte record does not fit, so padding fills them
    assert prod.try_write(b"w" * 100)
    assert header_at(prod, 4000) == (96 - 8, TYPE_PADDING)
    assert header_at(prod, 0) == (100, EVENT)
    assert prod.handle.write_pos == 4096 + total(100)
    assert drain(cons) == [b"w" * 100]  # the padding is skipped, never handed out
    assert cons.handle.read_pos == prod.handle.write_pos


def test_record_filling_exactly_to_the_end_needs_no_padding(make_pair):
    prod, cons = make_pair()
    for n in [496] * 7 + [464]:
        prod.try_write(b"a" * n)
    drain(cons)
    assert prod.try_write(b"e" * 88)  # 8 + 88 = 96: ends exactly at the end
    assert header_at(prod, 4000) == (88, EVENT)
    assert prod.handle.write_pos == 4096
    assert drain(cons) == [b"e" * 88]


def test_many_wraps_with_varied_sizes(make_pair):
    prod, cons = make_pair()
    sent = []
    for i in range(2000):
        p = bytes([i % 251]) * (i * 37 % (MAX + 1))
        while not prod.try_write(p):
            got = drain(cons)
            assert got == sent[:len(got)]
            sent = sent[len(got):]
        sent.append(p)
    assert drain(cons) == sent
    assert prod.handle.write_pos > 50 * CAP  # it wrapped many times


# --- full ring -------------------------------------------------------------------------------


def test_exactly_full_ring(make_pair):
    prod, cons = make_pair()
    assert prod.free_space() == CAP
    for i in range(8):  # 8 records of total 512 fill 4096 exactly
        assert prod.try_write(bytes([i]) * MAX)
    assert prod.free_space() == 0
    assert prod.used() == CAP
    assert prod.try_write(b"") is False  # not even an empty record (8 bytes) fits
    assert prod.stats()["full_events"] >= 1
    assert len(read(cons)) == 8
    assert prod.free_space() == CAP
    assert prod.try_write(b"x")


def test_free_space_counts_aligned_records(make_pair):
    prod, cons = make_pair()
    for n in (0, 1, 7, 8, 9, 100):
        before = prod.free_space()
        prod.try_write(b"z" * n)
        assert before - prod.free_space() == total(n)
    drain(cons)
    assert prod.free_space() == CAP


def test_try_write_many_writes_what_fits_in_order(make_pair):
    prod, cons = make_pair()
    payloads = [bytes([i]) * 500 for i in range(10)]  # 512 bytes each: 8 fit
    assert prod.try_write_many(payloads) == 8
    assert prod.try_write_many(payloads[8:]) == 0  # full: nothing, no exception
    assert drain(cons) == payloads[:8]
    assert prod.try_write_many(payloads[8:]) == 2
    assert drain(cons) == payloads[8:]
    assert prod.try_write_many([]) == 0


def test_try_write_many_too_big(make_pair):
    prod, cons = make_pair()
    with pytest.raises(RecordTooBig):
        prod.try_write_many([b"x" * (MAX + 1), b"ok"])
    assert prod.try_write_many([b"ok", b"x" * (MAX + 1), b"never"]) == 1  # stops before it
    assert drain(cons) == [b"ok"]


def test_other_record_types_are_skipped_by_read(make_pair):
    prod, cons = make_pair()
    prod.try_write(b"one")
    prod.try_write(b"control", type=7)
    prod.try_write(b"two")
    assert drain(cons) == [b"one", b"two"]
    assert prod.used() == 0  # the skipped record was released too
    with pytest.raises(RingError):
        prod.try_write(b"x", type=TYPE_PADDING)  # the padding type is reserved


# --- stats -----------------------------------------------------------------------------------


def test_stats_counters(make_pair):
    prod, cons = make_pair()
    s = prod.stats()
    assert s["capacity"] == CAP and s["generation"] == prod.generation != 0
    assert s["records_written"] == s["records_read"] == s["used"] == 0
    prod.try_write(b"a" * 10)
    prod.try_write_many([b"b" * 20, b"c" * 30])
    s = cons.stats()
    assert (s["records_written"], s["bytes_written"]) == (3, 60)
    assert s["used"] == total(10) + total(20) + total(30)
    assert len(drain(cons)) == 3
    s = prod.stats()  # both ends see the same shared counters
    assert (s["records_read"], s["bytes_read"], s["used"]) == (3, 60, 0)
    prod.heartbeat()
    cons.heartbeat()
    s = prod.stats()
    assert s["producer_pid"] == s["consumer_pid"] == os.getpid()
    assert s["producer_heartbeat"] > 0 and s["consumer_heartbeat"] > 0


# --- attach, generations, liveness ----------------------------------------------------------


def test_attach_with_wrong_generation_raises_mismatch(make_pair):
    prod, _ = make_pair()
    spec = prod.spec().dup()
    wrong = RingSpec(spec.segment_fd, spec.data_fd, spec.space_fd, prod.generation + 1)
    with pytest.raises(RingMismatch):
        Consumer.attach(wrong)
    for fd in wrong.fds():
        os.close(fd)


def test_attach_generation_zero_accepts_any(make_pair):
    prod, _ = make_pair()
    spec = prod.spec().dup()
    cons = Consumer.attach(RingSpec(spec.segment_fd, spec.data_fd, spec.space_fd, 0))
    try:
        prod.try_write(b"x")
        assert drain(cons) == [b"x"]
    finally:
        cons.close()


@pytest.mark.parametrize("offset, size", [(0, 8), (0, 1), (8, 4), (12, 4), (16, 8), (24, 4)],
                         ids=["magic", "magic-byte", "version", "header_size", "capacity",
                              "max_record"])
def test_garbage_header_raises_mismatch(make_pair, offset, size):
    prod, _ = make_pair()
    mem = prod.segment.map
    old = mem[offset:offset + size]
    mem[offset:offset + size] = bytes(b ^ 0x5A for b in old)
    spec = prod.spec().dup()
    with pytest.raises(RingMismatch):
        Consumer.attach(spec)
    for fd in spec.fds():
        os.close(fd)
    if offset == 0:
        with pytest.raises(RingMismatch):
            prod.check()  # an attached handle notices too
    mem[offset:offset + size] = old
    prod.check()


def test_reinit_in_place_invalidates_old_handles(make_pair):
    prod, cons = make_pair()
    old = prod.generation
    prod.try_write(b"old generation")
    new = prod.reinit()
    assert new != old and prod.generation == new
    with pytest.raises(RingMismatch):
        cons.check()  # a handle still holding the old generation
    old_spec = RingSpec(*prod.spec().dup().fds(), old)
    with pytest.raises(RingMismatch):
        Consumer.attach(old_spec)
    for fd in old_spec.fds():
        os.close(fd)
    fresh = Consumer.attach(prod.spec().dup())
    try:
        assert drain(fresh) == []  # nothing written before the re-init is delivered
        prod.try_write(b"new generation")
        assert drain(fresh) == [b"new generation"]
    finally:
        fresh.close()


def test_new_generation_is_unique_and_nonzero():
    gens = {new_generation() for _ in range(1000)}
    assert len(gens) == 1000 and 0 not in gens


def test_peer_liveness_from_heartbeats(make_pair):
    prod, cons = make_pair()
    assert prod.peer_pid() == 0 and prod.peer_heartbeat_age() is None
    assert not prod.peer_alive()  # never beat: counts as dead
    cons.heartbeat()
    assert prod.peer_pid() == os.getpid()
    assert 0 <= prod.peer_heartbeat_age() < 5
    assert prod.peer_alive() and prod.peer_alive(max_age=5)
    assert not prod.peer_alive(max_age=-1)  # stale by any standard
    assert cons.peer_pid() == 0  # the producer side has not beaten yet
    prod.heartbeat()
    assert cons.peer_alive(max_age=5)


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # a zombie (exited, not reaped) is not alive
    deadline = 200
    while pid_alive(pid) and deadline:
        deadline -= 1
        os.sched_yield() if deadline % 2 else signal.sigtimedwait([signal.SIGCHLD], 0.05)
    assert not pid_alive(pid)
    os.waitpid(pid, 0)
    assert not pid_alive(pid)


def test_spec_dup_gives_independent_descriptors(make_pair):
    prod, _ = make_pair()
    spec, dup = prod.spec(), prod.spec().dup()
    assert dup.generation == spec.generation
    assert set(dup.fds()).isdisjoint(spec.fds())
    for a, b in zip(spec.fds(), dup.fds()):
        assert os.path.samestat(os.fstat(a), os.fstat(b))
        os.close(b)


# --- asyncio: doorbells, backpressure, start_reading_events (uvloop and asyncio alike) -------


# ``run`` (tests/ring/conftest.py): a coroutine on a fresh asyncio and a fresh uvloop loop.

def test_write_awaits_space_and_is_woken_by_release(make_pair, run):
    prod, cons = make_pair()
    evs = [[events.RESPONSE_BODY, i, bytes([i % 256]) * (100 + i % 300), True]
           for i in range(200)]  # ~14x the ring

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        done = loop.create_future()

        def on_events(batch):
            got.extend(batch)
            if len(got) == len(evs):
                done.set_result(None)

        cons.start_reading_events(loop, on_events, done.set_exception)
        for ev in evs:
            await prod.write(events.pack(ev))
        await done
        cons.stop_reading()
        return got

    assert run(main()) == evs
    s = prod.stats()
    assert s["full_events"] > 0  # the producer did find the ring full...
    assert s["producer_wakeups"] > 0  # ...and the consumer's release woke it
    assert s["consumer_sleeps"] > 0 and s["consumer_wakeups"] > 0


def test_write_that_must_wrap_sleeps_instead_of_spinning(make_pair, run):
    """Regression: free space >= len + 16 but < padding + record made write() retry forever
    without yielding (wait_space returned at once), wedging the event loop."""
    prod, cons = make_pair(batch=1)
    for n in [496] * 7 + [464]:
        prod.try_write(b"a" * n)
    assert len(read(cons, 1)) == 1
    assert prod.free_space() == 600 and prod.handle.write_pos % CAP == 4000

    def wedged(*_):
        raise TimeoutError("Producer.write spun without yielding to the loop")

    async def main():
        async def reader():
            await asyncio.sleep(0.01)
            drain(cons)

        task = asyncio.ensure_future(reader())
        await prod.write(b"x" * 500)  # needs 96 of padding + 512: waits for the reader
        await task

    old = signal.signal(signal.SIGALRM, wedged)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        run(main())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert drain(cons) == [b"x" * 500]


def test_write_waits_work_on_successive_loops(make_pair):
    """Regression: the space doorbell was watched only by the first loop that ever waited,
    so a wait on a later loop (asyncio.run twice) never ended."""
    prod, cons = make_pair()

    async def fill_and_wait():
        loop = asyncio.get_running_loop()
        while prod.try_write(b"f" * 400):
            pass
        loop.call_later(0.01, drain, cons)
        await asyncio.wait_for(prod.write(b"g" * 400), 5)

    for new_loop in (asyncio.new_event_loop, uvloop.new_event_loop, asyncio.new_event_loop):
        loop = new_loop()
        try:
            loop.run_until_complete(fill_and_wait())
        finally:
            loop.close()
    assert prod.stats()["producer_wakeups"] >= 3


@pytest.mark.parametrize("spin", [0.0, 200e-6])
def test_start_reading_events_delivers_in_order_and_sleeps_when_idle(make_pair, run, spin):
    prod, cons = make_pair(capacity=1 << 16)
    cons.spin = spin
    pack = events.pack

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        waiter = None

        def on_events(evs):
            got.extend(ev[1] for ev in evs)
            if waiter is not None and not waiter.done() and len(got) >= expect:
                waiter.set_result(None)

        cons.start_reading_events(loop, on_events, lambda exc: waiter.set_exception(exc))
        expect = 0
        for burst in range(50):
            for i in range(burst * 3 % 17 + 1):
                assert prod.try_write(pack([events.RESPONSE_BODY, expect, b"b", True]))
                expect += 1
            waiter = loop.create_future()
            await waiter
            # idle now: the consumer must go to sleep (flag set) instead of polling
            for _ in range(100):
                if prod.stats()["consumer_sleeping"]:
                    break
                await asyncio.sleep(0.001)
            assert prod.stats()["consumer_sleeping"] == 1
        cons.stop_reading()
        return got

    got = run(main())
    assert got == list(range(len(got)))
    assert prod.stats()["consumer_sleeps"] >= 50
    assert prod.stats()["consumer_wakeups"] >= 1


def test_start_reading_events_reports_corruption(make_pair, run):
    prod, cons = make_pair()
    prod.try_write(events.pack([events.RESPONSE_BODY, 1, b"fine", False]))
    struct.pack_into("<II", prod.segment.map, DATA, MAX + 1, EVENT)  # impossible length

    async def main():
        loop = asyncio.get_running_loop()
        failed = loop.create_future()
        cons.start_reading_events(loop, lambda evs: None, failed.set_result)
        return await failed

    assert isinstance(run(main()), RingCorrupt)


def test_spin_polls_through_the_loop_so_tasks_run_meanwhile(make_pair, run):
    """A spinning consumer must not hold the loop: a task woken by on_events (the worker's
    app awaiting receive()) runs while the consumer is still polling, not after the spin."""
    prod, cons = make_pair()
    cons.spin = 5.0  # far longer than the test: only polling through the loop lets it finish

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        cons.start_reading_events(loop, lambda evs: got.done() or got.set_result(evs[0][2]),
                                  got.set_exception)
        prod.try_write(events.pack([events.RESPONSE_BODY, 1, b"wake the task", False]))
        assert await got == b"wake the task"
        s = prod.stats()
        cons.stop_reading()
        return s

    s = run(main())
    assert s["consumer_sleeping"] == 0 and s["consumer_sleeps"] == 0  # still polling


def test_stop_reading_stops_a_polling_consumer(make_pair, run):
    prod, cons = make_pair()
    cons.spin = 5.0
    calls = []

    async def main():
        loop = asyncio.get_running_loop()
        cons.start_reading_events(loop, calls.append, calls.append)
        await asyncio.sleep(0.01)  # polling now
        cons.stop_reading()
        prod.try_write(events.pack([events.RESPONSE_BODY, 1, b"after stop", False]))
        for _ in range(20):
            await asyncio.sleep(0)

    run(main())
    assert calls == []
    assert cons.read_events() == [[events.RESPONSE_BODY, 1, b"after stop", False]]  # unread


def test_skipped_records_are_released_for_a_waiting_producer(make_pair, run):
    """Regression: a batch of only non-EVENT records made the read return [] and the reader
    went to sleep without releasing them -- a producer waiting for that space waited forever."""
    prod, cons = make_pair()
    while prod.try_write(b"c" * 400, type=7):
        pass

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        cons.start_reading_events(loop, lambda evs: got.set_result(evs[0][2]),
                                  got.set_exception)
        await asyncio.wait_for(prod.write(events.pack([events.RESPONSE_BODY, 1, b"event",
                                                       False])), 5)
        assert await asyncio.wait_for(got, 5) == b"event"
        cons.stop_reading()

    run(main())
    assert prod.used() == 0
