"""WorkerLink._on_records hands a whole response in one batch (RESPONSE_START without
trailers, then the same stream's last RESPONSE_BODY) to the stream in one call
(``on_response``), and everything else event by event, in order."""
import asyncio
from collections import deque

import pytest

from sidecar.events import APP_DONE, RESPONSE_BODY, RESPONSE_START
from sidecar.frontend.link import WorkerLink
from sidecar.frontend.stream import StreamBase
from sidecar.ring_link import Batcher


class Recorder(StreamBase):
    """A stream that records what the link hands it; on_response as StreamBase has it."""

    def __init__(self, link, sid, seen):
        self.link, self.sid, self.seen = link, sid, seen
        self.route, self.cost, self.t_dispatch = "r", 0.0, 0.0

    def on_worker_event(self, ev):
        self.seen.append(("event", ev[0], ev[1]))

    def on_worker_lost(self):
        self.seen.append(("lost", self.sid))

    def on_response(self, start, body):
        self.seen.append(("whole", start[1], body[2]))
        StreamBase.on_response(self, start, body)


START = lambda sid, trailers=False: [RESPONSE_START, sid, 200, [[b"a", b"b"]], trailers]
BODY = lambda sid, more=False: [RESPONSE_BODY, sid, b"x", more]
DONE = lambda sid: [APP_DONE, sid, None]


@pytest.fixture
def link():
    loop = asyncio.new_event_loop()
    link = WorkerLink(0, 1 << 16, lambda *a: None, Batcher(loop))
    link.loop = loop
    yield link
    link.close()
    loop.close()


@pytest.mark.parametrize("batch, expected", [
    ([START(1), BODY(1), DONE(1)],
     [("whole", 1, b"x"), ("event", RESPONSE_START, 1), ("event", RESPONSE_BODY, 1),
      ("event", APP_DONE, 1)]),
    ([START(1, trailers=True), BODY(1)],
     [("event", RESPONSE_START, 1), ("event", RESPONSE_BODY, 1)]),
    ([START(1), BODY(1, more=True), BODY(1)],
     [("event", RESPONSE_START, 1), ("event", RESPONSE_BODY, 1), ("event", RESPONSE_BODY, 1)]),
    ([START(1), START(2), BODY(2), BODY(1)],
     [("event", RESPONSE_START, 1), ("whole", 2, b"x"), ("event", RESPONSE_START, 2),
      ("event", RESPONSE_BODY, 2), ("event", RESPONSE_BODY, 1)]),
    ([START(1)], [("event", RESPONSE_START, 1)]),
    ([START(1), [RESPONSE_BODY, 1, "not bytes", False]],   # not checked as a batch: one by one
     [("event", RESPONSE_START, 1), ("lost", 1)]),
])
def test_whole_responses_in_one_call_the_rest_event_by_event(link, batch, expected):
    seen = []
    for sid in (1, 2):
        link.streams[sid] = Recorder(link, sid, seen)
    link._on_records(batch)
    assert seen == expected
    link.streams.clear()


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "event-by-event"])
def test_the_pool_is_told_of_a_stream_end_only_when_it_has_work(link, whole):
    """on_stream_end runs when streams wait for a worker or the link has none left (what the
    pool's _on_stream_end acts on), not for every stream that ends."""
    ends = []
    link.on_stream_end = ends.append
    link.waiting = waiting = deque()
    seen = []
    for sid in (1, 2, 3):
        link.streams[sid] = Recorder(link, sid, seen)

    def end(sid):
        link._on_records([START(sid), BODY(sid), DONE(sid)] if whole else [DONE(sid)])

    end(1)
    assert ends == []                       # others in flight, nobody waiting
    waiting.append("parked")
    end(2)
    assert ends == [link]                   # a stream waits for a worker
    waiting.clear()
    end(3)
    assert ends == [link, link]             # the last one: a draining worker is done
    link.waiting = None                     # an owner that did not say: told every time
    link.streams[4] = Recorder(link, 4, seen)
    link.streams[5] = Recorder(link, 5, seen)
    end(4)
    assert ends == [link, link, link]
    link.streams.clear()
