"""Listening sockets: Unix socket, TCP binds, inherited descriptors, systemd's sockets.

All are opened before any worker starts, so a bad address fails fast with one clear line.
"""
from __future__ import annotations

import errno
import os
import socket
import stat


class ListenerError(Exception):
    """A socket could not be opened; the message is meant for the operator as is."""


def open_uds(path: str, mode: int, backlog: int, kind: int = socket.SOCK_STREAM,
             what: str = "") -> socket.socket:
    """Listen on the Unix socket ``path`` with permissions ``mode``.  A stale socket file (no
    one listening: a previous run was killed) is replaced; a live one, or a file that is not a
    socket, is refused.  Also used for the attach socket (``kind`` SOCK_SEQPACKET); ``what``
    names the socket in errors ("attach socket ")."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ListenerError(f"cannot listen on {what}{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a previous run
        else:
            raise ListenerError(f"cannot listen on {what}{path}: another server is listening "
                                "there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        # bind under a umask that already excludes what ``mode`` excludes: no window in which
        # the socket is connectable by more users than it should be before the chmod
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {what}{path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def parse_bind(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ListenerError(f"invalid --bind {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def open_tcp(spec: str, backlog: int, reuseport: bool = False) -> socket.socket:
    """Listen on ``spec`` (HOST:PORT); ``reuseport``: with SO_REUSEPORT, for twins
    (``reuseport_twin``) that share its port, one per front-end (--frontends)."""
    if spec.startswith("unix:"):
        raise ListenerError("use --uds PATH for Unix sockets")
    host, port = parse_bind(spec)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenerError(f"cannot bind {spec}: {exc.strerror}") from None
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenerError(f"cannot bind {spec}: {reason}") from None
    sock.setblocking(False)
    return sock


def reuseport_twin(sock: socket.socket, backlog: int) -> socket.socket:
    """A second listening socket on the address of ``sock`` (opened with ``reuseport``)."""
    twin = socket.socket(sock.family, sock.type, sock.proto)
    try:
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        twin.bind(sock.getsockname())
        twin.listen(backlog)
    except OSError as exc:
        twin.close()
        raise ListenerError(f"cannot bind a second socket to {describe(sock)} "
                            f"(--frontends): {exc.strerror}") from None
    twin.setblocking(False)
    return twin


def from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"--fd {fd}: not a usable socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM:
        raise ListenerError(f"--fd {fd}: not a stream socket")
    sock.setblocking(False)
    return sock


def from_systemd(environ=os.environ) -> list[socket.socket]:
    """The listening sockets of socket activation (sidecar.socket), any number, Unix or TCP.

    Each must be a listening stream socket (``ListenStream=``; ``Accept=no``, the default).
    """
    from sidecar.systemd import ActivationError, listen_fds

    try:
        fds = listen_fds(environ)
    except ActivationError as exc:
        raise ListenerError(f"socket activation: {exc}") from None
    out = []
    for fd, name in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ListenerError(f"socket activation: descriptor {fd} ({name}) is not a socket "
                                f"({exc.strerror})") from None
        if sock.type != socket.SOCK_STREAM or \
                not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ListenerError(f"socket activation: descriptor {fd} ({name}) is not a "
                                "listening stream socket (ListenStream= with Accept=no)")
        sock.setblocking(False)
        out.append(sock)
    return out


def describe(sock: socket.socket, tls: bool = False) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    scheme = "https" if tls else "http"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{name[0]}]:{name[1]}"
    return f"{scheme}://{name[0]}:{name[1]}"
