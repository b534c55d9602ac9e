"""The cyclic garbage collector's threshold in sidecar's processes (the front-end, each worker).

A request's objects are freed by reference counting as soon as it ends (the stream layer
breaks its one cycle on purpose: ``H1Connection._exchange_complete``), so the collector finds
almost nothing; but CPython starts a young-generation pass every 700 container allocations,
and those passes over whatever is alive at that moment cost about 5% of the instructions of
a request (callgrind, ``benchmarks.frontend --in-process``: 254.0k -> 240.6k instructions per
request).  So once a process has started, its young generation is collected every GEN0
allocations instead (10x CPython's 700): a cycle lives a few thousand allocations longer, a
few hundred KiB at most.

An app that set its own threshold, or disabled the collector, keeps its setting.
"""
from __future__ import annotations

import gc

__all__ = ["GEN0", "tune"]

GEN0 = 7000
_CPYTHON_GEN0 = 700


def tune() -> None:
    """Raise this process's young-generation threshold to GEN0 (once it has started, the app
    imported), unless the collector is off or its threshold is not CPython's default."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gc.isenabled() and gen0 == _CPYTHON_GEN0:
        gc.set_threshold(GEN0, gen1, gen2)
