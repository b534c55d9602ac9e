"""The pool's periodic checks: hung workers, workers that never get ready, memory limits.

- Hang: every worker's event loop writes a heartbeat into its rings every 0.5 s (TICK in
  sidecar/worker/process.py).  One older than ``--timeout-worker-hang`` means the loop has not
  run for that long: a blocking call in the app, a CPU-bound request that never awaits, a
  SIGSTOP.  The worker is killed (SIGKILL) and replaced, like gunicorn's --timeout (30 s) does
  to a silent worker -- which also means a single request that computes without yielding for
  longer than the timeout is killed with its worker.  Waiting on I/O or on ``asyncio.sleep``
  never looks like a hang: the loop keeps ticking.
- Start: once the pool was ready, a (re)started worker that is not ready within
  ``--timeout-worker-start`` is killed (it counts as a failure: restart with backoff).
- Memory: every MEMORY_INTERVAL the RSS of each serving worker is read from /proc; one above
  ``--max-worker-memory`` is recycled gracefully (pool.recycle) -- unless it is itself the
  replacement of one and already above the limit within FRESH seconds of its start: the next
  would be too (a limit set too low), so that is logged once instead of recycling forever.

If this process itself did not run for a while (SIGSTOP, a paused container) every heartbeat
looks old when it resumes; that round gives no verdict, the workers get one more interval.
"""
from __future__ import annotations

import asyncio
import logging
import time

from sidecar.frontend.worker_proc import READY, STARTING

log = logging.getLogger("sidecar.supervisor")

INTERVAL = 1.0          # seconds between checks (shorter for a hang timeout under 4 s)
MEMORY_INTERVAL = 2.0   # seconds between RSS samples (celery samples after each task)
FRESH = 5.0             # a memory replacement above the limit this soon: not recycled


class Watchdog:
    def __init__(self, pool, config, loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.config = config
        self.loop = loop
        hang = config.worker_hang_timeout
        self.interval = min(INTERVAL, max(0.25, hang / 4)) if hang > 0 else INTERVAL
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._last_memory = 0.0

    def start(self) -> None:
        self._last = self._last_memory = self.loop.time()
        self._handle = self.loop.call_later(self.interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = self.loop.time()
        gap, self._last = now - self._last, now
        self._handle = self.loop.call_later(self.interval, self._check)
        if gap > 2 * self.interval + 1.0:
            log.debug("watchdog ran %.1fs late: no verdicts this round", gap)
            return
        memory = self.config.max_worker_memory and now - self._last_memory >= MEMORY_INTERVAL
        if memory:
            self._last_memory = now
        for w in self.pool.workers():
            if w.exited or w.kill_reason is not None:
                continue
            if w.state == STARTING:
                self._check_start(w)
                continue
            hang = self.config.worker_hang_timeout
            if hang > 0:
                age = w.heartbeat_age()
                if age is not None and age > hang:
                    self.pool.kill_hung(w, age)
                    continue
            if memory and w.state == READY and not w.recycling:
                self._check_memory(w)

    def _check_start(self, w) -> None:
        timeout = self.config.worker_start_timeout
        if self.pool.ever_ready and time.monotonic() - w.started_at > timeout:
            log.error("worker %d (pid %d) not ready after %gs (--timeout-worker-start); "
                      "killing it", w.index, w.pid, timeout)
            w.kill(f"not ready after {timeout:g}s")

    def _check_memory(self, w) -> None:
        limit = self.config.max_worker_memory
        rss = w.rss_mib()
        if rss is None or rss <= limit or w.memory_warned:
            return
        if w.replaced_for_memory and time.monotonic() - w.started_at < FRESH:
            # the replacement is above the limit from its start: the next one would be too
            w.memory_warned = True  # and it stays: recycling it would loop
            log.error("worker %d (pid %d) uses %.0f MiB right after its start, above "
                      "--max-worker-memory %d: not recycling it (raise the limit)",
                      w.index, w.pid, rss, limit)
            return
        self.pool.recycle(w, f"uses {rss:.0f} MiB, above --max-worker-memory {limit}",
                          for_memory=True)
