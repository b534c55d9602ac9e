"""Fixtures for the ring tests: ring pairs in one process, and peer processes with deadlines."""
from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import uvloop

from sidecar.ring import Consumer, Producer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_DEADLINE = 180.0  # seconds; the slowest test here takes ~20 s on a loaded 2-CPU box


@pytest.fixture(autouse=True)
def deadline():
    """A hung ring test must not hang the suite: dump every thread's stack and exit."""
    faulthandler.dump_traceback_later(TEST_DEADLINE, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    """Run a coroutine to completion on a fresh loop of each kind, with a 20 s deadline."""
    def run(coro):
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, 20))
        finally:
            loop.close()
    return run


@pytest.fixture
def make_pair():
    """``make_pair(capacity, batch=256) -> (producer, consumer)`` over one segment, both in
    this process (the consumer attaches to duplicated descriptors of the producer's spec)."""
    ends = []

    def make(capacity: int = 4096, batch: int = 256):
        prod = Producer.create(capacity)
        cons = Consumer(*_attach_args(prod), batch=batch)
        ends.extend((cons, prod))
        return prod, cons

    yield make
    for end in ends:
        end.close()


def _attach_args(prod: Producer):
    from sidecar.ring import Doorbell, Segment
    spec = prod.spec().dup()
    return (Segment.from_fd(spec.segment_fd), Doorbell(spec.data_fd), Doorbell(spec.space_fd),
            spec.generation)


class Peer:
    """``python -m tests.ring.peer MODE ARGS`` with the rings' descriptors passed down."""

    def __init__(self, mode: str, args: dict, fds: list[int]):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ring.peer", mode, json.dumps(args)],
            pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
        self.pid = self.proc.pid
        self._buf = b""

    def line(self, timeout: float) -> str:
        """The next stdout line, or fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                pytest.fail(f"peer said nothing for {timeout} s; stderr:\n{self.stderr()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(5)
                pytest.fail(f"peer exited ({self.proc.returncode}); stderr:\n{self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ready(self, timeout: float = 20.0) -> None:
        assert self.line(timeout) == "ready"

    def result(self, timeout: float) -> dict:
        """The peer's final JSON line; it must then exit 0."""
        out = json.loads(self.line(timeout))
        assert self.proc.wait(timeout) == 0, f"peer failed: {out}\n{self.stderr()}"
        return out

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def spawn():
    """``spawn(mode, args, *ends_or_specs) -> Peer``; every peer is killed at teardown."""
    peers = []

    def start(mode: str, args: dict, *specs) -> Peer:
        fds = [fd for spec in specs for fd in spec.fds()]
        peer = Peer(mode, args, fds)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()
