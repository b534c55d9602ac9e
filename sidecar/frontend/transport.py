"""The asyncio side of one client socket, for every connection protocol.

A connection protocol (sidecar.http.h1_connection, ...) does no I/O; it is handed this
object as its ``io``.  Here, and only here for an HTTP connection, bytes meet the socket:

- ``write``: bytes are gathered for the loop iteration and sent with one ``send()`` at its
  end (by the Batcher, before the ring links' records: records first raised the client's
  wake-ups), however many responses or records produced them.  Never earlier, not even for a connection's only response: a batch of responses read from
  a worker's ring goes out in one burst after the batch, so the client (wrk, nginx) wakes
  once for the burst, not once per response (writing each at once cost ~10% req/s at one
  worker: the client's wake-ups per request went from 0.19 to 0.30);
- ``close`` once what was written is sent; ``linger``: half-close (FIN) once it is sent and
  go on reading (the protocol drops what comes) -- nginx's lingering close; ``abort`` at once;
- ``pause_reading``/``resume_reading``; ``can_linger``; ``now`` (the loop's clock, the only
  time a protocol sees) and ``peer`` (the client, for log lines);
- for a file body (frontend/file_send.py): ``sendfile_fd``, the socket sendfile(2) may write
  to, and ``drained``, whether nothing is left unsent ahead of it.
"""
from __future__ import annotations

import asyncio


class Transport:
    __slots__ = ("transport", "batcher", "now", "peer", "out")

    def __init__(self, transport: asyncio.Transport, batcher, loop, peer):
        self.transport = transport
        self.batcher = batcher
        self.now = loop.time      # the loop's clock, the only time a protocol sees
        self.peer = peer          # the client as log lines name it
        self.out: list[bytes] = []   # bytes of this loop iteration (the Batcher sends them)

    def write(self, data: bytes) -> None:
        out = self.out
        if not out:
            # Batcher.add_socket(self), written out (change both together): once a response
            batcher = self.batcher
            batcher.sockets.append(self)
            if not batcher.scheduled:
                batcher.scheduled = True
                batcher.loop.call_soon(batcher.run)
        out.append(data)

    def flush(self) -> None:
        """Write this iteration's bytes with one send now (the Batcher's own copy of this
        sends them at the iteration's end)."""
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        """Close once what was written is sent (asyncio flushes its buffer first)."""
        self.flush()
        self.transport.close()

    def can_linger(self) -> bool:
        return self.transport.can_write_eof()

    def linger(self) -> None:
        """Send FIN after what is written and keep reading: the client reads our answer
        before it sees the close, instead of a reset for its unread bytes."""
        self.flush()
        transport = self.transport
        transport.write_eof()
        transport.resume_reading()

    def abort(self) -> None:
        self.out.clear()
        self.transport.abort()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    # --- a file body: sendfile(2) to the socket itself (frontend/file_send.py) ---------------

    def sendfile_fd(self) -> int:
        """The socket's descriptor when file bytes may go to it with sendfile(2): a plain
        TCP or Unix socket.  -1 under TLS (the bytes must go through the TLS layer)."""
        transport = self.transport
        if (transport is None or transport.is_closing()
                or transport.get_extra_info("sslcontext") is not None):
            return -1
        sock = transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else -1

    def drained(self) -> bool:
        """Write this iteration's bytes now; whether the transport has nothing unsent, so
        that bytes written to the socket itself come after everything written before."""
        self.flush()
        transport = self.transport
        return not transport.is_closing() and transport.get_write_buffer_size() == 0
