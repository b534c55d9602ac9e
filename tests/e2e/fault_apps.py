"""ASGI apps for the fault and lifecycle tests (tests/e2e/test_faults.py, test_reload.py).

``app`` serves these and hands the rest (and lifespan) to ``tests.e2e.apps.app``.  ``m=DIR``
names a directory where a request writes a file named ``id`` holding the worker's pid as it
enters the app: the test sees which worker got which request, without sleeping.

    /pid                        {"pid": ...}
    /async-sleep?s=&m=&id=      awaits s seconds (the event loop keeps running), then answers
    /block?s=&m=&id=            blocks the event loop s seconds (time.sleep), then answers
    /tick?n=&d=&cl=&m=&id=      n chunks of 1 KiB, one every d seconds; Content-Length if cl=1
    /upload?m=&id=              hashes a streamed request body: {bytes, sha256, pid}
    /grow?mb=                   keeps mb MiB more of touched memory alive in this worker
    /garbage                    writes an undecodable record into this worker's ring to the
                                front-end (a worker gone bad), then never answers
"""
import asyncio
import hashlib
import os
import time

from tests.e2e import apps
from tests.e2e.extra_apps import _json, _query, _write_marker

CHUNK = 1024
_hoard: list[bytearray] = []


def tick_body(n: int) -> bytes:
    """What /tick?n= sends: chunk i is CHUNK bytes of the letter a + i % 26."""
    return b"".join(bytes([97 + i % 26]) * CHUNK for i in range(n))


def _mark(q: dict) -> None:
    if "m" in q:
        _write_marker(os.path.join(q["m"], q["id"]), str(os.getpid()))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await apps.app(scope, receive, send)
    path, q = scope["path"], _query(scope)
    if path == "/pid":
        return await _json(send, {"pid": os.getpid()})
    if path == "/async-sleep":
        _mark(q)
        await asyncio.sleep(float(q.get("s", "1")))
        return await _json(send, {"slept": True, "pid": os.getpid()})
    if path == "/block":
        _mark(q)
        time.sleep(float(q.get("s", "1")))  # the bug the hang watchdog exists for
        return await _json(send, {"blocked": True, "pid": os.getpid()})
    if path == "/tick":
        n, d = int(q.get("n", "10")), float(q.get("d", "0.1"))
        headers = [(b"content-length", str(n * CHUNK).encode())] if q.get("cl") == "1" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        _mark(q)
        for i in range(n):
            await send({"type": "http.response.body", "body": bytes([97 + i % 26]) * CHUNK,
                        "more_body": True})
            await asyncio.sleep(d)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/upload":
        _mark(q)
        h, n = hashlib.sha256(), 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            h.update(msg.get("body", b""))
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return await _json(send, {"bytes": n, "sha256": h.hexdigest(), "pid": os.getpid()})
    if path == "/grow":
        block = bytearray(int(q.get("mb", "1")) << 20)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        _hoard.append(block)
        return await _json(send, {"hoard_mib": sum(len(b) for b in _hoard) >> 20,
                                  "pid": os.getpid()})
    if path == "/garbage":
        import gc

        from sidecar.worker.link import HostLink
        for link in [o for o in gc.get_objects() if isinstance(o, HostLink)]:
            link.producer.try_write(b"\xc1 not msgpack")  # 0xc1: never used by msgpack
        await asyncio.sleep(60)
        return
    return await apps.app(scope, receive, send)
