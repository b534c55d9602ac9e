"""The ring link both ends use (sidecar/ring_link.py), over a real ring pair in one process:
what a loop iteration queues is published at its end, in order, or earlier every
EARLY_RECORDS; a full ring keeps a backlog in order and makes ``push`` wait; large records
go out at once; a closed link writes nothing and leaves no waiter hanging."""
from __future__ import annotations

import asyncio

import pytest

from sidecar import events
from sidecar.ring import Consumer, Producer
from sidecar.ring_link import EAGER_BYTES, EARLY_RECORDS, Batcher, RingLink

CAPACITY = 1 << 18   # max_record 32 KiB: above EAGER_BYTES


class Link(RingLink):
    __slots__ = ("got", "errors")

    def __init__(self, producer, consumer, batcher=None):
        super().__init__(producer, consumer, batcher)
        self.got: list = []
        self.errors: list = []

    def _on_records(self, evs):
        self.got.extend(evs)

    def _on_ring_error(self, exc):
        self.errors.append(exc)

    _write_failed = _on_ring_error


def pair(batcher=None):
    """Two links joined by two rings: ``a`` writes what ``b`` reads, and back."""
    ab, ba = Producer.create(CAPACITY), Producer.create(CAPACITY)
    a = Link(ab, Consumer.attach(ba.spec().dup()), batcher)
    b = Link(ba, Consumer.attach(ab.spec().dup()))
    return a, b


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _turns(n=3):
    for _ in range(n):
        await asyncio.sleep(0)


def ev(sid, body=b""):
    return [events.HTTP_BODY, sid, body, False]


def test_an_iteration_is_published_at_its_end_in_order():
    async def main():
        a, b = pair()
        a.start(asyncio.get_running_loop())
        b.start(asyncio.get_running_loop())
        records = a.producer.stats()["records_written"]
        a.send(ev(1))
        a.send(events.pack(ev(2)))       # packed already: its own record, in its place
        assert a.push(ev(3, b"x"), 64) is None
        assert a.producer.stats()["records_written"] == records   # nothing until the end
        while len(b.got) < 3:
            await asyncio.sleep(0.001)
        assert [e[1] for e in b.got] == [1, 2, 3]
        assert a.producer.stats()["records_written"] == records + 3
        a.close()
        b.close()
    run(main())


def test_early_records_are_published_before_the_iteration_ends():
    async def main():
        a, b = pair()
        a.start(asyncio.get_running_loop())
        before = a.producer.stats()["records_written"]
        for sid in range(1, EARLY_RECORDS + 1):
            a.send(ev(sid))
        assert a.producer.stats()["records_written"] == before + EARLY_RECORDS
        a.send(ev(99))
        a.publish()                       # the owner's "now" (a worker's stream ended)
        assert a.producer.stats()["records_written"] == before + EARLY_RECORDS + 1
        assert b.consumer.read_events()[-1][1] == 99
        a.close()
        b.close()
    run(main())


def test_a_shared_batcher_flushes_each_link_once_an_iteration():
    async def main():
        loop = asyncio.get_running_loop()
        batcher = Batcher(loop)
        a, b = pair(batcher)
        c, d = pair(batcher)
        for link in (a, c):
            link.start(loop)
        a.send(ev(1))
        a.send(ev(2))
        c.send(ev(3))
        assert batcher._dirty == [a, c]   # each link once, however many records
        await _turns()
        assert batcher._dirty == [] and not a.pending and not c.pending
        assert [e[1] for e in b.consumer.read_events()] == [1, 2]
        assert [e[1] for e in d.consumer.read_events()] == [3]
        for link in (a, b, c, d):
            link.close()
    run(main())


def test_a_full_ring_keeps_a_backlog_in_order_and_push_waits():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair()
        a.start(loop)
        body = b"y" * 4000
        futures = []
        sid = 0
        while not a.backlog:               # fill the ring, then some
            sid += 1
            fut = a.push(ev(sid, body), len(body) + events.FRAMING)
            if fut is not None:
                futures.append(fut)
            await _turns(1)
        for _ in range(5):   # behind the backlog: each push waits its turn, sends keep theirs
            sid += 1
            futures.append(a.push(ev(sid, body), len(body) + events.FRAMING))
            sid += 1
            a.send(ev(sid))
        a.send(ev(sid + 1))
        assert all(f is not None and not f.done() for f in futures[-5:])
        b.start(loop)                      # the reader drains; the space doorbell wakes a
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        while len(b.got) < sid + 1:
            await asyncio.sleep(0.001)
        assert [e[1] for e in b.got] == list(range(1, sid + 2))
        assert not a.backlog and await a.drain(1)
        a.close()
        b.close()
    run(main())


def test_a_large_record_is_written_at_once():
    async def main():
        a, b = pair()
        a.start(asyncio.get_running_loop())
        a.send(ev(1))
        big = b"z" * EAGER_BYTES
        assert a.push(ev(2, big), len(big) + events.FRAMING) is None
        # written now, with what was queued before it, in order (a record above GATHER_BYTES
        # comes in a read of its own)
        got = []
        while evs := b.consumer.read_events():
            got += [e[1] for e in evs]
        assert got == [1, 2]
        with pytest.raises(ValueError, match="exceeds"):
            a.push(ev(3, b"z" * a.max_record), a.max_record + events.FRAMING)
        a.close()
        b.close()
    run(main())


def test_a_closed_link_writes_nothing_and_cancels_waiters():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair()
        a.start(loop)
        body = b"w" * 4000
        fut = None
        sid = 0
        while fut is None:
            sid += 1
            fut = a.push(ev(sid, body), len(body) + events.FRAMING)
            await _turns(1)
        a.close()
        await _turns()
        assert fut.cancelled() and not a.backlog
        a.send(ev(1000))                   # late writers (tasks an app left behind)
        assert a.push(ev(1001), 64) is None
        await _turns()
        assert all(e[1] != 1000 for e in b.consumer.read_events())
        b.close()
    run(main())


def test_set_window_sizes_chunks_and_credit():
    a, b = pair()
    a.set_window(8192)
    assert a.window == 8192 and a.chunk == events.max_chunk(a.max_record, 8192) == 8192
    assert a.credit_batch == 2048
    a.set_window(1 << 20)
    assert a.chunk == min(events.MAX_CHUNK, a.max_record - events.FRAMING)
    a.close()
    b.close()
