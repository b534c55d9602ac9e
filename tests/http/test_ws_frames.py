"""The WebSocket frame fast path (sidecar/http/ws_frames.py) against its reference, websockets'
own parser and serializer: the same client bytes, cut at every kind of boundary, must give
the stream the same messages, the client the same bytes and the connection the same fate
with the fast path on as with every frame going through websockets."""
from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from sidecar.http import ws_frames
from tests.http.test_ws_connection import frames_from, masked, opened

TEXT, BINARY, CONT, PING, PONG, CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING,
                                         Opcode.PONG, Opcode.CLOSE)


def raw(b0: int, payload: bytes, mask: bool = True) -> bytes:
    """A frame written by hand (flags websockets would not let a client send)."""
    n = len(payload)
    b1 = (0x80 if mask else 0) | n
    assert n < 126
    if not mask:
        return bytes((b0, b1)) + payload
    key = b"\x01\x02\x03\x04"
    return bytes((b0, b1)) + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


CASES = {
    "plain messages": [masked(TEXT, b"hello"), masked(BINARY, b"\x00\xff" * 3),
                       masked(TEXT, b""), masked(BINARY, b"")],
    "lengths at the header's edges": [masked(BINARY, b"x" * n)
                                      for n in (125, 126, 127, 65535, 65536, 70000)],
    "non-ASCII text": [masked(TEXT, "été ☃ 🎉".encode())],
    "control frames between messages": [masked(TEXT, b"a"), masked(PING, b"p"),
                                        masked(BINARY, b"b"), masked(PONG, b""),
                                        masked(TEXT, b"c")],
    "a fragmented message, a ping inside": [
        masked(TEXT, b"a"), masked(TEXT, "é".encode()[:1], fin=False), masked(PING, b""),
        masked(CONT, "é".encode()[1:], fin=False), masked(CONT, b"z"), masked(TEXT, b"b")],
    "a close, then more": [masked(TEXT, b"a"), masked(CLOSE, b"\x03\xe8bye"),
                           masked(TEXT, b"after")],
    "invalid UTF-8": [masked(TEXT, b"ok"), masked(BINARY, b"\xff"),
                      raw(0x81, b"\xc3\x28"), masked(TEXT, b"never")],
    "too big": [masked(TEXT, b"ok"), masked(BINARY, b"y" * 3000), masked(TEXT, b"never")],
    "unmasked": [masked(TEXT, b"ok"), raw(0x81, b"bare", mask=False), masked(TEXT, b"x")],
    "an RSV bit": [masked(TEXT, b"ok"), raw(0xC1, b"rsv"), masked(TEXT, b"x")],
    "a new message inside a fragmented one": [masked(TEXT, b"a", fin=False),
                                              masked(TEXT, b"b"), masked(TEXT, b"c")],
    "an unknown opcode": [masked(TEXT, b"ok"), raw(0x83, b"?"), masked(TEXT, b"x")],
}
CUTS = {"whole": None, "byte by byte": 1, "3 bytes": 3, "frame by frame": "frames"}


@pytest.fixture(params=["c", "python"])
def twin(request, monkeypatch):
    """The fast path's per-message calls: the C twins (native/ws_api.c) or the Python ones."""
    if request.param == "c":
        if not ws_frames.HAVE_C:
            pytest.fail("sidecar._wsapi is not built (pip install -e .)")
        monkeypatch.setattr(ws_frames, "plain_frames", ws_frames._wsapi.plain_frames)
        monkeypatch.setattr(ws_frames, "server_frame", ws_frames._wsapi.server_frame)
    else:
        monkeypatch.setattr(ws_frames, "plain_frames", ws_frames.plain_frames_py)
        monkeypatch.setattr(ws_frames, "server_frame", ws_frames.server_frame_py)
    return request.param


def run(fast: bool, frames: list[bytes], cut, eof: bool = False, max_size: int = 1 << 20):
    ws_frames.speedups = fast
    ws, io, stream = opened(max_size=max_size)
    data = b"".join(frames)
    if cut is None:
        pieces = [data]
    elif cut == "frames":
        pieces = frames
    else:
        pieces = [data[i:i + cut] for i in range(0, len(data), cut)]
    for piece in pieces:
        ws.receive_data(piece)
    if eof:
        ws.receive_eof()
    messages = [(m if type(m) is str else bytes(m), more) for m, more in stream.messages]
    return messages, stream.gone, io.take(), io.calls, ws.proto.state


@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_fast_path_does_what_websockets_does(case, cut, twin):
    try:
        reference = run(False, case, cut, max_size=2048 if case is CASES["too big"] else 1 << 20)
        fast = run(True, case, cut, max_size=2048 if case is CASES["too big"] else 1 << 20)
    finally:
        ws_frames.speedups = True
    assert fast == reference
    assert reference[0] or reference[1]   # the case did something


@pytest.mark.parametrize("cut", [1, 3, 9])
def test_a_frame_cut_by_eof_ends_as_websockets_ends_it(cut, twin):
    frames = [masked(TEXT, b"whole"), masked(TEXT, b"cut short")[:-cut]]
    try:
        reference = run(False, frames, None, eof=True)
        fast = run(True, frames, None, eof=True)
    finally:
        ws_frames.speedups = True
    assert fast == reference
    assert reference[0] == [("whole", False)] and reference[3] == ["linger"]


@pytest.mark.parametrize("data", ["text", "é" * 70, b"", b"\x00" * 126, b"b" * 70000])
def test_server_frames_are_websockets_frames(data, twin):
    payload = data.encode() if type(data) is str else data
    frame = ws_frames.server_frame(payload, type(data) is str)
    assert frame == Frame(TEXT if type(data) is str else BINARY, payload).serialize(mask=False)
    assert [f.data for f in frames_from(frame)] == [payload]


def _corpus():
    """Client bytes for the twins: every case whole, and cut short at every offset (a frame
    not all there yet), a few bytes in (pos), as bytes and as the bytearray of rx_buf."""
    big = [masked(BINARY, b"x" * n) for n in (125, 126, 65535, 65536)]
    for frames in [*CASES.values(), big, [masked(TEXT, "é".encode() * 40)] * 3,
                   [raw(0x81, "☃".encode()[:2]), masked(TEXT, b"z")]]:
        data = b"".join(frames)
        cuts = range(len(data) + 1) if len(data) < 400 else (0, 1, 7, len(data) - 1, len(data))
        for cut in cuts:
            for pos in (0, 1, 6):
                yield data[:cut], pos


@pytest.mark.parametrize("max_frame", [0, 2, 125, 2048, 1 << 62])
def test_plain_frames_c_twin_takes_what_the_python_one_takes(max_frame):
    if not ws_frames.HAVE_C:
        pytest.fail("sidecar._wsapi is not built (pip install -e .)")
    c = ws_frames._wsapi.plain_frames
    checked = taken = 0
    for data, pos in _corpus():
        for buf in (data, bytearray(data)):
            expect = ws_frames.plain_frames_py(buf, pos, max_frame)
            assert c(buf, pos, max_frame) == expect, (data, pos, max_frame)
            checked += 1
            taken += len(expect[0])
    assert checked > 1000 and (taken > 0 or max_frame == 0)


def test_plain_frames_stops_before_text_that_is_not_utf8():
    """The frame is left for the caller (websockets fails it 1007), the ones before taken."""
    data = masked(TEXT, b"ok") + raw(0x81, b"\xc3\x28") + masked(TEXT, b"never")
    for plain_frames in (ws_frames.plain_frames_py, ws_frames._wsapi.plain_frames):
        assert plain_frames(data, 0, 1 << 20) == (["ok"], len(masked(TEXT, b"ok")))


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_server_frame_c_twin_writes_the_python_ones_bytes(n):
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    for text in (True, False):
        assert ws_frames._wsapi.server_frame(payload, text) == \
            ws_frames.server_frame_py(payload, text)
