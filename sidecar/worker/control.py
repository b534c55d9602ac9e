"""The worker's control channel to its supervisor: host links attached and detached at run time.

The supervisor sends W_ATTACH with a new host's ring pair (six descriptors, SCM_RIGHTS) and
W_DETACH when that host is gone; the worker answers W_BROKEN when a host (other than the
front-end, host 0) breaks the protocol, so the supervisor cuts it off everywhere.  Messages
are read only once the worker serves (after lifespan startup): until then they wait in the
socket, and the new link's HELLO tells the host when the worker takes its streams.
"""
from __future__ import annotations

import logging
import os
import socket

from sidecar import attach_protocol as ap
from sidecar.ring import RingSpec

from .config import LinkConfig

__all__ = ["ControlChannel"]

log = logging.getLogger("sidecar.worker")


class ControlChannel:
    def __init__(self, worker, fd: int):
        self.worker = worker
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.loop = None

    def start(self, loop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def report_broken(self, host: int, reason: str) -> None:
        try:
            ap.send(self.sock, [ap.W_BROKEN, host, reason[:512]])
        except OSError as exc:
            log.warning("cannot tell the supervisor that host %d is broken: %s", host, exc)

    def _on_readable(self) -> None:
        for _ in range(64):  # a bounded batch per loop turn
            try:
                got = ap.recv(self.sock)
            except BlockingIOError:
                return
            except (OSError, ap.ChannelError) as exc:
                self.close()
                self.worker.protocol_error(f"control channel: {exc}")
                return
            if got is None:  # the supervisor is gone; the parent check stops the worker
                self.close()
                return
            self._dispatch(*got)

    def _dispatch(self, msg: list, fds: list[int]) -> None:
        kind = msg[0]
        if kind == ap.W_ATTACH and len(msg) in (4, 5) and len(fds) == 6 \
                and all(type(v) is int for v in msg[1:]):
            _, host, gen_in, gen_out, *flags = msg
            spec = LinkConfig(host, RingSpec(*fds[:3], gen_in), RingSpec(*fds[3:], gen_out),
                              frontend=bool(flags and flags[0] & ap.HOST_FRONTEND))
            self.worker.attach_link(spec)
        elif kind == ap.W_DETACH and len(msg) == 2 and type(msg[1]) is int and not fds:
            self.worker.detach_link(msg[1], "detached by the supervisor")
        else:
            for fd in fds:
                os.close(fd)
            self.worker.protocol_error(f"control channel: unexpected message {msg[:3]!r}")
