"""Fuzz targets: each takes one input (bytes) and checks the invariants of one parser.

h1_request      the front-end's request parsing (sidecar.http.h1.RequestParser)
worker_events   the worker's decoding of ring records (written to a real ring, read with
                Consumer.read_events: events.unpack of each + check, and
                sidecar.worker.link.HostLink dispatching them to streams and the app)

Both return an "outcome" signature (what kind of thing happened) that the engine uses to
keep inputs that reach something new.
"""
from __future__ import annotations

import asyncio
import random
import struct
import zlib

from sidecar import events
from sidecar.http import h1
from sidecar.http.limits import MAX_CHUNK_LINE
from sidecar.http.fields import TCHARS

# --- h1_request ---------------------------------------------------------------------------

H1_LIMITS = (h1.Limits(),
             h1.Limits(max_request_line=60, max_header_bytes=200, max_headers=4, max_body=20))
H1_TOKENS = [b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"\x00", b"\r", b"\n",
             b"\x80", b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"Content-Length: 5\r\n",
             b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"chunked", b"gzip, ",
             b"0\r\n\r\n", b"5\r\nhello\r\n", b"ffffffffffffffff", b"HTTP/1.0", b"HTTP/2.0",
             b"Connection: close\r\n", b"Connection: keep-alive\r\n",
             b"Upgrade: websocket\r\nConnection: upgrade\r\n", b"Expect: 100-continue\r\n",
             b"%", b"%ff", b"?", b"#", b"*", b"http://a", b"999999999999999999999"]
_EVENT_TYPES = (h1.Request, h1.Body, h1.EndOfMessage, h1.ProtocolError)
_STATUSES = {400, 408, 413, 414, 431, 501, 505}
_BAD_IN_VALUE = (b"\r", b"\n", b"\x00")


def _merged(evs: list) -> list:
    out: list = []
    for ev in evs:
        if type(ev) is h1.Body and out and type(out[-1]) is h1.Body:
            out[-1] = h1.Body(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def _parse(data: bytes, limits: h1.Limits, pieces: list[int]) -> list:
    """Feed data in pieces of the given sizes; check what holds after every feed."""
    p = h1.RequestParser(limits)
    bound = max(limits.max_header_bytes, limits.max_request_line, MAX_CHUNK_LINE) + 4
    out: list = []
    pos = 0
    for n in pieces:
        evs = p.feed(data[pos:pos + n])
        pos += n
        assert type(evs) is list
        out += evs
        assert len(p._buf) <= bound, f"parser buffers {len(p._buf)} bytes"
    assert pos >= len(data)
    return out


def _check_sequence(evs: list, data: bytes) -> None:
    """Request (Body* EndOfMessage)? ... with a ProtocolError only last, and safe heads."""
    in_body = stopped = False
    body_bytes = 0
    for i, ev in enumerate(evs):
        assert type(ev) in _EVENT_TYPES, ev
        assert not stopped, f"event after the parser stopped: {evs[i:]}"
        if type(ev) is h1.ProtocolError:
            assert ev.status in _STATUSES and ev.reason, ev
            stopped = True
        elif type(ev) is h1.Request:
            assert not in_body, "a Request inside another request's body"
            for name, value in ev.headers:   # what reaches the app is never a smuggling tool
                assert name and not name.translate(None, TCHARS), name
                assert name == name.lower()
                assert not any(c in value for c in _BAD_IN_VALUE), value
            assert type(ev.path) is str and ev.method and ev.http_version in ("1.0", "1.1")
            assert not (ev.chunked and ev.content_length is not None)
            in_body = True
            upgraded = ev.upgrade is not None and b"websocket" in ev.upgrade.split(b",")[0]
            if upgraded and i == len(evs) - 1:
                stopped = True   # parsing stops after an accepted upgrade's head
        elif type(ev) is h1.Body:
            assert in_body and ev.data
            body_bytes += len(ev.data)
        else:
            assert in_body
            in_body = False
    assert body_bytes <= len(data)


def h1_request(data: bytes):
    limits = H1_LIMITS[zlib.crc32(data) & 1]
    whole = _parse(data, limits, [len(data)])
    _check_sequence(whole, data)
    merged = _merged(whole)
    rng = random.Random(zlib.crc32(data))
    splits = []
    if len(data) <= 4096:
        splits.append([1] * len(data))
    sizes = []
    while sum(sizes) < len(data):
        sizes.append(rng.randint(1, 64))
    splits.append(sizes)
    for pieces in splits:
        assert _merged(_parse(data, limits, pieces)) == merged, "depends on how it was split"
    if h1.speedups:   # whole heads went to the C fast path first: the Python path alone agrees
        h1.speedups = False
        try:
            assert _merged(_parse(data, limits, [len(data)])) == merged, "C and Python differ"
        finally:
            h1.speedups = True
    return tuple((type(e).__name__, getattr(e, "status", None)) for e in merged[:8])


# --- worker_events ------------------------------------------------------------------------
#
# An input is a sequence of ring records, each [u16 little-endian length][payload] (a short
# last record takes what is left), fed to a HostLink in one to three batches.

def _encode_records(records: list[bytes]) -> bytes:
    return b"".join(struct.pack("<H", len(r)) + r for r in records)


def _split_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 2 <= len(data) and len(out) < 256:
        (n,) = struct.unpack_from("<H", data, pos)
        out.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out


async def fuzz_app(scope, receive, send):
    """Reads one message, answers, and for a WebSocket echoes until it ends."""
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"y")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "bytes": msg.get("bytes"),
                        "text": msg.get("text")})


class _FakeWorker:
    """What a HostLink needs from sidecar.worker.process.Worker."""

    def __init__(self):
        self.app = fuzz_app
        self.state: dict = {}
        self.root_path = ""
        self.tasks: set = set()
        self.protocol_errors: list[str] = []
        self.internal_errors: list = []
        self.pulse_timer = True  # never pulses: not a Worker.pulse test

    def task_done(self, task) -> None:
        self.tasks.discard(task)

    def cancel_task(self, task) -> None:
        if not task.done():
            task.cancel()
            task.add_done_callback(self.task_done)

    def protocol_error(self, reason: str) -> None:
        self.protocol_errors.append(reason)

    def internal_error(self, what: str, exc: BaseException) -> None:
        self.internal_errors.append((what, exc))


class _NoConsumer:
    """The link's own consumer is not started: the target reads the host -> worker ring
    (``_feed``) and hands the link what ``Consumer.read_events`` gives, as ``start`` would."""

    def stop_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


WORKER_TOKENS = [events.pack(ev) for ev in (
    [events.HTTP_REQUEST, 1, "GET", "http", "/", b"/", b"", [[b"host", b"x"]], ["h", 1],
     ["s", None], "1.1", "", b"", True],
    [events.HTTP_BODY, 1, b"abc", False], [events.DISCONNECT, 1], [events.SEND_CREDIT, 1, 10],
    [events.WS_CONNECT, 2, "ws", "/", b"/", b"", [], None, None, "1.1", "", []],
    [events.WS_RECEIVE, 2, "hi", False], [events.WS_DISCONNECT, 2, 1000, ""],
    [events.PING, 0, 7])] + [b"\x00\x00", b"\xff\xff", b"\x90", b"\xc0", b"\xc2", b"\xc3",
                             b"\xdc\xff\xff", b"\xcf" + b"\xff" * 8, b"\xd3" + b"\x80" + b"\0" * 7]


WINDOW = 4096   # small, so that inputs of a few KiB can overrun it


class WorkerEvents:
    """The worker_events target; owns an event loop and a real ring for the worker's output
    (drained and checked after every input).  Call close() when done."""

    def __init__(self):
        from sidecar.ring import Consumer, Producer
        from sidecar.worker.link import HostLink

        self.HostLink = HostLink
        self.loop = asyncio.new_event_loop()
        self.producer = Producer.create(1 << 20)
        self.reader = Consumer.attach(self.producer.spec().dup())
        self.Consumer = Consumer
        self.to_worker = Producer.create(1 << 20)  # max_record 128 KiB > any u16-sized record

    def close(self) -> None:
        self.reader.close()
        self.producer.close()
        self.to_worker.close()
        self.loop.close()

    def _settle(self, link, rounds: int = 4) -> None:
        for _ in range(rounds):
            self.loop.run_until_complete(asyncio.sleep(0))
            self._drain(link)

    def _drain(self, link) -> list[int]:
        kinds = []
        while evs := self.reader.read_events():
            for ev in evs:   # whatever came in, what the worker writes is valid
                events.check(ev)
                assert ev[0] in events.TO_HOST, ev
                kinds.append(ev[0])
        return kinds

    @staticmethod
    def _feed(link, to_worker, inbound, batch: list[bytes]) -> None:
        """The records through a real ring: read back with ``read_events`` and dispatched the
        way ``start_reading_events`` does (an undecodable record -> ``_on_ring_error``)."""
        from sidecar.events import ProtocolError
        pending = list(batch)
        while pending and not link.closed:  # a failed link has stopped reading
            n = to_worker.try_write_many(pending)
            pending = pending[n:]
            while True:
                try:
                    evs = inbound.read_events()
                except ProtocolError as exc:
                    link._on_ring_error(exc)
                    return
                if not evs:
                    break
                link._on_records(evs)

    def __call__(self, data: bytes):
        records = _split_records(data)
        worker = _FakeWorker()
        link = self.HostLink(worker, 0, _NoConsumer(), self.producer, WINDOW)
        link.loop = self.loop   # what start() sets, without reading a ring
        rng = random.Random(zlib.crc32(data))
        cuts = sorted(rng.sample(range(len(records) + 1), min(2, len(records) + 1)))
        batches = [records[a:b] for a, b in zip([0] + cuts, cuts + [len(records)])]
        self.to_worker.reinit()  # empty, and a reader of its own: a bad record is sticky
        inbound = self.Consumer.attach(self.to_worker.spec().dup())
        try:
            for batch in batches:
                self._feed(link, self.to_worker, inbound, batch)   # must never raise
                assert not worker.internal_errors, worker.internal_errors
                assert len(link.streams) <= len(records)
                self._settle(link)
        finally:
            inbound.close()
        broken = link.closed
        # end of input: the host goes away; every task must end
        for stream in list(link.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        for _ in range(20):
            if not worker.tasks:
                break
            self._settle(link)
        assert not worker.tasks, f"{len(worker.tasks)} stream task(s) did not end"
        link.closed = True     # as close() would, without closing the shared rings
        self._settle(link, 1)
        assert not link.backlog or link.closed
        return (broken, bool(worker.protocol_errors), min(len(records), 4))
