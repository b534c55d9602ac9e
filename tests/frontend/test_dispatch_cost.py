"""The dispatch estimator (learned route costs, a link's expected work ahead, a held event
loop) and the rule ``Dispatcher.pick`` applies to it: packing first, then least work ahead."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from sidecar.frontend import cost
from sidecar.frontend.cost import DEFAULT_COST, MAX_SAMPLE, RouteCosts, route_of
from sidecar.frontend.link import PACK_BUDGET, PACK_ROUTE, PACK_STREAMS, PULSE, HELD, WorkerLink
from sidecar.frontend.dispatch import Dispatcher
from sidecar.ring import Producer


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
    return SimpleNamespace(req=req, on_worker_lost=lambda: None)


def _open(link, sid: int, path: bytes):
    """What Stream.dispatch does: the stream keeps its route, cost and dispatch time."""
    stream = _stream(path)
    stream.route = route_of(stream.req)
    stream.cost, stream.t_dispatch = link.open_stream(sid, stream, [0, sid], stream.route)
    return stream


@pytest.fixture
def links():
    loop, costs = FakeLoop(), RouteCosts()
    made = []
    for i in range(2):
        link = WorkerLink(i, 1 << 16, lambda *a: None, FakeBatcher(), costs)
        link.loop = loop
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
    _open(busy, 1, b"/cpu")
    _open(idle, 2, b"/fast")
    loop.now += 0.0005   # half a millisecond: no silence penalty worth speaking of yet
    assert idle.load(loop.now) < busy.load(loop.now)
    assert busy.load(loop.now) == pytest.approx(0.020, abs=0.002)


def test_an_idle_worker_handed_a_stream_does_not_look_stalled(links):
    loop, costs, (a, b) = links
    a.last_progress = b.last_progress = 0.0   # both silent since long ago
    _open(a, 1, b"/x")
    loop.now += 0.0001
    assert loop.now - a.alive_at() < PULSE
    assert a.busy(loop.now) == pytest.approx(DEFAULT_COST)   # its route, not a stall


def test_a_held_loop_counts_for_as_long_as_it_has_been_held(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/x", None), 0.001)
    _open(a, 1, b"/x")
    loop.now += 0.010    # no beat for 10 ms with 1 ms of expected work
    assert a.busy(loop.now) == pytest.approx(0.010)
    loop.now += 1.0      # no cap: a loop held for a second is busy for (at least) a second
    assert a.busy(loop.now) == pytest.approx(1.010)


def test_ending_streams_give_back_their_work_and_teach(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/cpu", None), 0.020)
    _open(a, 1, b"/cpu")
    _open(a, 2, b"/cpu")
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
    _open(a, 1, b"/cpu")
    _open(a, 2, b"/fast")   # misrouted: waits for /cpu
    loop.now += 0.020
    _done(a, loop, 1)
    loop.now += 0.0002
    _done(a, loop, 2)                          # 20.2 ms after its dispatch, 0.2 ms of work
    assert costs.expect((b"GET", b"/fast", None)) < 0.001


# --- Dispatcher.pick --------------------------------------------------------------------------

def _pick(links, loop, costs, path=b"/fast"):
    pool = SimpleNamespace(links=list(links), loop=loop, costs=costs,
                           config=SimpleNamespace(limit_worker_streams=0))
    return Dispatcher.pick(pool, _stream(path))


@pytest.fixture
def fast(links):
    loop, costs, made = links
    costs.learn((b"GET", b"/fast", None), 0.00005)
    return links


def test_an_unknown_route_costs_the_packing_budget():
    # what keeps a worker just handed a route not seen yet (maybe a slow one) from being
    # packed onto: see test_a_worker_handed_a_route_not_seen_yet_...
    assert DEFAULT_COST >= PACK_BUDGET > PACK_ROUTE


def test_a_cheap_route_packs_onto_the_first_idle_worker(fast):
    loop, costs, (a, b) = fast
    assert _pick((a, b), loop, costs) is a
    assert _pick((b, a), loop, costs) is b   # the order the workers became ready in


def test_a_worker_keeping_up_with_cheap_streams_takes_more(fast):
    loop, costs, (a, b) = fast
    for sid in range(1, 41):   # 40 in flight, 2 ms of expected work: below the budget
        _open(a, sid, b"/fast")
    loop.now += 0.0001
    assert a.busy(loop.now) < PACK_BUDGET
    assert _pick((a, b), loop, costs) is a


def test_routes_not_learned_or_costly_are_spread_not_packed(fast):
    loop, costs, (a, b) = fast
    costs.learn((b"GET", b"/cpu", None), 0.020)
    _open(a, 1, b"/fast")   # a keeps up, and would take a cheap one
    assert _pick((a, b), loop, costs) is a
    # but a 20 ms request, or one of a route never seen (SSE, a WebSocket, a new one), would
    # hold up the cheap ones packed behind it: the idle worker takes it
    assert _pick((a, b), loop, costs, b"/cpu") is b
    assert _pick((a, b), loop, costs, b"/events") is b


def test_a_worker_with_more_work_ahead_than_the_budget_is_passed_over(fast):
    loop, costs, (a, b) = fast
    costs.learn((b"GET", b"/cpu", None), 0.020)
    _open(a, 1, b"/cpu")
    loop.now += 0.0001
    assert _pick((a, b), loop, costs) is b


def test_a_worker_handed_a_route_not_seen_yet_is_passed_over_until_it_is_done(fast):
    loop, costs, (a, b) = fast
    _open(a, 1, b"/new")
    for dt in (0.0, 0.001, 0.003, 0.010, 0.5):   # no beat all along: its loop is held
        loop.now += dt
        assert _pick((a, b), loop, costs) is b, dt
    _done(a, loop, 1)
    assert _pick((a, b), loop, costs) is a


def test_a_beat_just_after_a_route_not_seen_yet_does_not_make_its_worker_packable(fast):
    """The worker beat (a timer due in the turn that read the stream) just before the new
    request's app blocked its loop: that beat shows no progress on the stream."""
    loop, costs, (a, b) = fast
    t = loop.now
    _open(a, 1, b"/new")
    _beats(a, lambda: t + 0.0001)
    for dt in (0.0002, 0.002, 0.0039, 0.005, 0.008, 0.011, 0.02, 0.5):
        loop.now = t + dt
        assert _pick((a, b), loop, costs) is b, dt
    _beats(a, lambda: t + 0.5)   # its loop runs again, PULSE and more after the hand-over
    loop.now = t + 0.5001
    assert _pick((a, b), loop, costs) is a


def test_packing_holds_off_at_real_loop_times(fast):
    """busy() of a worker just handed a route not seen yet is PACK_BUDGET exactly, in theory;
    at loop times like a real monotonic clock's, float rounding made it smaller half the
    time, and the worker was packed onto."""
    loop, costs, (a, b) = fast
    for i in range(100):
        t = loop.now = 7000.0 + i * 0.0137
        _open(a, i, b"/new")
        for dt in (0.0003, 0.001, 0.0021, 0.0033):
            loop.now = t + dt
            assert _pick((a, b), loop, costs) is b, (t, dt)
        _done(a, loop, i)


def test_a_stalled_worker_is_passed_over(fast):
    loop, costs, (a, b) = fast
    _open(a, 1, b"/fast")
    loop.now += PACK_BUDGET + 0.001   # silent for longer than the budget
    assert _pick((a, b), loop, costs) is b


def test_a_worker_holding_pack_streams_streams_is_passed_over(fast):
    loop, costs, (a, b) = fast
    costs.learn((b"GET", b"/x", None), 0.0)
    for sid in range(1, PACK_STREAMS + 1):
        _open(a, sid, b"/x")
    assert a.busy(loop.now) < PACK_BUDGET
    assert _pick((a, b), loop, costs) is b


def test_when_no_worker_keeps_up_the_least_work_ahead_wins(fast):
    loop, costs, (a, b) = fast
    costs.learn((b"GET", b"/cpu", None), 0.020)
    costs.learn((b"GET", b"/slow", None), 0.050)
    _open(a, 1, b"/slow")
    _open(b, 2, b"/cpu")
    loop.now += 0.0001
    assert _pick((a, b), loop, costs) is b
    _open(b, 3, b"/cpu")
    _open(b, 4, b"/cpu")   # 60 ms ahead now
    assert _pick((a, b), loop, costs) is a


def test_ties_among_busy_workers_go_to_the_first(links):
    loop, costs, (a, b) = links
    assert _pick((a, b), loop, costs, b"/unknown") is a
    assert _pick((b, a), loop, costs, b"/unknown") is b


# --- a held event loop (issue 22) ------------------------------------------------------------

def _beats(link, when):
    """The worker behind ``link`` last beat at ``when()`` (loop time)."""
    link.to_host.peer_beat = when


def test_peer_beat_is_the_heartbeat_the_worker_writes(links):
    loop, costs, (a, b) = links
    assert a.to_host.peer_beat() == 0.0   # never beat
    worker_end = Producer.attach(a.to_host.spec().dup())
    try:
        worker_end.heartbeat()
        assert a.to_host.peer_beat() == pytest.approx(time.monotonic(), abs=0.1)
    finally:
        worker_end.close()


def test_floor_raises_a_route_and_never_lowers_it():
    c = RouteCosts(size=2)
    c.floor("cpu", 0.040)
    assert c.expect("cpu") == pytest.approx(0.040)
    c.floor("cpu", 0.010)
    assert c.expect("cpu") == pytest.approx(0.040)
    c.floor("cpu", 1.9)                  # no MAX_SAMPLE: a held loop is work, not wall time
    assert c.expect("cpu") == pytest.approx(1.9)
    c.floor("a", 0.001)
    c.floor("b", 0.001)
    assert len(c.table) == 2 and "cpu" not in c.table


def test_a_worker_whose_streams_wait_is_not_busy_for_them(fast):
    loop, costs, (a, b) = fast
    for sid in (1, 2, 3):                  # slow readers, SSE: routes not learned
        _open(a, sid, b"/events")
    loop.now += 1.0
    _beats(a, lambda: loop.now - 0.001)   # its loop runs: it beats while they wait
    assert a.busy(loop.now) == pytest.approx(0.001)
    assert _pick((a, b), loop, costs) is a   # cheap requests may be packed onto it
    _beats(a, lambda: loop.now - HELD / 2)   # late, but not held: its streams cost nothing
    assert a.busy(loop.now) == pytest.approx(HELD / 2)
    assert costs.expect((b"GET", b"/events", None)) == DEFAULT_COST
    _beats(a, lambda: loop.now - 0.050)   # now its loop is held
    assert a.busy(loop.now) == pytest.approx(0.050)
    assert _pick((a, b), loop, costs) is b


def test_a_held_loop_teaches_the_route_of_the_stream_holding_it(fast):
    loop, costs, (a, b) = fast
    _open(a, 1, b"/fast")
    loop.now += 0.0005
    _open(a, 2, b"/cpu")     # not seen yet: 4 ms, the costliest
    loop.now += 0.0005
    _open(a, 3, b"/fast")
    _beats(a, lambda: 100.0005)                    # last beat: just after /cpu came
    loop.now = 100.0005 + 2 * PULSE + 0.001
    _open(a, 4, b"/other")   # came after the loop went quiet
    loop.now = 100.040
    a.busy(loop.now)
    # /cpu has held the loop for 39.5 ms: it costs at least that, and nothing else was blamed
    assert costs.expect((b"GET", b"/cpu", None)) == pytest.approx(0.0395)
    assert costs.expect((b"GET", b"/fast", None)) < PACK_ROUTE
    assert costs.expect((b"GET", b"/other", None)) == DEFAULT_COST


def test_a_held_workers_queue_does_not_move(links):
    loop, costs, (a, b) = links
    costs.learn((b"GET", b"/x", None), 0.010)
    costs.learn((b"GET", b"/cpu", None), 0.020)
    _open(a, 1, b"/cpu")     # holds the loop from t=0 (no beat)
    loop.now += 0.020
    _open(a, 2, b"/x")       # queued behind it: 10 ms once it runs
    loop.now += 0.100
    # held for 120 ms (counted again as what is left of /cpu), and the queue as it was a
    # PULSE after the loop was last seen to run: /cpu's 20 ms and /x's 10 ms
    assert a.busy(loop.now) == pytest.approx(0.120 + 0.020 + 0.010 - PULSE)


def test_heavy_requests_20ms_apart_go_two_to_each_worker(fast):
    """Issue 22 in miniature: four requests of a route not seen yet, each holding its
    worker's loop for 2 s, arrive 20 ms apart; b also serves cheap traffic (it beats and
    answers until a heavy one holds it).  Each worker must get two: one after the other,
    they end at 2, 2, 4 and 4 s."""
    loop, costs, (a, b) = fast
    for sid in range(100, 120):                 # 20 cheap requests in flight on b
        _open(b, sid, b"/fast")
    running = {a: None, b: None}                # when its loop was last seen to run
    for link in (a, b):
        _beats(link, lambda link=link: loop.now if running[link] is None else running[link])
    placed = []
    for i in range(4):
        link = _pick((b, a), loop, costs, b"/cpu")   # b became ready first
        _open(link, i + 1, b"/cpu")
        if running[link] is None:
            running[link] = loop.now              # its loop is held from now on
        placed.append(link)
        loop.now += 0.020
    assert placed.count(a) == 2 and placed.count(b) == 2, [link.index for link in placed]
