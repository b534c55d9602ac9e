"""Raw records out of a ring, for the tests of the ring itself: ``Consumer`` reads events only
(``read_events``), these read whatever bytes a record holds, straight through the C API."""
from __future__ import annotations

from sidecar.ring import EVENT, Consumer, RingCorrupt, ffi, lib


def read_flat(cons: Consumer, max: int = 256) -> list[tuple[int, int, int]]:
    """``ring_read_flat``: the (type, length, offset) of up to ``max`` records, padding
    skipped, not yet released.  RingCorrupt as ``read_events``."""
    flat = ffi.new("uint32_t[]", 3 * max)
    n = lib.ring_read_flat(cons.handle, flat, max)
    if n < 0:
        raise RingCorrupt(n, "read")
    values = ffi.unpack(flat, 3 * n)
    return list(zip(values[0::3], values[1::3], values[2::3]))


def read(cons: Consumer, max: int = 256) -> list[bytes]:
    """The payloads of up to ``max`` records (EVENT records; other types are skipped), copied
    out and released."""
    return _read(cons, max)[1]


def drain(cons: Consumer) -> list[bytes]:
    """Every EVENT payload in the ring, in order, released."""
    out = []
    while True:
        n, payloads = _read(cons, 256)
        if not n:
            return out
        out += payloads


def _read(cons: Consumer, max: int) -> tuple[int, list[bytes]]:
    records = read_flat(cons, max)
    data = ffi.buffer(lib.ring_data(cons.handle), cons.capacity)
    payloads = [data[offset:offset + size] for type, size, offset in records if type == EVENT]
    cons.release()
    return len(records), payloads
