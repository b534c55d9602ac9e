"""Front-ends 1 … N-1 (--frontends N), supervised by the main process (front-end 0).

Each extra front-end is a child ``python -m sidecar.frontend.child`` that serves client
connections exactly as front-end 0 does, on:

- listeners: for a TCP address sidecar opened itself, a socket of its own bound to the same
  address with SO_REUSEPORT (front-end 0 steers new connections: balance.py); a Unix
  socket, or one inherited (--fd, systemd), shared by all;
- workers: a ring pair of its own to every worker, given over the attach protocol as to any
  attached host (host_pool.py), through a socketpair made here instead of the attach socket;
- the load board (sidecar/load_board.py), where every front-end publishes the work it queued
  on each worker and every worker its streams in flight.

Once a second (and at once when it starts serving) a child sends its figures over a second
socketpair (one msgpack map per datagram); ``sidecar status`` and the metrics add them up.
They are fresh when asked for: before a status or a scrape the supervisor sends each child
``{"ask": SEQ}`` on that socketpair (``refresh``) and the child answers at once with its
figures and ``"seq": SEQ`` (``answer_asks``); one that does not answer within
FRESH_TIMEOUT (stuck, or starting) is counted with its last figures, whose age the status
shows (``figures_age``).
A child that dies (crash, kill -9) loses only its own connections: the attach server detaches
it from the workers, and it is started again (backing off while it keeps dying young).  The
listening sockets stay open here meanwhile, so connections the kernel hands its socket wait
in the backlog for the replacement.  SIGTERM: each child stops accepting, lets its requests
finish (up to --timeout-graceful-shutdown) and exits.  A reload is the workers' business:
the children see new workers (WORKER) and old ones draining (WORKER_DRAINING).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import msgpack

ENV_VAR = "SIDECAR_FRONTEND"
YOUNG = 5.0          # a front-end dying within this many seconds of its start counts as failing
MAX_BACKOFF = 10.0   # seconds between restarts of one that keeps failing
KILL_GRACE = 5.0     # seconds past the drain before SIGKILL
STATS_MAX = 65536    # bytes of one figures message
FRESH_TIMEOUT = 1.0  # seconds a status or a scrape waits for the children's figures

log = logging.getLogger("sidecar.supervisor")

#: the figures a child reports that are summed over front-ends (metrics.snapshot)
SUMMED = ("connections", "waiting", "request_timeouts", "http2_connections", "http2_streams")


class Child:
    """One extra front-end process, as the supervisor sees it."""

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pidfd = -1
        self.stats_sock: socket.socket | None = None
        self.stats: dict = {}        # its last figures
        self.stats_at = 0.0          # when they came (monotonic)
        self.asks: list[tuple[int, asyncio.Future]] = []   # refreshes waiting for an answer
        self.started_at = 0.0
        self.failures = 0
        self.restarts = 0
        self.past_shed = 0           # connections shed by its predecessors (they died)
        self.ready = asyncio.Event()
        self.exited: asyncio.Event | None = None
        self.restart_handle: asyncio.TimerHandle | None = None


class Frontends:
    def __init__(self, server, sockets_for: list[list[socket.socket]], board):
        """``sockets_for[k - 1]``: the listening sockets of front-end k."""
        self.server = server
        self.config = server.config
        self.loop = server.loop
        self.sockets_for = sockets_for
        self.board = board
        self.count = len(sockets_for) + 1
        self.children = [Child(k) for k in range(1, self.count)]
        self.stopping = False
        self.restarts = 0
        self.past_requests: dict[int, int] = {}   # per worker slot, of children gone
        self.past_total = 0
        self.asked = 0   # the last refresh's sequence number

    # --- starting ----------------------------------------------------------------------------

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    async def wait_ready(self, timeout: float) -> bool:
        waits = [asyncio.ensure_future(c.ready.wait()) for c in self.children]
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for fut in pending:
            fut.cancel()
        return not pending

    def _spawn(self, child: Child) -> None:
        child.restart_handle = None
        if self.stopping:
            return
        attach_ours, attach_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stats_ours, stats_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listeners = [s.fileno() for s in self.sockets_for[child.index - 1]]
        spec = {"config": dataclasses.asdict(self.config), "index": child.index,
                "frontends": self.count, "listener_fds": listeners,
                "attach_fd": attach_theirs.fileno(), "stats_fd": stats_theirs.fileno(),
                "board_fd": self.board.fd, "supervisor_pid": os.getpid()}
        env = dict(os.environ)
        env[ENV_VAR] = json.dumps(spec)
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar.frontend.child"], env=env,
                pass_fds=listeners + [attach_theirs.fileno(), stats_theirs.fileno(),
                                      self.board.fd], stdin=subprocess.DEVNULL)
            child.pidfd = os.pidfd_open(child.proc.pid)
        except OSError as exc:
            attach_ours.close()
            stats_ours.close()
            if child.proc is not None:
                child.proc.kill()
                child.proc.wait()
            log.error("front-end %d: cannot start: %s", child.index, exc)
            child.failures += 1
            self._schedule_restart(child)
            return
        finally:
            attach_theirs.close()
            stats_theirs.close()
        child.pid = child.proc.pid
        child.started_at = time.monotonic()
        child.stats = {}
        child.ready.clear()
        child.exited = asyncio.Event()
        stats_ours.setblocking(False)
        child.stats_sock = stats_ours
        self.loop.add_reader(stats_ours.fileno(), self._on_stats, child)
        self.loop.add_reader(child.pidfd, self._on_exit, child)
        self.server.attach.handle(attach_ours, frontend=True)   # WELCOME, a ring pair per worker
        log.debug("front-end %d: started pid %d", child.index, child.pid)

    # --- figures -----------------------------------------------------------------------------

    def _on_stats(self, child: Child) -> None:
        sock = child.stats_sock
        for _ in range(16):
            try:
                data = sock.recv(STATS_MAX)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.loop.remove_reader(sock.fileno())
                return
            try:
                stats = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except Exception:
                stats = None
            if not isinstance(stats, dict):
                log.error("front-end %d (pid %d): bad figures message; killing it",
                          child.index, child.pid)
                self._kill(child)
                return
            child.stats = stats
            child.stats_at = time.monotonic()
            seq = stats.get("seq")
            if isinstance(seq, int) and child.asks:
                _answer(child, seq)
            if stats.get("state") == "ready" and not child.ready.is_set():
                child.ready.set()
                log.info("front-end %d ready (pid %d)", child.index, child.pid)

    async def refresh(self, timeout: float = FRESH_TIMEOUT) -> None:
        """Ask every running child for its figures now, and wait (up to ``timeout``) until
        each has answered: a status or a scrape right after a request counts it."""
        self.asked += 1
        seq = self.asked
        waits = []
        for child in self.children:
            if child.stats_sock is None:
                continue
            try:
                child.stats_sock.send(msgpack.packb({"ask": seq}))
            except OSError:   # full (it does not read) or gone: its last figures will do
                continue
            fut = self.loop.create_future()
            child.asks.append((seq, fut))
            waits.append(fut)
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for fut in pending:
            fut.cancel()
        for child in self.children:
            child.asks = [(s, f) for s, f in child.asks if not f.done()]

    def summary(self) -> list[dict]:
        """Per extra front-end: its index, pid, state and last figures (and their age)."""
        out = []
        now = time.monotonic()
        for child in self.children:
            s = child.stats
            out.append({"index": child.index, "pid": child.pid if child.proc else None,
                        "state": s.get("state", "starting") if child.proc else "down",
                        "restarts": child.restarts,
                        "shed": child.past_shed + s.get("shed", 0),
                        "figures_age": round(now - child.stats_at, 3) if s else None,
                        **{k: s.get(k, 0) for k in SUMMED + ("http2_streams_max", "requests",
                                                         "inflight")}})
        return out

    def worker_requests(self) -> dict[int, int]:
        """Streams the extra front-ends sent to each worker slot, ever (children gone
        included: the totals never go down)."""
        out = dict(self.past_requests)
        for child in self.children:
            for index, n in (child.stats.get("worker_requests") or {}).items():
                out[int(index)] = out.get(int(index), 0) + int(n)
        return out

    def shed(self, index: int, share: float) -> None:
        """Ask front-end ``index`` to close ``share`` of its connections after their
        response (balance.py: it is saturated while another has room)."""
        child = self.children[index - 1]
        if child.stats_sock is not None:
            try:
                child.stats_sock.send(msgpack.packb({"shed": share}))
            except OSError:
                pass   # full or gone: the next sample asks again

    # --- exits and restarts ------------------------------------------------------------------

    def _on_exit(self, child: Child) -> None:
        self.loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        child.pidfd = -1
        if child.stats_sock is not None:
            try:
                self.loop.remove_reader(child.stats_sock.fileno())
            except (ValueError, OSError):
                pass
            child.stats_sock.close()
            child.stats_sock = None
        rc = child.proc.wait()
        pid = child.pid
        for index, n in (child.stats.get("worker_requests") or {}).items():
            self.past_requests[int(index)] = self.past_requests.get(int(index), 0) + int(n)
        child.past_shed += child.stats.get("shed", 0)
        child.stats = {}
        _answer(child, None)   # its figures are in past_requests now
        child.proc = None
        child.exited.set()
        if self.stopping:
            log.debug("front-end %d (pid %d) exited (%d)", child.index, pid, rc)
            return
        from sidecar.frontend.pool import describe_exit
        young = time.monotonic() - child.started_at < YOUNG or not child.ready.is_set()
        child.failures = child.failures + 1 if young else 0
        child.restarts += 1
        self.restarts += 1
        log.warning("front-end %d (pid %d) %s; its connections are lost; restarting",
                    child.index, pid, describe_exit(rc))
        self._schedule_restart(child)

    def _schedule_restart(self, child: Child) -> None:
        if self.stopping or child.restart_handle is not None:
            return
        delay = 0.0 if child.failures <= 1 else min(0.1 * 2 ** (child.failures - 2),
                                                     MAX_BACKOFF)
        if delay:
            log.warning("front-end %d keeps failing (%d in a row): next start in %.1fs",
                        child.index, child.failures, delay)
        child.restart_handle = self.loop.call_later(delay, self._spawn, child)

    def _kill(self, child: Child) -> None:
        if child.proc is not None:
            try:
                child.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- stopping ----------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """SIGTERM every child: it stops accepting and drains its connections (up to
        ``timeout``); wait for it to exit, SIGKILL past the grace."""
        self.stopping = True
        running = []
        for child in self.children:
            if child.restart_handle is not None:
                child.restart_handle.cancel()
                child.restart_handle = None
            if child.proc is not None:
                try:
                    child.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                running.append(child)
        for t in (timeout + KILL_GRACE, KILL_GRACE):
            waits = [c.exited.wait() for c in running if c.proc is not None]
            if not waits:
                break
            _, pending = await asyncio.wait([asyncio.ensure_future(w) for w in waits],
                                            timeout=t)
            for fut in pending:
                fut.cancel()
            for c in running:
                if c.proc is not None:
                    log.warning("front-end %d (pid %d) did not stop in time: killing it",
                                c.index, c.pid)
                    self._kill(c)
        for sockets in self.sockets_for:
            for s in sockets:
                s.close()


def _answer(child: Child, seq: int | None) -> None:
    """The refreshes up to ``seq`` (all: None) have the child's figures."""
    keep = []
    for asked, fut in child.asks:
        if seq is None or asked <= seq:
            if not fut.done():
                fut.set_result(None)
        else:
            keep.append((asked, fut))
    child.asks = keep


def answer_asks(frontend, sock: socket.socket) -> None:
    """In a child front-end: answer the supervisor's ``{"ask": SEQ}`` on the figures socket
    with the figures at once (``refresh``).  Several asks waiting are answered once, with the
    last sequence number.  ``{"shed": SHARE}``: close that share of the connections after
    their response (``Frontends.shed``, balance.py)."""
    from sidecar.frontend import metrics
    from sidecar.frontend.balance import shed

    def on_readable() -> None:
        seq = None
        for _ in range(64):
            try:
                data = sock.recv(STATS_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:   # the supervisor is gone: the attach connection says so too
                frontend.loop.remove_reader(sock.fileno())
                return
            try:
                message = msgpack.unpackb(data, raw=False)
                ask = message.get("ask")
                share = message.get("shed")
            except Exception:
                continue
            if isinstance(share, float) and 0 < share <= 1:
                frontend.shed_total += shed(frontend.connections, share)
            if isinstance(ask, int):
                seq = ask if seq is None else max(seq, ask)
        if seq is not None:
            try:
                sock.send(metrics.child_figures(frontend, seq))
            except OSError:
                pass   # full or gone: the supervisor falls back on the last figures

    frontend.loop.add_reader(sock.fileno(), on_readable)
