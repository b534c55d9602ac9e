"""The front-end process: listeners, connections, the worker pool, signals.

Start-up: open every listener (fail fast), start the workers, import the HTTP stack while
they start, wait until each passed lifespan startup (HELLO), then accept.  Signal handlers
only queue the signal; ``handle_<sig>`` does the work on the event loop.  SIGTERM/SIGINT:
stop accepting, let in-flight requests finish (up to shutdown_timeout), drain the workers,
exit.  SIGHUP: zero-downtime reload of the workers (``reload``); SIGTTIN/SIGTTOU: one worker
more/fewer.  The listeners stay open throughout.

With --frontends N this process is front-end 0 and supervises front-ends 1 … N-1
(frontends.py), started once the workers are ready; each of those runs a FrontEnd too, over
the ring pairs given to it (``child``: child.py, host_pool.py), leaves every signal but
SIGTERM to the supervisor, and sends it its figures once a second.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import signal
import socket
import time
from email.utils import formatdate
from functools import cached_property
from typing import TYPE_CHECKING

from sidecar import gc_tuning
from sidecar.config import EXIT_OK, Config
from sidecar.orphan import orphaned
from sidecar.ring_link import Batcher
from sidecar.frontend.pool import WorkerPool
from sidecar.frontend.ratelog import RateLimitedLog
from sidecar.frontend import access, listeners, metrics
from sidecar.frontend.access_format import compile_format
from sidecar.frontend.control import ControlServer
from sidecar.http.limits import H2Limits
from sidecar.systemd import Notifier

# The HTTP/1.1 stack (http_conn: httptools, the parser, the stream layer) is imported in
# run() once the workers are spawned, so that it loads while they start instead of before
# (FrontEnd.http_stack); HTTP/2's and WebSocket's with the first connection that needs them.
if TYPE_CHECKING:
    from sidecar.frontend.http_conn import HTTPConnection

# Entries kept of is_trusted's and _proxy_scope's answers before they are dropped wholesale:
# one per distinct client address (or X-Forwarded-For value) seen since
PROXY_CACHE = 4096

log = logging.getLogger("sidecar")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
ORPHAN_GRACE = 1.0   # seconds a child front-end whose supervisor is gone drains for


def websocket_handler(conn, req) -> None:
    """ws_conn.py's, imported with websockets on the first WebSocket (not at start-up)."""
    from sidecar.frontend.ws_conn import websocket_handler
    websocket_handler(conn, req)


class FrontEnd:
    """Shared state of all connections of this process (what HTTPConnection calls ``server``)."""

    def __init__(self, config: Config, sockets: list[socket.socket], *,
                 owned_paths: list[str] | None = None, notifier: Notifier | None = None,
                 control_sock: socket.socket | None = None,
                 metrics_sock: socket.socket | None = None,
                 attach_sock: socket.socket | None = None, tls=None,
                 frontend_sockets: list[list[socket.socket]] | None = None, child=None,
                 balance_sockets: list[socket.socket] | None = None):
        """``frontend_sockets``: --frontends N > 1, the listeners of front-ends 1 … N-1, which
        this process starts and supervises (frontends.py); ``balance_sockets``: this
        process's TCP listeners in SO_REUSEPORT groups with theirs (balance.py).  ``child``:
        this process is one of those, (index, N, attach connection, figures socket, load
        board): child.py."""
        self.config = config
        self.sockets = sockets
        self.tls = tls   # ssl.SSLContext for the TCP listeners (sidecar/frontend/tls.py) or None
        # Unix socket paths to unlink at exit, read now: once a server closes its listening
        # socket the fd is gone and getsockname() fails with EBADF.
        # Only the socket we created is ours to remove; one passed in (--fd, systemd) is not.
        if owned_paths is None:
            owned_paths = [config.listeners()[0]] if config.listeners()[0] else []
        self.uds_paths = owned_paths
        self.state = "starting"  # -> ready -> stopping (sidecar status, STATUS=)
        self.started_at = time.monotonic()
        self.notify = notifier or Notifier({})
        self.control = ControlServer(self, control_sock) if control_sock else None
        self.metrics = metrics.MetricsServer(self, metrics_sock) if metrics_sock else None
        self.loop = asyncio.get_running_loop()
        # HTTP/2's limits, or None: HTTP/1.1 only (--no-http2)
        self.h2_limits = H2Limits.from_config(config) if config.http2 else None
        self.connections: set[HTTPConnection] = set()
        # one line a second at most, however many connections are refused
        self.log_over_concurrency = RateLimitedLog(logging.getLogger("sidecar.frontend"))
        self.next_sid = itertools.count(1).__next__
        # The Date field value, formatted once a second by a timer at each wall-clock second
        # (as nginx and uvicorn cache theirs), not looked up per response; None: not sent.
        self.date_value: bytes | None = None
        self._date_timer: asyncio.TimerHandle | None = None
        if config.date_header:
            self._tick_date()
        self.server_header = b"sidecar" if config.server_header else None
        # --header fields, added to every response from the app; a Server one replaces ours
        fields = []
        for text in config.headers:
            name, _, value = text.partition(": ")
            if name.lower() == "server":
                self.server_header = value.encode("latin-1")
            else:
                fields.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self.extra_fields = tuple(fields)
        self.websocket_handler = websocket_handler  # Upgrade: websocket -> ws_conn.py
        self._trusted_nets, self._trust_all = self._parse_trusted(config.forwarded_allow_ips)
        self._trusted_hosts: dict[str, bool] = {}   # is_trusted's answers (bounded)
        # _proxy_scope's answers (http_conn.py) for a trusted Unix socket's connections: a
        # dict per (scheme, server), each h1.proxy_key (the request's proxy fields) -> the
        # packed scheme and client, or None.  Behind nginx every request carries
        # X-Forwarded-For/-Proto, and the same few values come again and again (bounded;
        # the C parser reads them too: native/h1_api.c)
        self.proxy_scopes: dict = {}
        self.trust_unix = config.proxy_headers and (self._trust_all or
                                                    "unix" in config.forwarded_allow_ips)
        self.exit_code = EXIT_OK
        self.request_timeouts = 0   # 504s for --timeout-request (metrics)
        self.shed_total = 0   # connections a child front-end shed (balance.py; metrics)
        self._stop = asyncio.Event()
        self._signals: list[int] = []
        self.batcher = Batcher(self.loop)
        # the access lines' writer; None with --no-access-log
        fmt = compile_format(config.access_log_format) if config.access_log else None
        self.access = access.AccessLog(self.batcher, format=fmt) if config.access_log else None
        # streams record when a worker took them, the response start and its headers
        self.access_detail = fmt is not None
        self.index = 0          # which front-end this process is (--frontends)
        self.frontends = None   # front-ends 1 … N-1 when this process supervises them
        self._figures: socket.socket | None = None   # a child's channel to the supervisor
        self._supervisor_pid = os.getppid()          # (a child's)
        if child is not None:
            from sidecar.frontend.host_pool import HostPool
            self.index, count, attach_conn, self._figures, board = child
            self.pool = HostPool(config, self.loop, attach_conn, self.batcher,
                                 self._supervisor_lost, board, self.index, count)
        else:
            self.pool = WorkerPool(config, self.loop, self._fatal, self.batcher)
        self.attach = None  # other hosts attaching to the workers (frontend/attach.py)
        if attach_sock is not None or frontend_sockets:
            from sidecar.frontend.attach import AttachServer
            self.attach = AttachServer(self.pool, config, self.loop)
            if attach_sock is not None:
                self.attach.listen(attach_sock, config.attach_socket)
        if frontend_sockets:
            from sidecar.frontend.frontends import Frontends
            from sidecar.load_board import Board
            board = Board.create()
            self.pool.use_board(board, len(frontend_sockets) + 1)
            self.frontends = Frontends(self, frontend_sockets, board)
        self.balancer = None   # which front-end takes new TCP connections (balance.py)
        if frontend_sockets and balance_sockets and config.frontend_balance == "concentrate":
            from sidecar.frontend.balance import Balancer
            self.balancer = Balancer(self, balance_sockets, len(frontend_sockets) + 1)
        self.servers: list[asyncio.AbstractServer] = []
        self.reloader = None   # --reload (frontend/reloader.py), started once serving
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()  # signal work running on the loop

    # --- the HTTP stack, imported on first use: run() asks for it once the workers spawned --

    @cached_property
    def http_stack(self) -> type[HTTPConnection]:
        """The connection class (sidecar/frontend/http_conn.py), imported now."""
        from sidecar.frontend.http_conn import HTTPConnection
        return HTTPConnection

    @cached_property
    def limits(self):
        """HTTP/1.1's limits (sidecar/http/h1.py)."""
        from sidecar.http import h1
        c = self.config
        return h1.Limits(max_request_line=c.max_request_line,
                         max_header_bytes=c.max_header_bytes,
                         max_headers=c.max_headers, max_body=c.max_body)

    def load_http_stack(self) -> None:
        """Import the HTTP/1.1 stack (run(): while the workers start).  HTTP/2's (h2) and
        WebSocket's (websockets) come with the first connection that needs them."""
        for name in ("http_stack", "limits"):
            getattr(self, name)

    def _tick_date(self) -> None:
        now = time.time()
        self.date_value = formatdate(int(now), usegmt=True).encode("ascii")
        # just after the next second begins (the loop's timers are good to about 1 ms)
        self._date_timer = self.loop.call_later(1.0005 - now % 1.0, self._tick_date)

    # --- proxy headers -------------------------------------------------------------------

    @staticmethod
    def _parse_trusted(items: list[str]):
        nets, trust_all = [], False
        for item in items:
            if item == "*":
                trust_all = True
            elif item != "unix":
                nets.append(ipaddress.ip_network(item, strict=False))
        return nets, trust_all

    def is_trusted(self, host: str | None) -> bool:
        if not self.config.proxy_headers or host is None:
            return False
        if self._trust_all:
            return True
        known = self._trusted_hosts.get(host)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            trusted = False
        else:
            trusted = any(addr in net for net in self._trusted_nets)
        if len(self._trusted_hosts) >= PROXY_CACHE:
            self._trusted_hosts.clear()
        self._trusted_hosts[host] = trusted
        return trusted

    def apply_proxy_headers(self, headers, scheme: str, client):
        """X-Forwarded-For/-Proto (or Forwarded) from a trusted peer: the client and scheme the
        proxy saw.  The rightmost address not itself trusted is the client (uvicorn's rule)."""
        xff = proto = None
        for name, value in headers:
            if name == b"x-forwarded-for":
                xff = value if xff is None else xff + b"," + value
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"forwarded" and xff is None:
                for element in value.split(b",")[-1:]:
                    for pair in element.split(b";"):
                        k, _, v = pair.strip().partition(b"=")
                        v = v.strip(b'"')
                        if k.lower() == b"for":
                            xff = v.strip(b"[]").rsplit(b":", 1)[0] if v.count(b":") == 1 else v.strip(b"[]")
                        elif k.lower() == b"proto":
                            proto = v
        if proto is not None:
            p = proto.decode("latin-1").strip().lower()
            if p in ("http", "https", "ws", "wss"):
                scheme = p
        if xff is not None:
            hosts = [h.strip().decode("latin-1") for h in xff.split(b",") if h.strip()]
            chosen = None
            for h in reversed(hosts):
                chosen = h
                if not self.is_trusted(h):
                    break
            if chosen:
                client = [chosen, 0]
        return scheme, client

    # --- lifecycle -----------------------------------------------------------------------

    def _fatal(self, code: int, message: str) -> None:
        if self.exit_code != EXIT_OK:
            return  # one verdict is enough: every worker may fail alike, one after the other
        log.error("startup failed: %s", message)
        self.exit_code = code
        self._stop.set()

    def _supervisor_lost(self, why: str) -> None:
        """A child front-end: the supervisor is gone or cut it off.  The workers stop with it
        (sidecar/orphan.py): what is in flight ends at once, so the drain is short."""
        if not self._stop.is_set():
            log.warning("front-end %d: %s; stopping", self.index, why)
            self.config.shutdown_timeout = min(self.config.shutdown_timeout, ORPHAN_GRACE)
            self._stop.set()

    def _on_signal(self, sig: int) -> None:
        self._signals.append(sig)
        self.loop.call_soon(self._dispatch_signals)

    def _dispatch_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            name = signal.Signals(sig).name
            handler = getattr(self, f"handle_{name.lower()}", None)
            if self.index and sig != signal.SIGTERM:   # the supervisor's to handle
                log.warning("front-end %d: %s is for the supervisor (pid %d)", self.index,
                            name, os.getppid())
            elif handler is not None:
                handler()

    def handle_sigterm(self) -> None:
        if self.index and orphaned(self._supervisor_pid):   # its death signal (orphan.py)
            self._supervisor_lost("the supervisor exited")
            return
        log.info("shutting down (SIGTERM)")
        self._stop.set()

    def handle_sighup(self) -> None:
        log.info("reloading (SIGHUP)")
        self.request_reload()

    async def reload(self) -> bool:
        """Replace every worker with a fresh one (the app is imported again), without a
        refused or dropped request; True once the new workers serve, False if they failed
        to start (the old ones keep serving).  One reload at a time: a SIGHUP during a
        reload runs after it.  systemd sees RELOADING=1, then READY=1 (docs/deployment.md)."""
        return await self.notify.around_reload(self.pool.reload())

    def request_reload(self) -> None:
        """A reload in the background (SIGHUP, --reload's file watcher): one at a time."""
        self._background(self.reload())

    def handle_sigttin(self) -> None:
        self._background(self.pool.add_worker())

    def handle_sigttou(self) -> None:
        self._background(self.pool.remove_worker())

    def _background(self, coro) -> None:
        if self._stop.is_set():
            coro.close()
            return
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle_sigint(self) -> None:
        if self._stop.is_set():
            log.warning("second SIGINT: exiting now")
            os._exit(1)
        log.info("shutting down (SIGINT)")
        self._stop.set()

    async def run(self) -> int:
        for sig in self._signals_handled():
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        self.pool.start()
        await self._start_ops()
        self.load_http_stack()   # while the workers import the app
        ready = asyncio.ensure_future(self.pool.wait_ready())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([ready, stop], timeout=self.config.worker_start_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if not ready.done() and not stop.done():
            self._fatal(3, f"workers not ready after {self.config.worker_start_timeout:.0f}s")
        ready.cancel()
        if not self._stop.is_set():
            gc_tuning.tune()   # started: fewer young-generation passes (sidecar/gc_tuning.py)
            # front-ends 1 … N-1 first: until each serves, the connections the kernel hashes
            # to its TCP socket wait in its backlog (measured under load: a child that took
            # 3.5 s to start left its half of wrk's connections waiting that long, while
            # front-end 0 already answered, so clients and probes took the server as up)
            if self.frontends is not None and not await self._start_frontends():
                log.warning("not every front-end is serving after %gs",
                            self.config.worker_start_timeout)
            connection = self.http_stack
            for sock in self.sockets:
                tls = self.tls if sock.family != socket.AF_UNIX else None
                # the handshake is part of the request head's time (nginx counts it so too)
                extra = {"ssl": tls, "ssl_handshake_timeout": self.config.header_timeout} \
                    if tls is not None else {}
                server = await self.loop.create_server(lambda: connection(self), sock=sock,
                                                       backlog=self.config.backlog, **extra)
                self.servers.append(server)
            self._sweeper = self.loop.call_later(1.0, self._sweep)
            if self.balancer is not None:
                self.balancer.start()
            names = " ".join(listeners.describe(s, tls=self.tls is not None)
                             for s in self.sockets)
            self.state = "ready"
            if self.index:
                log.info("front-end %d serving on %s (pid %d)", self.index, names, os.getpid())
                self._report()
                await self._stop.wait()
                await self.shutdown()
                return self.exit_code
            extra = f", {self.frontends.count} front-ends" if self.frontends else ""
            log.info("sidecar ready on %s with %d workers%s (app %s)", names,
                     len(self.pool.slots), extra, self.config.app)
            self.notify.ready(metrics.status_line(metrics.snapshot(self)))
            if self.config.reload:
                from sidecar.frontend.reloader import Reloader
                self.reloader = Reloader(self, self.config.reload_dirs or [self.config.app_dir])
                self.reloader.start()
            await self._stop.wait()
        await self.shutdown()
        return self.exit_code

    def _signals_handled(self) -> tuple:
        # a child front-end leaves SIGINT ignored: Ctrl-C is for the supervisor
        return tuple(s for s in HANDLED_SIGNALS if not (self.index and s == signal.SIGINT))

    def _start_frontends(self):
        """Front-ends 1 … N-1, once the workers are ready: awaited until they serve."""
        self.frontends.start()
        return self.frontends.wait_ready(self.config.worker_start_timeout)

    def _report(self) -> None:
        """A child front-end's figures, to the supervisor (once a second, and when ready)."""
        try:
            self._figures.send(metrics.child_figures(self))
        except (BlockingIOError, InterruptedError):
            pass   # the supervisor is busy: the next second's figures will do
        except OSError:
            pass   # gone: the attach connection tells us

    def _sweep(self) -> None:
        """Once a second: close keep-alive connections idle past the timeout.  One timer for
        all connections instead of a timer armed and cancelled per request."""
        now = self.loop.time()
        timeout = self.config.keepalive_timeout
        for conn in list(self.connections):
            conn.close_if_idle(now, timeout)
        if self._figures is not None:
            self._report()
        if self.frontends is not None and self.config.max_requests:
            self.pool.check_max_requests()   # the other front-ends' streams count too
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def _start_ops(self) -> None:
        """Control socket, metrics endpoint and systemd notifications: up from the start, so
        that a slow start-up can be watched (and pinged through)."""
        for ops in (self.control, self.metrics):
            if ops is not None:
                await ops.start()
        self.notify.start(self.loop, lambda: metrics.status_line(metrics.snapshot(self)))

    async def shutdown(self) -> None:
        self.state = "stopping"
        self.notify.stopping()
        if self.reloader is not None:
            self.reloader.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.balancer is not None:
            self.balancer.close()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.start_drain()
        deadline = self.loop.time() + self.config.shutdown_timeout
        # the other front-ends drain as this one does, at the same time
        others = asyncio.ensure_future(self.frontends.stop(self.config.shutdown_timeout)) \
            if self.frontends is not None else None
        workers = asyncio.ensure_future(self.pool.stop(self.config.shutdown_timeout))
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.stop_now()
        await workers
        if others is not None:
            await others
        for task in list(self._tasks):
            task.cancel()  # a reload that was under way: its workers are gone
        self.pool.cancel_background()
        for ops in (self.control, self.metrics):
            if ops is not None:
                ops.close()
        self.notify.close()
        if self.attach is not None:  # after the workers: hosts' streams drained with them
            self.attach.close()
        for path in self.uds_paths:
            if isinstance(path, str) and path and os.path.exists(path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for sig in self._signals_handled():
            self.loop.remove_signal_handler(sig)
        if self._date_timer is not None:   # last: responses still draining need a Date
            self._date_timer.cancel()
        if self.access is not None:   # the lines of the last responses
            self.access.flush()
