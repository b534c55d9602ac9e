"""Decoded batches: Consumer.read_events / start_reading_events, Producer.try_write_events,
the C framing checks under them (native/frame.c), and the adaptive spin (SpinPolicy).

read_events must give exactly what ``events.unpack`` of each EVENT record gives, in order,
and be just as strict: a record that is not exactly one ``[int, int, ...]`` msgpack value is
a ProtocolError even when the bytes of neighbouring records would decode together.
"""
from __future__ import annotations

import asyncio
import os
import random

import msgpack
import pytest

from sidecar import events
from sidecar.ring import GATHER_BYTES, Consumer, Producer, RecordTooBig, SpinPolicy, ffi, lib

from .test_fuzz import random_event, random_value


def reference(payloads: list[bytes]) -> tuple[list, bool]:
    """What events.unpack of each record gives: the events up to the first bad record, and
    whether there was one."""
    out = []
    for p in payloads:
        try:
            out.append(events.unpack(p))
        except events.ProtocolError:
            return out, True
    return out, False


def drain(cons: Consumer) -> tuple[list, bool]:
    """Every event read_events hands out until the ring is empty or it raises."""
    got = []
    for _ in range(100_000):
        try:
            evs = cons.read_events()
        except events.ProtocolError as exc:
            assert exc.sid is None
            return got, True
        if not evs:
            return got, False
        got.extend(evs)
    raise AssertionError("read_events never ran dry")


def body(sid: int, n: int) -> list:
    return [events.RESPONSE_BODY, sid, bytes([sid % 251]) * n, True]


# --- the framing checks ----------------------------------------------------------------------


def value_len(data: bytes) -> int:
    return lib.frame_value_len(data, len(data))


def is_event(data: bytes) -> bool:
    return bool(lib.frame_is_event(data, len(data)))


@pytest.mark.parametrize("value", [
    None, True, False, 0, 127, 128, -1, -32, -33, 2**16, 2**32, 2**64 - 1, -2**63, 1.5,
    float("inf"), "", "a" * 31, "b" * 32, "c" * 300, "d" * 70_000, b"", b"x" * 255,
    b"y" * 256, b"z" * 70_000, [], list(range(15)), list(range(16)), list(range(70_000)), {},
    {"k": [1, {"n": None}]}, {str(i): i for i in range(16)}, {str(i): i for i in range(70_000)},
    msgpack.ExtType(5, b""), msgpack.ExtType(5, b"1"), msgpack.ExtType(5, b"12"),
    msgpack.ExtType(5, b"1234"), msgpack.ExtType(5, b"12345678"), msgpack.ExtType(5, b"x" * 16),
    msgpack.ExtType(5, b"x" * 17), msgpack.ExtType(5, b"x" * 300),
    msgpack.ExtType(5, b"x" * 70_000), [[[[[[[[[[[]]]]]]]]]]],
])
def test_value_len_matches_msgpack_for_every_format(value):
    data = msgpack.packb(value, use_bin_type=True)
    assert value_len(data) == len(data)
    assert value_len(data + b"\x00\x01") == len(data)  # what follows is not part of it
    for cut in {0, 1, len(data) // 2, len(data) - 1}:
        if cut < len(data):
            assert value_len(data[:cut]) == 0  # truncated: no value


def test_value_len_agrees_with_msgpack_on_random_bytes():
    """On garbage, frame_value_len finds a value exactly where msgpack decodes one, of the
    same length (or msgpack fails on something framing does not judge: UTF-8, depth...)."""
    rng = random.Random(5)
    agreed = 0
    for i in range(20_000):
        if i % 2:
            data = rng.randbytes(rng.randrange(1, 24))
        else:  # mutated real values reach the deeper formats
            data = bytearray(msgpack.packb(random_value(rng), use_bin_type=True))
            data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[:rng.randrange(1, len(data) + 1)])
        n = value_len(data)
        up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data))
        up.feed(data)
        try:
            up.unpack()
        except msgpack.OutOfData:
            assert n == 0, data
            continue
        except (ValueError, msgpack.StackError, msgpack.FormatError, TypeError) as exc:
            if isinstance(exc, msgpack.FormatError) or b"\xc1" == data[:1]:
                assert n == 0, data
            continue  # bad UTF-8, a float key ...: framing holds, decoding does not
        assert n == up.tell(), data
        agreed += 1
    assert agreed > 5000


def test_is_event_is_the_head_check_of_events_unpack():
    rng = random.Random(9)
    for _ in range(20_000):
        data = events.pack(random_event(rng)) if rng.random() < 0.7 else \
            msgpack.packb(random_value(rng), use_bin_type=True)
        try:
            events.unpack(data)
            ok = True
        except events.ProtocolError:
            ok = False
        if ok:
            assert is_event(data), data
        elif is_event(data):  # framing fine, decoding not (UTF-8 ...): unpack is stricter
            with pytest.raises((ValueError, TypeError)):
                msgpack.unpackb(data)
    for bad in (b"\x92\x01", b"\x92\x01\x02\x03", b"\x91\x01", b"\x92\xc3\x01", b"\x92\x01\xa1a",
                b"\x01", b"\xc1", b""):
        assert not is_event(bad), bad


def test_split_events_gives_the_records_of_packing_one_by_one():
    evs = [body(i, i * 37 % 300) for i in range(300)]
    for n in (1, 15, 16, 300):
        data = events.pack(evs[:n])
        lens = ffi.new("uint32_t[]", n)
        header = ffi.new("uint32_t *")
        assert lib.frame_split_events(data, len(data), lens, n, header) == n
        at, parts = header[0], []
        for i in range(n):
            parts.append(data[at:at + lens[i]])
            at += lens[i]
        assert parts == [events.pack(ev) for ev in evs[:n]]
        assert lib.frame_split_events(data, len(data), lens, n - 1, header) == -1  # max
    lens, header = ffi.new("uint32_t[]", 4), ffi.new("uint32_t *")
    for bad in (events.pack([[1, 2], 3]), events.pack({"a": 1}), events.pack([[1, 2]]) + b"\x00",
                events.pack([[1, 2]])[:-1], b""):
        assert lib.frame_split_events(bad, len(bad), lens, 4, header) == -1


# --- read_events -----------------------------------------------------------------------------


def test_read_events_gives_what_unpack_of_each_record_gives(make_pair):
    """Random sizes across many wraps, mixed with other record types and with records too
    large to copy (decoded in place), written by every producer API."""
    prod, cons = make_pair(capacity=1 << 22)  # max_record 512 KiB > GATHER_BYTES
    rng = random.Random(3)
    sent, got, seq = [], [], 0
    for _ in range(300):
        batch = []
        for _ in range(rng.randrange(1, 20)):
            r = rng.random()
            size = (rng.randrange(0, 200) if r < 0.8 else rng.randrange(200, 8000) if r < 0.97
                    else rng.randrange(GATHER_BYTES - 64, GATHER_BYTES + 2000))
            batch.append(body(seq, size))
            seq += 1
        how = rng.randrange(3)
        if how == 0:
            assert prod.try_write_events(batch) == len(batch)
        elif how == 1:
            assert prod.try_write_many([events.pack(ev) for ev in batch]) == len(batch)
        else:
            for ev in batch:
                assert prod.try_write(events.pack(ev))
                if rng.random() < 0.2:
                    assert prod.try_write(b"not an event", type=7)  # skipped
        sent.extend(batch)
        more, bad = drain(cons)
        assert not bad
        got.extend(more)
        assert prod.used() == 0  # everything read was given back
    assert got == sent
    s = prod.stats()
    assert s["records_read"] == s["records_written"]


def test_read_events_releases_the_space_before_decoding(make_pair):
    prod, cons = make_pair(capacity=1 << 16)
    assert prod.try_write_events([body(i, 100) for i in range(50)]) == 50
    evs = cons.read_events()
    assert len(evs) == 50 and prod.used() == 0


def test_read_events_batches_are_bounded_by_batch_and_gather_bytes(make_pair):
    prod, cons = make_pair(capacity=1 << 20, batch=16)
    assert prod.try_write_events([body(i, 10) for i in range(40)]) == 40
    assert [len(cons.read_events()) for _ in range(4)] == [16, 16, 8, 0]
    prod, cons = make_pair(capacity=1 << 20)  # batch 256: the bytes bound the batch
    per = len(events.pack(body(0, 1000)))
    assert prod.try_write_events([body(i, 1000) for i in range(100)]) == 100
    assert GATHER_BYTES // per < 100
    assert len(cons.read_events()) == GATHER_BYTES // per


def split_across_records(ev: list) -> list[bytes]:
    data = events.pack(ev)
    return [data[:len(data) // 2], data[len(data) // 2:]]


@pytest.mark.parametrize("bad", [
    [b"\xc1"],  # never used
    [b""],  # empty record
    [events.pack([1, 2]) + events.pack([1, 3])],  # two values in one record
    [events.pack([1, 2])[:-1]],  # truncated
    split_across_records(body(5, 40)),  # one value split over two records
    [events.pack([1, 2, "x"])[:-2] + b"\xa1\xff"],  # bad UTF-8: framing fine, decoding not
    [events.pack(["1", 2])], [events.pack([1])], [events.pack({"a": 1})],  # not [int, int, ...]
    [b"\x93\x01\x02" + b"\x91" * 5000 + b"\xc0"],  # framing fine, deeper than msgpack allows
])
def test_a_bad_record_is_a_protocol_error_after_the_events_before_it(make_pair, bad):
    prod, cons = make_pair(capacity=1 << 16)
    good = [body(i, 20) for i in range(5)]
    for ev in good:
        assert prod.try_write(events.pack(ev))
    for part in bad:
        assert prod.try_write(part)
    assert prod.try_write(events.pack(body(9, 20)))  # after the bad one: never delivered
    got, failed = drain(cons)
    assert (got, failed) == (good, True)
    with pytest.raises(events.ProtocolError):  # sticky
        cons.read_events()


def test_read_events_is_as_strict_as_unpack_on_random_records(make_pair):
    """Batches of valid, mutated and random records: read_events delivers exactly the events
    of the reference (events.unpack per record) up to the first bad one, then fails."""
    rng = random.Random(17)
    valid = [body(1, 30), [events.HELLO, 0, 1, 2, 3], [events.APP_DONE, 4, None],
             [events.HTTP_REQUEST, 1, "GET", "http", "/p", b"/p", b"", [[b"h", b"v"]],
              ["127.0.0.1", 5], None, "1.1", "", b"", False]]
    failures = 0
    for trial in range(400):
        prod = Producer.create(1 << 14)
        cons = Consumer.attach(prod.spec().dup(), batch=rng.choice((1, 4, 256)))
        payloads = []
        for _ in range(rng.randrange(1, 30)):
            r = rng.random()
            if r < 0.95:
                data = events.pack(rng.choice(valid) if rng.random() < 0.5
                                   else random_event(rng))
            elif r < 0.98:
                data = bytearray(events.pack(rng.choice(valid)))
                data[rng.randrange(len(data))] = rng.randrange(256)
                data = bytes(data)
            else:
                data = rng.randbytes(rng.randrange(0, 12))
            if not prod.try_write(data):
                break
            payloads.append(data)
        want = reference(payloads)
        try:
            got, failed = drain(cons)
            # compared packed: random values hold NaN, which is not equal to itself
            assert (events.pack(got), failed) == (events.pack(want[0]), want[1]), payloads
        finally:
            cons.close()
            prod.close()
        failures += want[1]
    assert 40 < failures < 360  # both outcomes happened often


def test_start_reading_events_delivers_then_reports_the_bad_record(make_pair, run):
    prod, cons = make_pair(capacity=1 << 16)

    async def main():
        loop = asyncio.get_running_loop()
        got, failed = [], loop.create_future()
        cons.start_reading_events(loop, got.extend, failed.set_result)
        for i in range(100):
            assert prod.try_write_events([body(i, 10)])
            if i % 10 == 0:
                await asyncio.sleep(0)
        assert prod.try_write(b"\x92\x01")  # truncated
        exc = await asyncio.wait_for(failed, 10)
        return got, exc

    got, exc = run(main())
    assert got == [body(i, 10) for i in range(100)]
    assert isinstance(exc, events.ProtocolError) and exc.sid is None
    assert cons._reading is None  # stopped


def test_try_write_events_fills_the_ring_then_returns_what_fit(make_pair):
    prod, cons = make_pair(capacity=4096)
    evs = [body(i, 100) for i in range(100)]
    n = prod.try_write_events(evs)
    assert 0 < n < 100
    assert prod.try_write_events(evs[n:]) == 0
    assert drain(cons) == (evs[:n], False)
    assert prod.try_write_events([]) == 0
    with pytest.raises(ValueError):
        prod.try_write_events([[1, 2], "not an event"])
    assert prod.used() == 0  # nothing of a refused list was written
    big = body(0, prod.max_record)
    with pytest.raises(RecordTooBig):
        prod.try_write_events([big])
    assert prod.try_write_events([body(1, 10), big]) == 1  # what comes before it goes
    assert drain(cons) == ([body(1, 10)], False)


def test_try_write_events_takes_events_packed_beforehand(make_pair):
    """bytes holding one packed event go in their place as that record (the front-end's
    HTTP_REQUEST records, h1_pack_request): the same records as the lists would give."""
    prod, cons = make_pair(capacity=4096)
    evs = [body(i, 100) for i in range(60)]
    mixed = [events.pack(ev) if i % 3 else ev for i, ev in enumerate(evs)]
    n = prod.try_write_events(mixed)
    assert 0 < n < 60   # the ring fills part way, in order
    assert drain(cons) == (evs[:n], False)
    assert prod.try_write_events(mixed[n:]) == 60 - n
    assert drain(cons) == (evs[n:], False)
    for bad in (b"\x92\x01", events.pack("text"), events.pack([1, 2]) * 2):
        with pytest.raises(ValueError):
            prod.try_write_events([[1, 2], bad])
    assert prod.used() == 0  # nothing of a refused list was written


def test_try_write_events_rings_a_sleeping_consumer(make_pair):
    prod, cons = make_pair(capacity=4096)
    assert prod.try_write_events([body(0, 10)]) == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(cons.data_bell.fd)  # the consumer was awake: no doorbell
    assert drain(cons) == ([body(0, 10)], False)
    assert cons.prepare_sleep()
    assert prod.try_write_events([body(1, 10), body(2, 10)]) == 2
    assert os.eventfd_read(cons.data_bell.fd) == 1


# --- the adaptive spin -----------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self, dt: float = 1e-6) -> float:
        self.t += dt
        return self.t


def spin_until_done(policy: SpinPolicy, clock: Clock, found_after: float | None) -> bool:
    """One empty ring: poll every microsecond; records come after ``found_after`` s (None:
    never).  True if the policy spun at all."""
    start = clock.t
    if not policy.idle(clock()):
        return False
    while True:
        now = clock()
        if found_after is not None and now - start >= found_after:
            policy.found(now)
            return True
        if not policy.idle(now):
            return True


def test_spin_keeps_spinning_while_it_pays():
    policy, clock = SpinPolicy(20e-6), Clock()
    for _ in range(1000):
        assert spin_until_done(policy, clock, 5e-6)
    assert policy.hits == 1000 and policy.misses == 0


def test_spin_backs_off_when_nothing_comes_and_recovers_on_a_hit():
    policy, clock = SpinPolicy(20e-6), Clock()
    spun = sum(spin_until_done(policy, clock, None) for _ in range(10_000))
    # a few tolerated misses, then one spin every MAX_SKIP empty rings at most
    assert spun < SpinPolicy.TOLERATED_MISSES + 10_000 / SpinPolicy.MAX_SKIP + 10
    assert policy.hits == 0 and policy.misses == spun
    while not spin_until_done(policy, clock, 5e-6):
        pass
    assert policy.hits == 1
    assert all(spin_until_done(policy, clock, 5e-6) for _ in range(100))


def test_spin_that_loses_the_cpu_counts_as_a_miss():
    policy, clock = SpinPolicy(20e-6), Clock()
    for _ in range(SpinPolicy.TOLERATED_MISSES):
        assert policy.idle(clock())
        clock(5e-3)  # descheduled for 5 ms: someone else wanted this CPU
        policy.found(clock())
    assert policy.hits == 0 and policy.misses == SpinPolicy.TOLERATED_MISSES
    assert not policy.idle(clock())  # backing off
