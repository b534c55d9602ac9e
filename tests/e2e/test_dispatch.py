"""Per-request dispatch (issue #3): while one worker is stuck in a CPU-bound request, fast
requests go to the other one.

No timing is asserted: each /spin response says which worker ran it and when (CLOCK_MONOTONIC
is one clock for every process of the machine); each fast /pid request sent while a spin was
running on worker P must have been served by a worker other than P.  A fast request dispatched
to P would wait behind the spin and come back with P's pid, so the check can fail.
"""
from __future__ import annotations

import threading
import time

import httpx

from tests.server import Sidecar

SPIN_MS = 60
SPINS = 25
FAST_CLIENTS = 4
MARGIN = 0.005  # seconds


def test_fast_requests_avoid_the_worker_busy_with_a_cpu_bound_one():
    with Sidecar("tests.e2e.apps:app", ready_path="/pid", workers=2) as sc:
        with httpx.Client(base_url=sc.url, timeout=30) as c:
            for _ in range(3):  # let the front-end learn what /spin and /pid cost
                assert c.get("/spin", params={"ms": SPIN_MS}).status_code == 200
            for _ in range(20):
                assert c.get("/pid").status_code == 200

        spins: list[dict] = []
        fast: list[tuple[float, int]] = []   # (sent at, served by)
        done = threading.Event()

        def spinner():
            with httpx.Client(base_url=sc.url, timeout=30) as c:
                for _ in range(SPINS):
                    spins.append(c.get("/spin", params={"ms": SPIN_MS}).json())
            done.set()

        def fast_client():
            with httpx.Client(base_url=sc.url, timeout=30) as c:
                while not done.is_set():
                    sent = time.monotonic()
                    fast.append((sent, c.get("/pid").json()["pid"]))
                    time.sleep(0.002)

        threads = [threading.Thread(target=spinner)]
        threads += [threading.Thread(target=fast_client) for _ in range(FAST_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    assert len({s["pid"] for s in spins}) >= 1
    during, wrong = 0, 0
    for sent, pid in fast:
        for s in spins:
            # sent while the spin ran, not in its last moments: one sent just before the end
            # may reach the front-end after the worker is free again
            if s["t0"] <= sent <= s["t1"] - MARGIN:
                during += 1
                wrong += pid == s["pid"]
                break
    assert during >= 50, f"only {during} fast requests were sent during a spin"
    assert wrong <= during * 0.05, f"{wrong} of {during} fast requests waited behind a spin"
