"""The figures of a running server: one snapshot, shown three ways.

``snapshot(frontend)`` is the single source.  ``sidecar status`` gets it as JSON over the
control socket (control.py), systemd gets a one-line summary in STATUS= (``status_line``), and
Prometheus scrapes it as text exposition format 0.0.4 (``prometheus_text``) from the optional
``--metrics`` endpoint served here (its own socket: scraping never shares the app's listeners).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from sidecar.frontend import listeners
from sidecar.frontend.link import RING_COUNTERS

RING_COUNTER_NAMES = tuple(ours for _theirs, ours in RING_COUNTERS)

log = logging.getLogger("sidecar.metrics")

MAX_REQUEST_HEAD = 8192   # a scrape request is one short GET; nginx's default header buffer
SCRAPE_TIMEOUT = 10.0     # seconds for a scraper to send its request (Prometheus: 10 s default)


def _worker_state(slot) -> str:
    if slot.retired:
        return "retired"
    if slot.worker is None:
        return "down"  # dead, its restart is scheduled
    return slot.worker.state  # starting, ready, draining (worker_proc.py)


def child_figures(frontend, seq: int | None = None) -> bytes:
    """An extra front-end's figures for the supervisor (--frontends; frontends.py), packed;
    ``seq``: the supervisor's ask they answer (``Frontends.refresh``)."""
    import msgpack
    pool = frontend.pool
    return msgpack.packb({"seq": seq,
        "state": frontend.state, "pid": os.getpid(), "index": frontend.index,
        "connections": len(frontend.connections), **_http2(frontend.connections),
        "waiting": len(pool.dispatcher.waiting), "inflight": pool.inflight(),
        "request_timeouts": frontend.request_timeouts, "shed": frontend.shed_total,
        "requests": sum(pool.requests().values()), "worker_requests": pool.requests()})


def snapshot(frontend) -> dict:
    """Everything an operator asks a live sidecar about, as plain JSON-able values.  With
    --frontends N, the figures of front-ends 1 … N-1 (their last report: ``fresh_snapshot``
    asks them first) are added in, and each front-end is listed under "frontends"."""
    pool = frontend.pool
    extra = frontend.frontends
    extra_requests = extra.worker_requests() if extra is not None else {}
    workers = []
    for slot in pool.slots:
        w = slot.worker
        link = w.link if w is not None else None
        live = link is not None and not link.closed
        # a replaced worker still draining keeps its counts until it exits (then they are in
        # past_requests, past_rings): the totals never go down, as Prometheus counters must not
        draining = [d for d in pool.draining if d.slot is slot]
        counted = [d.link for d in draining] + ([link] if link is not None else [])
        rings = {}
        for direction in ("to_worker", "to_host"):
            ring = getattr(link, direction) if live else None
            totals = dict(slot.past_rings.get(direction) or {})
            for each in counted:
                for name, value in each.ring_counters()[direction].items():
                    totals[name] = totals.get(name, 0) + value
            capacity = ring.capacity if ring else frontend.config.ring_capacity
            rings[direction] = {"used": ring.used() if ring else 0, "capacity": capacity,
                                **{name: totals.get(name, 0) for name in RING_COUNTER_NAMES}}
        requests = slot.past_requests + (link.requests if link else 0) + \
            sum(d.link.requests for d in draining) + extra_requests.get(slot.index, 0)
        workers.append({
            "index": slot.index, "pid": w.pid if w else None, "state": _worker_state(slot),
            "inflight": link.global_inflight() if live else 0, "requests": requests,
            "restarts": slot.restarts, "failures": slot.failures,
            "successor_pid": slot.successor.pid if slot.successor else None,
            "draining_pids": sorted(d.pid for d in draining), "rings": rings})
    snap = {
        "pid": os.getpid(), "app": frontend.config.app, "state": frontend.state,
        "uptime": round(time.monotonic() - frontend.started_at, 3),
        "listeners": [listeners.describe(s, tls=frontend.tls is not None)
                      for s in frontend.sockets if s.fileno() >= 0],
        "connections": len(frontend.connections), **_http2(frontend.connections),
        "waiting": len(pool.dispatcher.waiting),
        "restarts": pool.restarts, "requests": sum(w["requests"] for w in workers),
        "request_timeouts": getattr(frontend, "request_timeouts", 0),
        "workers": workers}
    if extra is not None:
        own = {"index": 0, "pid": snap["pid"], "state": snap["state"], "restarts": 0,
               "requests": sum(slot.past_requests for slot in pool.slots) +
               sum(w.link.requests for w in pool.workers()),
               "inflight": sum(len(w.link.streams) for w in pool.workers()),
               **{k: snap[k] for k in _SUMMED}}
        others = extra.summary()
        for name in _SUMMED:
            snap[name] += sum(o[name] for o in others)
        snap["http2_streams_max"] = max([snap["http2_streams_max"]] +
                                        [o.get("http2_streams_max", 0) for o in others])
        snap["frontends"] = [own] + others
        snap["frontend_restarts"] = extra.restarts
        _balance(snap, getattr(frontend, "balancer", None))
    return snap


async def fresh_snapshot(frontend) -> dict:
    """``snapshot`` with every front-end's figures as of now: the control socket's status and
    the scrape ask the other front-ends first (``Frontends.refresh``, up to a second)."""
    if frontend.frontends is not None:
        await frontend.frontends.refresh()
    return snapshot(frontend)


def _balance(snap: dict, balancer) -> None:
    """--frontends N: which front-end takes new TCP connections (balance.py).  The mode
    ("concentrate"; "hash": the kernel's, by --frontend-balance hash or for want of the BPF
    program), the target (a front-end's index; "hash" while every front-end is saturated),
    and for each front-end its last busy sample (share of a core its event loop used, None
    before the first or under the hash mode) and the connections it shed, ever."""
    on = balancer is not None and balancer.enabled
    snap["frontend_balance"] = "concentrate" if on else "hash"
    snap["frontend_target"] = balancer.target if on and balancer.target is not None \
        else "hash"
    busy = balancer.busy if on else []
    for f in snap["frontends"]:
        k = f["index"]
        b = busy[k] if k < len(busy) else None
        f["busy"] = None if b is None else round(b, 3)
    snap["frontends"][0]["shed"] = balancer.shed_total if balancer is not None else 0


_SUMMED = ("connections", "waiting", "request_timeouts", "http2_connections", "http2_streams")


def _http2(connections) -> dict:
    """HTTP/2 connections (h2_conn.py: they have ``open_streams``), their open streams in
    all, and the most on one connection."""
    counts = [c.open_streams for c in connections if hasattr(c, "open_streams")]
    return {"http2_connections": len(counts), "http2_streams": sum(counts),
            "http2_streams_max": max(counts, default=0)}


def _fill(rings: dict) -> float:
    return 100.0 * rings["used"] / rings["capacity"] if rings["capacity"] else 0.0


def status_line(snap: dict) -> str:
    """systemd's STATUS=: ``2/2 workers ready, 3 in flight, 12 connections, rings 0.1% full``."""
    workers = snap["workers"]
    ready = sum(w["state"] == "ready" for w in workers)
    inflight = sum(w["inflight"] for w in workers)
    fill = max((_fill(r) for w in workers for r in w["rings"].values()), default=0.0)
    text = (f"{ready}/{len(workers)} workers ready, {inflight} in flight, "
            f"{snap['connections']} connections, fullest ring {fill:.1f}%")
    if snap["restarts"]:
        text += f", {snap['restarts']} restarts"
    return text if snap["state"] == "ready" else f"{snap['state']}: {text}"


def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snap: dict) -> str:
    """Prometheus text exposition format 0.0.4: HELP/TYPE once per family, then its samples."""
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    workers = snap["workers"]
    states = ("ready", "starting", "draining", "down", "retired")
    family("sidecar_workers", "gauge", "Worker slots by state.",
           [({"state": s}, sum(w["state"] == s for w in workers)) for s in states])
    family("sidecar_worker_inflight", "gauge", "Streams (requests, WebSockets) on a worker.",
           [({"worker": w["index"]}, w["inflight"]) for w in workers])
    family("sidecar_ring_used_bytes", "gauge", "Bytes waiting in a ring.",
           [({"worker": w["index"], "direction": d}, r["used"])
            for w in workers for d, r in w["rings"].items()])
    family("sidecar_ring_capacity_bytes", "gauge", "Size of a ring.",
           [({"worker": w["index"], "direction": d}, r["capacity"])
            for w in workers for d, r in w["rings"].items()])
    for name, help_ in (
            ("records", "Records written to a ring (direction: to_worker, to_host)."),
            ("bytes", "Payload bytes written to a ring."),
            ("full", "Writes a full ring refused: the reader was behind (backpressure)."),
            ("wakeups", "Doorbells rung to wake a ring's sleeping reader.")):
        family(f"sidecar_ring_{name}_total", "counter", help_,
               [({"worker": w["index"], "direction": d}, r[name])
                for w in workers for d, r in w["rings"].items()])
    family("sidecar_requests_total", "counter", "Streams dispatched to a worker slot.",
           [({"worker": w["index"]}, w["requests"]) for w in workers])
    family("sidecar_worker_restarts_total", "counter", "Workers of a slot restarted after dying.",
           [({"worker": w["index"]}, w["restarts"]) for w in workers])
    family("sidecar_request_timeouts_total", "counter",
           "Requests answered 504 for want of a response start (--timeout-request).",
           [({}, snap.get("request_timeouts", 0))])
    family("sidecar_connections", "gauge", "Open client connections.",
           [({}, snap["connections"])])
    family("sidecar_http2_connections", "gauge", "Open client connections speaking HTTP/2.",
           [({}, snap["http2_connections"])])
    family("sidecar_http2_streams", "gauge", "Open HTTP/2 streams, over every connection.",
           [({}, snap["http2_streams"])])
    family("sidecar_http2_streams_max", "gauge", "Open HTTP/2 streams on the busiest "
           "connection.", [({}, snap["http2_streams_max"])])
    family("sidecar_waiting_streams", "gauge", "Streams waiting for a ready worker.",
           [({}, snap["waiting"])])
    family("sidecar_uptime_seconds", "gauge", "Seconds since the front-end started.",
           [({}, snap["uptime"])])
    if "frontends" in snap:   # --frontends N > 1
        fronts = snap["frontends"]
        family("sidecar_frontend_connections", "gauge", "Open client connections of one "
               "front-end process.", [({"frontend": f["index"]}, f["connections"])
                                      for f in fronts])
        family("sidecar_frontend_requests_total", "counter", "Streams one front-end process "
               "dispatched (since it started).", [({"frontend": f["index"]}, f["requests"])
                                                   for f in fronts])
        family("sidecar_frontend_restarts_total", "counter", "Front-end processes restarted "
               "after dying.", [({}, snap["frontend_restarts"])])
        mode, target = snap.get("frontend_balance"), snap.get("frontend_target")
        family("sidecar_frontend_balance", "gauge", "Which front-end takes new TCP connections"
               ": 1 for the mode in use (concentrate: the first not saturated; hash: the "
               "kernel's).", [({"mode": m}, int(m == mode)) for m in ("concentrate", "hash")])
        family("sidecar_frontend_target", "gauge", "1 for the front-end new TCP connections "
               "go to (all 0: the kernel's hash).",
               [({"frontend": f["index"]}, int(f["index"] == target)) for f in fronts])
        family("sidecar_frontend_busy_ratio", "gauge", "Share of a core one front-end's event "
               "loop used over the last sample (0.25 s; concentrate only).",
               [({"frontend": f["index"]}, f["busy"]) for f in fronts
                if f.get("busy") is not None])
        family("sidecar_frontend_shed_total", "counter", "Keep-alive connections a saturated "
               "front-end closed after their responses in flight, for the next front-end.",
               [({"frontend": f["index"]}, f.get("shed", 0)) for f in fronts])
    return "\n".join(out) + "\n"


# --- the scrape endpoint ---------------------------------------------------------------------

def open_endpoint(spec: str, backlog: int) -> socket.socket:
    """``--metrics HOST:PORT`` (TCP) or ``--metrics PATH`` (a Unix socket, mode 0600)."""
    if "/" in spec or ":" not in spec:
        return listeners.open_uds(spec, 0o600, backlog)
    return listeners.open_tcp(spec, backlog)


class MetricsServer:
    """A minimal HTTP/1.1 server: ``GET /metrics`` -> the text format, then close."""

    def __init__(self, frontend, sock: socket.socket):
        self.frontend = frontend
        self.sock = sock
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock,
                                                 limit=MAX_REQUEST_HEAD)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SCRAPE_TIMEOUT)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                await self._reply(writer, 400, b"bad request\n")
                return
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                await self._reply(writer, 405, b"method not allowed\n")
            elif target != b"/metrics":
                await self._reply(writer, 404, b"not found: try /metrics\n")
            else:
                body = prometheus_text(await fresh_snapshot(self.frontend)).encode()
                await self._reply(writer, 200, body, b"text/plain; version=0.0.4; charset=utf-8",
                                  head_only=method == b"HEAD")
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer, status: int, body: bytes, ctype: bytes = b"text/plain",
                     head_only: bool = False) -> None:
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found",
                  405: b"Method Not Allowed"}[status]
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % (status, reason, ctype, len(body)))
        if not head_only:
            writer.write(body)
        await writer.drain()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
