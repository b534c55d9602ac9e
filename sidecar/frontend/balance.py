"""Which front-end takes a new TCP connection (--frontends N, --frontend-balance concentrate).

Each TCP address sidecar binds has one socket per front-end in a SO_REUSEPORT group; left
alone, the kernel spreads new connections over them by a hash of the addresses.  On a small
machine that costs: two front-ends sharing 2 cores each wake for half the requests per pass
of their loop, and every per-pass cost (the epoll wait, the flush, a ring doorbell each way)
falls on half as many requests (docs/operations.md, "Front-ends").  So front-end 0 steers:

- a classic BPF program on the group (``SO_ATTACH_REUSEPORT_CBPF``: unprivileged, unlike
  eBPF) returns the index of the socket that takes the connection, and a socket's index is
  the order it joined the group: front-end k's socket is index k, because front-end 0's is
  opened first and the twins of front-ends 1 … N-1 in their order (cli.py), and all of them
  stay open in the supervisor while a front-end restarts;
- ``ret #k`` sends every new connection to front-end k: the *target*, the first front-end
  that is not saturated.  It starts at 0: a quiet server's connections all go to front-end 0;
- every PERIOD, front-end 0 reads the CPU time of each front-end's event-loop thread
  (``/proc/PID/schedstat``) and the machine's idle time (``/proc/stat``).  A front-end is
  saturated at HIGH of a core and stays so until it falls below LOW (hysteresis: no
  flapping).  The target moves on to the next front-end only while the machine has IDLE_MIN
  of a core idle: a second front-end is worth its per-pass costs only when there is a core
  for it (on 2 cores, busy with the client and the workers, it never is).  It moves back as
  soon as an earlier front-end falls below LOW.  Every front-end saturated: the program is
  detached and the kernel's hash spreads them again;
- keep-alive connections stay where they landed (a burst of new connections, nginx opening
  its upstream pool, all go to the target before any sample says it is saturated).  So while
  a front-end before the target is busier than HIGH and the machine has idle cores, it sheds
  SHED of its connections each PERIOD, and the client's next connection goes to the target.
  An HTTP/1.1 one answers the request it has in flight with ``Connection: close`` and
  closes after it, as nginx and Envoy do at their maximum requests per connection; only
  one with a request whose response has not started is chosen: an idle one costs nothing
  and closing it could race a request on its way.  An HTTP/2 one (a proxy's h2c
  connection: nginx grpc_pass, Caddy) gets the graceful GOAWAY of a drain: its streams in
  flight finish, then it closes; only one with streams in flight is chosen.  WebSocket
  connections (and HTTP/2 ones carrying a WebSocket) are left alone.  Each front-end
  counts the connections it shed (``sidecar status``, the metrics: sidecar/frontend/
  metrics.py, with the mode, the target and each front-end's last busy sample).

With --limit-concurrency, a front-end whose connections reach FULL of the limit counts as
saturated too, idle cores or not: the limit holds per front-end, and a connection past it is
answered 503 while another front-end has room.

Unix and inherited sockets are one accept queue shared by every front-end: not steered.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import socket
import struct
import time

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
BPF_RET_K = 0x06

PERIOD = 0.25   # seconds between samples
HIGH = 0.9      # of a core: a front-end this busy is saturated ...
LOW = 0.75      # ... until it falls below this
IDLE_MIN = 0.5  # cores idle on the machine for a spill (or a shed) to pay
FULL = 0.75     # of --limit-concurrency: a front-end with this many connections is saturated
SHED = 0.125    # of a saturated front-end's connections, closed after their response a PERIOD
#: tests only: "HIGH,LOW,IDLE_MIN" instead of the above (a test cannot fill a core)
THRESHOLDS_ENV = "SIDECAR_BALANCE_THRESHOLDS"

log = logging.getLogger("sidecar.frontend")


def steer(sock: socket.socket, index: int | None) -> None:
    """Send the group's new connections to socket ``index`` (None: the kernel's hash)."""
    if index is None:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
        return
    insn = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, index))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: the kernel copies
    # the program during the call
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                    struct.pack("HxxxxxxQ", 1, ctypes.addressof(insn)))


def shed(connections, share: float) -> int:
    """Close ``share`` of ``connections`` (at least one) after the responses in flight
    (HTTP/1.1: ``Connection: close``; HTTP/2: a graceful GOAWAY); the number chosen."""
    want = max(1, math.ceil(len(connections) * share))
    done = 0
    for conn in list(connections):
        close = getattr(conn, "close_after_response", None)   # HTTP/1.1 and HTTP/2
        if close is not None and close():
            done += 1
            if done >= want:
                break
    return done


def _thresholds() -> tuple[float, float, float]:
    raw = os.environ.get(THRESHOLDS_ENV)
    if raw:
        high, low, idle = (float(x) for x in raw.split(","))
        return high, low, idle
    return HIGH, LOW, IDLE_MIN


def _cpu_ns(pid: int) -> int | None:
    """CPU time of the process's main thread (its event loop), in ns; None: gone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _idle_seconds() -> float:
    """The machine's idle time since boot, all cores (idle + iowait), in seconds."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Balancer:
    """Front-end 0's steering of the TCP listeners' groups (``groups``: its own socket of
    each) over ``count`` front-ends."""

    def __init__(self, frontend, groups: list[socket.socket], count: int):
        self.frontend = frontend
        self.loop = frontend.loop
        self.groups = groups
        self.count = count
        self.high, self.low, self.idle_min = _thresholds()
        limit = frontend.config.limit_concurrency
        self.full_at = max(1, int(limit * FULL)) if limit else None
        self.saturated = [False] * count
        self.target: int | None = 0      # None: the kernel's hash
        self.moves = 0                   # target changes (metrics, tests)
        self.shed_total = 0              # connections front-end 0 shed
        self.busy: list[float | None] = [None] * count   # the last sample (status, metrics)
        self._last: tuple | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.enabled = True
        self._steer(0)

    def _steer(self, target: int | None) -> bool:
        try:
            for sock in self.groups:
                steer(sock, target)
        except OSError as exc:
            log.warning("--frontend-balance concentrate: cannot steer the TCP listeners "
                        "(%s): the kernel's hash spreads new connections", exc.strerror)
            for sock in self.groups:
                try:
                    steer(sock, None)
                except OSError:
                    pass
            self.close()   # for good: no warning a sample
            self.enabled, self.target = False, None
            return False
        return True

    def start(self) -> None:
        if self.enabled:
            self._timer = self.loop.call_later(PERIOD, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pids(self) -> list[int | None]:
        """Each front-end's pid; None for one that does not serve (starting, down)."""
        out: list[int | None] = [os.getpid()]
        for child in self.frontend.frontends.children:
            out.append(child.pid if child.proc is not None and child.ready.is_set() else None)
        return out

    def _tick(self) -> None:
        self._timer = self.loop.call_later(PERIOD, self._tick)
        now = time.monotonic()
        pids = self._pids()
        cpu = [None if pid is None else _cpu_ns(pid) for pid in pids]
        idle = _idle_seconds()
        last, self._last = self._last, (now, pids, cpu, idle)
        if last is None:
            return
        then, old_pids, old_cpu, old_idle = last
        dt = now - then
        if dt <= 0:
            return
        busy = [None if c is None or o is None or p != q else (c - o) / 1e9 / dt
                for c, o, p, q in zip(cpu, old_cpu, pids, old_pids)]
        self.busy = busy
        full = None
        if self.full_at is not None:   # (the children's counts: their last figures)
            counts = [len(self.frontend.connections)] + \
                [c.stats.get("connections", 0) for c in self.frontend.frontends.children]
            full = [n >= self.full_at for n in counts]
        self.decide(busy, (idle - old_idle) / dt, full)

    def decide(self, busy: list[float | None], idle_cores: float,
               full: list[bool] | None = None) -> None:
        """One sample: ``busy[k]`` front-end k's share of a core (None: not serving),
        ``idle_cores`` the machine's idle time, in cores; ``full[k]``: front-end k is near
        its --limit-concurrency."""
        if not self.enabled:
            return
        n = self.count
        sat = self.saturated
        for k, b in enumerate(busy):
            if b is None or b >= self.high or (full is not None and full[k]):
                sat[k] = True
            elif b < self.low:
                sat[k] = False
        room = idle_cores >= self.idle_min
        first = next((k for k in range(n) if not sat[k]), n)
        current = n if self.target is None else self.target
        forced = current < n and (busy[current] is None or (full is not None and full[current]))
        if first < current or (first > current and (room or forced)):
            target = None if first == n else first
            if target != self.target and self._steer(target):
                log.debug("front-end balance: new connections to %s (busy %s, idle %.2f)",
                          "all (hash)" if target is None else f"front-end {target}",
                          [None if b is None else round(b, 2) for b in busy], idle_cores)
                self.target = target
                self.moves += 1
        if self.target is None or not room:
            return
        for k in range(self.target):
            if busy[k] is not None and busy[k] >= self.high:
                self._shed(k)

    def _shed(self, k: int) -> None:
        if k == 0:
            self.shed_total += shed(self.frontend.connections, SHED)
            return
        self.frontend.frontends.shed(k, SHED)

