"""wsgi.input (sidecar/worker/wsgi.py ``_Input``): PEP 3333's read, readline, readlines and
iteration over a body that arrives in pieces, as the stream's receive() hands them over."""
from __future__ import annotations

import pytest

from sidecar.worker.http_stream import ClientDisconnected
from sidecar.worker.wsgi import _Input


class FakeRequest:
    """receive() yields the given pieces (the last with more_body False), then disconnect."""

    def __init__(self, pieces, disconnect_at=None):
        self.msgs = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
                     for i, p in enumerate(pieces)]
        if disconnect_at is not None:
            self.msgs[disconnect_at:] = [{"type": "http.disconnect"}]
        self.calls = 0

    def receive(self):
        return None

    def call(self, _):
        self.calls += 1
        return self.msgs.pop(0)


def make(first: bytes, pieces, **kw) -> tuple[_Input, FakeRequest]:
    req = FakeRequest(pieces, **kw)
    return _Input(req, first, bool(pieces)), req


def test_read_all_and_sized_reads_across_pieces():
    body, req = make(b"ab", [b"cde", b"", b"fgh"])
    assert body.read(4) == b"abcd"
    assert body.read(0) == b""
    assert body.read() == b"efgh"
    assert body.read() == b"" and body.read(10) == b""
    assert req.calls == 3


def test_reads_take_only_what_they_need():
    body, req = make(b"", [b"x" * 10, b"y" * 10])
    assert body.read(5) == b"xxxxx" and req.calls == 1   # no read ahead of the app


def test_readline_readlines_and_iteration():
    body, _ = make(b"one\ntw", [b"o\nthr", b"ee\nno newline"])
    assert body.readline() == b"one\n"
    assert body.readline(2) == b"tw"
    assert body.readline() == b"o\n"
    assert list(body) == [b"three\n", b"no newline"]
    body, _ = make(b"a\nb\nc\n", [])
    assert body.readlines() == [b"a\n", b"b\n", b"c\n"]
    body, _ = make(b"a\nb\nc\n", [])
    assert body.readlines(3) == [b"a\n", b"b\n"]   # as io.BytesIO.readlines


def test_a_client_that_leaves_raises_in_the_app():
    body, _ = make(b"ab", [b"cd", b"ef"], disconnect_at=1)
    assert body.read(4) == b"abcd"
    with pytest.raises(ClientDisconnected):
        body.read()
