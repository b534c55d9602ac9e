"""One worker process as the supervisor sees it: the child, its pidfd, its rings, its state.

    STARTING --HELLO--> READY --drain()--> DRAINING --exit--> (gone)
        \\---------------- exit / kill ------------------------/

A worker that failed at start tells the supervisor why through a pipe (``report_fd`` in its
config): the supervisor logs that one line, instead of every worker logging its own copy.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import signal
import socket
import subprocess
import sys
import time

from sidecar.frontend.link import WorkerLink
from sidecar.worker.config import WorkerConfig

STARTING, READY, DRAINING = "starting", "ready", "draining"
REPORT_MAX = 4096  # bytes of failure reason read from a worker (one line is expected)
_serials = itertools.count(1)  # worker ids for attached hosts (frontend/attach.py)


def read_rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (VmRSS, what ps and top show), None if gone."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            resident = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class WorkerProcess:
    """A child ``python -m sidecar.worker`` and the WorkerLink to it."""

    def __init__(self, slot, link: WorkerLink, conf: WorkerConfig):
        self.slot = slot
        self.link = link
        self.state = STARTING
        self.kill_reason: str | None = None  # why the supervisor killed it, for the exit log
        self.max_requests = 0                 # recycle after this many streams (0: never)
        self.recycling = False                # a replacement is being started
        self.exited = False
        self.replaced_for_memory = False      # started to replace a worker above the limit
        self.memory_warned = False            # above the memory limit at start: said once
        self.abandoned = False                # a successor given up before it served
        self.drain_task = None                # set by WorkerPool._drain
        self.drained = None   # WorkerPool._drain_then_stop: set when its last stream ended
        self._report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # control channel: other hosts' ring pairs come and go over it (worker/control.py);
        # SEQPACKET keeps passed descriptors with their message
        self.control, control_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.serial = next(_serials)  # unique for the life of this front-end
        conf = dataclasses.replace(conf, report_fd=report_w, control_fd=control_w.fileno())
        env = dict(os.environ)
        env["SIDECAR_WORKER"] = conf.to_json()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "sidecar.worker"], env=env,
                                         pass_fds=conf.pass_fds(), stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(self._report_r)
            self.control.close()
            raise
        finally:
            os.close(report_w)
            control_w.close()
        self.control.setblocking(False)
        self.pid = self.proc.pid
        self.started_at = time.monotonic()
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except BaseException:   # (ENOSYS: a kernel before 5.3, or valgrind) no orphan
            self.proc.kill()
            self.proc.wait()
            os.close(self._report_r)
            self.control.close()
            raise

    @property
    def index(self) -> int:
        return self.slot.index

    def signal(self, sig: int) -> None:
        if not self.exited:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self, reason: str) -> None:
        """SIGKILL, remembering why (the exit is logged with it)."""
        if self.kill_reason is None:
            self.kill_reason = reason
        self.signal(signal.SIGKILL)

    def reap(self) -> int:
        """The pidfd fired: collect the exit status (the pidfd is closed by the caller)."""
        self.exited = True
        self.control.close()
        return self.proc.wait()

    def report(self) -> str:
        """What the worker said about its failure (empty if nothing); closes the pipe."""
        if self._report_r < 0:
            return ""
        try:
            data = os.read(self._report_r, REPORT_MAX)
        except OSError as exc:
            data = b"" if exc.errno == errno.EAGAIN else str(exc).encode()
        os.close(self._report_r)
        self._report_r = -1
        return data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else ""

    def rss_mib(self) -> float | None:
        return read_rss_mib(self.pid)

    def heartbeat_age(self) -> float | None:
        return self.link.heartbeat_age()
