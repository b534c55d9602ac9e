"""sidecar._hpackapi (native/hpack_api.c) against its twin, h2_fast.Decoder._decode_py (hpack's
decoder, field by field): the same blocks, in the same order on one connection's table, must
give the same lists, the same errors, and leave the table the same -- entries, size, limit --
after every block, for encoded blocks and for each one cut short or with a byte changed."""
from __future__ import annotations

import random

import pytest
from hpack import Encoder
from hpack.exceptions import HPACKError

from sidecar.http import h2_fast


def _blocks(seed: int) -> list[bytes]:
    """What clients send: h2load's and browsers' heads, an API's changing paths, gRPC calls,
    never-indexed cookies, Huffman on and off, table size updates, eviction under a small
    table, and a header list over the limit."""
    rng = random.Random(seed)
    enc = Encoder()
    out = []
    for i in range(300):
        fields = [(b":method", rng.choice([b"GET", b"POST", b"HEAD"])), (b":scheme", b"http"),
                  (b":authority", b"127.0.0.1:%d" % rng.choice([8000, 443])),
                  (b":path", b"/users/%d?page=%d" % (rng.randrange(10**rng.randrange(1, 9)), i % 7)),
                  (b"user-agent", rng.choice([b"h2load nghttp2/1.52.0", b"grpc-python/1.6"]))]
        if rng.random() < 0.3:
            fields.append((b"cookie", b"session=%x" % rng.getrandbits(64), True))   # never indexed
        if rng.random() < 0.2:
            fields.append((b"x-long", bytes(rng.randrange(32, 127) for _ in range(rng.randrange(200, 3000)))))
        if rng.random() < 0.1:
            fields.append((b"x-\xff", b"\x00\x80\xfe"))   # bytes hpack passes through
        if rng.random() < 0.05:
            enc.header_table_size = rng.choice([0, 256, 4096])   # a size update first
        out.append(enc.encode(fields, huffman=rng.random() < 0.7))
    return out


def _decoder(limit: int = 1 << 16) -> h2_fast.Decoder:
    d = h2_fast.Decoder(max_header_list_size=limit)
    return d


def _state(d) -> tuple:
    t = d.header_table
    return list(t.dynamic_entries), t._current_size, t._maxsize, t.resized


def _run(d, block: bytes, c: bool):
    try:
        headers = h2_fast._c_decode(d, block) if c else d._decode_py(block)
    except HPACKError as exc:
        return type(exc), _state(d)
    return [(type(h), tuple(h)) for h in headers], _state(d)


@pytest.fixture(autouse=True)
def built():
    if h2_fast._c_decode is None:
        pytest.fail("sidecar._hpackapi is not built (pip install -e .)")


@pytest.mark.parametrize("limit", [1 << 16, 600, 100])   # 100: oversized lists, and bombs
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_connections_blocks_decode_alike(seed, limit):
    c, py = _decoder(limit), _decoder(limit)
    results = []
    for block in _blocks(seed):
        got = _run(c, block, True)
        assert got == _run(py, block, False), block
        results.append(got[0])
    if limit > 100:
        assert any(type(r) is list and len(r) > 1 for r in results)
    else:
        assert any(r == [(type(h2_fast.OVERSIZED), tuple(h2_fast.OVERSIZED))] for r in results)


@pytest.mark.parametrize("seed", [4])
def test_corrupt_blocks_fail_alike_and_leave_the_table_alike(seed):
    """Each block cut at every offset, and with one byte changed at every offset, on copies of
    the connection's decoder as it was: the same list or the same error, the same table."""
    import copy
    rng = random.Random(seed)
    c, py = _decoder(), _decoder()
    errors = 0
    for block in _blocks(seed)[:60]:
        if len(block) > 300:   # (the long ones' corruptions are the same kinds, slower)
            assert _run(c, block, True) == _run(py, block, False)
            continue
        variants = [block[:cut] for cut in range(len(block))]
        variants += [block[:i] + bytes([rng.randrange(256)]) + block[i + 1:]
                     for i in range(len(block))]
        variants += [b"\x3f\xe1\x1f" + block, block + b"\x20", b"\xff" * 7, b"\x80",
                     b"\x40\x81\xff\x00", b"\x00\x03abc\x83\xff\xff\xff"]
        for variant in variants:
            cc, pp = copy.deepcopy(c), copy.deepcopy(py)
            got = _run(cc, variant, True)
            assert got == _run(pp, variant, False), variant
            errors += type(got[0]) is type
        assert _run(c, block, True) == _run(py, block, False)
    assert errors > 100   # the corruptions reach the error paths


def test_decode_uses_the_c_twin_and_h2_gets_its_lists():
    d = _decoder()
    block = Encoder().encode([(b":method", b"GET"), (b":path", b"/"), (b"cookie", b"a", True)])
    headers = d.decode(block, raw=True)
    assert headers == [(b":method", b"GET"), (b":path", b"/"), (b"cookie", b"a")]
    assert type(headers[2]).__name__ == "NeverIndexedHeaderTuple"
