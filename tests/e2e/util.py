"""Helpers shared by the end-to-end tests: polling with a deadline, RSS sampling, processes."""
from __future__ import annotations

import os
import threading
import time

from tests.server import rss_kib

MiB = 1 << 20


def recv_until_eof(sock) -> bytes:
    """Everything the peer sends until it closes its side (a reset is raised, not hidden)."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_stable(read, settle: float, timeout: float, interval: float = 0.05):
    """Poll ``read()`` until its value has not changed for ``settle`` seconds; return it.

    Used to show that something *stopped* (a producer under backpressure): there is no event
    for "nothing happens any more", so the value must hold still for a while.
    """
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while True:
        time.sleep(interval)
        now, value = time.monotonic(), read()
        if value != last:
            last, since = value, now
        elif now - since >= settle:
            return value
        if now >= deadline:
            raise AssertionError(f"value still changing after {timeout}s (last {last!r})")


def serving_pids(sc, n: int, ms: int = 400) -> set[int]:
    """Pids of the workers that serve n concurrent CPU-bound requests (/spin, ms each).

    Idle workers are packed onto (docs/operations.md, "Dispatch"): sequential requests all
    land on the first one.  Each spin makes its worker busy at once (a route not seen yet costs
    the packing budget; once seen, its learned cost), so n of them at a time reach n workers."""
    pids: list[int] = []

    def one():
        with sc.client(timeout=30) as c:
            pids.append(c.get("/spin", params={"ms": ms}).json()["pid"])

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return set(pids)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm"))


class RssSampler:
    """Samples VmRSS (KiB) of some pids in a thread; ``growth()`` = max seen - baseline.

        with RssSampler({"front-end": pid, "worker 0": wpid}) as rss:
            ... transfer ...
        rss.growth()  # {"front-end": KiB, ...}
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.01):
        self.pids = pids
        self.interval = interval
        self.baseline = {name: rss_kib(pid) for name, pid in pids.items()}
        self.peak = dict(self.baseline)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                value = rss_kib(pid)
            except (OSError, RuntimeError):
                continue
            if value > self.peak[name]:
                self.peak[name] = value
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def growth(self) -> dict[str, int]:
        return {name: self.peak[name] - self.baseline[name] for name in self.pids}

    def report(self) -> str:
        return ", ".join(f"{name} {self.baseline[name] / 1024:.1f} -> {self.peak[name] / 1024:.1f}"
                         f" MiB (+{(self.peak[name] - self.baseline[name]) / 1024:.1f})"
                         for name in self.pids) + f" [{self.samples} samples]"


def process_pids(sc) -> dict[str, int]:
    """{"front-end": pid, "worker <pid>": pid, ...} of a running Sidecar."""
    out = {"front-end": sc.proc.pid}
    for pid in sorted(sc.worker_pids()):
        out[f"worker {pid}"] = pid
    return out
