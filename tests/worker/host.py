"""A fake host for worker tests: real rings, a real ``python -m sidecar.worker`` process, and
the host's half of the event protocol driven by hand from an asyncio test.

    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/")
        response = await host.response(sid)

    run_host(scenario, "apps:hello")

Nothing here sleeps to wait for something: every wait is an await on ring records or on the
worker's pidfd, bounded by a deadline.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.events import (
    APP_DONE, DEFAULT_WINDOW, HELLO, HTTP_BODY, HTTP_REQUEST, PING, PONG, RECV_CREDIT,
    RESPONSE_BODY, RESPONSE_START, SEND_CREDIT, VERSION, check, pack,
)
from sidecar.ring import Consumer, Producer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TIMEOUT = 10.0  # seconds: generous for a loaded CI machine, never reached when things work


class WorkerExited(Exception):
    def __init__(self, code: int, log: str):
        super().__init__(f"worker exited with code {code}\n--- worker log ---\n{log}")
        self.code = code


@dataclass
class Response:
    status: int | None = None
    headers: list = field(default_factory=list)
    body: bytes = b""
    error: str | None = None
    events: list = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class FakeHost:
    def __init__(self, app: str, *, window: int = DEFAULT_WINDOW, lifespan: str = "auto",
                 shutdown_timeout: float = 5.0, capacity: int = 1 << 20, factory: bool = False,
                 log_level: str = "info", root_path: str = "", read: bool = True,
                 spawn: str | None = None, mangle=None):
        self.config = {
            "app": app, "factory": factory, "app_dir": str(HERE), "index": 0,
            "window": window, "log_level": log_level, "shutdown_timeout": shutdown_timeout,
            "lifespan": lifespan, "root_path": root_path,
        }
        self.capacity = capacity
        self.window = window
        self.reading = read
        self.spawn = spawn  # a "python -c" script that starts the worker for us (orphan tests)
        self.worker_pid = 0
        self.mangle = mangle  # edits the config dict before the worker gets it
        self.proc: subprocess.Popen | None = None
        self.inbox: dict[int, deque] = {}
        self._waiters: list[asyncio.Future] = []
        self._exited: asyncio.Future | None = None
        self._next_sid = 1
        self.to_worker: Producer | None = None
        self.to_host: Consumer | None = None
        self._pidfd = -1
        self.error: Exception | None = None
        # O_APPEND: the worker shares this file's offset, and log() seeks it to read.
        self._log = tempfile.TemporaryFile(mode="a+b")

    # --- process -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.to_worker = Producer.create(self.capacity)
        self.to_host = Consumer.create(self.capacity)
        link = {"host": 0, "frontend": True,   # as the front-end: offered pathsend
                "to_worker": _spec(self.to_worker),
                "to_host": _spec(self.to_host)}
        config = dict(self.config, links=[link])
        if self.mangle is not None:
            self.mangle(config)
        fds = self.to_worker.spec().fds() + self.to_host.spec().fds()
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            env = dict(os.environ, SIDECAR_WORKER=json.dumps(config), PYTHONPATH=str(REPO))
            if self.spawn is None:
                self.proc = subprocess.Popen([sys.executable, "-m", "sidecar.worker"], env=env,
                                             pass_fds=fds, stdout=self._log, stderr=self._log,
                                             cwd=str(REPO))
                self.worker_pid = self.proc.pid
            else:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", self.spawn, ",".join(map(str, fds))], env=env,
                    pass_fds=fds, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=self._log, cwd=str(REPO))
                self.worker_pid = int(self.proc.stdout.readline())
                self.proc.stdout.close()
        finally:
            for fd in fds:
                os.set_inheritable(fd, False)
        self._pidfd = os.pidfd_open(self.worker_pid)
        self._exited = loop.create_future()
        loop.add_reader(self._pidfd, self._on_exit)
        if self.reading:
            self.resume_reading()

    def resume_reading(self) -> None:
        self.reading = True
        self.to_host.start_reading_events(asyncio.get_running_loop(), self._on_events,
                                          self._on_error)

    def release_parent(self) -> None:
        """Let the spawning middle process exit, orphaning the worker."""
        self.proc.stdin.close()

    async def close(self) -> None:
        """Kill the worker if it still runs, reap it, unmap the rings (always all three)."""
        try:
            if self._pidfd >= 0 and not self._exited.done():
                try:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # exited meanwhile
                await asyncio.wait_for(asyncio.shield(self._exited), TIMEOUT)
        finally:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait()
            if self._pidfd >= 0:
                asyncio.get_running_loop().remove_reader(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = -1
            for end in (self.to_host, self.to_worker):
                if end is not None:
                    end.close()
            print(self.log())  # pytest shows it for failing tests only
            self._log.close()

    def log(self) -> str:
        # straight from the file, not through the buffered object the worker's output is
        # appended under: a seek within its stale read buffer once lost the first byte
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    async def wait_log(self, text: str, timeout: float = TIMEOUT) -> None:
        """Poll the worker's log until ``text`` shows up (it has no other way to tell us)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.log():
            assert loop.time() < deadline, f"{text!r} not logged\n{self.log()}"
            await asyncio.sleep(0.01)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        signal.pidfd_send_signal(self._pidfd, signum)

    async def exit_code(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the worker to exit; its exit code (None if it is not our child)."""
        await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return self.proc.wait() if self.spawn is None else None

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(None)
        self._wake()

    # --- events in ---------------------------------------------------------------------------

    def _on_events(self, evs) -> None:
        for ev in evs:
            check(ev)
            self.inbox.setdefault(ev[1], deque()).append(ev)
        self._wake()

    def _on_error(self, exc: Exception) -> None:
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def recv(self, sid: int = 0, timeout: float = TIMEOUT) -> list:
        """The next event of stream ``sid`` (0: the link itself)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.error is not None:
                raise AssertionError(f"host side failed: {self.error!r}")
            queue = self.inbox.get(sid)
            if queue:
                return queue.popleft()
            if self._exited.done() and not self.to_host.used():
                raise WorkerExited(self.proc.wait() if self.spawn is None else None, self.log())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no event for stream {sid} within {timeout}s\n"
                                   f"--- worker log ---\n{self.log()}")
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass

    def pending(self, sid: int = 0) -> list:
        """Events of ``sid`` already received and not yet taken (without waiting)."""
        return list(self.inbox.get(sid, ()))

    async def hello(self) -> list:
        ev = await self.recv(0)
        assert ev[0] == HELLO, ev
        assert ev[2] == VERSION and ev[3] == self.worker_pid and ev[4] == self.window, ev
        return ev

    async def ping(self, token: int = 7) -> None:
        """Round trip through the worker's loop: everything sent before is processed."""
        self.send([PING, 0, token])
        assert await self.recv(0) == [PONG, 0, token]

    # --- events out --------------------------------------------------------------------------

    def send(self, ev: list) -> None:
        self.send_raw(pack(ev))

    def send_raw(self, payload: bytes) -> None:
        assert self.to_worker.try_write(payload), "to_worker ring full (tests keep it small)"

    def request(self, method: str = "GET", path: str = "/", *, query: bytes = b"",
                headers: list | None = None, body: bytes = b"", more: bool = False,
                sid: int | None = None, root_path: str = "") -> int:
        ev = self.request_event(method, path, query=query, headers=headers, body=body,
                                more=more, sid=sid, root_path=root_path)
        self.send(ev)
        return ev[1]

    def request_event(self, method: str = "GET", path: str = "/", *, query: bytes = b"",
                      headers: list | None = None, body: bytes = b"", more: bool = False,
                      sid: int | None = None, root_path: str = "") -> list:
        """The HTTP_REQUEST ``request`` sends, not sent (to publish several at once)."""
        if sid is None:
            sid = self._next_sid
            self._next_sid += 1
        headers = [[b"host", b"test"]] if headers is None else headers
        return [HTTP_REQUEST, sid, method, "http", path, path.encode(), query, headers,
                ["127.0.0.1", 50000], ["/run/sidecar.sock", None], "1.1", root_path,
                body, more]

    def body(self, sid: int, body: bytes, more: bool = False) -> None:
        self.send([HTTP_BODY, sid, body, more])

    async def response(self, sid: int, *, grant: bool = True,
                       timeout: float = TIMEOUT) -> Response:
        """Collect a stream's events up to APP_DONE; with ``grant``, hand back send credit for
        every body chunk as a host would once the client's socket took it."""
        response = Response()
        while True:
            ev = await self.recv(sid, timeout)
            response.events.append(ev)
            kind = ev[0]
            if kind == RESPONSE_START:
                assert response.status is None, "two RESPONSE_START"
                response.status, response.headers = ev[2], ev[3]
            elif kind == RESPONSE_BODY:
                response.body += ev[2]
                if grant and ev[2]:
                    self.send([SEND_CREDIT, sid, len(ev[2])])
            elif kind == APP_DONE:
                response.error = ev[2]
                return response
            elif kind != RECV_CREDIT:
                raise AssertionError(f"unexpected event {ev}")

    async def upload(self, sid: int, data: bytes, piece: int,
                     outstanding: int = 0) -> list[int]:
        """Send ``data`` as HTTP_BODY pieces without ever exceeding the window; return the
        credits received meanwhile (the stream's HTTP_REQUEST must have said more=True, and
        carried ``outstanding`` body bytes)."""
        credits, sent = [], 0
        while sent < len(data):
            n = min(piece, len(data) - sent)
            while outstanding + n > self.window:
                ev = await self.recv(sid)
                assert ev[0] == RECV_CREDIT, ev
                credits.append(ev[2])
                outstanding -= ev[2]
            self.body(sid, data[sent:sent + n], more=sent + n < len(data))
            outstanding += n
            sent += n
        return credits


def _spec(end) -> dict:
    spec = end.spec()
    return {"segment_fd": spec.segment_fd, "data_fd": spec.data_fd,
            "space_fd": spec.space_fd, "generation": spec.generation}


def run_host(scenario, app: str, **options):
    """Start a worker for ``app``, run ``await scenario(host)``, always clean up."""
    async def main():
        host = FakeHost(app, **options)
        try:
            await host.start()
            return await scenario(host)
        finally:
            await host.close()
    return asyncio.run(main())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
