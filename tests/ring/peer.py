"""The other process of the two-process ring tests: ``python -m tests.ring.peer MODE JSON``.

JSON holds the ring specs (descriptors inherited through ``pass_fds``) and the mode's
parameters.  The peer prints ``ready`` on stdout once it is attached and reading, and one JSON
line with its findings when it is done; it exits 0 only if everything it saw was right.

Modes:
  duplex  stream ``n`` checksummed events to the host while checking the ``n`` it receives
          (the same code as the host side: ``duplex()``)
  acker   answer every burst-ending event (more_body False) with an ack carrying the count
          (reads with start_reading_events, the adaptive spin as ``spin`` says)
  sink    consume tagged events, check tag and sequence, heartbeat; stop after ``n`` (0: never)
  source  produce tagged events forever under backpressure, heartbeat (killed by the test)
  idle    sleep in start_reading_events; report each batch on stdout
  fuzz    scribble over a ring's memory and read it (see tests/ring/test_fuzz.py)
"""
from __future__ import annotations

import asyncio
import json
import random
import struct
import sys
import zlib

import uvloop

from sidecar import events
from sidecar.ring import (
    Consumer, Producer, RecordTooBig, RingCorrupt, RingMismatch, RingSpec, ffi, lib,
)
from tests.ring import raw

# --- checksummed events: [RESPONSE_BODY, seq, crc32(data) + data, more_body] ---------------


def body_pool(max_record: int, seed: int, size: int = 512) -> list[bytes]:
    """Bodies (crc32 prefix + random bytes): mostly small, some medium, a few so large that the
    packed event is within 16 bytes of ``max_record``."""
    rng = random.Random(seed)
    blob = rng.randbytes(max_record)
    # [34, seq < 2**32, bin16, bool] packs to 1 + 1 + 5 + 3 + 1 = 11 bytes around the body
    largest = max_record - 11
    bodies = []
    for i in range(size):
        r = rng.random()
        if r < 0.70:
            n = rng.randrange(4, 120)
        elif r < 0.96:
            n = rng.randrange(120, 2048)
        else:
            n = rng.randrange(largest - 15, largest + 1)
        start = rng.randrange(0, max_record - n + 4)
        data = blob[start:start + n - 4]
        bodies.append(struct.pack("<I", zlib.crc32(data)) + data)
    return bodies


def body_ok(body) -> bool:
    return (type(body) is bytes and len(body) >= 4
            and zlib.crc32(memoryview(body)[4:]) == struct.unpack_from("<I", body)[0])


async def produce(prod: Producer, n: int, bodies: list[bytes], seed: int) -> None:
    """Send events 0..n-1 in random batches, waiting for space whenever the ring is full."""
    rng = random.Random(seed)
    pack, nb = events.pack, len(bodies)
    seq = 0
    while seq < n:
        k = min(n - seq, rng.choice((1, 1, 2, 7, 32, 64)))
        batch = [pack([events.RESPONSE_BODY, s, bodies[(s * 7919) % nb], True])
                 for s in range(seq, seq + k)]
        if k == 1 and rng.random() < 0.5:
            await prod.write(batch[0])
        elif rng.random() < 0.5:  # the same events, packed by one call (try_write_events)
            evs = [[events.RESPONSE_BODY, s, bodies[(s * 7919) % nb], True]
                   for s in range(seq, seq + k)]
            done = 0
            while done < k:
                done += prod.try_write_events(evs[done:])
                if done < k:
                    await prod.wait_space(len(batch[done]) + 16)
        else:
            done = 0
            while done < k:
                done += prod.try_write_many(batch[done:])
                if done < k:
                    await prod.wait_space(len(batch[done]) + 16)
        seq += k
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let our own consumer run


class Checker:
    """Checks an incoming stream of checksummed events: in order, none lost, none doubled."""

    def __init__(self, n: int, bodies: list[bytes], done: asyncio.Future):
        self.n, self.bodies, self.done = n, bodies, done
        self.count = 0
        self.errors: list[str] = []

    def on_events(self, evs) -> None:
        check, bodies, nb = events.check, self.bodies, len(self.bodies)
        for ev in evs:
            check(ev)
            seq = ev[1]
            if seq != self.count:
                self.error(f"seq {seq}, expected {self.count}")
            elif not body_ok(ev[2]) or ev[2] != bodies[(seq * 7919) % nb]:
                self.error(f"event {seq}: corrupt body")
            self.count += 1
        if self.count >= self.n and not self.done.done():
            self.done.set_result(None)

    def on_error(self, exc: Exception) -> None:
        self.error(f"ring error: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)

    def error(self, msg: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(msg)


async def duplex(prod: Producer, cons: Consumer, n: int, seed: int, peer_seed: int,
                 timeout: float) -> dict:
    """Send n events on ``prod`` while checking n on ``cons``; both run on this loop."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    checker = Checker(n, body_pool(cons.max_record, peer_seed), done)
    cons.start_reading_events(loop, checker.on_events, checker.on_error)
    try:
        await asyncio.wait_for(asyncio.gather(
            produce(prod, n, body_pool(prod.max_record, seed), seed), done), timeout)
    except asyncio.TimeoutError:
        checker.error(f"timeout: received {checker.count} of {n}")
    finally:
        cons.stop_reading()
    return {"received": checker.count, "errors": checker.errors,
            "stats_in": cons.stats(), "stats_out": prod.stats()}


# --- the modes -------------------------------------------------------------------------------


def say(obj) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


async def mode_duplex(args: dict) -> int:
    prod = Producer.attach(RingSpec(**args["out"]))
    cons = Consumer.attach(RingSpec(**args["in"]), gather_bytes=args.get("gather_bytes"))
    say("ready")
    result = await duplex(prod, cons, args["n"], args["seed"], args["peer_seed"],
                          args["timeout"])
    say(result)
    return 0 if not result["errors"] and result["received"] == args["n"] else 1


async def mode_acker(args: dict) -> int:
    cons = Consumer.attach(RingSpec(**args["in"]))
    prod = Producer.attach(RingSpec(**args["out"]))
    cons.spin = args.get("spin", 0.0)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    state = {"count": 0, "errors": []}
    pack = events.pack

    def on_events(evs):
        for ev in evs:
            if ev[0] == events.DISCONNECT:
                finished.set_result(None)
                return
            if ev[1] != state["count"]:
                state["errors"].append(f"event {ev[1]}, expected {state['count']}")
            state["count"] += 1
            if ev[3] is False and not prod.try_write(
                    pack([events.RECV_CREDIT, ev[1], state["count"]])):
                state["errors"].append("ack ring full")

    def on_error(exc):
        state["errors"].append(repr(exc))
        finished.set_result(None)

    cons.start_reading_events(loop, on_events, on_error)
    say("ready")
    await finished
    state["spin"] = {"hits": cons.spin_policy.hits, "misses": cons.spin_policy.misses}
    say(state)
    return 0 if not state["errors"] else 1


async def mode_sink(args: dict) -> int:
    cons = Consumer.attach(RingSpec(**args["in"]))
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    state = {"count": 0, "first": None, "last": None, "errors": []}
    tag, n = args["tag"], args["n"]

    def beat():
        cons.heartbeat()
        loop.call_later(args["heartbeat"], beat)

    def on_events(evs):
        for ev in evs:
            if ev[2] != tag or ev[1] != state["count"]:
                state["errors"].append(f"got {ev[:3]}, expected [.., {state['count']}, {tag}]")
            if state["first"] is None:
                state["first"] = ev[1]
            state["last"] = ev[1]
            state["count"] += 1
        if n and state["count"] >= n and not finished.done():
            finished.set_result(None)

    def on_error(exc):
        state["errors"].append(repr(exc))
        finished.set_result(None)

    beat()
    cons.start_reading_events(loop, on_events, on_error)
    say("ready")
    await finished
    say(state)
    return 0 if not state["errors"] else 1


async def mode_source(args: dict) -> int:
    prod = Producer.attach(RingSpec(**args["out"]))
    loop = asyncio.get_running_loop()
    tag = args["tag"]

    def beat():
        prod.heartbeat()
        loop.call_later(args["heartbeat"], beat)

    beat()
    say("ready")
    seq = 0
    while True:
        await prod.write(events.pack([events.WS_SEND, seq, tag]))
        seq += 1


async def mode_idle(args: dict) -> int:
    cons = Consumer.attach(RingSpec(**args["in"]))
    cons.spin = args.get("spin", 0.0)
    loop = asyncio.get_running_loop()
    cons.start_reading_events(loop, lambda evs: say({"batch": len(evs)}), lambda exc: None)
    say("ready")
    await loop.create_future()  # until killed
    return 0


# --- fuzz: garbage in the ring's memory must give RingCorrupt or records, nothing else -------

TAIL, HEAD = 128, 256  # header offsets (native/ring.c layout)
DATA = 2048


def mode_fuzz(args: dict) -> int:
    rng = random.Random(args["seed"])
    capacity = 4096
    prod = Producer.create(capacity)
    mem = prod.segment.map
    outcomes = {"records": 0, "corrupt": 0, "mismatch": 0, "producer_corrupt": 0,
                "events": 0, "undecodable": 0}
    for _ in range(args["iterations"]):
        prod.reinit()
        cons = Consumer.attach(prod.spec().dup())
        try:
            for _ in range(rng.randrange(0, 12)):
                size = rng.choice((0, 1, 7, 8, 9, rng.randrange(0, prod.max_record + 1)))
                data = rng.randbytes(size)
                if rng.random() < 0.5 and size + 16 <= prod.max_record:  # a real event
                    data = events.pack([events.RESPONSE_BODY, size, data, True])
                prod.try_write(data, type=rng.choice((1, 1, 1, 2)))
            if rng.random() < 0.5:
                raw.read(cons)
            scribble(rng, mem, capacity)
            fuzz_read(cons, outcomes, use_events=rng.random() < 0.5)
            try:  # write until full: only then does the producer re-read the head
                for _ in range(40):
                    if not prod.try_write(rng.randbytes(rng.randrange(0, 400))):
                        break
            except RingCorrupt:
                outcomes["producer_corrupt"] += 1
            try:  # a fresh reader attaching to the scribbled ring
                late = Consumer.attach(prod.spec().dup())
            except (RingCorrupt, RingMismatch):
                outcomes["mismatch"] += 1
            else:
                fuzz_read(late, outcomes, use_events=rng.random() < 0.5)
                late.close()
        finally:
            cons.close()
    say(outcomes)
    return 0


def scribble(rng: random.Random, mem, capacity: int) -> None:
    what = rng.randrange(6)
    if what == 0:  # random bytes at random places in the data area
        for _ in range(rng.randrange(1, 9)):
            at = DATA + rng.randrange(capacity)
            chunk = rng.randbytes(rng.randrange(1, 17))
            mem[at:at + len(chunk)] = chunk[:DATA + capacity - at]
    elif what == 1:  # a random record header where records start
        at = DATA + rng.randrange(0, capacity, 8)
        mem[at:at + 8] = struct.pack("<II", rng.choice((
            rng.getrandbits(32), rng.randrange(capacity), 0xFFFFFFFF - rng.randrange(8))),
            rng.choice((1, 2, 0xFFFFFFFF, rng.getrandbits(32))))
    elif what in (2, 3):  # an impossible or unaligned tail / head
        at = TAIL if what == 2 else HEAD
        old = struct.unpack_from("<Q", mem, at)[0]
        new = rng.choice((rng.getrandbits(64), old + rng.randrange(1, 2 * capacity),
                          old - rng.randrange(1, 2 * capacity), old + rng.randrange(1, 8),
                          (1 << 64) - rng.randrange(1, 4096)))
        struct.pack_into("<Q", mem, at, new % (1 << 64))
    elif what == 4:  # the whole data area
        mem[DATA:DATA + capacity] = rng.randbytes(capacity)
    else:  # header meta: magic, version, capacity, max_record, generation
        at = rng.choice((0, 8, 12, 16, 24, 32))
        mem[at:at + 4] = rng.randbytes(4)


def fuzz_read(cons: Consumer, outcomes: dict, use_events: bool = False) -> None:
    if use_events:
        return fuzz_read_events(cons, outcomes)
    data = ffi.buffer(lib.ring_data(cons.handle), cons.capacity)
    for _ in range(20):  # bounded: a hang would be a bug, and this loop ends regardless
        before = cons.handle.read_pos
        try:
            records = raw.read_flat(cons)
        except RingCorrupt:
            outcomes["corrupt"] += 1
            return
        assert 0 <= cons.handle.read_pos - before <= cons.capacity
        if not records:
            return
        # Every record handed out lies inside the data area: check the raw (type, len,
        # offset) triples, since a slice out of range would clamp silently.
        for type, length, offset in records:
            assert offset % 8 == 0 and offset + length <= cons.capacity, (offset, length)
            payload = data[offset:offset + length]  # touch every byte handed out
            outcomes["records"] += 1
            try:
                events.unpack(payload)
            except events.ProtocolError:
                pass
        cons.release()


def fuzz_read_events(cons: Consumer, outcomes: dict) -> None:
    """read_events over garbage: events, RingCorrupt or ProtocolError, nothing else."""
    for _ in range(20):  # bounded, as fuzz_read
        before = cons.handle.read_pos
        try:
            evs = cons.read_events()
        except RingCorrupt:
            outcomes["corrupt"] += 1
            return
        except events.ProtocolError as exc:
            assert exc.sid is None
            outcomes["undecodable"] += 1
            return
        assert 0 <= cons.handle.read_pos - before <= cons.capacity
        if not evs:
            return
        for ev in evs:
            assert type(ev) is list and len(ev) >= 2 and type(ev[0]) is int
        outcomes["events"] += len(evs)


MODES = {"duplex": mode_duplex, "acker": mode_acker, "sink": mode_sink, "source": mode_source,
         "idle": mode_idle}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "fuzz":
        return mode_fuzz(args)
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode}")
    return uvloop.run(MODES[mode](args))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RecordTooBig as exc:
        raise SystemExit(f"record too big: {exc}") from None
