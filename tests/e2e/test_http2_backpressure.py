"""HTTP/2 backpressure: 1 GiB up and 1 GiB down on one stream while ten other streams on the
same connection go on with small request/response rounds.

One connection, eleven full-duplex echo streams (tests/e2e/duplex_app.py).  The big stream
sends 1 GiB and reads its echo; each of the ten small streams sends a 64-byte message, waits
for its echo, and sends the next.  What is asserted, without any wall-clock speed:

- the big stream's 1 GiB comes back whole and in order (sha256 of both directions);
- the small streams keep their pace: each completes rounds in every tenth of the big
  transfer's progress (counted in bytes echoed), so the big stream never starves them;
- neither the front-end nor the worker grows by 64 MiB or more (flow control end to end:
  the client's window, the ring's credit, the app's read, our WINDOW_UPDATE).

The client is python-hyper's h2 on a non-blocking socket with a select loop: it never blocks
writing while the server writes to it.
"""
from __future__ import annotations

import hashlib
import os
import selectors
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from tests.e2e.util import MiB, RssSampler, process_pids
from tests.server import Sidecar

GiB = 1 << 30
BIG = int(os.environ.get("SIDECAR_TEST_H2_BIG_BYTES", str(GiB)))
SMALL_STREAMS = 10
MESSAGE = 64
PHASES = 10                    # the big transfer's progress, in tenths
RSS_BOUND_KIB = 64 * 1024      # growth allowed per process
DEADLINE = 900                 # seconds: a guard against a hang, not a speed assertion


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.duplex_app:app", workers=1) as s:
        yield s


def _post(path: str = "/duplex") -> list:
    return [(":method", "POST"), (":scheme", "http"), (":authority", "sidecar"),
            (":path", path)]


class Duplex:
    """The client side: one connection, a select loop, per-stream bookkeeping."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
                                   h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 18})
        self.conn.increment_flow_control_window(16 << 20)
        self.out = bytearray()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.received: dict[int, int] = {}
        self.on_data = {}          # sid -> callable(bytes)
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.statuses: dict[int, str] = {}
        self.closed = False
        self.acked = 0
        # h2 (the client's) applies a larger MAX_FRAME_SIZE only from its next read after the
        # ACK: no stream before both our SETTINGS frames are acknowledged
        deadline = time.monotonic() + 30
        while self.acked < 2:
            self.step()
            assert time.monotonic() < deadline and not self.closed, "no SETTINGS ACK"

    def open(self, on_data) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, _post())
        self.received[sid] = 0
        self.on_data[sid] = on_data
        return sid

    def send(self, sid: int, data: bytes) -> int:
        """As much of data as the windows take now (never blocks)."""
        room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                   len(data))
        if room <= 0:
            return 0
        self.conn.send_data(sid, data[:room])
        return room

    def step(self, timeout: float = 0.05) -> None:
        self.out += self.conn.data_to_send()
        self.sel.modify(self.sock, selectors.EVENT_READ |
                        (selectors.EVENT_WRITE if self.out else 0))
        for _key, mask in self.sel.select(timeout):
            if mask & selectors.EVENT_WRITE and self.out:
                try:
                    n = self.sock.send(self.out)
                except BlockingIOError:
                    n = 0
                del self.out[:n]
            if mask & selectors.EVENT_READ:
                try:
                    data = self.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self.closed = True
                    return
                self._events(self.conn.receive_data(data))

    def _events(self, events) -> None:
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.received[ev.stream_id] += len(ev.data)
                self.on_data[ev.stream_id](ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.ResponseReceived):
                self.statuses[ev.stream_id] = dict(ev.headers)[":status"]
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[ev.stream_id] = ev.error_code
            elif isinstance(ev, h2.events.SettingsAcknowledged):
                self.acked += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True

    def close(self) -> None:
        self.sel.close()
        self.sock.close()


class Small:
    """One small stream's rounds: a message out, its echo back, the next message."""

    def __init__(self, cl: Duplex, k: int):
        self.cl, self.k = cl, k
        self.rounds = 0
        self.sent = self.got = 0
        self.echo = bytearray()
        self.expected = bytearray()
        self.sid = cl.open(self.on_data)

    def on_data(self, data: bytes) -> None:
        self.echo += data
        self.got += len(data)

    def drive(self) -> bool:
        """True when a round completed (its echo back whole)."""
        if self.sent == self.got:
            done = self.sent > 0
            if done:
                assert self.echo == self.expected, (self.k, self.rounds)
                self.rounds += 1
                self.echo.clear()
                self.expected.clear()
            msg = f"stream {self.k} round {self.rounds} ".encode().ljust(MESSAGE, b".")
            if self.cl.conn.local_flow_control_window(self.sid) >= len(msg):   # whole or not
                assert self.cl.send(self.sid, msg) == len(msg)
                self.sent += len(msg)
                self.expected += msg
            return done
        return False


def _warm_up(sc) -> None:
    """A 16 MiB duplex stream first: one-off costs (allocator arenas) are not growth."""
    cl = Duplex(sc.port)
    got = hashlib.sha256()
    sid = cl.open(got.update)
    block = os.urandom(MiB)
    sent = 0
    deadline = time.monotonic() + 120
    while sent < 16 * MiB:
        sent += cl.send(sid, block[sent % MiB:])
        cl.step()
        assert time.monotonic() < deadline and not cl.closed
    cl.conn.end_stream(sid)
    while sid not in cl.ended:
        cl.step()
        assert time.monotonic() < deadline and not cl.closed
    assert cl.received[sid] == 16 * MiB
    cl.close()


def test_1gib_up_and_down_on_one_stream_while_ten_others_keep_their_pace(sc):
    _warm_up(sc)
    # a block of a size prime to the frame sizes: a lost, repeated or misplaced frame shows
    block = os.urandom(MiB + 7)
    span = len(block)
    sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
    cl = Duplex(sc.port)
    try:
        big = cl.open(got_hash.update)
        smalls = [Small(cl, k) for k in range(SMALL_STREAMS)]
        per_phase = [[0] * PHASES for _ in smalls]
        sent, big_ended = 0, False
        deadline = time.monotonic() + DEADLINE
        with RssSampler(process_pids(sc), interval=0.05) as rss:
            while cl.received[big] < BIG:
                assert not cl.closed, "the server closed the connection"
                assert not cl.reset, f"streams reset: {cl.reset}"
                assert time.monotonic() < deadline, \
                    f"not done in {DEADLINE}s: {sent} sent, {cl.received[big]} back"
                phase = min(PHASES - 1, cl.received[big] * PHASES // BIG)
                for i, s in enumerate(smalls):
                    if s.drive():
                        per_phase[i][phase] += 1
                # the big stream: what its windows take, at most 1 MiB a turn
                budget = MiB
                while sent < BIG and budget > 0:
                    off = sent % span
                    piece = block[off:off + min(budget, BIG - sent, span - off)]
                    n = cl.send(big, piece)
                    if not n:
                        break
                    sent_hash.update(piece[:n])
                    sent += n
                    budget -= n
                if sent == BIG and not big_ended:
                    cl.conn.end_stream(big)
                    big_ended = True
                cl.step(0.01 if cl.out else 0.05)
            # the small streams end: their last echo, then END_STREAM both ways
            for s in smalls:
                while s.sent != s.got:
                    cl.step()
                    assert time.monotonic() < deadline and not cl.closed
                cl.conn.end_stream(s.sid)
            while not ({big} | {s.sid for s in smalls}) <= cl.ended:
                cl.step()
                assert time.monotonic() < deadline and not cl.closed
    finally:
        cl.close()
    report = rss.report()
    print(f"\n[h2 backpressure] {BIG} bytes each way; rounds per small stream per tenth of "
          f"the big transfer: {per_phase}\n[rss] {report}")
    assert cl.received[big] == BIG and got_hash.hexdigest() == sent_hash.hexdigest()
    assert all(status == "200" for status in cl.statuses.values()), cl.statuses
    for i, phases in enumerate(per_phase):
        assert all(n >= 1 for n in phases), \
            f"small stream {i} starved in some tenth of the big transfer: {phases}"
    for name, kib in rss.growth().items():
        assert kib < RSS_BOUND_KIB, f"{name} grew by {kib / 1024:.1f} MiB: {report}"
