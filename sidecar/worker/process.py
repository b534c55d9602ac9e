"""The worker process, from SIDECAR_WORKER to exit code.

    main()  parse config -> logging -> import app -> uvloop.run(Worker.run())

    Worker.run()
      attach every host link  (RingError: EXIT_PROTOCOL_ERROR)
      lifespan startup        (failed: EXIT_STARTUP_FAILED)
      every link: start reading, send HELLO
      ... serve until stopped: SIGTERM (drain), parent gone, protocol/ring error ...
      disconnect the streams still running, cancel those that do not return
      flush what is queued for the hosts, lifespan shutdown, exit

SIGINT is ignored: Ctrl-C reaches the whole process group and the supervisor decides what it
means.  SIGTERM drains: requests keep being served (the host stops routing new streams to a
draining worker), and the worker exits as soon as none is in flight, or after
``shutdown_timeout``.  SIGQUIT stops at once (gunicorn's quick shutdown): the streams still
running are disconnected, lifespan shutdown runs, the worker exits.

The heartbeat (``_tick``, every TICK seconds on the event loop) is what the supervisor's hang
watchdog reads: it stops exactly when the event loop stops running callbacks.  While streams
are in flight the loop also beats every PULSE seconds (``_pulse``): the front-end reads the
beat's age at every dispatch decision, and a beat older than PULSE means the loop is held
(CPU-bound code, a blocking call) and has been for that long (docs/operations.md, "Dispatch").
An idle worker does not pulse: idle means idle.

Why a worker could not start (app import, lifespan startup, rings) is one line; with a
``report_fd`` it goes to the supervisor, which logs it once for the whole pool.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import uvloop

from .. import gc_tuning
from ..orphan import die_with_parent, orphaned
from .control import ControlChannel
from .config import (
    EXIT_CONFIG_ERROR, EXIT_IMPORT_FAILED, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_PROTOCOL_ERROR,
    EXIT_STARTUP_FAILED, ConfigError, WorkerConfig,
)
from .lifespan import Lifespan, StartupFailed
from .link import HostLink
from .loader import ImportFailed, load_app
from . import wsgi

__all__ = ["Worker", "main"]

TICK = 0.5          # seconds between heartbeats (and parent checks)
PULSE = 0.005       # seconds between heartbeats while streams are in flight (dispatch reads
                    # them: keep in step with sidecar.frontend.link.PULSE)
ABORT_GRACE = 0.5   # seconds streams get to return after http.disconnect before cancellation
FLUSH_TIMEOUT = 1.0  # seconds to hand queued records (APP_DONE...) to the host at exit


class Worker:
    """Serves every attached host link with one app, one lifespan and one event loop."""

    def __init__(self, config: WorkerConfig, app, log: logging.Logger, parent_pid: int):
        self.config = config
        self.app = app
        self.log = log
        self.parent_pid = parent_pid
        self.root_path = config.root_path
        self.limit_streams = config.limit_streams
        self.lifespan = Lifespan(app, config.lifespan, log)
        self.state = self.lifespan.state
        self.links: dict[int, HostLink] = {}
        self.tasks: set[asyncio.Task] = set()  # every stream task still running
        self.draining = False
        self.serving = False   # links started: lifespan startup is over
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future | None = None  # result: the exit code
        self._ticker: asyncio.TimerHandle | None = None
        self.pulse_timer: asyncio.TimerHandle | None = None  # set while streams are in flight
        self.control: ControlChannel | None = None
        # --frontends: the load board, where this worker's streams in flight show to every
        # front-end (sidecar/load_board.py); None with one front-end
        self.board = None
        self.board_entry = config.board_entry
        self.ended = 0   # streams of every host ended, ever (for the board)
        if config.board_fd is not None:
            from sidecar.load_board import Board
            self.board = Board(config.board_fd)
            self._inflight_at, self._ended_at = self.board.load_words(self.board_entry)

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self.drain)
        loop.add_signal_handler(signal.SIGQUIT, self.quit)
        try:
            code = self._attach_links()
            if code is None:
                self._tick()
                code = await self._startup()
            if code is None:
                gc_tuning.tune()   # the app is imported and started (sidecar/gc_tuning.py)
                if not self._stopped.done():  # (SIGTERM may have come as startup completed)
                    for link in self.links.values():
                        link.start(loop)
                    if self.config.control_fd is not None:
                        self.control = ControlChannel(self, self.config.control_fd)
                        self.control.start(loop)
                    self.serving = True
                    self.log.info("serving %s (pid %d, %d host link(s))", self.config.app,
                                  os.getpid(), len(self.links))
                code = await self._stopped
                await self._shutdown()
            return code
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
            if self.pulse_timer is not None:
                self.pulse_timer.cancel()
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGQUIT)
            if self.control is not None:
                self.control.close()
            for link in self.links.values():
                link.close()
            if self.board is not None:
                self.board.set_inflight(self.board_entry, 0)

    def _attach_links(self) -> int | None:
        for spec in self.config.links:
            try:
                self.links[spec.host] = HostLink.attach(self, spec, self.config.window)
            except OSError as exc:
                report_failure(self.config, self.log,
                               f"cannot attach the rings of host {spec.host}: {exc}")
                return EXIT_CONFIG_ERROR
            except Exception as exc:  # RingError: not a ring, or not the generation expected
                report_failure(self.config, self.log,
                               f"cannot attach the rings of host {spec.host}: {exc}")
                return EXIT_PROTOCOL_ERROR
        return None

    # --- hosts attached and detached at run time (sidecar/worker/control.py) ---------------

    def attach_link(self, spec) -> None:
        """A new host's ring pair: serve it from now on (its HELLO tells the host so)."""
        if self._stopped.done() or self.draining or spec.host in self.links:
            reason = "draining" if self.draining or self._stopped.done() else "duplicate host"
            self.log.warning("not attaching host %d (%s)", spec.host, reason)
            for fd in spec.fds():
                os.close(fd)
            return
        try:
            link = HostLink.attach(self, spec, self.config.window)
        except Exception as exc:  # RingError / OSError: not rings; the host is broken
            for fd in spec.fds():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.log.warning("cannot attach the rings of host %d: %s", spec.host, exc)
            if self.control is not None:
                self.control.report_broken(spec.host, f"rings do not attach: {exc}")
            return
        self.links[spec.host] = link
        link.start(self.loop)
        self.log.info("host %d attached", spec.host)

    def detach_link(self, host: int, reason: str) -> None:
        """Forget one host: its streams see a disconnect (then are cancelled after a grace
        period), its rings are unmapped.  The other links carry on."""
        link = self.links.pop(host, None)
        if link is None or host == 0:
            if link is not None:
                self.links[host] = link  # the front-end is never detached
            return
        streams = list(link.streams.values())
        link.close()  # broken from now on: late writes from the app go nowhere
        for stream in streams:
            stream.on_disconnect()
        tasks = [s.task for s in streams if s.task is not None and not s.task.done()]
        if tasks:
            self.loop.call_later(ABORT_GRACE, self._cancel_pending, tasks)
        self.log.info("host %d detached (%s): %d stream(s) cancelled", host, reason, len(streams))

    def link_failed(self, link: HostLink, reason: str) -> None:
        """A host broke its ring or the event protocol.  The front-end (host 0): exit, the
        supervisor replaces this worker.  Another host: cut that one off, keep serving."""
        if link.host == 0 or self.control is None:
            self.protocol_error(reason)
            return
        self.log.error("%s; detaching it", reason)
        # not now: this runs inside the link's read loop, which still holds the ring
        self.loop.call_soon(self.detach_link, link.host, "protocol error")
        self.control.report_broken(link.host, reason)

    async def _startup(self) -> int | None:
        """Run lifespan startup; None when the worker may serve, else the exit code."""
        startup = self.loop.create_task(self.lifespan.startup())
        await asyncio.wait([startup, self._stopped], return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():  # SIGTERM or parent death while the app was starting
            self.lifespan.abort()
            startup.cancel()
            await asyncio.wait([startup])
            return self._stopped.result()
        try:
            startup.result()
        except StartupFailed as exc:
            report_failure(self.config, self.log, str(exc))
            return EXIT_STARTUP_FAILED
        return None

    async def _shutdown(self) -> None:
        for link in self.links.values():
            link.stop_reading()  # first: a stream opened now would be neither served nor told
        await self._abort_streams()
        for link in self.links.values():
            if not await link.drain(FLUSH_TIMEOUT):
                self.log.warning("host %d did not take the last events", link.host)
        await self.lifespan.shutdown(self.config.shutdown_timeout)

    async def _abort_streams(self) -> None:
        """Disconnect every stream still running; cancel those that do not return."""
        if not self.tasks:
            return
        for link in self.links.values():
            for stream in list(link.streams.values()):
                stream.on_disconnect()
        _, pending = await asyncio.wait(self.tasks, timeout=ABORT_GRACE)
        if pending:
            self.log.warning("cancelling %d stream(s) still running", len(pending))
            for task in pending:
                self.cancel_task(task)
            await asyncio.wait(pending, timeout=ABORT_GRACE)

    # --- reasons to stop -------------------------------------------------------------------

    def stop(self, code: int) -> None:
        if not self._stopped.done():
            self._stopped.set_result(code)

    def drain(self) -> None:
        """SIGTERM: finish the streams in flight (up to shutdown_timeout), then exit 0.  The
        supervisor gone (its death signal, sidecar/orphan.py): stop now, as for SIGQUIT --
        no host is left to take what the streams would send."""
        if orphaned(self.parent_pid):
            self.log.warning("parent process %d is gone; exiting", self.parent_pid)
            self.draining = True
            self.stop(EXIT_OK)
            return
        if self.draining:
            return
        self.draining = True
        if not self.serving:
            # still starting: nothing is in flight, and the supervisor says why it stops us
            # (a sibling's failed startup prints one line, not one per worker)
            self.log.debug("told to stop before serving")
            self.stop(EXIT_OK)
            return
        timeout = self.config.shutdown_timeout
        self.log.info("draining: %d stream(s) in flight, timeout %gs", len(self.tasks), timeout)
        if not self.tasks:
            self.stop(EXIT_OK)
        else:
            self.loop.call_later(timeout, self._drain_timeout)

    def quit(self) -> None:
        """SIGQUIT: the supervisor gave up waiting for the drain; stop now."""
        self.log.info("stopping now (SIGQUIT): %d stream(s) in flight", len(self.tasks))
        self.draining = True
        self.stop(EXIT_OK)

    def _drain_timeout(self) -> None:
        if not self._stopped.done():
            self.log.warning("shutdown timeout: %d stream(s) still in flight", len(self.tasks))
            self.stop(EXIT_OK)

    def cancel_task(self, task: asyncio.Task) -> None:
        """Cancel a stream's task.  A task cancelled before it first runs never reaches
        ``HttpStream.run``'s finally (which calls task_done), so the done callback does it
        then; tasks nobody cancels go without one (a callback per request costs a loop turn)."""
        if not task.done():
            task.cancel()
            task.add_done_callback(self.task_done)

    def _cancel_pending(self, tasks) -> None:
        for task in tasks:
            self.cancel_task(task)

    def task_done(self, task: asyncio.Task | None) -> None:
        """A stream's task finished (called from the task itself, or as its done callback
        once cancelled: see cancel_task).  None: a stream that ended within its task's first
        step (started eagerly, link.start_task), before it was ever in flight."""
        tasks = self.tasks
        n = len(tasks)
        tasks.discard(task)
        if self.board is not None and (len(tasks) < n or task is None):  # (once a stream:
            self.ended += 1                           # --max-requests counts every host's)
            words = self.board.words   # board.set_load, without the call (per request)
            words[self._inflight_at] = len(tasks)
            words[self._ended_at] = self.ended
        if self.draining and not self.tasks:
            self.stop(EXIT_OK)

    def protocol_error(self, reason: str) -> None:
        """A host broke the protocol or its ring: the supervisor replaces this worker."""
        if not self._stopped.done():
            self.log.error("%s; exiting", reason)
        self.stop(EXIT_PROTOCOL_ERROR)

    def internal_error(self, what: str, exc: BaseException) -> None:
        self.log.critical("internal error %s; exiting", what, exc_info=exc)
        self.stop(EXIT_INTERNAL_ERROR)

    def _tick(self) -> None:
        for link in self.links.values():
            link.heartbeat()
        if orphaned(self.parent_pid) and not self._stopped.done():
            self.log.warning("parent process %d is gone; exiting", self.parent_pid)
            self.stop(EXIT_OK)
        self._ticker = self.loop.call_later(TICK, self._tick)

    def start_pulse(self) -> None:
        """A stream opened on a worker that was not pulsing: beat every PULSE seconds from
        now on while streams are in flight.  Not at once: a beat tells the hosts that the
        loop ran after the work it was handed began.  A beat at the open made a worker that
        had just started a long request look free for its first milliseconds, and cheap
        requests were packed behind it; until its first beat (or a record) a host counts it
        busy from the moment it handed it the stream."""
        self.pulse_timer = self.loop.call_later(PULSE, self.pulse)
        if self.board is not None:
            self.board.set_inflight(self.board_entry, len(self.tasks))

    def pulse(self) -> None:
        """Beat on every host's ring now, and every PULSE seconds until no stream is in
        flight (start_pulse)."""
        for link in self.links.values():
            link.producer.heartbeat()
        if self.board is not None:
            self.board.set_inflight(self.board_entry, len(self.tasks))
        self.pulse_timer = self.loop.call_later(PULSE, self.pulse) if self.tasks else None


def report_failure(config: WorkerConfig, log: logging.Logger, reason: str) -> None:
    """Why this worker cannot start, one line: to the supervisor's pipe if there is one (it
    logs it once for the pool; here it is only a debug line), else to the log."""
    if config.report_fd is None:
        log.error("%s", reason)
        return
    log.debug("%s", reason)
    try:
        os.write(config.report_fd, " ".join(reason.split()).encode("utf-8", "replace")[:4000]
                 + b"\n")
    except OSError:
        log.error("%s", reason)  # nobody to tell: say it here


def setup_logging(config: WorkerConfig) -> logging.Logger:
    """The worker's logger, with its own handler so an app's logging setup cannot hide it;
    the root logger gets the same handler (asyncio, the app) unless something set it up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [worker {config.index} %(process)d] %(levelname)s %(message)s"))
    log = logging.getLogger("sidecar.worker")
    level = logging.getLevelName(config.log_level.upper())
    log.setLevel(level if isinstance(level, int) else logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
    return log


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_pid = os.getppid()
    die_with_parent(parent_pid)   # SIGTERM when the supervisor exits, even by SIGKILL
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        print(f"sidecar worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    log = setup_logging(config)
    if config.log_config:
        from sidecar import logconfig
        try:
            logconfig.apply(logconfig.load(config.log_config))
        except logconfig.LogConfigError as exc:
            report_failure(config, log, str(exc))
            return EXIT_CONFIG_ERROR
    try:
        app = load_app(config.app, config.factory, config.app_dir)
        app = wsgi.wrap(app, config.interface, config.wsgi_threads, config.window)
    except ImportFailed as exc:
        report_failure(config, log, str(exc))
        log.debug("while loading the app", exc_info=exc.__cause__)
        return EXIT_IMPORT_FAILED
    log.disabled = False  # logging.config.dictConfig() in the app disables existing loggers
    return uvloop.run(Worker(config, app, log, parent_pid).run())
