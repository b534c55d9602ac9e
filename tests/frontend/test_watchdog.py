"""The watchdog's verdicts (sidecar/frontend/watchdog.py), as a unit: fake workers with set
heartbeat ages and RSS, a fake pool recording what it was told, a fake clock.  The real
thing (SIGSTOP, a blocked event loop, a memory hog) is in tests/e2e/test_faults.py and
test_reload.py."""
from __future__ import annotations

import time
from types import SimpleNamespace

from sidecar.config import Config
from sidecar.frontend.watchdog import Watchdog
from sidecar.frontend.worker_proc import DRAINING, READY, STARTING


class FakeLoop:
    def __init__(self):
        self.now = 100.0
        self.timers = []

    def time(self):
        return self.now

    def call_later(self, delay, fn, *args):
        handle = SimpleNamespace(cancel=lambda: None, when=self.now + delay)
        self.timers.append(handle)
        return handle


class FakeWorker:
    def __init__(self, state=READY, age=0.1, rss=50.0, started=0.0):
        self.state, self.age, self.rss = state, age, rss
        self.index, self.pid = 0, 4242
        self.started_at = time.monotonic() - started
        self.exited, self.kill_reason, self.recycling = False, None, False
        self.memory_warned = False
        self.replaced_for_memory = False

    def heartbeat_age(self):
        return self.age

    def rss_mib(self):
        return self.rss

    def kill(self, reason):
        self.kill_reason = reason


class FakePool:
    def __init__(self, *workers, ever_ready=True):
        self._workers = list(workers)
        self.ever_ready = ever_ready
        self.hung, self.recycled = [], []

    def workers(self):
        return self._workers

    def kill_hung(self, w, age):
        self.hung.append((w, age))
        w.kill_reason = "hung"

    def recycle(self, w, why, for_memory=False):
        self.recycled.append((w, why))


def make(pool, **settings):
    loop = FakeLoop()
    dog = Watchdog(pool, Config(**settings), loop)
    dog.start()
    return dog, loop


def tick(dog, loop, seconds=None):
    loop.now += dog.interval if seconds is None else seconds
    dog._check()


def test_a_stale_heartbeat_is_a_hang_a_fresh_one_is_not():
    hung, fine, draining = FakeWorker(age=31.0), FakeWorker(age=0.4), \
        FakeWorker(state=DRAINING, age=40.0)
    pool = FakePool(hung, fine, draining)
    dog, loop = make(pool, worker_hang_timeout=30.0)
    tick(dog, loop)
    assert [w for w, _ in pool.hung] == [hung, draining]  # a hung drain is a hang too
    tick(dog, loop)
    assert len(pool.hung) == 2  # killed once: the exit is on its way


def test_no_verdict_on_a_starting_worker_or_one_that_never_beat_or_when_off():
    pool = FakePool(FakeWorker(state=STARTING, age=100.0), FakeWorker(age=None))
    dog, loop = make(pool, worker_hang_timeout=30.0)
    tick(dog, loop)
    assert pool.hung == []
    pool = FakePool(FakeWorker(age=1000.0))
    dog, loop = make(pool, worker_hang_timeout=0.0)
    tick(dog, loop)
    assert pool.hung == []


def test_a_front_end_that_did_not_run_gives_no_verdict_that_round():
    w = FakeWorker(age=45.0)  # looks hung only because this process was stopped for 45 s
    pool = FakePool(w)
    dog, loop = make(pool, worker_hang_timeout=30.0)
    tick(dog, loop, seconds=45.0)
    assert pool.hung == []
    w.age = 0.5  # it beat again meanwhile
    tick(dog, loop)
    assert pool.hung == []
    w.age = 31.0
    tick(dog, loop)
    assert [x for x, _ in pool.hung] == [w]


def test_short_hang_timeouts_are_checked_more_often():
    assert make(FakePool(), worker_hang_timeout=2.0)[0].interval == 0.5
    assert make(FakePool(), worker_hang_timeout=30.0)[0].interval == 1.0


def test_a_worker_not_ready_in_time_is_killed_once_the_pool_was_ready():
    slow = FakeWorker(state=STARTING, started=61.0)
    dog, loop = make(FakePool(slow, ever_ready=False), worker_start_timeout=60.0)
    tick(dog, loop)
    assert slow.kill_reason is None  # before the pool was ever ready: FrontEnd.run decides
    dog, loop = make(FakePool(slow), worker_start_timeout=60.0)
    tick(dog, loop)
    assert slow.kill_reason == "not ready after 60s"


def test_memory_above_the_limit_recycles_sampled_every_two_seconds():
    big, small = FakeWorker(rss=600.0, started=60.0), FakeWorker(rss=100.0, started=60.0)
    busy = FakeWorker(rss=900.0, started=60.0)
    busy.recycling = True  # its replacement is starting already
    pool = FakePool(big, small, busy)
    dog, loop = make(pool, max_worker_memory=512)
    tick(dog, loop, 1.0)
    assert pool.recycled == []  # not yet sampled
    tick(dog, loop, 1.0)
    assert [w for w, _ in pool.recycled] == [big]
    assert "600 MiB, above --max-worker-memory 512" in pool.recycled[0][1]
    pool.recycled.clear()
    dog, loop = make(FakePool(big), max_worker_memory=0)
    tick(dog, loop, 3.0)
    assert pool.recycled == []


def test_a_replacement_above_the_memory_limit_from_its_start_is_not_recycled(caplog):
    first = FakeWorker(rss=600.0, started=1.0)  # young, but not a memory replacement
    fresh = FakeWorker(rss=600.0, started=1.0)  # the limit is below what the app needs
    fresh.replaced_for_memory = True
    pool = FakePool(fresh)
    dog, loop = make(pool, max_worker_memory=512)
    for _ in range(3):
        tick(dog, loop, 2.0)
    assert pool.recycled == []
    said = [r for r in caplog.records if "right after its start" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"
    pool = FakePool(first)
    dog, loop = make(pool, max_worker_memory=512)
    tick(dog, loop, 2.0)
    assert [w for w, _ in pool.recycled] == [first]


def test_the_memory_refusal_lasts():
    fresh = FakeWorker(rss=600.0, started=1.0)
    fresh.replaced_for_memory = True
    pool = FakePool(fresh)
    dog, loop = make(pool, max_worker_memory=512)
    tick(dog, loop, 2.0)
    fresh.started_at -= 60  # long after its start: still not recycled (it would loop)
    tick(dog, loop, 2.0)
    assert pool.recycled == []
