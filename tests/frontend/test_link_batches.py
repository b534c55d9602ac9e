"""WorkerLink._on_records hands a whole response in one batch (RESPONSE_START without
trailers, then the same stream's last RESPONSE_BODY) to the stream in one call
(``on_response``), and everything else event by event, in order."""
import asyncio

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
