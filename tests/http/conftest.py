"""Every test in tests/http runs twice: with the C speedup of the request-head parser
(native/h1.c, tried first on whole heads) and the WebSocket frame fast path
(sidecar/http/ws_frames.py) and the HTTP/2 response frames and HPACK caches
(sidecar/http/h2_fast.py), and with the reference paths alone (the pure-Python parser,
every frame through websockets), as uvloop's suites run against both loops. The tables must
hold for both."""
import pytest

from sidecar.http import h1, h2_fast, ws_frames


@pytest.fixture(autouse=True, params=["c", "python"])
def speedups(request, monkeypatch):
    """Which paths the test runs against: "c" (the C head parser and the WebSocket frame
    fast path first) or "python" (the references alone)."""
    if request.param == "c" and not h1.HAVE_SPEEDUPS:
        pytest.fail("sidecar._h1 is not built (pip install -e . or python build_ffi.py)")
    monkeypatch.setattr(h1, "speedups", request.param == "c")
    monkeypatch.setattr(ws_frames, "speedups", request.param == "c")
    monkeypatch.setattr(h2_fast, "speedups", request.param == "c")
    return request.param
