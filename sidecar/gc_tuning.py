"""The cyclic garbage collector's threshold in sidecar's processes (the front-end, each worker).

A request's objects are freed by reference counting as soon as it ends (the stream layer
breaks its one cycle on purpose: ``H1Connection._exchange_complete``), so the collector finds
almost nothing; but CPython starts a young-generation pass every 700 container allocations,
and those passes over whatever is alive at that moment cost about 5% of the instructions of
a request (callgrind, ``benchmarks.frontend --in-process``: 254.0k -> 240.6k instructions per
request).  So once a process has started, its young generation is collected every GEN0
allocations instead (10x CPython's 700): a cycle lives a few thousand allocations longer, a
few hundred KiB at most.

While a process starts (``quiet_start``: the imports of sidecar, its dependencies and the
app, then lifespan startup) the threshold is STARTUP_GEN0: an import allocates many
long-lived containers and few cycles, and the passes over them cost about a tenth of a
process's start-up CPU.  ``tune`` ends that too.

An app that set its own threshold, or disabled the collector, keeps its setting.
"""
from __future__ import annotations

import gc

__all__ = ["GEN0", "STARTUP_GEN0", "quiet_start", "tune"]

GEN0 = 7000
STARTUP_GEN0 = 100_000
_CPYTHON_GEN0 = 700


def quiet_start() -> None:
    """Fewer collections while this process starts: the young-generation threshold is
    STARTUP_GEN0 until ``tune`` (if it is CPython's default now)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 == _CPYTHON_GEN0:
        gc.set_threshold(STARTUP_GEN0, gen1, gen2)


def tune() -> None:
    """Raise this process's young-generation threshold to GEN0 (once it has started, the app
    imported), unless the collector is off or its threshold is not CPython's default (or
    quiet_start's, which an app that turned the collector off gets back as CPython's)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 not in (_CPYTHON_GEN0, STARTUP_GEN0):
        return
    gc.set_threshold(GEN0 if gc.isenabled() else _CPYTHON_GEN0, gen1, gen2)
