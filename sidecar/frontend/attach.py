"""Other hosts attach to the worker pool: a C program, a Node.js process, ... (docs/protocol.md,
"Attaching a host").

A host connects to the attach socket (AF_UNIX SOCK_SEQPACKET, mode as strict as the main
socket) and receives, for every worker, a ring pair of its own (H_WORKER, six descriptors by
SCM_RIGHTS); the same ring pair goes to the worker over its control channel (W_ATTACH).  From
then on the host talks to the workers directly through shared memory, and this process only
keeps the roster: a replaced worker means H_WORKER_GONE + a new H_WORKER to every host.

A host is cut off (W_DETACH to every worker, which disconnects its streams and unmaps its
rings) when its connection closes (it exited or died), when it sends anything (hosts only
listen), when it stops reading its control messages, or when a worker reports that it broke
the ring or event protocol (W_BROKEN).  The other hosts, and the front-end, carry on.

``AttachServer.handle(conn)`` takes an accepted connection, so a shared control socket can
hand attach requests over instead of this module's own listener.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import struct

from sidecar import attach_protocol as ap
from sidecar.frontend import listeners
from sidecar.frontend.worker_proc import DRAINING
from sidecar.ring import Consumer, Producer

__all__ = ["AttachServer", "open_attach_socket"]

log = logging.getLogger("sidecar.attach")

#: Attached hosts at once: each costs two rings per worker.  (nginx worker_connections-like cap)
MAX_HOSTS = 64
CLOSED = "its control connection closed"


def open_attach_socket(path: str, mode: int) -> socket.socket:
    """Listen for hosts on ``path`` (a stale socket file of a previous run is replaced)."""
    return listeners.open_uds(path, mode, 16, kind=socket.SOCK_SEQPACKET, what="attach socket ")


class Host:
    """One attached host: its control connection and the workers it has rings to."""

    def __init__(self, host_id: int, conn: socket.socket, frontend: bool = False):
        self.id = host_id
        self.conn = conn
        self.frontend = frontend   # one of our own front-ends (--frontends): it sends files
        self.workers: set[int] = set()  # serials of the workers it was given


class AttachServer:
    def __init__(self, pool, config, loop):
        self.pool = pool
        self.config = config
        self.loop = loop
        self.hosts: dict[int, Host] = {}
        self.listener: socket.socket | None = None
        self.path: str | None = None
        self._ids = itertools.count(1)  # host 0 is the front-end
        pool.on_worker_started = self._worker_started
        pool.on_worker_gone = self._worker_gone
        pool.on_worker_draining = self._worker_draining

    # --- the listener --------------------------------------------------------------------

    def listen(self, sock: socket.socket, path: str) -> None:
        """Accept hosts on ``sock`` (from open_attach_socket), unlinking ``path`` at close."""
        self.listener = sock
        self.path = path
        self.loop.add_reader(self.listener.fileno(), self._accept)
        log.info("attach socket on %s", path)

    def close(self) -> None:
        for host in list(self.hosts.values()):
            self.cut_off(host, "shutting down")
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("attach socket: accept failed: %s", exc)
            return
        self.handle(conn)

    # --- hosts ---------------------------------------------------------------------------

    def handle(self, conn: socket.socket, frontend: bool = False) -> None:
        """Take over an accepted SOCK_SEQPACKET connection from a host that wants to attach
        (``frontend``: one of our own front-end processes, from a socketpair)."""
        conn.setblocking(False)
        if self.pool.stopping or len(self.hosts) >= MAX_HOSTS:
            why = "shutting down" if self.pool.stopping else f"{MAX_HOSTS} hosts attached"
            log.warning("attach refused: %s", why)
            try:
                ap.send(conn, [ap.H_BYE, why])
            except OSError:
                pass
            conn.close()
            return
        host = Host(next(self._ids), conn, frontend)
        self.hosts[host.id] = host
        try:
            ap.send(conn, [ap.H_WELCOME, ap.ATTACH_VERSION, host.id, self.config.window])
        except OSError as exc:
            self.cut_off(host, f"cannot write to it: {exc}")
            return
        self.loop.add_reader(conn.fileno(), self._on_host_readable, host)
        log.info("host %d attached (%s)", host.id, _peer(conn))
        for w in self.pool.workers():
            if w.state != DRAINING and not w.exited:
                self._give(host, w)

    def cut_off(self, host: Host, reason: str) -> None:
        """Detach ``host`` from every worker and close its connection."""
        if self.hosts.pop(host.id, None) is None:
            return
        if reason in ("shutting down", CLOSED):  # the normal ends of a host
            log.info("host %d detached: %s", host.id, reason)
        else:
            log.warning("host %d cut off: %s", host.id, reason)
        for w in self.pool.workers():
            if not w.exited and w.serial in host.workers:
                try:
                    ap.send(w.control, [ap.W_DETACH, host.id])
                except OSError as exc:
                    log.warning("worker %d: cannot detach host %d: %s", w.index, host.id, exc)
        try:
            self.loop.remove_reader(host.conn.fileno())
        except (ValueError, OSError):
            pass
        try:
            ap.send(host.conn, [ap.H_BYE, reason[:512]])
        except OSError:
            pass
        host.conn.close()

    def _on_host_readable(self, host: Host) -> None:
        try:
            got = ap.recv(host.conn, maxfds=0)
        except BlockingIOError:
            return
        except (OSError, ap.ChannelError) as exc:
            self.cut_off(host, f"control connection: {exc}")
            return
        if got is None:
            self.cut_off(host, CLOSED)
        else:
            self.cut_off(host, f"sent {got[0][:2]!r}; hosts only listen")

    # --- workers -------------------------------------------------------------------------

    def _give(self, host: Host, w) -> None:
        """A new ring pair between ``host`` and worker process ``w``, sent to both."""
        capacity = self.config.ring_capacity
        to_worker = Producer.create(capacity)
        try:
            to_host = Consumer.create(capacity)
        except BaseException:
            to_worker.close()
            raise
        try:
            tw, th = to_worker.spec(), to_host.spec()
            fds = tw.fds() + th.fds()
            try:
                ap.send(w.control, [ap.W_ATTACH, host.id, tw.generation, th.generation,
                                    ap.HOST_FRONTEND if host.frontend else 0], fds)
            except OSError as exc:
                log.warning("worker %d: cannot attach host %d: %s", w.index, host.id, exc)
                return
            host.workers.add(w.serial)
            try:
                ap.send(host.conn, [ap.H_WORKER, w.serial, w.index, tw.generation,
                                    th.generation], fds)
            except OSError as exc:  # not reading its messages (or gone)
                self.cut_off(host, f"cannot write to it: {exc}")
        finally:
            # both peers hold their own descriptors now; the memory lives as long as they do
            to_worker.close()
            to_host.close()

    def _worker_started(self, w) -> None:
        self.loop.add_reader(w.control.fileno(), self._on_worker_readable, w)
        for host in list(self.hosts.values()):
            self._give(host, w)

    def _worker_gone(self, w) -> None:
        """The process exited (called before its control channel is closed)."""
        try:
            self.loop.remove_reader(w.control.fileno())
        except (ValueError, OSError):
            pass
        for host in list(self.hosts.values()):
            if w.serial in host.workers:
                host.workers.discard(w.serial)
                try:
                    ap.send(host.conn, [ap.H_WORKER_GONE, w.serial])
                except OSError as exc:
                    self.cut_off(host, f"cannot write to it: {exc}")

    def _worker_draining(self, w) -> None:
        """Worker ``w`` takes no new streams (reload, recycling, shutdown): hosts stop
        picking it; what they have in flight on it finishes."""
        for host in list(self.hosts.values()):
            if w.serial in host.workers:
                try:
                    ap.send(host.conn, [ap.H_WORKER_DRAINING, w.serial])
                except OSError as exc:
                    self.cut_off(host, f"cannot write to it: {exc}")

    def _on_worker_readable(self, w) -> None:
        control = w.control
        try:
            got = ap.recv(control, maxfds=0)
        except BlockingIOError:
            return
        except (OSError, ap.ChannelError) as exc:
            log.error("worker %d: control channel: %s", w.index, exc)
            self.loop.remove_reader(control.fileno())
            return
        if got is None:  # the worker exited; _worker_gone follows from its pidfd
            self.loop.remove_reader(control.fileno())
            return
        msg, _ = got
        if msg[0] == ap.W_BROKEN and len(msg) == 3 and type(msg[1]) is int:
            host = self.hosts.get(msg[1])
            if host is not None:
                self.cut_off(host, f"worker {w.index}: {msg[2]}")
        else:
            log.error("worker %d: unexpected control message %r", w.index, msg[:2])


def _peer(conn: socket.socket) -> str:
    """pid/uid of the peer, for the log (SO_PEERCRED)."""
    try:
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", cred)
        return f"pid {pid}, uid {uid}"
    except OSError:
        return "peer unknown"
