"""The worker pool, supervised by the front-end: spawn, readiness, dispatch, restart, drain.

Each worker slot holds at most one live worker process and its WorkerLink (ring pair).  A
worker that dies is never reconnected to: its link is closed (streams answered 502 or
aborted) and a new process gets new rings with a new generation.  Restarts back off
exponentially while a worker keeps dying young; a worker that fails to import the app or to
pass lifespan startup before the pool was ever ready stops the server (restarting won't help).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Callable

from sidecar.config import (EXIT_CONFIG_ERROR, EXIT_IMPORT_FAILED, EXIT_PROTOCOL_ERROR,
                            EXIT_STARTUP_FAILED, Config)
from sidecar.frontend.link import WorkerLink

log = logging.getLogger("sidecar.supervisor")

YOUNG = 5.0          # a worker dying within this many seconds of start counts as failing
MAX_BACKOFF = 10.0   # seconds between restarts of a worker that keeps failing


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return {0: "exited", EXIT_STARTUP_FAILED: "failed lifespan startup",
            EXIT_IMPORT_FAILED: "could not import the app",
            EXIT_CONFIG_ERROR: "could not read its configuration",
            EXIT_PROTOCOL_ERROR: "broke the ring protocol"}.get(rc, f"exited with code {rc}")


class Slot:
    """One place in the pool; survives its workers."""

    def __init__(self, index: int):
        self.index = index
        self.link: WorkerLink | None = None
        self.proc: subprocess.Popen | None = None
        self.pidfd = -1
        self.started_at = 0.0
        self.failures = 0
        self.restart_handle: asyncio.TimerHandle | None = None
        self.retired = False  # removed by SIGTTOU / reload: do not restart


class WorkerPool:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 on_fatal: Callable[[int, str], None], batcher):
        self.config = config
        self.batcher = batcher
        self.loop = loop
        self.on_fatal = on_fatal
        self.slots: list[Slot] = []
        self.links: list[WorkerLink] = []  # ready, not draining: the dispatch candidates
        self.waiting: deque = deque()      # (stream, body, more, deadline) parked for a worker
        self.ever_ready = False
        self.stopping = False
        self.restarts = 0
        self._rr = 0
        self._ready_event = asyncio.Event()
        self._exit_events: dict[int, asyncio.Event] = {}
        self._wait_timer: asyncio.TimerHandle | None = None

    # --- spawning ------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.config.resolved_workers()):
            slot = Slot(i)
            self.slots.append(slot)
            self._spawn(slot)

    def _worker_env(self, slot: Slot, link: WorkerLink) -> dict:
        c = self.config
        conf = {"app": c.app, "factory": c.factory, "app_dir": os.path.abspath(c.app_dir),
                "index": slot.index, "window": c.window, "log_level": c.log_level,
                "shutdown_timeout": c.shutdown_timeout, "lifespan": c.lifespan,
                "root_path": c.root_path, "links": [link.worker_config()]}
        env = dict(os.environ)
        env["SIDECAR_WORKER"] = json.dumps(conf)
        return env

    def _spawn(self, slot: Slot) -> None:
        slot.restart_handle = None
        if self.stopping or slot.retired:
            return
        link = WorkerLink(slot.index, self.config.ring_capacity, self._on_link_failure,
                          self.batcher)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "sidecar.worker"],
                                    env=self._worker_env(slot, link), pass_fds=link.fds(),
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            link.close()
            log.error("worker %d: cannot start: %s", slot.index, exc)
            self._schedule_restart(slot)
            return
        slot.link, slot.proc, slot.started_at = link, proc, time.monotonic()
        slot.pidfd = os.pidfd_open(proc.pid)
        self.loop.add_reader(slot.pidfd, self._on_exit, slot, link, proc, slot.pidfd)
        link.start(self.loop, self._on_hello)
        link.on_stream_end = self._on_stream_end
        log.debug("worker %d: started pid %d", slot.index, proc.pid)

    def _on_hello(self, link: WorkerLink) -> None:
        slot = self.slots[link.index] if link.index < len(self.slots) else None
        if slot is None or slot.link is not link or self.stopping:
            return
        log.info("worker %d ready (pid %d)", link.index, link.pid)
        self.links.append(link)
        if all(s.link is not None and s.link.ready for s in self.slots if not s.retired):
            self.ever_ready = True
            self._ready_event.set()
        self._serve_waiting()

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    # --- exits and restarts --------------------------------------------------------------

    def _on_exit(self, slot: Slot, link: WorkerLink, proc: subprocess.Popen, pidfd: int) -> None:
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        rc = proc.wait()
        if slot.link is link:
            slot.link, slot.proc, slot.pidfd = None, None, -1
        if link in self.links:
            self.links.remove(link)
        lost = len(link.streams)
        link.close()
        ev = self._exit_events.pop(proc.pid, None)
        if ev is not None:
            ev.set()
        if self.stopping or slot.retired:
            log.debug("worker %d (pid %d) %s", slot.index, proc.pid, describe_exit(rc))
            return
        if rc in (EXIT_STARTUP_FAILED, EXIT_IMPORT_FAILED, EXIT_CONFIG_ERROR) \
                and not self.ever_ready:  # restarting cannot help
            self.on_fatal(rc, f"worker {describe_exit(rc)}")
            return
        young = time.monotonic() - slot.started_at < YOUNG or not link.ready
        slot.failures = slot.failures + 1 if young else 0
        self.restarts += 1
        log.warning("worker %d (pid %d) %s; %d stream(s) lost; restarting", slot.index, proc.pid,
                    describe_exit(rc), lost)
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: Slot) -> None:
        delay = 0.0 if slot.failures <= 1 else min(0.1 * 2 ** (slot.failures - 2), MAX_BACKOFF)
        if delay:
            log.warning("worker %d keeps failing (%d in a row): next start in %.1fs",
                        slot.index, slot.failures, delay)
        slot.restart_handle = self.loop.call_later(delay, self._spawn, slot)

    def _on_link_failure(self, link: WorkerLink, reason: str) -> None:
        """The worker broke the ring protocol: kill it; _on_exit cleans up and restarts."""
        slot = self.slots[link.index] if link.index < len(self.slots) else None
        if link in self.links:
            self.links.remove(link)
        link.close()
        if slot is not None and slot.link is link and slot.proc is not None:
            log.error("worker %d (pid %d): %s; killing it", slot.index, slot.proc.pid, reason)
            slot.proc.kill()

    # --- dispatch ------------------------------------------------------------------------

    def pick(self) -> WorkerLink | None:
        links = self.links
        cap = self.config.limit_worker_streams
        if cap:   # a worker at its limit takes no new stream (rare: filter only then)
            if any(len(link.streams) >= cap for link in links):
                links = [link for link in links if len(link.streams) < cap]
        n = len(links)
        if n == 0:
            return None
        if n == 1:
            return links[0]
        # least loaded (in-flight streams, stalls, ring fill: WorkerLink.load); ties rotate so
        # that sequential requests of one keep-alive connection spread over the workers
        self._rr = (self._rr + 1) % n
        now = self.loop.time()
        best, best_load = None, None
        for k in range(n):
            link = links[(self._rr + k) % n]
            load = link.load(now)
            if best is None or load < best_load:
                best, best_load = link, load
        return best

    def in_flight(self) -> int:
        """Streams on any worker, plus those waiting for one."""
        return len(self.waiting) + sum(len(s.link.streams) for s in self.slots if s.link)

    def dispatch(self, stream, body: bytes, more: bool) -> None:
        limit = self.config.limit_streams
        if limit and self.in_flight() >= limit:
            log.warning("%d streams in flight (--limit-streams): answering 503", limit)
            stream.overloaded()
            return
        link = self.pick()
        if link is not None and not self.waiting:
            stream.dispatch(link, body, more)
            return
        self.waiting.append((stream, body, more, time.monotonic() + self.config.dispatch_timeout))
        if link is not None:
            self._serve_waiting()
        elif self._wait_timer is None:
            self._wait_timer = self.loop.call_later(1.0, self._expire_waiting)

    def _serve_waiting(self) -> None:
        while self.waiting:
            link = self.pick()
            if link is None:
                return
            stream, body, more, _ = self.waiting.popleft()
            if not stream.conn.closed and not stream.app_done:
                stream.dispatch(link, body, more)

    def _on_stream_end(self, link: WorkerLink) -> None:
        """A stream ended on ``link``: a stream waiting for a full worker may go there."""
        if self.waiting:
            self._serve_waiting()

    def _expire_waiting(self) -> None:
        self._wait_timer = None
        now = time.monotonic()
        while self.waiting and self.waiting[0][3] <= now:
            stream = self.waiting.popleft()[0]
            if not stream.conn.closed and not stream.app_done:
                log.warning("no worker could take a stream for %.0fs: answering 503",
                            self.config.dispatch_timeout)
                stream.app_done = True
                stream.overloaded()
        if self.waiting:
            self._wait_timer = self.loop.call_later(1.0, self._expire_waiting)

    # --- stopping ------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Drain: workers finish their streams (up to timeout), run lifespan shutdown, exit."""
        self.stopping = True
        self.links.clear()
        waits = []
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
            if slot.proc is not None and slot.proc.poll() is None:
                ev = asyncio.Event()
                self._exit_events[slot.proc.pid] = ev
                waits.append((slot.proc, ev))
                if slot.link is not None:
                    slot.link.draining = True
                slot.proc.send_signal(signal.SIGTERM)
        for proc, ev in waits:
            try:
                await asyncio.wait_for(ev.wait(), timeout + 5.0)
            except asyncio.TimeoutError:
                log.warning("worker pid %d did not stop in time: killing it", proc.pid)
                proc.kill()
                try:
                    await asyncio.wait_for(ev.wait(), 5.0)
                except asyncio.TimeoutError:
                    pass

    def stats(self) -> list[dict]:
        out = []
        for slot in self.slots:
            link = slot.link
            out.append({"index": slot.index, "pid": slot.proc.pid if slot.proc else None,
                        "ready": bool(link and link.ready), "inflight": link.inflight if link else 0,
                        "requests": link.requests if link else 0,
                        "to_worker_used": link.to_worker.used() if link and not link.closed else 0,
                        "to_host_used": link.to_host.used() if link and not link.closed else 0,
                        "failures": slot.failures})
        return out
