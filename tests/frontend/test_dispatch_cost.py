"""The dispatch estimator: learned route costs and a link's expected work ahead."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sidecar.frontend import cost
from sidecar.frontend.cost import DEFAULT_COST, MAX_SAMPLE, RouteCosts
from sidecar.frontend.link import MAX_STALL, WorkerLink


def test_unknown_route_costs_the_default_and_first_sample_is_taken_as_is():
    c = RouteCosts()
    assert c.expect(("GET", "/a")) == DEFAULT_COST
    c.learn(("GET", "/a"), 0.020)
    assert c.expect(("GET", "/a")) == pytest.approx(0.020)


def test_ewma_moves_toward_new_samples():
    c = RouteCosts()
    c.learn("k", 0.010)
    c.learn("k", 0.020)
    assert c.expect("k") == pytest.approx(0.010 + cost.ALPHA * 0.010)
    for _ in range(100):
        c.learn("k", 0.030)
    assert c.expect("k") == pytest.approx(0.030, rel=1e-3)


def test_long_streams_teach_nothing():
    c = RouteCosts()
    c.learn("sse", MAX_SAMPLE * 30)
    assert c.expect("sse") == DEFAULT_COST
    c.learn("k", 0.001)
    c.learn("k", MAX_SAMPLE + 0.5)
    assert c.expect("k") == pytest.approx(0.001)


def test_table_is_bounded_and_evicts_the_oldest():
    c = RouteCosts(size=4)
    for i in range(10):
        c.learn(i, 0.002)
    assert len(c.table) == 4
    assert set(c.table) == {6, 7, 8, 9}
    assert c.expect(0) == DEFAULT_COST


class FakeLoop:
    def __init__(self):
        self.now = 100.0

    def time(self):
        return self.now


class FakeBatcher:
    def add(self, link):
        pass


def _stream(path: bytes):
    req = SimpleNamespace(method=b"GET", raw_path=path, upgrade=None)
    return SimpleNamespace(req=req)


@pytest.fixture
def links():
    loop, costs = FakeLoop(), RouteCosts()
    made = []
    for i in range(2):
        link = WorkerLink(i, 1 << 16, lambda *a: None, FakeBatcher(), costs)
        link._loop = loop
        made.append(link)
    yield loop, costs, made
    for link in made:
        link.close()


def _done(link, loop, sid):
    stream = link.streams.pop(sid)
    link._stream_done(stream, loop.now)


def test_a_worker_just_handed_a_known_slow_request_looks_busy(links):
    loop, costs, (busy, idle) = links
    costs.learn((b"GET", b"/cpu", None), 0.020)
    costs.learn((b"GET", b"/fast", None), 0.0001)
    busy.open_stream(1, _stream(b"/cpu"), [0])
    idle.open_stream(2, _stream(b"/fast"), [0])
    loop.now += 0.0005   # half a millisecond: no silence penalty worth speaking of yet
    assert idle.load(loop.now) < busy.load(loop.now)
    assert busy.load(loop.now) == pytest.approx(0.020, abs=0.002)


def test_an_idle_worker_handed_a_stream_does_not_look_stalled(links):
    loop, costs, (a, b) = links
    a.last_progress = b.last_progress = 0.0   # both silent since long ago
    a.open_stream(1, _stream(b"/x"), [0])
    loop.now += 0.0001
    assert a.load(loop.now) < MAX_STALL / 2


def test_stall_counts_when_a_worker_overruns_what_was_learned(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/x", None), 0.001)
    a.open_stream(1, _stream(b"/x"), [0])
    loop.now += 0.010    # 10 ms silent with 1 ms of expected work
    assert a.load(loop.now) >= 0.010
    loop.now += 1.0
    assert a.load(loop.now) <= MAX_STALL + 0.001


def test_ending_streams_give_back_their_work_and_teach(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/cpu", None), 0.020)
    a.open_stream(1, _stream(b"/cpu"), [0])
    a.open_stream(2, _stream(b"/cpu"), [0])
    assert a.work_end == pytest.approx(loop.now + 0.040)
    loop.now += 0.005
    _done(a, loop, 1)            # ended after 5 ms: 15 ms of its expected work unused
    assert a.work_end == pytest.approx(loop.now - 0.005 + 0.040 - 0.015)
    assert costs.expect((b"GET", b"/cpu", None)) < 0.020
    _done(a, loop, 2)
    assert a.work_end == loop.now
    assert a.load(loop.now) == 0.0


def test_a_stream_queued_behind_a_slow_one_is_not_learned_as_slow(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/cpu", None), 0.020)
    costs.learn((b"GET", b"/fast", None), 0.0001)
    a.open_stream(1, _stream(b"/cpu"), [0])
    a.open_stream(2, _stream(b"/fast"), [0])   # misrouted: waits for /cpu
    loop.now += 0.020
    _done(a, loop, 1)
    loop.now += 0.0002
    _done(a, loop, 2)                          # 20.2 ms after its dispatch, 0.2 ms of work
    assert costs.expect((b"GET", b"/fast", None)) < 0.001
