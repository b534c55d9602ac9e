"""Ring benchmark: the shared-memory ring against what a Python user would otherwise pick.

    python -m benchmarks.ring            # everything, about a minute and a half
    python -m benchmarks.ring --quick    # smaller counts, fewer repeats (~10 s)
    python -m benchmarks.ring --json     # the same figures as JSON

One run measures, side by side:

- C level (native/bench/ring_bench.c, compiled into build/ with -O2 -march=native, cached by
  source hash): two processes (fork, shared anonymous mapping, 16 MiB ring), records/s and
  GB/s one way for 64 B, 1 KiB and 64 KiB records, busy-spin waiting and eventfd doorbells,
  and the 64 B ping-pong round trip both ways; and, as the baseline, the same one-way
  workload over the smallest correct SPSC ring (``ring_bench minimal``: ~50 lines, no
  validation, counters or doorbell flags) -- what this machine gives, to read the ring's
  figures (and the targets, set on a faster machine) against.
- Python level: msgpack events between two processes over the ring, a Unix socketpair
  (batched sends, ``Unpacker.feed`` on the other side) and a multiprocessing.Queue.  Every
  transport does the same work per event: ``events.pack`` on one side; on the other, decode
  to a list, check it is ``[int kind, int sid, ...]`` and that sids arrive in order.
  Producers are plain loops; consumers run under uvloop (ring: ``start_reading_events``;
  socketpair: a Protocol), except the Queue's, which blocks in ``get``.
    one way   RESPONSE_BODY (64-byte body) and HTTP_REQUEST (a GET, 7 headers) events/s,
              256 events per write (ring: ``try_write_events``; socketpair: ``sendall`` of
              their join, or for "sock array" of the batch packed by one call -- the same
              bytes); and RESPONSE_BODY with one write per event, the way WorkerLink.send
              writes.  "pack alone" is events.pack on one core: no transport fed from Python
              can go faster.  Each side's CPU time per event is reported too: on a shared
              machine it is the figure other load disturbs least, and 1e9 / the busier side's
              figure is the rate with a core each.
    round trip  one HTTP_REQUEST there, one RESPONSE_BODY back, under uvloop on both sides:
              ring with doorbells, ring with ``Consumer.spin`` (adaptive: SpinPolicy; its
              hits and misses are printed), socketpair, Queue; "codec
              alone" is the pack + unpack work of a round trip in one process: the floor.
- Idle CPU of a ring consumer asleep in ``start_reading_events`` under uvloop.

Absolute figures drift on shared machines (the load average is printed): compare rows of one
run.  Each figure is the best of a few repeats (best = least disturbed by other load); round
trips stop after a count or 1.5 s, whichever comes first.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import pathlib
import platform
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import msgpack
import uvloop

from sidecar import events
from sidecar.ring import Consumer, Producer, lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH_C = ROOT / "native" / "bench" / "ring_bench.c"
RING_C = ROOT / "native" / "ring.c"
RING_H = ROOT / "native" / "ring.h"
CFLAGS = ["-O2", "-march=native", "-std=c11", "-Wall", "-Wextra"]

MP = multiprocessing.get_context("fork")
now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: comparable across processes

# --- the events ------------------------------------------------------------------------------

BODY = b"x" * 64
HEADERS = [[b"host", b"example.com"], [b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"],
           [b"accept", b"text/html,application/xhtml+xml"], [b"accept-encoding", b"gzip, br"],
           [b"accept-language", b"en-US,en;q=0.9"], [b"cookie", b"session=0123456789abcdef"],
           [b"x-request-id", b"7f3c2a9e-5b1d-4c8e-9a6f-2d4e8b1c0f3a"]]


def response_body(sid: int) -> list:
    """RESPONSE_BODY with a 64-byte chunk: the bulk of worker -> host traffic."""
    return [events.RESPONSE_BODY, sid, BODY, True]


def http_request(sid: int) -> list:
    """HTTP_REQUEST of a typical GET with seven headers: the first event of every stream."""
    return [events.HTTP_REQUEST, sid, "GET", "http", "/api/items/42", b"/api/items/42",
            b"page=2&sort=name", HEADERS, ["127.0.0.1", 51234], ["127.0.0.1", 8000], "1.1",
            "", b"", False]


WORKLOADS = {"body64": response_body, "request": http_request}
POOL = 1024  # events are built once, sids 0..POOL-1, and packed afresh for every send
BATCH = 256  # events per send (socketpair) / per try_write_many (ring)


def event_pool(workload: str) -> list[list]:
    make = WORKLOADS[workload]
    return [make(i) for i in range(POOL)]


# --- helpers ---------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run_child(target, *args):
    """Fork ``target(conn, *args)``; return (process, our end of its pipe)."""
    parent, child = MP.Pipe()
    proc = MP.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    child.close()
    return proc, parent


def finish(proc, conn, timeout: float = 60.0):
    if not conn.poll(timeout):
        proc.kill()
        raise RuntimeError("child did not report")
    result = conn.recv()
    proc.join(10)
    if isinstance(result, BaseException):
        raise result
    return result


def stop_child(proc) -> None:
    """End an echo child once measured.  (Not by closing its pipe or socket: a forked child
    holds a copy of our end too, so it would never see EOF.)"""
    proc.kill()
    proc.join()


def ring_pair(capacity: int) -> tuple[Producer, Consumer]:
    """A producer here and a consumer attached to it; the consumer is for a forked child."""
    prod = Producer.create(capacity)
    return prod, Consumer.attach(prod.spec().dup())


def write_all(prod: Producer, payloads: list[bytes]) -> None:
    """Write every payload, in order, sleeping on the space doorbell while the ring is full."""
    done = prod.try_write_many(payloads)
    while done < len(payloads):
        need = len(payloads[done]) + 16
        if lib.ring_producer_prepare_wait(prod.handle, need):
            select.select([prod.space_bell.fd], [], [], 1.0)
            prod.space_bell.drain()
        done += prod.try_write_many(payloads[done:])


def batches(pool: list, n: int):
    """n events from the pool in order, BATCH at a time."""
    for sent in range(0, n, BATCH):
        k = min(BATCH, n - sent)
        i = sent % POOL
        yield pool[i:i + k] if i + k <= POOL else (pool + pool)[i:i + k]


def pack_ceiling(workload: str, n: int) -> float:
    """Events/s of events.pack alone on one core: no transport can send faster from Python."""
    pool, pack = event_pool(workload), events.pack
    start = time.process_time()
    for batch in batches(pool, n):
        [pack(ev) for ev in batch]
    return n / (time.process_time() - start)


def rate(n: int, elapsed_ns: int, producer_cpu: float, consumer_cpu: float) -> dict:
    """One one-way run: events/s of wall time, and CPU time per event on each side (process
    time: what contention on a shared machine disturbs least)."""
    return {"events_per_s": n / (elapsed_ns / 1e9), "producer_cpu_ns": producer_cpu / n * 1e9,
            "consumer_cpu_ns": consumer_cpu / n * 1e9}


def check_ev(ev, expect: int) -> int:
    """0 if ``ev`` is the event expected next; what every consumer does after decoding."""
    if type(ev) is not list or len(ev) < 2 or type(ev[0]) is not int or type(ev[1]) is not int:
        raise events.ProtocolError("event is not [kind, stream_id, ...]")
    return ev[1] != expect % POOL


# --- one way: events/s -----------------------------------------------------------------------


def _ring_consumer(conn, cons: Consumer, n: int):
    loop = uvloop.new_event_loop()
    state = {"count": 0, "bad": 0, "end": 0}

    def on_events(evs):  # read_events checked [int, int, ...] in C
        count, bad = state["count"], state["bad"]
        for ev in evs:
            bad += ev[1] != count % POOL
            count += 1
        state["count"], state["bad"] = count, bad
        if count >= n:
            state["end"], state["cpu"] = now_ns(), time.process_time() - cpu0
            loop.stop()

    def on_error(exc):
        state["error"] = exc
        loop.stop()

    cons.start_reading_events(loop, on_events, on_error)
    conn.send("ready")
    cpu0 = time.process_time()
    loop.run_forever()
    conn.send(state.get("error") or (state["end"], state["count"], state["bad"], state["cpu"]))


def write_events_all(prod: Producer, evs: list) -> None:
    """write_all with try_write_events: the batch packed by one call, split into records."""
    done = prod.try_write_events(evs)
    while done < len(evs):
        if lib.ring_producer_prepare_wait(prod.handle, 1024):
            select.select([prod.space_bell.fd], [], [], 1.0)
            prod.space_bell.drain()
        done += prod.try_write_events(evs[done:])


def ring_one_way(workload: str, n: int, capacity: int, batched: bool = True,
                 api: str = "") -> float:
    """try_write_events (batched) or try_write -> start_reading_events (what the links use)."""
    pool = event_pool(workload)
    prod, cons = ring_pair(capacity)
    proc, conn = run_child(_ring_consumer, cons, n)
    cons.close()
    assert conn.recv() == "ready"
    pack, write = events.pack, prod.try_write
    start, cpu0 = now_ns(), time.process_time()
    if batched:
        for batch in batches(pool, n):
            write_events_all(prod, batch)
    else:  # one try_write per event, as WorkerLink.send does
        for i in range(n):
            data = pack(pool[i % POOL])
            if not write(data):
                write_all(prod, [data])
    cpu = time.process_time() - cpu0
    end, count, bad, consumer_cpu = finish(proc, conn)
    prod.close()
    if count != n or bad:
        raise RuntimeError(f"ring: {count} events of {n}, {bad} out of order")
    return rate(n, end - start, cpu, consumer_cpu)


def _socket_consumer(conn, sock: socket.socket, n: int):
    loop = uvloop.new_event_loop()
    state = {"count": 0, "bad": 0, "end": 0}

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True)

        def data_received(self, data):
            unpacker = self.unpacker
            unpacker.feed(data)
            count, bad = state["count"], state["bad"]
            for ev in unpacker:
                bad += check_ev(ev, count)
                count += 1
            state["count"], state["bad"] = count, bad
            if count >= n:
                state["end"], state["cpu"] = now_ns(), time.process_time() - cpu0
                loop.stop()

    loop.run_until_complete(loop.connect_accepted_socket(Reader, sock))
    conn.send("ready")
    cpu0 = time.process_time()
    loop.run_forever()
    conn.send((state["end"], state["count"], state["bad"], state["cpu"]))


def array_header(n: int) -> int:
    """Bytes of the msgpack array header of n elements: what precedes the elements' own
    encodings in ``pack(list)``, which are exactly the bytes of packing them one by one."""
    return 1 if n < 16 else 3 if n < 1 << 16 else 5


def socketpair_one_way(workload: str, n: int, capacity: int, batched: bool = True,
                       api: str = "join") -> float:
    """api "join": sendall of b"".join of events packed one by one; "array": the batch packed
    by one call, sent without its array header -- the same bytes, packed for less (the trick
    try_write_events plays on the ring, given to the socketpair too)."""
    pool = event_pool(workload)
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, capacity)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, capacity)
    proc, conn = run_child(_socket_consumer, b, n)
    b.close()
    assert conn.recv() == "ready"
    pack, send = events.pack, a.sendall
    start, cpu0 = now_ns(), time.process_time()
    if batched and api == "array":
        for batch in batches(pool, n):
            send(memoryview(pack(batch))[array_header(len(batch)):])
    elif batched:
        for batch in batches(pool, n):
            send(b"".join([pack(ev) for ev in batch]))
    else:  # one send per event
        for i in range(n):
            send(pack(pool[i % POOL]))
    cpu = time.process_time() - cpu0
    end, count, bad, consumer_cpu = finish(proc, conn)
    a.close()
    if count != n or bad:
        raise RuntimeError(f"socketpair: {count} events of {n}, {bad} out of order")
    return rate(n, end - start, cpu, consumer_cpu)


def _queue_consumer(conn, q, n: int):
    conn.send("ready")
    cpu0 = time.process_time()
    unpack, get = events.unpack, q.get
    bad = 0
    for count in range(n):
        ev = unpack(get())
        bad += ev[1] != count % POOL
    conn.send((now_ns(), n, bad, time.process_time() - cpu0))


def queue_one_way(workload: str, n: int, capacity: int, batched: bool = False,
                  api: str = "") -> float:
    pool = event_pool(workload)
    q = MP.Queue()
    proc, conn = run_child(_queue_consumer, q, n)
    assert conn.recv() == "ready"
    pack, put = events.pack, q.put
    start, cpu0 = now_ns(), time.process_time()
    for i in range(n):
        put(pack(pool[i % POOL]))
    cpu = time.process_time() - cpu0  # the feeder thread's share included
    end, count, bad, consumer_cpu = finish(proc, conn)
    q.close()
    q.join_thread()
    if count != n or bad:
        raise RuntimeError(f"queue: {count} events of {n}, {bad} out of order")
    return rate(n, end - start, cpu, consumer_cpu)


# --- ping-pong: round trip -------------------------------------------------------------------
# The host side sends HTTP_REQUEST-shaped events, the worker side answers each with a
# RESPONSE_BODY; one event in flight each way.


def _ring_echo(conn, cons: Consumer, prod: Producer, spin: float):
    loop = uvloop.new_event_loop()
    cons.spin = spin
    pack, write = events.pack, prod.try_write

    def on_events(evs):
        for ev in evs:
            if not write(pack(response_body(ev[1]))):
                raise RuntimeError("reply ring full")

    def on_error(exc):
        conn.send(exc)
        loop.stop()

    cons.start_reading_events(loop, on_events, on_error)
    conn.send("ready")
    loop.run_forever()  # until killed


RTT_SECONDS = 1.5  # every round-trip measurement stops after n round trips or this long


def ring_round_trip(n: int, spin: float, info: dict | None = None) -> float:
    """Round trip in µs; ``info`` receives the doorbells rung per round trip."""
    req = http_request(1)
    to_child, child_in = ring_pair(1 << 20)
    to_parent, parent_in = ring_pair(1 << 20)
    # the child owns child_in (consumer) and the producer end of to_parent
    child_out = Producer.attach(to_parent.spec().dup())
    proc, conn = run_child(_ring_echo, child_in, child_out, spin)
    child_in.close()
    child_out.close()
    to_parent.close()
    assert conn.recv() == "ready"
    loop = uvloop.new_event_loop()
    parent_in.spin = spin
    pack, write = events.pack, to_child.try_write
    state = {"count": 0, "bad": 0}

    def on_events(evs):
        for ev in evs:
            state["bad"] += ev[0] != events.RESPONSE_BODY
            count = state["count"] = state["count"] + 1
            if count >= n or (count & 63 == 0 and now_ns() > deadline):
                loop.stop()
                return
            write(pack(req))

    def on_error(exc):
        state["error"] = exc
        loop.stop()

    parent_in.start_reading_events(loop, on_events, on_error)
    start = now_ns()
    deadline = start + int(RTT_SECONDS * 1e9)
    write(pack(req))
    loop.run_forever()
    elapsed = now_ns() - start
    n = state["count"]
    if info is not None:
        bells = (to_child.stats()["consumer_wakeups"] + parent_in.stats()["consumer_wakeups"])
        info["doorbells_per_round_trip"] = bells / n
        policy = parent_in.spin_policy
        info["spin_hits"], info["spin_misses"] = policy.hits, policy.misses
    stop_child(proc)
    parent_in.close()
    loop.close()
    conn.close()
    to_child.close()
    if "error" in state:
        raise state["error"]
    if state["bad"]:
        raise RuntimeError(f"ring round trip: {state}")
    return elapsed / n / 1e3


def _socket_echo(conn, sock: socket.socket):
    loop = uvloop.new_event_loop()
    pack = events.pack

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True)

        def data_received(self, data):
            self.unpacker.feed(data)
            for ev in self.unpacker:
                check_ev(ev, ev[1] if type(ev) is list and len(ev) > 1 else 0)
                self.transport.write(pack(response_body(ev[1])))

    loop.run_until_complete(loop.connect_accepted_socket(Echo, sock))
    conn.send("ready")
    loop.run_forever()


def socketpair_round_trip(n: int) -> float:
    req = http_request(1)
    a, b = socket.socketpair()
    proc, conn = run_child(_socket_echo, b)
    b.close()
    assert conn.recv() == "ready"
    loop = uvloop.new_event_loop()
    pack = events.pack
    state = {"count": 0, "bad": 0}
    done = loop.create_future()

    class Client(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True)

        def data_received(self, data):
            self.unpacker.feed(data)
            for ev in self.unpacker:
                check_ev(ev, 1)
                count = state["count"] = state["count"] + 1
                if count >= n or (count & 63 == 0 and now_ns() > deadline):
                    done.set_result(None)
                    return
                self.transport.write(pack(req))

    transport, _ = loop.run_until_complete(loop.connect_accepted_socket(Client, a))
    start = now_ns()
    deadline = start + int(RTT_SECONDS * 1e9)
    transport.write(pack(req))
    loop.run_until_complete(done)
    elapsed = now_ns() - start
    n = state["count"]
    stop_child(proc)
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    conn.close()
    return elapsed / n / 1e3


def codec_round_trip(n: int) -> float:
    """The Python work of one round trip with no transport at all (pack, unpack, check each
    way): the floor under every round-trip row, in µs."""
    req, unpack, pack = http_request(1), events.unpack, events.pack
    start = time.process_time()
    for _ in range(n):
        ev = unpack(pack(req))
        unpack(pack(response_body(ev[1])))
    return (time.process_time() - start) / n * 1e6


def _queue_echo(conn, qin, qout):
    conn.send("ready")
    unpack, pack, get, put = events.unpack, events.pack, qin.get, qout.put
    while True:  # until killed
        put(pack(response_body(unpack(get())[1])))


def queue_round_trip(n: int) -> float:
    req = http_request(1)
    qin, qout = MP.Queue(), MP.Queue()
    proc, conn = run_child(_queue_echo, qin, qout)
    assert conn.recv() == "ready"
    unpack, pack, get, put = events.unpack, events.pack, qout.get, qin.put
    start = now_ns()
    deadline = start + int(RTT_SECONDS * 1e9)
    for i in range(1, n + 1):
        put(pack(req))
        unpack(get())
        if i & 63 == 0 and now_ns() > deadline:
            n = i
            break
    elapsed = now_ns() - start
    stop_child(proc)
    conn.close()
    qin.close()
    qout.close()
    return elapsed / n / 1e3


# --- idle ------------------------------------------------------------------------------------


def _idle_consumer(conn, cons: Consumer):
    loop = uvloop.new_event_loop()
    cons.spin = SPIN  # spinning happens only after traffic; idle must still be idle

    def on_events(evs):
        conn.send(len(evs))

    cons.start_reading_events(loop, on_events, lambda exc: loop.stop())
    conn.send("ready")
    loop.run_forever()


def idle_cpu(seconds: float) -> float:
    """Percent of one CPU used by a ring consumer waiting in start_reading_events for
    ``seconds``."""
    prod, cons = ring_pair(1 << 20)
    proc, conn = run_child(_idle_consumer, cons)
    cons.close()
    assert conn.recv() == "ready"
    time.sleep(0.2)  # let it settle into epoll_wait
    ticks0, t0 = cpu_ticks(proc.pid), time.monotonic()
    time.sleep(seconds)
    ticks1, t1 = cpu_ticks(proc.pid), time.monotonic()
    prod.try_write(events.pack(response_body(1)))  # it must still wake up
    woke = conn.poll(5) and conn.recv() == 1
    proc.kill()
    proc.join()
    prod.close()
    if not woke:
        raise RuntimeError("idle consumer did not wake up")
    return 100.0 * (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


# --- C ---------------------------------------------------------------------------------------


def build_c() -> pathlib.Path:
    """Compile ring_bench.c + ring.c, cached in build/ by a hash of sources and flags."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    h = hashlib.sha256()
    for part in (BENCH_C, RING_C, RING_H):
        h.update(part.read_bytes())
    h.update(" ".join([cc, *CFLAGS]).encode())
    exe = ROOT / "build" / f"ring_bench-{h.hexdigest()[:16]}"
    if not exe.exists():
        exe.parent.mkdir(exist_ok=True)
        tmp = exe.with_suffix(".tmp")
        subprocess.run([cc, *CFLAGS, f"-I{RING_H.parent}", str(BENCH_C), str(RING_C), "-o",
                        str(tmp)], check=True)
        tmp.rename(exe)
    return exe


def run_c(exe: pathlib.Path, *args) -> dict:
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True,
                         text=True, timeout=120)
    result = json.loads(out.stdout)
    if result.get("errors"):
        raise RuntimeError(f"ring_bench {args}: {result}")
    return result


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Plan:
    repeats: int
    c_repeats: int
    c_scale: float
    py_events: int
    queue_events: int
    rtt_ring: int
    rtt_other: int
    idle_seconds: float


PLANS = {
    "full": Plan(repeats=5, c_repeats=5, c_scale=0.5, py_events=600_000, queue_events=60_000,
                 rtt_ring=30_000, rtt_other=30_000, idle_seconds=5.0),
    "quick": Plan(repeats=2, c_repeats=3, c_scale=0.1, py_events=150_000, queue_events=20_000,
                  rtt_ring=3_000, rtt_other=3_000, idle_seconds=1.0),
}

C_CAPACITY = 16 << 20
C_THROUGHPUT = [  # (label, record bytes, records at scale 1, wait, batch)
    ("64 B", 64, 20_000_000, "spin", 1),
    ("64 B, write_many x32", 64, 20_000_000, "spin", 32),
    ("1 KiB", 1024, 4_000_000, "spin", 1),
    ("64 KiB", 65536, 100_000, "spin", 1),
    ("64 B", 64, 20_000_000, "eventfd", 1),
    ("1 KiB", 1024, 4_000_000, "eventfd", 1),
    ("64 KiB", 65536, 100_000, "eventfd", 1),
]
C_PINGPONG = [("spin", 300_000), ("eventfd", 20_000)]
C_MINIMAL = [("64 B", 64, 20_000_000), ("64 KiB", 65536, 100_000)]  # the baseline, spin
SPIN = 20e-6  # Consumer.spin of the "ring+spin" round trip: covers the ~10 µs between messages


def measure(plan: Plan, progress) -> dict:
    results: dict = {"c": [], "python": {}, "meta": {}}
    results["meta"]["loadavg_before"] = os.getloadavg()
    exe = build_c()
    for label, size, count, wait, batch in C_THROUGHPUT:
        count = max(1000, int(count * plan.c_scale))
        progress(f"C throughput {label} {wait}")
        runs = [run_c(exe, "throughput", size, count, C_CAPACITY, wait, batch)
                for _ in range(plan.c_repeats)]
        results["c"].append(best_throughput(label, runs))
    for label, size, count in C_MINIMAL:
        count = max(1000, int(count * plan.c_scale))
        progress(f"C minimal ring {label}")
        runs = [run_c(exe, "minimal", size, count, C_CAPACITY) for _ in range(plan.c_repeats)]
        results["c"].append(best_throughput(label, runs))
    for wait, rounds in C_PINGPONG:
        rounds = max(1000, int(rounds * plan.c_scale))
        progress(f"C ping-pong {wait}")
        runs = [run_c(exe, "pingpong", rounds, wait, RTT_SECONDS / 3)
                for _ in range(plan.c_repeats)]
        best = min(runs, key=lambda r: r["rtt_ns"])
        best["all_rtt_ns"] = [r["rtt_ns"] for r in runs]
        results["c"].append(best)

    py = results["python"]
    capacity = 1 << 22
    for workload, batched in (("body64", True), ("request", True), ("body64", False)):
        key = workload if batched else f"{workload}/unbatched"
        runs_of = (("ring", ring_one_way, plan.py_events, ""),
                   ("socketpair", socketpair_one_way,
                    plan.py_events // (1 if batched else 4), "join"),
                   ("socketpair/array", socketpair_one_way, plan.py_events, "array"),
                   ("mp.Queue", queue_one_way, plan.queue_events, ""))
        for name, fn, n, api in runs_of:
            if not batched and name in ("mp.Queue", "socketpair/array"):
                continue  # one event per write: no batch to pack at once; Queue rows: batched
            progress(f"Python one way {key} {name}")
            runs = [fn(workload, n, capacity, batched, api) for _ in range(plan.repeats)]
            py[f"one_way/{key}/{name}"] = {
                "events_per_s": max(r["events_per_s"] for r in runs),
                # least disturbed CPU cost per event of each side
                "producer_cpu_ns": min(r["producer_cpu_ns"] for r in runs),
                "consumer_cpu_ns": min(r["consumer_cpu_ns"] for r in runs),
                "runs": [r["events_per_s"] for r in runs], "events": n}
        if batched:
            py[f"one_way/{key}/pack_ceiling"] = {"events_per_s": max(
                pack_ceiling(workload, plan.py_events // 4) for _ in range(plan.repeats))}
    for name, fn, args in (("ring", ring_round_trip, (plan.rtt_ring, 0.0)),
                           ("ring+spin", ring_round_trip, (plan.rtt_ring, SPIN)),
                           ("socketpair", socketpair_round_trip, (plan.rtt_other,)),
                           ("mp.Queue", queue_round_trip, (plan.rtt_other,)),
                           ("codec", codec_round_trip, (plan.rtt_other,))):
        progress(f"Python round trip {name}")
        infos = [{} for _ in range(plan.repeats)]
        runs = [fn(*args, info) if fn is ring_round_trip else fn(*args) for info in infos]
        best = min(range(len(runs)), key=runs.__getitem__)
        py[f"rtt/{name}"] = {"rtt_us": runs[best], "runs": runs, "max_round_trips": args[0],
                             **infos[best]}
    progress("idle CPU")
    py["idle_cpu_percent"] = idle_cpu(plan.idle_seconds)
    py["idle_seconds"] = plan.idle_seconds
    results["meta"].update({
        "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg(), "msgpack": ".".join(map(str, msgpack.version)),
        "uvloop": uvloop.__version__})
    return results


def best_throughput(label: str, runs: list[dict]) -> dict:
    """The fastest of a C throughput measurement's repeats, labelled, with all of them."""
    best = max(runs, key=lambda r: r["records_per_s"])
    best["label"] = label
    best["all_records_per_s"] = [r["records_per_s"] for r in runs]
    return best


def best_socketpair(py: dict, key: str) -> float:
    """The faster socketpair variant: the baseline a ring row is held against."""
    return max(py[f"one_way/{key}/{t}"]["events_per_s"] for t in ("socketpair", "socketpair/array")
               if f"one_way/{key}/{t}" in py)


def targets(r: dict) -> list[tuple[str, str, bool]]:
    py = r["python"]
    out = []
    ours = [x for x in r["c"] if x["mode"] == "throughput"]
    base = {x["record_bytes"]: x for x in r["c"] if x["mode"] == "minimal"}
    rps = max(x["records_per_s"] for x in ours if x.get("label") == "64 B")
    note = ""
    if 64 in base:
        note = (f"  (minimal ring: {base[64]['records_per_s'] / 1e6:.1f} M/s; "
                f"{rps / base[64]['records_per_s']:.0%} of it)")
    out.append(("C 64 B one way >= 50 M records/s", f"{rps / 1e6:.1f} M/s{note}", rps >= 50e6))
    gbs = max(x["gb_per_s"] for x in ours if x.get("record_bytes") == 65536)
    note = ""
    if 65536 in base:
        note = (f"  (minimal ring: {base[65536]['gb_per_s']:.1f} GB/s; "
                f"{gbs / base[65536]['gb_per_s']:.0%} of it)")
    out.append(("C 64 KiB one way >= 10 GB/s", f"{gbs:.1f} GB/s{note}", gbs >= 10))
    for key in ("body64", "request", "body64/unbatched"):
        ratio = (py[f"one_way/{key}/ring"]["events_per_s"]
                 / best_socketpair(py, key))
        out.append((f"Python {key} events/s: ring >= 2x socketpair", f"{ratio:.2f}x",
                    ratio >= 2))
    sock = py["rtt/socketpair"]["rtt_us"]
    for name in ("ring", "ring+spin"):
        ratio = py[f"rtt/{name}"]["rtt_us"] / sock
        out.append((f"Python round trip {name} <= 1/4 socketpair", f"{ratio:.2f}x",
                    ratio <= 0.25))
    idle = py["idle_cpu_percent"]
    out.append(("idle ring consumer < 1% CPU", f"{idle:.2f}%", idle < 1))
    return out


def table(r: dict) -> str:
    meta = r["meta"]
    load = " ".join(f"{x:.2f}" for x in meta["loadavg_before"])
    lines = [f"ring benchmark  python {meta['python']}  msgpack {meta['msgpack']}  uvloop "
             f"{meta['uvloop']}  {meta['cpus']} CPUs  load average before: {load}", ""]
    lines.append("C ring, two processes, 16 MiB ring (best of repeats)")
    lines.append(f"  {'one way':28s} {'wait':8s} {'records/s':>11s} {'GB/s':>7s} "
                 f"{'ring full':>10s} {'doorbells':>10s}")
    for x in r["c"]:
        if x["mode"] == "throughput":
            bells = x["consumer_wakeups"] + x["producer_wakeups"]
            lines.append(f"  {x['label']:28s} {x['wait']:8s} {x['records_per_s'] / 1e6:9.1f} M "
                         f"{x['gb_per_s']:7.2f} {x['full_events']:10d} {bells:10d}")
    for x in r["c"]:
        if x["mode"] == "minimal":
            lines.append(f"  {x['label'] + ', minimal ring (baseline)':28s} {x['wait']:8s} "
                         f"{x['records_per_s'] / 1e6:9.1f} M {x['gb_per_s']:7.2f}")
    for x in r["c"]:
        if x["mode"] == "pingpong":
            lines.append(f"  {'ping-pong 64 B, round trip':28s} {x['wait']:8s} "
                         f"{x['rtt_ns']:9.0f} ns")
    py = r["python"]
    lines += ["", "Python, msgpack events, two processes (best of repeats), 256 events a write.  "
              "ring: try_write_events -> start_reading_events;",
              "socketpair: sendall of b''.join of events packed one by one (array: the batch "
              "packed by one call) -> uvloop Protocol, Unpacker.feed + the same check;",
              "mp.Queue: put/get of each packed event.  ring/socketpair: against the faster "
              "socketpair variant."]
    lines.append(f"  {'one way, events/s':28s} {'ring':>9s} "
                 f"{'socketpair':>11s} {'sock array':>11s} {'mp.Queue':>9s} "
                 f"{'ring/socketpair':>16s} {'pack alone':>11s}")
    fmt = lambda v: f"{v / 1e6:8.2f}M" if v else f"{'-':>9s}"  # noqa: E731
    for key, label in (("body64", "RESPONSE_BODY 64 B"), ("request", "HTTP_REQUEST GET"),
                       ("body64/unbatched", "RESPONSE_BODY, 1 per write")):
        rate = {t: py.get(f"one_way/{key}/{t}", {}).get("events_per_s")
                for t in ("ring", "socketpair", "socketpair/array", "mp.Queue",
                          "pack_ceiling")}
        lines.append(f"  {label:28s} {fmt(rate['ring'])} "
                     f"{fmt(rate['socketpair']):>11s} {fmt(rate['socketpair/array']):>11s} "
                     f"{fmt(rate['mp.Queue'])} {rate['ring'] / best_socketpair(py, key):15.2f}x "
                     f"{fmt(rate['pack_ceiling']):>11s}")
    lines.append(f"  {'CPU per event, ns':28s} {'producer / consumer -> 1e9 / the busier side (events/s with a core each)'}")
    names = (("ring", "ring"), ("socketpair", "socketpair"),
             ("socketpair/array", "sock array"), ("mp.Queue", "mp.Queue"))
    for key, label in (("body64", "RESPONSE_BODY 64 B"), ("request", "HTTP_REQUEST GET"),
                       ("body64/unbatched", "RESPONSE_BODY, 1 per write")):
        cells = []
        for name, short in names:
            row = py.get(f"one_way/{key}/{name}")
            if row:
                p, c = row["producer_cpu_ns"], row["consumer_cpu_ns"]
                cells.append(f"{short} {p:.0f}/{c:.0f} -> {1e3 / max(p, c):.2f}M")
        lines.append(f"  {label:28s} " + ";  ".join(cells))
    sock = py["rtt/socketpair"]["rtt_us"]
    floor = py["rtt/codec"]["rtt_us"]
    lines.append(f"  {'round trip, µs':28s} {'':>9s} {'minus codec':>11s} {'doorbells':>9s} "
                 f"{'ring/socketpair':>16s}")
    spin = f"{SPIN * 1e6:.0f} µs"
    for name, label in (("ring", "ring, doorbell"), ("ring+spin", f"ring, {spin} spin"),
                        ("socketpair", "socketpair (uvloop)"), ("mp.Queue", "mp.Queue"),
                        ("codec", "codec alone, no transport")):
        row = py[f"rtt/{name}"]
        v = row["rtt_us"]
        bells = row.get("doorbells_per_round_trip")
        bells = f"{bells:9.2f}" if bells is not None else f"{'':9s}"
        extra = f"{v - floor:11.1f}" if name != "codec" else f"{'':11s}"
        lines.append(f"  {label:28s} {v:9.1f} {extra} {bells} {v / sock:15.2f}x")
    row = py["rtt/ring+spin"]
    lines.append(f"  {'':28s} adaptive spin: {row['spin_hits']} hits, {row['spin_misses']} "
                 "misses (SpinPolicy)")
    lines.append(f"  {'idle ring consumer':28s} {py['idle_cpu_percent']:8.2f}% CPU over "
                 f"{py['idle_seconds']:.0f} s (uvloop, start_reading_events, {spin} spin "
                 "enabled)")
    lines += ["", "targets"]
    for what, value, ok in targets(r):
        lines.append(f"  {'met ' if ok else 'MISS'}  {what:50s} {value}")
    load = " ".join(f"{x:.2f}" for x in meta["loadavg_after"])
    lines += ["", f"load average after: {load}.  'pack alone': events.pack on one core, the "
              "ceiling of any transport fed from Python.", "'codec alone': pack + unpack of "
              "both events of a round trip in one process, the floor under every round trip."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, fewer repeats")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    plan = PLANS["quick" if args.quick else "full"]
    t0 = time.monotonic()
    progress = (lambda msg: None) if args.json else (
        lambda msg: print(f"  {time.monotonic() - t0:5.1f} s  {msg}", file=sys.stderr,
                          flush=True))
    results = measure(plan, progress)
    results["targets"] = [{"target": t, "value": v, "met": ok} for t, v, ok in targets(results)]
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
