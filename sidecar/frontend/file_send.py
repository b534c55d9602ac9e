"""A response body that is a file (ASGI ``http.response.pathsend``): the front-end sends it.

    worker: RESPONSE_PATHSEND [42, sid, path, length] -> Stream._on_pathsend -> FileSender

The worker only names the file: its bytes never cross the ring, and the app is done at once.
The front-end opens the file (``start``) and sends ``length`` bytes of it -- the
Content-Length the app sent, or the whole file as it is at the open -- in one of two ways,
chosen again at every step:

- **sendfile(2)**, kernel to kernel, when the stream is an HTTP/1.1 exchange at the head of
  its connection's pipeline, its body is not chunked, the socket is plain TCP or Unix, and
  the transport has nothing unsent (``Transport.drained``).  uvloop's transport owns the
  socket and refuses ``add_writer`` on it (and ``loop.sendfile`` is not implemented there), so
  the sender writes around it only while the transport's buffer is empty -- nothing of the
  transport's can then be overtaken -- and waits for room on a ``dup`` of the socket, which
  epoll watches apart from the transport's own registration.  While it waits the connection
  counts as write-blocked (``pause_writing``): --timeout-send runs as for any body.
- **reads**, otherwise (TLS, HTTP/2, a chunked body, a response still behind a pipelined
  one): chunks of the file go through the protocol's ``send_data`` like any body, only
  while the protocol says the stream is ``writable`` (else the stream's ``flush_owed`` resumes
  the sender), so a slow client holds what a body's window holds, never the file.

Each step sends at most SENDFILE_STEP (or READ_STEP) bytes, then yields to the loop: one
large file does not starve the other connections.  Opening, ``fstat`` and ``sendfile`` are
blocking calls: cheap from the page cache; a file on a slow disk stalls the loop while it is
read (as nginx without aio threads).

Failures: a file that cannot be opened (gone, not a regular file, not readable), or that
ends before ``length`` bytes (it shrank under us): a log line, and the response is aborted
(the head is already out: HTTP/1.1 closes the connection, HTTP/2 resets the stream).  The
client that goes away: the stream's ``client_gone`` closes the sender.  Every exit closes
the file and the socket's dup.
"""
from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger("sidecar.frontend")

__all__ = ["FileSender", "start", "SENDFILE_STEP", "READ_STEP", "READ_CHUNK"]

# nginx sendfile_max_chunk: 2 MiB since 1.21.4; one step's sendfile calls stop there
SENDFILE_STEP = 2 * 1024 * 1024
READ_CHUNK = 64 * 1024          # one read, one send_data (as the body records of a worker)
READ_STEP = 4 * READ_CHUNK      # one window (events.DEFAULT_WINDOW) a step at most

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def start(stream, path: str, length: int | None):
    """Open ``path`` and begin sending it as the started response of ``stream``; return the
    sender, or None when there is nothing left to send (HEAD, an empty body, a failure)."""
    proto, ex = stream.proto, stream.ex
    if ex.head_only:   # HEAD: the head said it all
        proto.send_data(ex, b"", True)
        return None
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        _failed(stream, f"cannot open {path!r}: {exc.strerror}")
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
    except OSError as exc:
        os.close(fd)
        _failed(stream, f"cannot send {path!r}: {exc.strerror}")
        return None
    left = st.st_size if length is None else length
    if not left:
        os.close(fd)
        proto.send_data(ex, b"", True)
        return None
    sender = FileSender(stream, fd, left, path)
    sender.step()
    return None if sender.closed else sender


def _failed(stream, why: str) -> None:
    req = stream.req
    log.error("pathsend for %s %s: %s", req.method.decode(), req.target.decode("latin-1"), why)
    stream.proto.abort_response(stream.ex, "the response's file cannot be sent")


class FileSender:
    """Sends ``left`` bytes of the open file ``fd`` as the body of ``stream``'s response."""

    __slots__ = ("stream", "proto", "ex", "conn", "io", "loop", "fd", "path", "offset",
                 "left", "sock_fd", "wfd", "waiting", "paused", "scheduled", "closed")

    def __init__(self, stream, fd: int, left: int, path: str):
        self.stream = stream
        self.proto = stream.proto
        self.ex = stream.ex
        self.conn = conn = stream.conn
        self.io = conn.io
        self.loop = conn.server.loop
        self.fd = fd
        self.path = path
        self.offset = 0
        self.left = left
        # sendfile(2) only for an HTTP/1.1 exchange (HTTP/2 frames its DATA) on a plain socket
        self.sock_fd = (self.io.sendfile_fd() if self.proto is getattr(conn, "h1", None)
                        else -1)
        self.wfd = -1           # a dup of the socket, watched for room
        self.waiting = False    # a writer is registered on wfd
        self.paused = False     # we told the connection it is write-blocked
        self.scheduled = False
        self.closed = False

    # --- driving -------------------------------------------------------------------------

    def schedule(self) -> None:
        """Take the next step in a later loop iteration (the stream became writable, or a
        step used its share)."""
        if not self.scheduled and not self.closed and not self.waiting:
            self.scheduled = True
            self.loop.call_soon(self.step)

    def step(self) -> None:
        self.scheduled = False
        if self.closed:
            return
        proto, ex = self.proto, self.ex
        if proto.closed or ex.complete:
            self.close()
            return
        if self.sock_fd >= 0 and ex.buffer is None and not ex.chunked:
            if self.io.drained():
                self._sendfile()
            elif not proto.closed:
                self._wait_writable(False)   # the transport's bytes go first
        elif proto.writable(ex):
            self._read()
        # else: not writable now; the stream's flush_owed schedules the next step

    def _sendfile(self) -> None:
        sock, fd, ex = self.sock_fd, self.fd, self.ex
        budget = SENDFILE_STEP
        while budget > 0:
            try:
                n = os.sendfile(sock, fd, self.offset, min(self.left, budget))
            except BlockingIOError:
                self._wait_writable(True)
                return
            except InterruptedError:
                continue
            except OSError as exc:   # EPIPE, ECONNRESET: the client went away
                log.info("client %s gone while sending %s: %s", self.io.peer, self.path,
                         exc.strerror)
                self.close()
                self.io.abort()
                return
            if n == 0:
                self._short()
                return
            self.offset += n
            self.left -= n
            ex.sent_bytes += n
            budget -= n
            if not self.left:
                self._done()
                return
        self.schedule()

    def _read(self) -> None:
        proto, ex = self.proto, self.ex
        budget = READ_STEP
        while budget > 0:
            try:
                data = os.pread(self.fd, min(READ_CHUNK, self.left), self.offset)
            except OSError as exc:
                self._short(exc.strerror)
                return
            if not data:
                self._short()
                return
            n = len(data)
            self.offset += n
            self.left -= n
            budget -= n
            if not self.left:
                self.close()
                proto.send_data(ex, data, True)
                return
            proto.send_data(ex, data)
            if self.closed or proto.closed or not proto.writable(ex):
                return   # flush_owed (or client_gone) takes it from here
        self.schedule()

    def _done(self) -> None:
        self.close()
        self.proto.send_data(self.ex, b"", True)   # (a close-delimited body: the close)

    def _short(self, why: str = "") -> None:
        """The file ended (or failed) before the bytes the response promised."""
        req = self.stream.req
        log.error("pathsend for %s %s: %s ended %d bytes short of the response%s",
                  req.method.decode(), req.target.decode("latin-1"), self.path, self.left,
                  f" ({why})" if why else " (it shrank while being sent)")
        self.close()
        self.proto.abort_response(self.ex, "the response's file ended early")

    # --- waiting for room in the socket --------------------------------------------------

    def _wait_writable(self, full: bool) -> None:
        """Wait for room in the socket (``full``: sendfile found none, so the connection is
        write-blocked: --timeout-send runs) or for the transport to send what it holds."""
        if self.wfd < 0:
            self.wfd = os.dup(self.sock_fd)
        if full and not self.paused:
            self.paused = True
            self.conn.pause_writing()
        self.waiting = True
        self.loop.add_writer(self.wfd, self._on_writable)

    def _on_writable(self) -> None:
        self.waiting = False
        self.loop.remove_writer(self.wfd)
        if self.paused:
            self.paused = False
            self.conn.resume_writing()   # (its flush_owed may schedule the step)
        if not self.scheduled:
            self.step()

    # --- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file and the socket's dup (idempotent); the stream forgets us."""
        if self.closed:
            return
        self.closed = True
        if self.wfd >= 0:
            if self.waiting:
                self.waiting = False
                self.loop.remove_writer(self.wfd)
            os.close(self.wfd)
            self.wfd = -1
        os.close(self.fd)
        if self.stream.sender is self:
            self.stream.sender = None
