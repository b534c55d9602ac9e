"""Soak: mixed load for a while against a real sidecar with 2 workers, every process's RSS
sampled, and nothing left behind at the end.

Load (all at once, for SIDECAR_SOAK_SECONDS, 20 by default; 600 for a real soak): keep-alive
GETs over TCP and the Unix socket, a new connection per request, POST uploads checked by
hash, streamed downloads, SSE streams, WebSocket echo sessions (a new WebSocket each time).
Then: RSS growth after warm-up is bounded (generous margins: this machine is shared), the
front-end's and workers' descriptor counts and ring mappings return to their baselines,
/dev/shm holds nothing new, and after SIGTERM every process is gone.  The RSS summary is
printed (pytest -s shows it).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import threading
import time

import httpx
from websockets.asyncio.client import connect as ws_connect

from tests.e2e.util import alive, process_pids, shm_entries, wait_for, wait_stable
from tests.server import Sidecar, rss_kib

SECONDS = float(os.environ.get("SIDECAR_SOAK_SECONDS", "20"))
WARMUP = max(3.0, SECONDS * 0.25)   # allocator pools, caches, lazily imported code fill up
# RSS a process may add after warm-up: a leak of 1 KiB per request would pass this in a 20 s
# run only below ~20 k requests, and fails a 600 s run; real growth here is a few MiB.
RSS_MARGIN_KIB = 48 * 1024
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
DOWNLOAD = 1024 * 1024


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ring_maps(pid: int) -> int:
    """Mappings of (nameless) shared-memory segments: the rings."""
    with open(f"/proc/{pid}/maps") as fh:
        return sum(1 for line in fh if "/dev/shm/" in line)


class Sampler(threading.Thread):
    """RSS (KiB) of each process every ``interval`` seconds: [(t, {name: kib})]."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5):
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.t0 = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            row = {}
            for name, pid in self.pids.items():
                try:
                    row[name] = rss_kib(pid)
                except (OSError, RuntimeError):
                    pass
            self.samples.append((time.monotonic() - self.t0, row))
            self._done.wait(self.interval)

    def finish(self) -> None:
        self._done.set()
        self.join()

    def summary(self, name: str) -> dict:
        values = [(t, row[name]) for t, row in self.samples if name in row]
        warm = [v for t, v in values if t >= WARMUP] or [values[-1][1]]
        return {"start": values[0][1], "warm": warm[0], "peak": max(v for _, v in values),
                "end": values[-1][1], "median": statistics.median(warm),
                "growth": max(warm) - warm[0]}


class Load:
    """The client side: asyncio tasks, each a loop of one kind of traffic until the end."""

    def __init__(self, sc: Sidecar, until: float):
        self.sc = sc
        self.until = until
        self.counts: dict[str, int] = {}

    def done(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def gets(self, uds: bool) -> None:
        transport = httpx.AsyncHTTPTransport(uds=self.sc.uds) if uds else None
        base = "http://sidecar" if uds else self.sc.url
        async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30) as c:
            while time.monotonic() < self.until:
                r = await c.get("/api/hello")
                assert r.status_code == 200, r
                self.done("get-uds" if uds else "get")

    async def new_connections(self) -> None:
        while time.monotonic() < self.until:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.sc.port)
            writer.write(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert data.startswith(b"HTTP/1.1 200 "), data[:100]
            self.done("new-connection")

    async def uploads(self) -> None:
        async with httpx.AsyncClient(base_url=self.sc.url, timeout=30) as c:
            while time.monotonic() < self.until:
                r = await c.post("/upload", content=UPLOAD)
                got = r.json()
                assert (got["bytes"], got["sha256"]) == (len(UPLOAD), UPLOAD_SHA), r.text
                self.done("upload")

    async def downloads(self) -> None:
        async with httpx.AsyncClient(base_url=self.sc.url, timeout=30) as c:
            while time.monotonic() < self.until:
                n = 0
                async with c.stream("GET", f"/download?size={DOWNLOAD}") as r:
                    assert r.status_code == 200
                    async for chunk in r.aiter_bytes():
                        n += len(chunk)
                assert n == DOWNLOAD
                self.done("download")

    async def sse(self) -> None:
        async with httpx.AsyncClient(base_url=self.sc.url, timeout=30) as c:
            while time.monotonic() < self.until:
                events = 0
                async with c.stream("GET", "/sse/metrics?count=5&interval=0.05") as r:
                    async for line in r.aiter_lines():
                        events += line.startswith("data:")
                assert events == 5
                self.done("sse")

    async def websockets(self) -> None:
        url = f"ws://127.0.0.1:{self.sc.port}/ws/echo"
        while time.monotonic() < self.until:
            async with ws_connect(url, open_timeout=30) as ws:
                for i in range(20):
                    msg = f"message {i}" if i % 2 else os.urandom(1000)
                    await ws.send(msg)
                    assert await ws.recv() == msg
            self.done("websocket")

    async def run(self) -> None:
        await asyncio.gather(self.gets(False), self.gets(False), self.gets(True),
                             self.new_connections(), self.uploads(), self.downloads(),
                             self.sse(), self.websockets(), self.websockets())


def test_soak_mixed_load_bounded_rss_and_nothing_leaked():
    shm_before = shm_entries()
    sc = Sidecar("examples.demo:app", "--no-access-log", workers=2, ready_path="/pid")
    sc.start()
    try:
        pids = process_pids(sc)
        assert len(pids) == 3, pids
        front = sc.proc.pid
        httpx.get(sc.url + "/pid", timeout=10)
        wait_stable(lambda: fd_count(front), settle=0.5, timeout=10)   # that one closed
        fds_before = {name: fd_count(pid) for name, pid in pids.items()}
        maps_before = {name: ring_maps(pid) for name, pid in pids.items()}
        sampler = Sampler(pids)
        sampler.start()
        load = Load(sc, time.monotonic() + SECONDS)
        try:
            asyncio.run(load.run())
        finally:
            sampler.finish()
        assert sc.worker_pids() and set(process_pids(sc).values()) == set(pids.values()), \
            "a worker was replaced during the soak"

        lines = [f"soak {SECONDS:.0f}s (warm-up {WARMUP:.0f}s), {len(sampler.samples)} samples;"
                 f" completed: {dict(sorted(load.counts.items()))}"]
        for name in pids:
            s = sampler.summary(name)
            lines.append(f"  {name:>14}: RSS start {s['start'] / 1024:.1f} MiB, after warm-up "
                         f"{s['warm'] / 1024:.1f}, median {s['median'] / 1024:.1f}, peak "
                         f"{s['peak'] / 1024:.1f}, end {s['end'] / 1024:.1f}; growth after "
                         f"warm-up {s['growth'] / 1024:.1f} MiB")
        print("\n" + "\n".join(lines))
        for kind in ("get", "get-uds", "new-connection", "upload", "download", "sse",
                     "websocket"):
            assert load.counts.get(kind, 0) >= 1, (kind, load.counts)
        for name in pids:
            s = sampler.summary(name)
            assert s["growth"] <= RSS_MARGIN_KIB, (name, s)
            assert s["peak"] <= s["start"] + 4 * RSS_MARGIN_KIB, (name, s)

        # descriptors and ring mappings back to their baselines once the clients are gone
        for name, pid in pids.items():
            wait_for(lambda: fd_count(pid) <= fds_before[name] + 2, 15,
                     what=f"{name}'s fds back near {fds_before[name]} (now {fd_count(pid)})")
            assert ring_maps(pid) == maps_before[name], name
    finally:
        code = sc.stop()
        sc.tmp.cleanup()
    assert code == 0, sc.log()
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) still running after shutdown"
    wait_for(lambda: not (shm_entries() - shm_before), 10,
             what=f"/dev/shm to lose {sorted(shm_entries() - shm_before)}")
