"""Write coalescing: one flush per event-loop iteration.

Everything produced while the loop handles one batch of readiness events (many requests parsed,
many ring records decoded) is written once at the end of the iteration: one ``send()`` per
client socket, and per worker one ring publication and at most one doorbell (more in an
iteration that queues many events: see link.EARLY_EVENTS).  Under load that
turns a syscall per event into a syscall per iteration; when idle it costs one call_soon.
"""
from __future__ import annotations

import asyncio


class Batcher:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._dirty: list = []
        self._scheduled = False

    def add(self, obj) -> None:
        """Flush ``obj`` (anything with a ``flush()`` method) at the end of this iteration.
        Callers add an object only when its pending output goes from empty to non-empty."""
        self._dirty.append(obj)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for obj in dirty:
            obj.flush()
