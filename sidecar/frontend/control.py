"""The control socket: a Unix socket for operators and other hosts, one JSON line each way.

    → {"cmd": "status"}\\n
    ← {"ok": true, "status": {...}}\\n            (metrics.fresh_snapshot)
    → {"cmd": "reload"}\\n                       (the SIGHUP reload; answered when it is over)
    ← {"ok": true, "reloaded": true}\\n  or  {"ok": false, "error": "reload failed: ..."}\\n
    → {"cmd": "nope"}\\n
    ← {"ok": false, "error": "unknown command 'nope' (commands: ...)"}\\n

A connection may send any number of requests, one at a time.  Commands live in a registry
(``ControlServer.commands``: name -> handler).  A handler receives the ``ControlConnection``
(streams and the underlying socket, e.g. for passing descriptors with SCM_RIGHTS) and the
request dict; it returns the reply dict, or ``None`` when it has taken the connection over
(it replies itself, may pass descriptors with ``ControlConnection.send_fds`` and may keep the
connection open: issue #7's ``attach``).

The socket is created with mode 0600: only the server's user (and root) may connect, which is
stricter than the app socket's 0660, since ``attach`` hands out the worker rings.  Where it
goes (``default_path``): ``$RUNTIME_DIRECTORY/control.sock`` under systemd, ``<uds>.ctl``
next to the Unix socket, else -- a server with TCP listeners only -- ``HOST:PORT.ctl`` in the
runtime directory (``runtime_dir``), where ``sidecar status`` looks (sidecar/status.py).

At shutdown ``close`` ends every connection the server still serves (an idle ``nc -U``, a
reload in progress, which is answered with an error): a client sees the socket close, and
the server's log stays clean.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from typing import Awaitable, Callable

from sidecar.frontend import listeners, metrics

log = logging.getLogger("sidecar.control")

MAX_LINE = 65536          # bytes of one request line; a status request is ~20
IDLE_TIMEOUT = 60.0       # seconds a control connection may sit without a request
CONTROL_MODE = 0o600

Handler = Callable[["ControlConnection", dict], Awaitable[dict | None]]


#: overrides where servers without a Unix socket put their control socket (and where
#: ``sidecar status`` looks for them); read by both, like ``$RUNTIME_DIRECTORY``
RUNTIME_DIR_ENV = "SIDECAR_RUNTIME_DIR"


def runtime_dir(environ=os.environ) -> str:
    """The directory of the control sockets of servers without a Unix socket:
    ``$SIDECAR_RUNTIME_DIR``; else ``/run/sidecar`` for root (where the shipped units'
    ``RuntimeDirectory=sidecar/NAME`` live too); else ``$XDG_RUNTIME_DIR/sidecar``; else
    ``/tmp/sidecar-UID`` (tmux's fallback)."""
    if environ.get(RUNTIME_DIR_ENV):
        return environ[RUNTIME_DIR_ENV]
    if os.geteuid() == 0:
        return "/run/sidecar"
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], "sidecar")
    return f"/tmp/sidecar-{os.geteuid()}"


def tcp_name(host: str, port: int) -> str:
    """A TCP listener's control socket name in the runtime directory: ``127.0.0.1:8000.ctl``,
    ``[::1]:8000.ctl`` (the address as bound, so ``--bind localhost:8000`` and port 0 too)."""
    return f"[{host}]:{port}.ctl" if ":" in host else f"{host}:{port}.ctl"


def default_path(uds: str | None, environ=os.environ,
                 sockets: list[socket.socket] = ()) -> str | None:
    """Where the control socket goes without ``--control``: ``$RUNTIME_DIRECTORY/control.sock``
    under systemd (RuntimeDirectory=), else next to the Unix socket (``<uds>.ctl``), else,
    when every listener in ``sockets`` is TCP, in the runtime directory, named after the
    first (``/run/sidecar/127.0.0.1:8000.ctl``), else none (a Unix socket passed in by
    systemd or --fd: the service's directory is not ours to guess, as before)."""
    runtime = environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return os.path.join(runtime.split(":")[0], "control.sock")
    if uds:
        return uds + ".ctl"
    if any(sock.family == socket.AF_UNIX for sock in sockets):
        return None
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getsockname()[:2]
            return os.path.join(runtime_dir(environ), tcp_name(host, port))
    return None


class Unusable(Exception):
    """The runtime directory cannot take the control socket (the server runs without one)."""


def ensure_dir(path: str) -> None:
    """Create the runtime directory (mode 0700) if it is missing; refuse one that another
    user could have planted or can write to (a symlink, not ours or root's, group/world
    writable): a client that trusted it would talk to someone else's socket."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise Unusable(f"cannot create {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Unusable(f"{path} is not a directory")
    if st.st_uid not in (os.geteuid(), 0) or st.st_mode & 0o022:
        raise Unusable(f"{path} is writable by, or belongs to, another user")


def open_socket(path: str, backlog: int) -> socket.socket:
    """Listen on ``path`` (mode 0600).  A stale socket of a killed server is replaced; a live
    one is ``ListenerError`` (one line, exit 2)."""
    return listeners.open_uds(path, CONTROL_MODE, backlog, what="control socket ")


def open_in_runtime_dir(path: str, backlog: int) -> socket.socket:
    """``open_socket`` for a path in the runtime directory, made if need be.  ``Unusable``
    when it cannot be used (unsafe, a read-only /run in a sandbox, a name too long): that
    only costs ``sidecar status``.  A live server on ``path`` is still ``ListenerError``."""
    ensure_dir(os.path.dirname(path))
    try:
        return open_socket(path, backlog)
    except listeners.ListenerError as exc:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
            except OSError:
                raise Unusable(str(exc)) from None
        raise


class ControlConnection:
    """One client of the control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @property
    def sock(self):
        """The transport's socket object (on uvloop a PseudoSocket: fileno() works, sendmsg
        does not; use ``send_fds``)."""
        return self.writer.get_extra_info("socket")

    async def reply(self, obj: dict) -> None:
        self.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def send_fds(self, data: bytes, fds: list[int], timeout: float = 5.0) -> None:
        """Send ``data`` with descriptors attached (SCM_RIGHTS), after everything written so
        far: the transport's buffer is flushed first, so the bytes stay in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.writer.transport.get_write_buffer_size():
            if loop.time() > deadline:
                raise TimeoutError("control client is not reading")
            await asyncio.sleep(0.005)
        with socket.socket(fileno=os.dup(self.sock.fileno())) as raw:
            while True:
                try:
                    socket.send_fds(raw, [data], fds)
                    return
                except BlockingIOError:
                    if loop.time() > deadline:
                        raise TimeoutError("control client is not reading") from None
                    await asyncio.sleep(0.005)


class ControlServer:
    def __init__(self, frontend, sock: socket.socket):
        self.frontend = frontend
        self.sock = sock
        self.server: asyncio.AbstractServer | None = None
        self._serving: set[asyncio.Task] = set()  # connections in _serve, ended by close()
        self.commands: dict[str, Handler] = {"status": self._status, "ping": self._ping,
                                             "reload": self._reload, "help": self._help}

    def register(self, name: str, handler: Handler) -> None:
        """Add a command (e.g. ``attach``, issue #7)."""
        self.commands[name] = handler

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, sock=self.sock, limit=MAX_LINE)

    def close(self) -> None:
        """Stop listening and end the connections being served (they close themselves)."""
        if self.server is not None:
            self.server.close()
        for task in self._serving:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ControlConnection(reader, writer)
        keep = False
        busy = False   # a command is being handled: it gets an answer if we are closed
        task = asyncio.current_task()
        self._serving.add(task)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except asyncio.TimeoutError:
                    return
                except (asyncio.LimitOverrunError, ValueError):
                    log.warning("control: request line over %d bytes: closing", MAX_LINE)
                    await conn.reply({"ok": False, "error": f"request over {MAX_LINE} bytes"})
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                busy = True
                reply = await self._handle(conn, line)
                busy = False
                if reply is None:
                    keep = True  # the handler owns the connection now
                    return
                await conn.reply(reply)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # close() at shutdown (or the loop's end).  Ending normally rather than cancelled
            # is deliberate: Python 3.11's asyncio logs a cancelled client_connected_cb task
            # as an ERROR with a traceback (fixed in 3.12).
            if busy and not keep and not writer.is_closing():
                writer.write(b'{"ok":false,"error":"the server is shutting down"}\n')
        finally:
            self._serving.discard(task)
            if not keep:
                writer.close()

    async def _handle(self, conn: ControlConnection, line: bytes) -> dict | None:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            log.warning("control: not a JSON line: %.80r", line)
            return {"ok": False, "error": "expected one JSON object per line"}
        cmd = request.get("cmd") if isinstance(request, dict) else None
        handler = self.commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            log.warning("control: unknown command %.40r", cmd)
            return {"ok": False, "error": f"unknown command {cmd!r} "
                                          f"(commands: {', '.join(sorted(self.commands))})"}
        try:
            return await handler(conn, request)
        except Exception as exc:  # one bad command must not take the socket down
            log.exception("control: command %s failed", cmd)
            return {"ok": False, "error": f"{cmd} failed: {exc}"}

    async def _status(self, conn, request) -> dict:
        return {"ok": True, "status": await metrics.fresh_snapshot(self.frontend)}

    async def _reload(self, conn, request) -> dict:
        """The SIGHUP reload, answered once it is over: ``sidecar reload`` (the units'
        ExecReload=) returns when the new workers serve, or fails when they could not start
        -- a signal cannot tell its sender either."""
        if self.frontend.state != "ready":
            return {"ok": False, "error": f"not reloading: the server is {self.frontend.state}"}
        log.info("reloading (control socket)")
        if not await self.frontend.reload():
            if self.frontend.state == "stopping":   # SIGTERM came: no worker keeps serving
                return {"ok": False, "error": "the server is shutting down"}
            return {"ok": False, "error": "reload failed: the old workers keep serving "
                                          "(the server's log says why)"}
        return {"ok": True, "reloaded": True}

    async def _ping(self, conn, request) -> dict:
        return {"ok": True, "pid": os.getpid()}

    async def _help(self, conn, request) -> dict:
        return {"ok": True, "commands": sorted(self.commands)}
