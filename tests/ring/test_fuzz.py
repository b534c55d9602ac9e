"""Garbage in: ring memory scribbled by a broken or hostile peer, and random event bytes.

The ring reader must answer RingCorrupt (or hand out records that lie inside the ring), and
never crash or hang; the event decoder must answer ProtocolError and nothing else.  The ring
scribbling runs in a child process (tests/ring/peer.py, mode ``fuzz``) so that a crash would
show up as that process's death rather than take pytest down with it.
"""
from __future__ import annotations

import json
import math
import random
import struct

import msgpack
import pytest

from sidecar import events
from sidecar.ring import Producer, RingCorrupt


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scribbled_ring_gives_corrupt_or_records_never_a_crash(spawn, seed):
    iterations = 5000
    peer = spawn("fuzz", {"seed": seed, "iterations": iterations})
    outcomes = json.loads(peer.line(120))
    assert peer.proc.wait(30) == 0, peer.stderr()
    # every kind of outcome happened, so the fuzzer reached all the paths it aims at
    assert outcomes["records"] > iterations, outcomes
    assert outcomes["corrupt"] > iterations // 10, outcomes
    assert outcomes["mismatch"] > iterations // 50, outcomes
    assert outcomes["producer_corrupt"] > iterations // 50, outcomes
    assert outcomes["events"] > iterations // 20, outcomes  # read_events: decoded ...
    assert outcomes["undecodable"] > iterations // 10, outcomes  # ... or ProtocolError


def test_producer_refuses_a_ring_with_an_unaligned_tail():
    prod = Producer.create(4096)
    try:
        for at in (128, 256):  # tail and head: an empty ring 3 bytes before the end
            struct.pack_into("<Q", prod.segment.map, at, 4093)
        try:
            late = Producer.attach(prod.spec().dup())
        except RingCorrupt:
            return
        try:
            late.try_write(b"x" * 20)
        except RingCorrupt:
            return
        finally:
            late.close()
        raise AssertionError("wrote into a ring whose tail is not 8-byte aligned")
    finally:
        prod.close()


# --- events: random bytes and random structures ---------------------------------------------


def random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.45:
        return rng.choice((
            None, True, False, rng.randrange(-2**63, 2**64), rng.randrange(-40, 300), 0,
            rng.random() * 1e9, math.inf, math.nan, "", "é" * rng.randrange(5),
            rng.randbytes(rng.randrange(8)), msgpack.ExtType(rng.randrange(128), b"x")))
    if r < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if r < 0.9:
        return {rng.choice(("a", "b", "c")): random_value(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    return rng.randbytes(rng.randrange(40))


def random_event(rng: random.Random) -> list:
    """Mostly well-formed heads ([known kind, sid, ...]) with fields of random types and
    counts, so that check() is exercised past its first test."""
    kind = rng.choice(sorted(events.TO_WORKER | events.TO_HOST) + [0, 9, 99, -1])
    size = rng.choice((0, 1, 2, 3, 4, 10, 12, 14, 15))
    ev = [kind, rng.randrange(0, 2**63)] + [random_value(rng) for _ in range(size)]
    if kind in (events.HTTP_REQUEST, events.WS_CONNECT) and rng.random() < 0.5:
        # a valid request with one field swapped for something random
        ev = [events.HTTP_REQUEST, 1, "GET", "http", "/", b"/", b"", [[b"a", b"b"]],
              ["h", 1], ["s", None], "1.1", "", b"", False]
        ev[rng.randrange(2, len(ev))] = random_value(rng)
    return ev


def decode_and_check(data) -> None:
    """What a ring reader does with one record: only ProtocolError may come out."""
    try:
        ev = events.unpack(data)
    except events.ProtocolError:
        return
    assert type(ev) is list and len(ev) >= 2
    try:
        events.check(ev)
    except events.ProtocolError:
        pass


def test_pathsend_checks_its_path_and_length():
    events.check([events.RESPONSE_PATHSEND, 1, "/srv/f", None])
    events.check([events.RESPONSE_PATHSEND, 1, "/srv/f", 0])
    for ev in ([events.RESPONSE_PATHSEND, 1, "srv/f", None],     # relative
               [events.RESPONSE_PATHSEND, 1, "/srv/\0f", None],  # NUL: no such path
               [events.RESPONSE_PATHSEND, 1, "/srv/f", -1],
               [events.RESPONSE_PATHSEND, 1, b"/srv/f", None],
               [events.RESPONSE_PATHSEND, 1, "/srv/f"]):
        with pytest.raises(events.ProtocolError):
            events.check(ev)


def test_unpack_random_bytes_raises_only_protocol_error():
    rng = random.Random(7)
    for _ in range(20_000):
        decode_and_check(rng.randbytes(rng.randrange(0, 64)))
    for prefix in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                   b"\x91" * 10_000, b"\xc1", b"\x92\x01"):  # huge claims, deep nesting ...
        decode_and_check(prefix)
        decode_and_check(memoryview(prefix + b"\x00" * 16))


def test_check_random_structures_raises_only_protocol_error():
    rng = random.Random(11)
    for _ in range(20_000):
        decode_and_check(events.pack(random_event(rng)))


def test_mutated_valid_events_raise_only_protocol_error():
    rng = random.Random(13)
    valid = [
        [events.HTTP_REQUEST, 1, "GET", "http", "/p", b"/p", b"q=1", [[b"host", b"x"]],
         ["127.0.0.1", 5], ["/run/s.sock", None], "1.1", "", b"body", True],
        [events.WS_CONNECT, 2, "ws", "/", b"/", b"", [], None, None, "1.1", "", ["chat"]],
        [events.RESPONSE_START, 3, 200, [[b"content-type", b"text/plain"]], False],
        [events.RESPONSE_BODY, 3, b"x" * 100, True],
        [events.HELLO, 0, 1, 1234, 262144],
        [events.WS_CLOSE, 4, 1000, "bye"],
        [events.RESPONSE_PATHSEND, 5, "/srv/f.bin", 12],
    ]
    for ev in valid:
        events.check(events.unpack(events.pack(ev)))  # the originals are fine
    for _ in range(20_000):
        data = bytearray(events.pack(rng.choice(valid)))
        for _ in range(rng.randrange(1, 4)):
            if not data:
                break
            op, at = rng.random(), rng.randrange(len(data))
            if op < 0.5:
                data[at] = rng.randrange(256)
            elif op < 0.75:
                del data[at:]
            else:
                data[at:at] = rng.randbytes(rng.randrange(1, 4))
        decode_and_check(bytes(data))


def test_check_all_in_c_is_its_python_twin():
    """sidecar._h1api.check_all (the front-end's check of a worker's batch, native/h1_api.c)
    says True or False exactly where events.check_all does, on random and mutated batches
    of decoded events -- and True only where events.check accepts every event."""
    from sidecar._h1api import check_all as c_check_all
    rng = random.Random(17)
    usual = [[events.RESPONSE_START, 3, 200, [[b"content-type", b"text/plain"]], False],
             [events.RESPONSE_BODY, 3, b"hello", False], [events.APP_DONE, 3, None],
             [events.APP_DONE, 4, "boom"], [events.HTTP_BODY, 5, b"", True],
             [events.WS_SEND, 6, "text", False], [events.WS_RECEIVE, 6, b"bin", True]]
    assert c_check_all(usual) is True and events.check_all(usual) is True
    agreed = {True: 0, False: 0}
    for n in range(6000):
        batch = [list(rng.choice(usual)) for _ in range(rng.randrange(1, 5))]
        if n % 2:   # one field of one event swapped for something random, or a random event
            ev = rng.choice(batch)
            if n % 3:
                ev[rng.randrange(2, len(ev))] = random_value(rng)
            else:
                batch[rng.randrange(len(batch))] = random_event(rng)
        batch = [events.unpack(events.pack(ev)) for ev in batch]   # as the ring gives them
        got = c_check_all(batch)
        assert got == events.check_all(batch), batch
        agreed[got] += 1
        if got:
            for ev in batch:
                events.check(ev)
    assert agreed[True] > 2000 and agreed[False] > 1000, agreed
