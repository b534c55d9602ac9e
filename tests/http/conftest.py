"""Every test in tests/http runs twice: with the C speedup of the request-head parser
(native/h1.c, tried first on whole heads) and with the pure-Python path alone, as uvloop's
suites run against both loops. The tables must hold for both."""
import pytest

from sidecar.http import h1


@pytest.fixture(autouse=True, params=["c", "python"])
def speedups(request, monkeypatch):
    """Which head parser the test runs against: "c" (fast path first) or "python"."""
    if request.param == "c" and not h1.HAVE_SPEEDUPS:
        pytest.fail("sidecar._h1 is not built (pip install -e . or python build_ffi.py)")
    monkeypatch.setattr(h1, "speedups", request.param == "c")
    return request.param
