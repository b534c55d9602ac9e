"""The two small systemd protocols, without libsystemd: sd_notify and socket activation.

sd_notify (``man sd_notify``): newline-separated ``KEY=VALUE`` lines in one datagram to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace).  We send READY=1, RELOADING=1 (+ MONOTONIC_USEC=), STOPPING=1, STATUS=... and
WATCHDOG=1.  The pings are scheduled on the front-end's event loop, never from a thread: a loop
that stalls stops pinging, and systemd (WatchdogSec=) kills and restarts the service.

Socket activation (``man sd_listen_fds``): ``$LISTEN_FDS`` descriptors from 3 on, meant for
``$LISTEN_PID`` only, named by ``$LISTEN_FDNAMES`` (colon-separated).

Both read their variables once, at start-up, and remove them from ``os.environ``: workers are
started with a copy of it and must neither notify nor believe the sockets are theirs.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable

log = logging.getLogger("sidecar")

SD_LISTEN_FDS_START = 3  # sd-daemon.h
STATUS_INTERVAL = 5.0    # seconds between STATUS= refreshes (systemctl status shows the last)
_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """The socket-activation variables are malformed; the message is for the operator."""


def listen_fds(environ=os.environ) -> list[tuple[int, str]]:
    """``[(fd, name), ...]`` passed by systemd to this process, or ``[]``; unsets the variables.

    Like sd_listen_fds(3): variables meant for another pid (a parent that did not clear them)
    are ignored, not an error.  The descriptors get FD_CLOEXEC, as libsystemd does, so that only
    what we pass on explicitly reaches a child.
    """
    count, pid, names = (environ.pop(k, None) for k in _LISTEN_VARS)
    if count is None:
        return []
    if pid is not None:
        if not pid.isdigit():
            raise ActivationError(f"LISTEN_PID={pid!r} is not a process id")
        if int(pid) != os.getpid():
            log.warning("LISTEN_FDS is meant for pid %s, not %d: ignored", pid, os.getpid())
            return []
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number")
    n = int(count)
    labels = names.split(":") if names else []
    if labels and len(labels) != n:
        raise ActivationError(f"LISTEN_FDNAMES has {len(labels)} names for {n} descriptors")
    out = []
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            raise ActivationError(f"LISTEN_FDS={n} but descriptor {fd} is not open") from None
        out.append((fd, labels[i] if labels else "unknown"))
    return out


def _notify_address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    return value


class Notifier:
    """sd_notify to the service manager: ready()/reloading()/stopping()/status()/watchdog().

    Every method is a no-op when ``$NOTIFY_SOCKET`` was not set, so the server calls them
    unconditionally.  A failed send is logged once and never raised: the server must not die
    because the manager's socket went away.
    """

    def __init__(self, environ=os.environ):
        notify, usec, wpid = (environ.pop(k, None) for k in _NOTIFY_VARS)
        self.address = _notify_address(notify) if notify else None
        self.watchdog_interval: float | None = None  # seconds between pings: half the timeout
        if self.address and usec and usec.isdigit() and int(usec) > 0:
            if wpid is None or (wpid.isdigit() and int(wpid) == os.getpid()):
                self.watchdog_interval = int(usec) / 2e6
        self._sock: socket.socket | None = None
        self._failed = False
        self._stopping = False  # after STOPPING=1, no READY=1 (a reload cut short by SIGTERM)
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
                self._failed = True
            return False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older
        # ones ignore it.  CLOCK_MONOTONIC, as the manager's own clock.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    async def around_reload(self, reload):
        """RELOADING=1, await the reload (an awaitable) and return its result, READY=1 — also
        when it fails, since the old workers keep serving then."""
        self.reloading()
        try:
            return await reload
        finally:
            if not self._stopping:
                self.ready()

    def stopping(self) -> None:
        self._stopping = True
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    # --- periodic messages, on the event loop ------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, status_text: Callable[[], str]) -> None:
        """Ping the watchdog every half timeout and refresh STATUS= every few seconds, both
        from ``loop``'s timers: if the loop stalls, the pings stop."""
        if not self.enabled:
            return
        if self.watchdog_interval:
            self._every(loop, self.watchdog_interval, self.watchdog)
        self._every(loop, STATUS_INTERVAL, lambda: self.status(status_text()))

    def _every(self, loop, interval: float, fn: Callable[[], None]) -> None:
        slot = len(self._timers)
        self._timers.append(None)

        def tick():
            fn()
            self._timers[slot] = loop.call_later(interval, tick)

        tick()

    def close(self) -> None:
        for timer in self._timers:
            if timer is not None:
                timer.cancel()
        self._timers.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
