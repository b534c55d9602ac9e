"""frontend/transport.py's Transport and the Batcher (sidecar/ring_link.py) that sends its
bytes: what a connection writes in one loop iteration leaves in one send at its end, after
nothing and before the ring links' records; bytes sent early (close, linger, drained) are
not sent twice."""
import asyncio

from sidecar.frontend.transport import Transport
from sidecar.ring_link import Batcher


class FakeSocket:
    """The asyncio transport's calls, recorded in one list shared with the links."""

    def __init__(self, log):
        self.log = log
        self.closing = False

    def write(self, data):
        self.log.append(("send", data))

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True
        self.log.append(("close",))


class FakeLink:
    def __init__(self, log):
        self.log = log

    def flush(self):
        self.log.append(("ring",))


def _turn(loop):
    loop.run_until_complete(asyncio.sleep(0))


def test_an_iterations_writes_leave_in_one_send_each_then_the_rings():
    loop = asyncio.new_event_loop()
    try:
        log = []
        batcher = Batcher(loop)
        a = Transport(FakeSocket(log), batcher, loop, "a")
        b = Transport(FakeSocket(log), batcher, loop, "b")
        batcher.add(FakeLink(log))
        a.write(b"1")
        b.write(b"x")
        a.write(b"2")
        assert log == [] and batcher.sockets == [a, b]
        _turn(loop)
        assert log == [("send", b"12"), ("send", b"x"), ("ring",)]
        assert batcher.sockets == [] and not a.out and not b.out
        a.write(b"3")          # the next iteration: a new send
        _turn(loop)
        assert log[3:] == [("send", b"3")]
    finally:
        loop.close()


def test_bytes_sent_early_are_not_sent_again_and_a_closing_socket_gets_none():
    loop = asyncio.new_event_loop()
    try:
        log = []
        batcher = Batcher(loop)
        a = Transport(FakeSocket(log), batcher, loop, "a")
        b = Transport(FakeSocket(log), batcher, loop, "b")
        a.write(b"bye")
        a.close()              # sends what was written, then closes
        b.write(b"lost")
        b.transport.closing = True
        _turn(loop)
        assert log == [("send", b"bye"), ("close",)]
    finally:
        loop.close()
