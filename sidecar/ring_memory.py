"""Where a ring lives: its shared-memory segment, its two doorbells, the descriptors a peer
needs to attach (``RingSpec``), and the ring's errors.  ``sidecar.ring`` reads and writes the
ring in that memory (Producer, Consumer) and re-exports every name here; import them from there.

A *segment* is a POSIX shared-memory object holding one ring (native/ring.c).  Its name is
unlinked the moment it is mapped, so nothing is ever left in /dev/shm, not even after kill -9:
the memory lives exactly as long as some process holds its file descriptor or mapping.  Peers
get the descriptor (inherited by a worker through ``pass_fds``, or sent with SCM_RIGHTS).

A *doorbell* is an eventfd.  Each ring has two: ``data`` (producer rings it when the consumer
sleeps) and ``space`` (consumer rings it when the producer waits for room).

C status codes become exceptions here (``_raise``) and only here.
"""
from __future__ import annotations

import itertools
import mmap
import os
from dataclasses import dataclass

import posix_ipc

from sidecar._ring import ffi, lib

DEFAULT_CAPACITY = 1 << 22  # 4 MiB per direction per worker: 512 KiB records, ~1 ms of 4 GB/s


class RingError(Exception):
    """A ring call failed; ``code`` is the RING_* status from ring.h."""

    def __init__(self, code: int, what: str = ""):
        self.code = code
        text = ffi.string(lib.ring_strerror(code)).decode()
        super().__init__(f"{what}: {text}" if what else text)


class RingCorrupt(RingError):
    """The peer left impossible positions or record headers: the ring cannot be trusted."""


class RingMismatch(RingError):
    """Magic, version, capacity or generation differ from what was expected."""


class RecordTooBig(RingError, ValueError):
    """A payload larger than the ring's max_record (split it into more_body chunks)."""


_ERRORS = {
    lib.RING_ECORRUPT: RingCorrupt,
    lib.RING_ETOOBIG: RecordTooBig,
    lib.RING_EMAGIC: RingMismatch,
    lib.RING_EVERSION: RingMismatch,
    lib.RING_EGENERATION: RingMismatch,
    lib.RING_ECAPACITY: RingMismatch,
}


def _raise(code: int, what: str = "") -> None:
    raise _ERRORS.get(code, RingError)(code, what)


def max_record_for(capacity: int) -> int:
    return lib.ring_max_record_for(capacity)


_generations = itertools.count(int.from_bytes(os.urandom(4), "little") << 16)


def new_generation() -> int:
    """A generation never 0 and unlikely to repeat across restarts of the supervisor."""
    return next(_generations) or next(_generations)


class Segment:
    """One shared-memory region holding one ring, mapped in this process."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.ptr = ffi.from_buffer(self.map)

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY) -> "Segment":
        size = lib.ring_region_size(capacity)
        shm = posix_ipc.SharedMemory(None, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            seg = cls(shm.fd, size)
        finally:
            shm.unlink()  # nameless from now on: nothing can leak in /dev/shm
        os.set_inheritable(seg.fd, False)
        return seg

    @classmethod
    def from_fd(cls, fd: int) -> "Segment":
        return cls(fd, os.fstat(fd).st_size)

    def close(self) -> None:
        if self.fd < 0:
            return
        self.ptr = None
        try:
            self.map.close()
        except BufferError:
            pass  # a memoryview still points in; the mapping goes with the last reference
        os.close(self.fd)
        self.fd = -1


class Doorbell:
    """An eventfd: ``ring()`` from one side, ``drain()`` + ``add_reader`` on the other."""

    def __init__(self, fd: int | None = None):
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if fd is None else fd

    def ring(self) -> None:
        os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class RingSpec:
    """What a peer needs to attach to one ring: descriptors and the expected generation."""

    segment_fd: int
    data_fd: int
    space_fd: int
    generation: int

    def fds(self) -> list[int]:
        return [self.segment_fd, self.data_fd, self.space_fd]

    def dup(self) -> "RingSpec":
        """The same ring with duplicated descriptors, for attaching a second end in this
        process: each end closes its own descriptors, so two ends must not share them."""
        return RingSpec(os.dup(self.segment_fd), os.dup(self.data_fd), os.dup(self.space_fd),
                        self.generation)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (killed but not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")
