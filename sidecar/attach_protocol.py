"""Control messages for attaching hosts to the worker pool (docs/protocol.md, "Attaching").

Two channels carry them, both AF_UNIX SOCK_SEQPACKET (one message per datagram, so the file
descriptors passed with SCM_RIGHTS arrive with the message they belong to):

- supervisor <-> worker: a socketpair made at spawn; the worker's end is ``control_fd`` in
  its SIDECAR_WORKER config.
- front-end <-> attached host: a connection accepted on the attach socket.

Every message is one msgpack array ``[kind, ...]``.  This module imports nothing heavy: the
worker and the front-end both use it.
"""
from __future__ import annotations

import os
import socket

import msgpack

__all__ = [
    "ATTACH_VERSION", "HOST_FRONTEND", "W_ATTACH", "W_DETACH", "W_BROKEN", "H_WELCOME", "H_WORKER",
    "H_WORKER_GONE", "H_BYE", "H_WORKER_DRAINING", "MAX_MESSAGE", "RING_FDS", "send", "recv", "ChannelError",
]

ATTACH_VERSION = 1

# supervisor -> worker
W_ATTACH = 1       # [1, host, to_worker_generation, to_host_generation(, flags)] + 6 fds
#: W_ATTACH flags: the host is one of sidecar's own front-ends (--frontends), which sends
#: files itself (http.response.pathsend) as front-end 0 does
HOST_FRONTEND = 1
W_DETACH = 2       # [2, host]: the host is gone; cancel its streams, unmap its rings
# worker -> supervisor
W_BROKEN = 3       # [3, host, reason]: the host broke the ring/event protocol

# front-end -> host
H_WELCOME = 16     # [16, version, host_id, window]
H_WORKER = 17      # [17, worker_id, index, to_worker_generation, to_host_generation] + 6 fds
H_WORKER_GONE = 18  # [18, worker_id]: the worker exited; its streams are lost
H_BYE = 19         # [19, reason]: the front-end cuts this host off (or shuts down)
H_WORKER_DRAINING = 20  # [20, worker_id]: no new streams to it; those in flight finish

#: The six descriptors of a ring pair, in this order, with W_ATTACH and H_WORKER.
RING_FDS = ("to_worker.segment", "to_worker.data", "to_worker.space",
            "to_host.segment", "to_host.data", "to_host.space")
#: Control messages are tiny; a larger datagram is a broken peer.
MAX_MESSAGE = 4096


class ChannelError(Exception):
    """A control message that is not one of the above (the peer is broken)."""


def send(sock: socket.socket, msg: list, fds: list[int] = ()) -> None:
    """Send one message (non-blocking sockets raise BlockingIOError when the peer is not
    reading: control traffic is tiny, so that means the peer is stuck)."""
    data = msgpack.packb(msg, use_bin_type=True)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket, maxfds: int = len(RING_FDS)) -> tuple[list, list[int]] | None:
    """One message and the descriptors that came with it; None at end of stream.
    Raises BlockingIOError when nothing is there, ChannelError when it is not a message."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, maxfds, socket.MSG_CMSG_CLOEXEC)
    if not data and not fds:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close(fds)
        raise ChannelError("control message or its descriptors truncated")
    try:
        msg = msgpack.unpackb(data, raw=False, max_array_len=16, max_str_len=1024,
                              max_bin_len=0, max_map_len=0)
    except Exception as exc:
        _close(fds)
        raise ChannelError(f"control message is not msgpack: {exc}") from None
    if not isinstance(msg, list) or not msg or type(msg[0]) is not int:
        _close(fds)
        raise ChannelError("control message is not an array [kind, ...]")
    return msg, fds


def _close(fds) -> None:
    for fd in fds:
        os.close(fd)
