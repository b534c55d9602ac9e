"""The worker pool, supervised by the front-end: spawn, readiness, restart, replace, drain.

Which worker takes each stream is dispatch.py's job: this module tells it which workers may
take streams (``dispatcher.add``/``remove``).

Each slot holds the worker that serves in it (``slot.worker``) and, while a reload or a
recycle is under way, the one that will take its place (``slot.successor``).  Rules:

- A worker that dies is never reconnected to: its link is closed (streams answered 502 or
  aborted) and a new process gets new rings with a new generation.  Restarts back off
  exponentially while a worker keeps dying young; a worker that fails to import the app or to
  pass lifespan startup before the pool was ever ready stops the server (restarting won't help).
- Replacing (SIGHUP reload, --max-requests, --max-worker-memory) never drops a stream: the
  successor starts and passes lifespan startup while the old worker keeps serving; only then
  does the old one leave the dispatch list and drain (its streams finish, then SIGTERM).  A
  successor that fails leaves the old worker serving.
- Draining waits for the streams this process sent to the worker to finish before it signals
  the worker: a stream still in the ring when a worker with nothing in flight exits would be
  lost.  Past the drain timeout the worker gets SIGQUIT (abort what is left, exit).
- The watchdog (watchdog.py) kills hung workers and recycles ones above the memory limit.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from typing import Callable

from sidecar.config import (EXIT_CONFIG_ERROR, EXIT_IMPORT_FAILED, EXIT_PROTOCOL_ERROR,
                            EXIT_STARTUP_FAILED, Config)
from sidecar.frontend.dispatch import Dispatcher
from sidecar.frontend.link import WorkerLink
from sidecar.frontend.watchdog import Watchdog
from sidecar.frontend.worker_proc import DRAINING, READY, STARTING, WorkerProcess
from sidecar.worker.config import WorkerConfig

log = logging.getLogger("sidecar.supervisor")

YOUNG = 5.0          # a worker dying within this many seconds of start counts as failing
MAX_BACKOFF = 10.0   # seconds between restarts of a worker that keeps failing
DRAIN_RECHECK = 1.0  # seconds: a draining worker's streams are looked at again at least this often
KILL_GRACE = 5.0     # seconds a signalled worker gets beyond its own timeouts before SIGKILL
RECYCLE_RETRY = 10.0  # seconds before retrying a recycle whose replacement failed
HOST_NOTICE = 0.1    # seconds a draining worker keeps reading after other front-ends were
                     # told (WORKER_DRAINING): a stream one of them picked just before
                     # reaches the worker instead of a ring nobody reads any more
SUPERSEDED = "superseded"  # a successor given up for a newer one (reload during a recycle)
_FATAL_AT_START = (EXIT_STARTUP_FAILED, EXIT_IMPORT_FAILED, EXIT_CONFIG_ERROR)


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
        self.worker: WorkerProcess | None = None     # serving, or starting to
        self.successor: WorkerProcess | None = None  # starting, to replace ``worker``
        self.failures = 0
        self.restart_handle: asyncio.TimerHandle | None = None
        self.retired = False  # removed by SIGTTOU: do not restart
        self.recycle_after = 0.0  # monotonic time before which no recycle is tried again
        self.restarts = 0          # of this slot, for sidecar status and the metrics
        self.past_requests = 0     # requests of this slot's previous (dead) workers
        self.past_rings: dict = {}  # their ring counters (WorkerLink.ring_counters), summed


class WorkerPool:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 on_fatal: Callable[[int, str], None], batcher):
        self.config = config
        self.batcher = batcher
        self.loop = loop
        self.on_fatal = on_fatal
        self.slots: list[Slot] = []
        self.dispatcher = Dispatcher(config, loop, lambda: self._workers)
        if config.max_requests:
            self.dispatcher.on_dispatched = self._count
        self.draining: set[WorkerProcess] = set()
        self.ever_ready = False
        self.stopping = False
        self.restarts = 0
        self.costs = self.dispatcher.costs  # learned per-route service time, for the links
        self._ready_event = asyncio.Event()
        self._workers: dict[WorkerLink, WorkerProcess] = {}
        self._exit_events: dict[WorkerProcess, asyncio.Event] = {}
        self._successor_waits: dict[WorkerProcess, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ops = asyncio.Lock()  # reload, SIGTTIN, SIGTTOU: one at a time, in order
        self.watchdog = Watchdog(self, config, loop)
        # hooks for sidecar/frontend/attach.py: a worker process started / drains / exited
        self.on_worker_started: Callable[[WorkerProcess], None] | None = None
        self.on_worker_draining: Callable[[WorkerProcess], None] | None = None
        self.on_worker_gone: Callable[[WorkerProcess], None] | None = None
        # --frontends N > 1: the load board (sidecar/load_board.py) and N; None, 1 otherwise
        self.board = None
        self.frontends = 1

    def use_board(self, board, frontends: int) -> None:
        """--frontends: each worker publishes its load on ``board`` for every front-end."""
        self.board = board
        self.frontends = frontends

    # --- spawning ------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.config.resolved_workers()):
            slot = Slot(i)
            self.slots.append(slot)
            self._spawn(slot)
        self.watchdog.start()

    def _worker_conf(self, slot: Slot, link: WorkerLink) -> WorkerConfig:
        c = self.config
        return WorkerConfig(app=c.app, factory=c.factory, app_dir=os.path.abspath(c.app_dir),
                            index=slot.index, window=c.window, log_level=c.log_level,
                            log_config=c.log_config and os.path.abspath(c.log_config),
                            shutdown_timeout=c.shutdown_timeout, lifespan=c.lifespan,
                            root_path=c.root_path, limit_streams=c.limit_worker_streams,
                            interface=c.interface, wsgi_threads=c.wsgi_threads,
                            links=[link.worker_config()],
                            board_fd=self.board.fd if link.board is not None else None,
                            board_entry=link.board_entry)

    def _new_worker(self, slot: Slot) -> WorkerProcess | None:
        link = WorkerLink(slot.index, self.config.ring_capacity, self._on_link_failure,
                          self.batcher, self.costs)
        link.board_entry = self.board.assign(0) if self.board is not None else None
        if link.board_entry is not None:
            link.board = self.board.view(link.board_entry, 0, self.frontends)
        try:
            w = WorkerProcess(slot, link, self._worker_conf(slot, link))
        except OSError as exc:
            link.close()
            if link.board_entry is not None:
                self.board.release(link.board_entry)
            log.error("worker %d: cannot start: %s", slot.index, exc)
            return None
        if link.board_entry is not None:   # the worker id, for the other front-ends to find
            self.board.set_serial(link.board_entry, w.serial)
        if self.config.max_requests:  # gunicorn: max_requests + randint(0, jitter)
            w.max_requests = self.config.max_requests + random.randint(
                0, self.config.max_requests_jitter)
        self._workers[link] = w
        self.loop.add_reader(w.pidfd, self._on_exit, w)
        link.start(self.loop, self._on_hello)
        link.on_stream_end = self._on_stream_end
        link.waiting = self.dispatcher.waiting   # (the link calls it only when it has work)
        if self.on_worker_started is not None:
            self.on_worker_started(w)
        log.debug("worker %d: started pid %d", slot.index, w.pid)
        return w

    def _spawn(self, slot: Slot) -> None:
        slot.restart_handle = None
        if self.stopping or slot.retired or slot.worker is not None:
            return
        w = self._new_worker(slot)
        if w is None:
            slot.failures += 1
            self._schedule_restart(slot)
            return
        slot.worker = w

    def _on_hello(self, link: WorkerLink) -> None:
        w = self._workers.get(link)
        if w is None or w.state != STARTING or self.stopping:
            return
        w.state = READY
        slot = w.slot
        if w is slot.successor:  # _replace() puts it in service
            fut = self._successor_waits.get(w)
            if fut is not None and not fut.done():
                fut.set_result("")
            return
        log.info("worker %d ready (pid %d)", slot.index, w.pid)
        if all(s.worker is not None and s.worker.state == READY for s in self.slots):
            self.ever_ready = True
            self._ready_event.set()
        self.dispatcher.add(link)

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    def workers(self) -> list[WorkerProcess]:
        """Every live worker process: serving, starting, successors and draining ones."""
        out = [w for s in self.slots for w in (s.worker, s.successor) if w is not None]
        return out + [w for w in self.draining if w not in out]

    # --- exits and restarts --------------------------------------------------------------

    def _on_exit(self, w: WorkerProcess) -> None:
        self.loop.remove_reader(w.pidfd)
        os.close(w.pidfd)
        if self.on_worker_gone is not None:
            self.on_worker_gone(w)
        rc = w.reap()
        report = w.report()
        link = w.link
        if w.drained is not None:
            w.drained.set()
        self._workers.pop(link, None)
        self.dispatcher.remove(link)
        lost = len(link.streams)
        link.close()
        if link.board_entry is not None:
            self.board.release(link.board_entry)
        ev = self._exit_events.pop(w, None)
        if ev is not None:
            ev.set()
        slot = w.slot
        slot.past_requests += link.requests
        for direction, counters in link.ring_counters().items():
            past = slot.past_rings.setdefault(direction, dict.fromkeys(counters, 0))
            for name, value in counters.items():
                past[name] += value
        what = describe_exit(rc) + (f": {report}" if report else "") + \
            (f" ({w.kill_reason})" if w.kill_reason else "")
        if w.state == DRAINING:
            self.draining.discard(w)
            quiet = self.stopping or w.abandoned or rc == 0 and not lost
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "worker %d (pid %d) %s after draining; %d stream(s) lost",
                    slot.index, w.pid, what, lost)
            return
        if w is slot.successor:
            slot.successor = None
            fut = self._successor_waits.get(w)
            if fut is not None and not fut.done():
                fut.set_result(f"worker {slot.index} (pid {w.pid}) {what}")
            if slot.worker is None:  # the one it was to replace died meanwhile
                self._schedule_restart(slot)
            return
        if slot.worker is w:
            slot.worker = None
        if self.stopping or slot.retired:
            log.debug("worker %d (pid %d) %s", slot.index, w.pid, what)
            return
        if rc in _FATAL_AT_START and not self.ever_ready:  # restarting cannot help
            self.on_fatal(rc, f"worker {slot.index} {what}")
            return
        young = time.monotonic() - w.started_at < YOUNG or w.state != READY
        slot.failures = slot.failures + 1 if young else 0
        self.restarts += 1
        slot.restarts += 1
        if slot.successor is not None:
            log.warning("worker %d (pid %d) %s; %d stream(s) lost; its replacement is "
                        "starting", slot.index, w.pid, what, lost)
            return
        log.warning("worker %d (pid %d) %s; %d stream(s) lost; restarting", slot.index, w.pid,
                    what, lost)
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: Slot) -> None:
        if self.stopping or slot.retired or slot.restart_handle is not None:
            return
        delay = 0.0 if slot.failures <= 1 else min(0.1 * 2 ** (slot.failures - 2), MAX_BACKOFF)
        if delay:
            log.warning("worker %d keeps failing (%d in a row): next start in %.1fs",
                        slot.index, slot.failures, delay)
        slot.restart_handle = self.loop.call_later(delay, self._spawn, slot)

    def _on_link_failure(self, link: WorkerLink, reason: str) -> None:
        """The worker broke the ring protocol: kill it; _on_exit cleans up and restarts."""
        w = self._workers.get(link)
        self.dispatcher.remove(link)
        link.close()
        if w is not None:
            log.error("worker %d (pid %d): %s; killing it", w.index, w.pid, reason)
            w.kill(reason)

    def kill_hung(self, w: WorkerProcess, age: float) -> None:
        """The watchdog's verdict: no heartbeat for ``age`` seconds.  Streams on it get 502 or
        are aborted (as for a crash) and a replacement starts."""
        log.error("worker %d (pid %d): no heartbeat for %.1fs (--timeout-worker-hang %gs): "
                  "its event loop is blocked; killing it", w.index, w.pid, age,
                  self.config.worker_hang_timeout)
        w.kill(f"hung: no heartbeat for {age:.1f}s")

    # --- replacing: reload, recycling ----------------------------------------------------

    async def _replace(self, slots: list[Slot], for_memory: bool = False) -> str | None:
        """Start a successor for each slot; once every one passed lifespan startup, put them
        in service and drain the workers they replace.  None on success, else why not (the
        successors are stopped and the old workers keep serving)."""
        started: list[WorkerProcess] = []
        failure = None
        for slot in slots:
            if slot.retired:
                continue
            if slot.successor is not None:
                self._abandon(slot)
            w = self._new_worker(slot)
            if w is None:
                failure = f"worker {slot.index} could not be started"
                break
            slot.successor = w
            w.replaced_for_memory = for_memory
            self._successor_waits[w] = self.loop.create_future()
            started.append(w)
        timeout = self.config.worker_start_timeout
        pending = {self._successor_waits[w] for w in started}
        deadline = self.loop.time() + timeout
        while pending and failure is None:
            done, pending = await asyncio.wait(pending, timeout=deadline - self.loop.time(),
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                failure = f"new workers not ready after {timeout:g}s"
            for fut in done:
                failure = failure or fut.result() or None
        for w in started:
            self._successor_waits.pop(w, None)
        if failure is None and self.stopping:
            failure = "shutting down"
        if failure is not None:
            for w in started:
                if w.slot.successor is w:
                    self._abandon(w.slot)
            return failure
        for w in started:
            slot = w.slot
            if slot.successor is not w:  # superseded or retired meanwhile
                continue
            slot.successor, old, slot.worker = None, slot.worker, w
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
                slot.restart_handle = None
            slot.failures = 0
            self.dispatcher.add(w.link)
            log.info("worker %d ready (pid %d)%s", slot.index, w.pid,
                     f", replacing pid {old.pid}" if old is not None else "")
            if old is not None:
                self._drain(old)
        return None

    def _abandon(self, slot: Slot) -> None:
        """Give up the slot's successor (it never served): stop it."""
        w, slot.successor = slot.successor, None
        if w is None:
            return
        fut = self._successor_waits.get(w)
        if fut is not None and not fut.done():
            fut.set_result(SUPERSEDED)
        w.abandoned = True
        self._drain(w)
        if slot.worker is None:  # the worker it was to replace died meanwhile
            self._schedule_restart(slot)

    def recycle(self, w: WorkerProcess, why: str, for_memory: bool = False) -> None:
        """Replace ``w`` gracefully (--max-requests, --max-worker-memory)."""
        slot = w.slot
        if (w.recycling or w.state != READY or slot.worker is not w or self.stopping
                or slot.successor is not None or time.monotonic() < slot.recycle_after):
            return
        w.recycling = True
        log.info("worker %d (pid %d) %s: recycling it", slot.index, w.pid, why)
        self._background(self._recycle(slot, w, for_memory))

    async def _recycle(self, slot: Slot, w: WorkerProcess, for_memory: bool) -> None:
        failure = await self._replace([slot], for_memory)
        if failure is not None and failure != SUPERSEDED and not self.stopping:
            w.recycling = False
            slot.recycle_after = time.monotonic() + RECYCLE_RETRY
            log.error("worker %d (pid %d): its replacement failed (%s); it keeps serving, "
                      "next try in %gs", slot.index, w.pid, failure, RECYCLE_RETRY)

    async def reload(self) -> bool:
        """SIGHUP: new workers (importing the app afresh) start and pass lifespan startup;
        only then do the old ones stop taking streams and drain.  Returns once the new
        workers serve (True) or the reload failed and the old ones still serve (False); the
        old workers finish draining in the background."""
        async with self._ops:
            if self.stopping:
                return False
            if not self.ever_ready:
                log.warning("reload ignored: the workers are still starting")
                return False
            slots = [s for s in self.slots if not s.retired]
            log.info("reloading: starting %d new worker(s)", len(slots))
            failure = await self._replace(slots)
            if self.stopping:
                return False
            if failure is not None:
                log.error("reload failed: %s; the old workers keep serving", failure)
                return False
            log.info("reload complete: %d new worker(s) serving, the old ones draining",
                     len(slots))
            return True

    async def add_worker(self) -> None:
        """SIGTTIN: one more worker."""
        async with self._ops:
            if self.stopping:
                return
            slot = Slot(len(self.slots))
            self.slots.append(slot)
            log.info("adding worker %d (%d workers)", slot.index, len(self.slots))
            self._spawn(slot)

    async def remove_worker(self) -> None:
        """SIGTTOU: one worker fewer (the last one drains); never below one."""
        async with self._ops:
            if self.stopping:
                return
            if len(self.slots) <= 1:
                log.warning("not removing the last worker")
                return
            slot = self.slots.pop()
            slot.retired = True
            log.info("removing worker %d (%d workers)", slot.index, len(self.slots))
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
            self._abandon(slot)
            if slot.worker is not None:
                self._drain(slot.worker)

    # --- draining ------------------------------------------------------------------------

    def _drain(self, w: WorkerProcess, timeout: float | None = None) -> None:
        """No new streams for ``w``; once its streams finished, SIGTERM it (in the background)."""
        if w.state == DRAINING or w.exited:
            return
        w.state = DRAINING
        self.dispatcher.remove(w.link)
        w.link.draining = True
        self.draining.add(w)
        if self.on_worker_draining is not None:
            self.on_worker_draining(w)
        w.drain_task = self._background(self._drain_then_stop(w, timeout))

    async def _drain_then_stop(self, w: WorkerProcess, timeout: float | None) -> None:
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        link = w.link
        deadline = self.loop.time() + timeout
        for stream in list(link.streams.values()):
            stream.drain_start()  # an open WebSocket: close 1012 (service restart)
        # (a WebSocket accepted later is closed as it opens: ws_stream, link.draining)
        notice = self.loop.call_later(max(self.config.drain_grace, 0.0),
                                      self._notice_event_streams, link)
        # woken when its last stream ends (_on_stream_end) or it exits (_on_exit); the
        # timeout only bounds the wait for streams that ended some other way
        w.drained = drained = asyncio.Event()
        if self.board is not None:   # other front-ends: let them see WORKER_DRAINING first
            await asyncio.sleep(HOST_NOTICE)
        try:
            while link.streams and not w.exited:
                left = deadline - self.loop.time()
                if left <= 0:
                    break
                drained.clear()
                try:
                    await asyncio.wait_for(drained.wait(), min(left, DRAIN_RECHECK))
                except asyncio.TimeoutError:
                    pass
        finally:
            notice.cancel()
        if w.exited:
            return
        if link.streams:
            log.warning("worker %d (pid %d): %d stream(s) still running after %gs; stopping it",
                        w.index, w.pid, len(link.streams), timeout)
            w.signal(signal.SIGQUIT)  # the worker aborts what is left and exits
        else:
            w.signal(signal.SIGTERM)
        await self._wait_exit(w, self.config.shutdown_timeout + KILL_GRACE)

    @staticmethod
    def _notice_event_streams(link: WorkerLink) -> None:
        """--drain-grace into a drain: event streams still running are told to end
        (Stream.drain_notice; one that starts its response later is told as it starts)."""
        for stream in list(link.streams.values()):
            stream.drain_notice()

    async def _wait_exit(self, w: WorkerProcess, timeout: float) -> None:
        for t in (timeout, KILL_GRACE):
            if w.exited:
                return
            ev = self._exit_events.setdefault(w, asyncio.Event())
            try:
                await asyncio.wait_for(ev.wait(), t)
                return
            except asyncio.TimeoutError:
                log.warning("worker %d (pid %d) did not stop in time: killing it", w.index, w.pid)
                w.kill("did not stop in time")

    def _count(self, link: WorkerLink) -> None:
        """--max-requests: a worker that has taken its share of streams is replaced.  With
        --frontends, the streams of every front-end count: the worker's own count on the load
        board (checked here, at each of this front-end's dispatches to it, and once a second
        by ``check_max_requests`` for a worker only the others send to)."""
        w = self._workers.get(link)
        if w is None or not w.max_requests or w.recycling:
            return
        n = link.requests
        if link.board is not None:
            opened = link.board.opened()
            if opened > n:
                n = opened
        if n >= w.max_requests:
            self.recycle(w, f"served {n} requests (--max-requests)")

    def check_max_requests(self) -> None:
        """Once a second with --frontends and --max-requests (server.py's sweep)."""
        for link in list(self._workers):
            self._count(link)

    def _on_stream_end(self, link: WorkerLink) -> None:
        dispatcher = self.dispatcher
        if dispatcher.waiting:   # Dispatcher.on_stream_end, without its call (per request)
            dispatcher.serve_waiting()
        w = self._workers.get(link)
        if w is not None and w.drained is not None and not link.streams:
            w.drained.set()

    def cancel_background(self) -> None:
        """Shutdown: a reload or recycle still under way is cut off (its workers are gone)."""
        for task in list(self._tasks):
            task.cancel()

    def _background(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- stopping ------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Drain every worker: its streams finish (up to timeout), then it gets SIGTERM, runs
        lifespan shutdown and exits."""
        self.stopping = True
        self.watchdog.stop()
        self.dispatcher.clear()
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
                slot.restart_handle = None
            self._abandon(slot)
            if slot.worker is not None:
                self._drain(slot.worker, timeout)
        tasks = [w.drain_task for w in self.draining if w.drain_task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> list[dict]:
        out = []
        for slot in self.slots:
            w = slot.worker
            link = w.link if w is not None else None
            live = link is not None and not link.closed
            out.append({"index": slot.index, "pid": w.pid if w else None,
                        "ready": bool(w and w.state == READY),
                        "inflight": link.inflight if link else 0,
                        "requests": link.requests if link else 0,
                        "to_worker_used": link.to_worker.used() if live else 0,
                        "to_host_used": link.to_host.used() if live else 0,
                        "failures": slot.failures,
                        "rss_mib": w.rss_mib() if w else None,
                        "heartbeat_age": w.heartbeat_age() if w else None})
        return out
