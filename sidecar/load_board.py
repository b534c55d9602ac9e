"""The load board: each worker's load, in shared memory, for every front-end (--frontends N).

With several front-ends, each one sees only its own streams on a worker.  The board gives
each the global picture: one entry per live worker process, which the worker and every
front-end map (a memfd: nameless, nothing in /dev/shm, freed with its last mapping).

    entry (ENTRY bytes = ENTRY // 8 slots of 8 bytes, an entry starts on a cache line)
    ┌─────────┬───────────┬─────────┬──────────────┬──────────────┬─────┬───────┐
    │ serial  │ in flight │ ended   │ work_end[0]  │ work_end[1]  │ ... │ spare │
    │ (int64) │ (int64)   │ (int64) │ (float64)    │ (float64)    │     │       │
    └─────────┴───────────┴─────────┴──────────────┴──────────────┴─────┴───────┘
      supervisor  the worker  the worker front-end 0   front-end 1

- ``serial``: the worker id (attach protocol's ``worker_id``) the entry belongs to, 0 when
  free.  The supervisor assigns entries at spawn and frees them when the worker exits.
- ``in flight``: the worker's streams of every host (its tasks), written by the worker when
  its first stream opens, every PULSE while it has streams, and as each ends.
- ``ended``: the worker's streams of every host that have ended, ever, written with ``in
  flight`` as each ends; in flight + ended is what --max-requests counts (pool.py).
- ``work_end[k]``: front-end k's expected end of the work it queued on the worker
  (``WorkerLink.work_end``: CLOCK_MONOTONIC seconds, the clock of ``loop.time()``).

Every value is one aligned 8-byte word, written by one process and read by the others with
plain loads: a torn or stale value is impossible on the word level and only a hint for
dispatch on the entry level (a value a few microseconds old is what dispatch expects).
"""
from __future__ import annotations

import mmap
import os

__all__ = ["Board", "ENTRIES", "MAX_FRONTENDS"]

ENTRY = 320                  # bytes per worker: five cache lines
ENTRIES = 256                # live worker processes at once (workers, successors, draining)
MAX_FRONTENDS = 30           # a work_end slot each
_SERIAL, _INFLIGHT, _ENDED, _WORK = 0, 1, 2, 3
assert _WORK + MAX_FRONTENDS <= ENTRY // 8 and ENTRY % 64 == 0
_WORDS = ENTRY // 8


class Board:
    """One process's mapping of the board."""

    def __init__(self, fd: int):
        self.fd = fd
        self._map = mmap.mmap(fd, ENTRY * ENTRIES)
        self.words = memoryview(self._map).cast("q")    # serial, in flight
        self.times = memoryview(self._map).cast("d")    # work_end
        self._free = list(range(ENTRIES - 1, -1, -1))   # supervisor only

    @classmethod
    def create(cls) -> "Board":
        fd = os.memfd_create("sidecar-load-board", os.MFD_CLOEXEC)
        os.ftruncate(fd, ENTRY * ENTRIES)
        return cls(fd)

    def close(self) -> None:
        if self._map is None:
            return
        self.words.release()
        self.times.release()
        self._map.close()
        self._map = None
        os.close(self.fd)

    # --- the supervisor --------------------------------------------------------------------

    def assign(self, serial: int) -> int | None:
        """A free entry for worker ``serial``, zeroed; None when every entry is taken."""
        if not self._free:
            return None
        entry = self._free.pop()
        base = entry * _WORDS
        self.words[base:base + _WORDS] = memoryview(bytes(ENTRY)).cast("q")
        self.words[base + _SERIAL] = serial
        return entry

    def set_serial(self, entry: int, serial: int) -> None:
        self.words[entry * _WORDS + _SERIAL] = serial

    def release(self, entry: int) -> None:
        self.words[entry * _WORDS + _SERIAL] = 0
        self.words[entry * _WORDS + _INFLIGHT] = 0
        self.words[entry * _WORDS + _ENDED] = 0
        self._free.append(entry)

    # --- the worker ------------------------------------------------------------------------

    def set_inflight(self, entry: int, n: int) -> None:
        self.words[entry * _WORDS + _INFLIGHT] = n

    def set_load(self, entry: int, inflight: int, ended: int) -> None:
        """A stream ended: the streams in flight now, and those ended ever.  (A worker
        writes them at each stream's end without the call: ``load_words``.)"""
        words, base = self.words, entry * _WORDS
        words[base + _INFLIGHT] = inflight
        words[base + _ENDED] = ended

    def load_words(self, entry: int) -> tuple[int, int]:
        """The indexes in ``words`` of the entry's in flight and ended."""
        return entry * _WORDS + _INFLIGHT, entry * _WORDS + _ENDED

    # --- front-ends ------------------------------------------------------------------------

    def find(self, serial: int) -> int | None:
        """The entry of worker ``serial`` (a front-end learns only the worker id)."""
        words = self.words
        for entry in range(ENTRIES):
            if words[entry * _WORDS] == serial:
                return entry
        return None

    def view(self, entry: int, frontend: int, frontends: int) -> "EntryView":
        return EntryView(self, entry, frontend, frontends)


class EntryView:
    """One worker's entry as front-end ``frontend`` of ``frontends`` reads and writes it."""

    __slots__ = ("words", "times", "inflight_at", "ended_at", "mine", "others")

    def __init__(self, board: Board, entry: int, frontend: int, frontends: int):
        base = entry * _WORDS
        self.words = board.words
        self.times = board.times
        self.inflight_at = base + _INFLIGHT
        self.ended_at = base + _ENDED
        self.mine = base + _WORK + frontend
        self.others = tuple(base + _WORK + k for k in range(frontends) if k != frontend)

    def inflight(self) -> int:
        """The worker's streams in flight, of every host."""
        return self.words[self.inflight_at]

    def opened(self) -> int:
        """The worker's streams of every host, ever (in flight and ended)."""
        return self.words[self.inflight_at] + self.words[self.ended_at]

    def publish(self, work_end: float) -> None:
        self.times[self.mine] = work_end

    def others_ahead(self, now: float) -> float:
        """Seconds of work the other front-ends expect to have queued on the worker."""
        times = self.times
        ahead = 0.0
        for i in self.others:
            t = times[i] - now
            if t > 0.0:
                ahead += t
        return ahead

    def clear(self) -> None:
        self.times[self.mine] = 0.0
