"""The ring between two real processes: wake-ups, a million-event stress each way, kill -9 and
re-creation with a new generation, /dev/shm hygiene, and idle CPU.

The peer side is tests/ring/peer.py, started with the ring descriptors in ``pass_fds``.  No
test sleeps to "wait for" something: each wait is a poll or an await with a deadline.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest
import uvloop

from sidecar import events
from sidecar.ring import Consumer, Producer, RingMismatch, RingSpec, pid_alive

from .peer import duplex

STRESS_EVENTS = int(os.environ.get("RING_STRESS_EVENTS", 1_000_000))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- no lost wake-up -------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [0.0, 20e-6], ids=["sleep-at-once", "spin-then-sleep"])
def test_sleeping_consumer_is_always_woken(spawn, spin):
    """Thousands of bursts of random size and pacing; after each, the host waits for the peer's
    ack.  The peer's consumer goes to sleep between bursts, so a single lost wake-up (data
    published while the consumer was deciding to sleep, doorbell not rung) leaves the peer
    asleep and the ack never comes: the per-burst deadline catches it.

    To hit that window often, this side polls for acks (Consumer.spin) and so sees each one
    within microseconds -- while the peer, having just written it, is on its way to sleep --
    and writes the next burst after a random 0..15 us.  (A peer whose prepare_sleep checks
    for emptiness and then sets the flag without fence and re-check is caught within a few
    hundred bursts.)  The acks' ring sleeps too between bursts, when this side idles."""
    bursts = 10_000
    to_peer, acks = Producer.create(1 << 16), Consumer.create(1 << 16)
    peer = spawn("acker", {"in": vars(to_peer.spec()), "out": vars(acks.spec()), "spin": spin},
                 to_peer.spec(), acks.spec())
    peer.ready()
    rng = random.Random(1234)
    pack = events.pack
    acks.spin = 300e-6

    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def main():
        loop = asyncio.get_running_loop()
        acked = {}

        def on_events(evs):
            for ev in evs:
                fut = acked.pop(ev[1], None)
                if fut is not None:
                    fut.set_result(ev[2])

        acks.start_reading_events(loop, on_events, lambda exc: pytest.fail(repr(exc)))
        seq = 0
        for burst in range(bursts):
            n = rng.choice((1, 1, 1, 1, 2, 3, 5, 8))
            fut = acked[seq + n - 1] = loop.create_future()
            busy(rng.random() * 15e-6)
            for i in range(n):
                assert to_peer.try_write(pack([events.RESPONSE_BODY, seq, b"b", i < n - 1]))
                seq += 1
                pace = rng.random()
                if pace < 0.2:
                    await asyncio.sleep(0)
                elif pace < 0.5:  # a few microseconds: lands while the peer drains/sleeps
                    busy(rng.random() * 15e-6)
            try:
                count = await asyncio.wait_for(fut, 10)
            except asyncio.TimeoutError:
                pytest.fail(f"burst {burst}: no ack within 10 s -- a lost wake-up "
                            f"(peer stats {to_peer.stats()})")
            assert count == seq
            if rng.random() < 0.05:  # sometimes idle long enough for everyone to sleep
                await asyncio.sleep(0.0005 + rng.random() * 0.002)
        assert to_peer.try_write(pack([events.DISCONNECT, seq]))
        acks.stop_reading()
        return seq

    sent = uvloop.run(main())
    result = peer.result(20)
    assert result["count"] == sent and not result["errors"]
    s = to_peer.stats()
    # the test only means something if the peer really slept and was woken, many times
    assert s["consumer_sleeps"] > bursts // 4, s
    assert s["consumer_wakeups"] > bursts // 4, s
    assert acks.stats()["consumer_sleeps"] > bursts // 100  # this side slept now and then
    to_peer.close()
    acks.close()


# --- stress ----------------------------------------------------------------------------------


def test_million_events_each_way_no_loss_duplication_or_corruption(spawn):
    """Both processes send STRESS_EVENTS checksummed events (sizes from 4 bytes to within 16
    bytes of max_record) while checking the STRESS_EVENTS they receive, over two 64 KiB rings
    (max_record 8 KiB): thousands of wraps, full rings and doorbells each way.  Both sides read
    decoded batches (start_reading_events), this side copying records up to GATHER_BYTES,
    the peer up to 1 KiB, and decoding larger ones in place; both write with try_write,
    try_write_many and try_write_events."""
    n = STRESS_EVENTS
    out, inp = Producer.create(1 << 16), Consumer.create(1 << 16)
    peer = spawn("duplex", {"in": vars(out.spec()), "out": vars(inp.spec()), "n": n,
                            "seed": 2, "peer_seed": 1, "timeout": 120,
                            "gather_bytes": 1024},
                 out.spec(), inp.spec())
    peer.ready()
    mine = uvloop.run(duplex(out, inp, n, seed=1, peer_seed=2, timeout=120))
    theirs = peer.result(60)
    for side in (mine, theirs):
        assert side["errors"] == [] and side["received"] == n
    for s in (out.stats(), inp.stats()):  # shared counters, read once both sides are done
        assert s["records_written"] == s["records_read"] == n
        assert s["used"] == 0
        assert s["bytes_written"] > 64 * (1 << 16)  # dozens of wraps at least
        assert s["full_events"] > 0  # backpressure was exercised
    out.close()
    inp.close()


# --- crashes: detection and re-creation with a new generation --------------------------------


def sink_args(prod: Producer, tag: str, n: int = 0) -> dict:
    return {"in": vars(prod.spec()), "tag": tag, "n": n, "heartbeat": 0.01}


async def stream(prod: Producer, tag: str, start: int, count: int) -> int:
    for seq in range(start, start + count):
        await prod.write(events.pack([events.WS_SEND, seq, tag]))
    return start + count


@pytest.mark.parametrize("how", ["new-segment", "reinit-in-place"])
def test_killed_consumer_is_detected_and_ring_recreated(spawn, how):
    prod = Producer.create(1 << 14)
    old_gen = prod.generation
    victim = spawn("sink", sink_args(prod, "old"), prod.spec())
    victim.ready()

    async def until_killed():
        # stream until the peer has consumed a good part, then kill it mid-stream
        seq = 0
        while prod.stats()["records_read"] < 3000:
            seq = await stream(prod, "old", seq, 100)
        victim.proc.send_signal(signal.SIGKILL)
        # keep writing: the ring fills up and nobody will ever make room again
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream(prod, "old", seq, 100_000), 0.5)

    uvloop.run(until_killed())
    assert prod.peer_pid() == victim.pid
    # detection: pid gone (even before it is reaped: a zombie is not alive), heartbeat stale
    wait_until(lambda: not pid_alive(victim.pid), 10, "the killed pid to be gone")
    assert not prod.peer_alive()
    wait_until(lambda: prod.peer_heartbeat_age() > 0.2, 10, "a stale heartbeat")
    assert not prod.peer_alive(max_age=0.2)
    assert victim.proc.wait(10) == -signal.SIGKILL
    assert prod.used() > 0  # records of the old generation are still sitting there

    if how == "new-segment":
        old_spec = prod.spec().dup()
        prod.close()
        prod = Producer.create(1 << 14)
        stale = RingSpec(*prod.spec().dup().fds(), old_gen)
        with pytest.raises(RingMismatch):  # the old peer's generation no longer attaches
            Consumer.attach(stale)
        for fd in stale.fds() + old_spec.fds():
            os.close(fd)
    else:
        old_handle = Consumer.attach(prod.spec().dup())  # as the dead peer held it
        prod.reinit()
        with pytest.raises(RingMismatch):
            old_handle.check()
        old_handle.close()
        assert prod.used() == 0
    assert prod.generation != old_gen

    fresh = spawn("sink", sink_args(prod, "new", n=5000), prod.spec())
    fresh.ready()
    uvloop.run(stream(prod, "new", 0, 5000))
    result = fresh.result(30)
    # traffic resumed, and nothing written under the old generation came out
    assert result == {"count": 5000, "first": 0, "last": 4999, "errors": []}
    assert prod.peer_pid() == fresh.pid
    prod.close()


def test_killed_producer_is_detected_and_published_records_stay_whole(spawn):
    cons = Consumer.create(1 << 14)
    victim = spawn("source", {"out": vars(cons.spec()), "tag": "old", "heartbeat": 0.01},
                   cons.spec())
    victim.ready()
    got = []

    def take():
        got.extend(cons.read_events())

    wait_until(lambda: take() or len(got) > 2000, 20, "events from the source")
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(10) == -signal.SIGKILL
    assert cons.peer_pid() == victim.pid and not cons.peer_alive()
    wait_until(lambda: cons.peer_heartbeat_age() > 0.2, 10, "a stale heartbeat")
    # whatever was published before the kill is intact and in order: a record becomes
    # visible only once whole (tail is published after the copy)
    while cons.used():
        take()
    assert [ev[1] for ev in got] == list(range(len(got)))
    assert all(ev == [events.WS_SEND, i, "old"] for i, ev in enumerate(got))

    cons.reinit()
    fresh = spawn("source", {"out": vars(cons.spec()), "tag": "new", "heartbeat": 0.01},
                  cons.spec())
    fresh.ready()
    got.clear()
    wait_until(lambda: take() or len(got) > 1000, 20, "events from the new source")
    assert [ev[1] for ev in got] == list(range(len(got)))
    assert all(ev[2] == "new" for ev in got)
    cons.close()


# --- /dev/shm --------------------------------------------------------------------------------


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm"))


def test_no_shared_memory_left_in_dev_shm(spawn):
    before = shm_entries()
    ends = [Producer.create(1 << 16) for _ in range(4)] + [Consumer.create(1 << 16)
                                                             for _ in range(4)]
    for end in ends:
        # unlinked the moment it was mapped: the descriptor points at a deleted file
        target = os.readlink(f"/proc/self/fd/{end.segment.fd}")
        assert target.endswith("(deleted)"), target
    assert shm_entries() - before == set()
    holder = spawn("idle", {"in": vars(ends[0].spec())}, ends[0].spec())
    holder.ready()
    holder.proc.send_signal(signal.SIGKILL)
    assert holder.proc.wait(10) == -signal.SIGKILL
    for end in ends:
        end.close()
    assert shm_entries() - before == set()


# --- idle ------------------------------------------------------------------------------------


IDLE_SECONDS = 5.0  # the issue says 10 s; 5 s keeps the suite short with the same 1% bound


def test_idle_consumer_uses_no_cpu(spawn):
    """A consumer waiting in start_reading_events under uvloop (with a spin configured, which
    must only follow traffic) for IDLE_SECONDS of nothing uses < 1% of a CPU: it sleeps in
    epoll_wait, no polling timer.  A resource bound, with a wide margin (idle is ~0%)."""
    prod = Producer.create(1 << 16)
    peer = spawn("idle", {"in": vars(prod.spec()), "spin": 50e-6}, prod.spec())
    peer.ready()
    prod.try_write(events.pack([events.PING, 0, 1]))  # some traffic first: spin, then sleep
    assert peer.line(10) == '{"batch": 1}'
    wait_until(lambda: prod.stats()["consumer_sleeping"] == 1, 10, "the consumer to sleep")
    cpu0, t0 = cpu_seconds(peer.pid), time.monotonic()
    time.sleep(IDLE_SECONDS)  # the measurement window itself, not a wait for an event
    cpu1, t1 = cpu_seconds(peer.pid), time.monotonic()
    assert (cpu1 - cpu0) / (t1 - t0) < 0.01, f"{cpu1 - cpu0:.3f} s CPU in {t1 - t0:.1f} s"
    # and it is asleep, not dead: one event wakes it
    prod.try_write(events.pack([events.PING, 0, 2]))
    assert peer.line(10) == '{"batch": 1}'
    prod.close()
