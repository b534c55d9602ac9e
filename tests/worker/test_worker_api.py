"""The worker's C-API calls (native/worker_api.c, ``sidecar._workerapi``) against their
Python twins, on a corpus: what the C accepts it must give exactly as Python does (the same
dict, keys in the same order, the same header tuples), and whatever Python refuses the C must
decline (None), so that the Python path raises what it raises.

- ``http_scope``: the scope of an HTTP_REQUEST (sidecar/worker/link.py ``http_scope``, with
  events.check_request's checks);
- ``response_headers``: the usual http.response.start's headers and record size
  (sidecar/worker/http_stream.py ``_check_headers``).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sidecar import _workerapi   # (built by setup.py: not built is a failure here)
from sidecar.events import FRAMING, HEADER_FRAMING, HTTP_REQUEST, ProtocolError
from sidecar.worker import http_stream, link
from sidecar.worker.http_stream import _check_headers

TLS = [None, [], None, None, 0x0304, 0x1301]


def _req(**fields) -> list:
    ev = [HTTP_REQUEST, 7, "GET", "http", "/", b"/", b"", [[b"host", b"t"]],
          ["127.0.0.1", 40000], ["127.0.0.1", 8000], "1.1", "", b"", False]
    names = ["kind", "sid", "method", "scheme", "path", "raw_path", "query", "headers",
             "client", "server", "version", "root", "body", "more"]
    for name, value in fields.items():
        ev[names.index(name)] = value
    return ev


GOOD = [
    _req(),
    _req(path="/a b/é", raw_path=b"/a%20b/%C3%A9", query=b"x=1&y=%20"),
    _req(root="/api", path="/api/x", raw_path=b"/api/x"),
    _req(version="2", scheme="https"),
    _req(version="1.0", client=None, server=None),
    _req(server=["/run/sidecar.sock", None], client=None),
    _req(headers=[]),
    _req(headers=[[b"te", b"trailers"], [b"accept", b"*/*"]]),
    _req(headers=[[b"te", b"trailers, deflate"]]),
    _req(headers=[[b"x-%d" % i, b"v" * i] for i in range(40)]),
    _req(headers=[[b"cookie", b"a=1"], [b"cookie", b"b=2"], [b"", b""]]),
    _req(method="POST", body=b"hello", more=True),
    _req(method="PATCH", body=b"x" * 300, more=False),
]

BAD = [
    _req(method=b"GET"),
    _req(scheme=None),
    _req(path=b"/"),
    _req(raw_path="/"),
    _req(query=""),
    _req(headers=[[b"host"]]),
    _req(headers=[(b"host", b"t")]),
    _req(headers=[[b"host", "t"]]),
    _req(headers=[["host", b"t"]]),
    _req(headers=[[b"host", b"t", b"u"]]),
    _req(headers={"host": "t"}),
    _req(client=["127.0.0.1"]),
    _req(client=["127.0.0.1", None]),
    _req(client=["127.0.0.1", "80"]),
    _req(client=[b"127.0.0.1", 80]),
    _req(client=("127.0.0.1", 80)),
    _req(server=[1, 2]),
    _req(server=["h", True]),
    _req(version=11),
    _req(root=None),
    _req(body="x"),
    _req(more=1),
    _req(more=None),
    _req()[:13],
    _req() + [None],
    _req() + [[None]],
]


@pytest.mark.parametrize("frontend", [True, False])
@pytest.mark.parametrize("root_path", ["", "/mount"])
@pytest.mark.parametrize("ev", GOOD, ids=range(len(GOOD)))
def test_http_scope_is_the_python_scope(ev, root_path, frontend):
    state = {"db": object(), "n": 1}
    asgi = {"version": "3.0", "spec_version": link.SPEC_VERSION}
    got = _workerapi.http_scope(ev, state, root_path, frontend, asgi)
    want = link.http_scope(ev, state, root_path, frontend)
    assert got == want
    assert list(got) == list(want)   # the same key order
    assert all(type(pair) is tuple for pair in got["headers"])
    # what the app may change is its own: state, asgi, extensions and headers are new
    assert got["state"] is not state and got["asgi"] is not asgi
    assert got["headers"] is not ev[7]
    again = _workerapi.http_scope(ev, state, root_path, frontend, asgi)
    assert again == got and again["state"] is not got["state"]
    assert again["asgi"] is not got["asgi"]
    if "extensions" in got:
        assert again["extensions"] is not got["extensions"]


def test_http_scope_leaves_a_tls_request_to_python():
    ev = _req() + [TLS]
    assert _workerapi.http_scope(ev, {}, "", True, {}) is None
    assert link.http_scope(ev, {}, "", True)["extensions"]["tls"]["tls_version"] == 0x0304


@pytest.mark.parametrize("ev", BAD, ids=range(len(BAD)))
def test_http_scope_declines_what_python_refuses(ev):
    assert _workerapi.http_scope(ev, {}, "", True, {"version": "3.0"}) is None
    with pytest.raises(ProtocolError):
        link.http_scope(ev, {}, "", True)


def test_http_scope_declines_a_state_that_is_not_a_dict():
    class State(dict):
        pass

    assert _workerapi.http_scope(_req(), State(), "", True, {}) is None


HEADERS = [
    [],
    (),
    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")],
    [[b"x-a", b"1"], (b"x-b", b"")],
    ((b"Set-Cookie", b"a=1; Path=/"), (b"set-cookie", b"b=\x80\xff\t2")),
    [(b"x-%d" % i, b"v" * i) for i in range(40)],
    [(b"!#$%&'*+-.^_`|~09azAZ", b"\x01\x7f")],
]

BAD_HEADERS = [
    [(b"bad name", b"x")],
    [(b"", b"x")],
    [(b"x", b"a\r\nb: c")],
    [(b"x", b"a\nb")],
    [(b"x", b"a\0")],
    [(b"x:", b"a")],
    [(b"x\x80", b"a")],
    [("x", b"a")],
    [(b"x", "a")],
    [(b"x", bytearray(b"a"))],
    [(b"x", b"a", b"b")],
    [(b"x",)],
    [b"xy"],
    [None],
]


@pytest.mark.parametrize("headers", HEADERS, ids=range(len(HEADERS)))
def test_response_headers_are_the_python_ones(headers):
    got, size = _workerapi.response_headers(headers)
    want = _check_headers(headers)
    assert got == want and all(type(pair) is tuple for pair in got)
    assert got is not headers
    assert size == FRAMING + sum(len(n) + len(v) + HEADER_FRAMING for n, v in want)


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=range(len(BAD_HEADERS)))
def test_response_headers_decline_what_python_refuses(headers):
    assert _workerapi.response_headers(headers) is None
    with pytest.raises((TypeError, ValueError)):
        _check_headers(headers)


def test_response_headers_decline_other_iterables():
    """A generator (or any other iterable) is the Python path's: it takes it as a list."""
    pairs = [(b"x", b"1")]
    assert _workerapi.response_headers(iter(pairs)) is None
    assert _check_headers(iter(pairs)) == pairs


def test_speedups_are_on_unless_asked_off():
    """SIDECAR_NO_SPEEDUPS=1 turns them off for a whole process (read at import; a server
    with it: tests/e2e/test_h1_twins.py)."""
    off = os.environ.get("SIDECAR_NO_SPEEDUPS", "") not in ("", "0")
    assert link.speedups is http_stream.speedups is not off
    code = ("from sidecar.worker import link, http_stream; "
            "print(link.speedups, http_stream.speedups)")
    for value, want in (("1", "False False"), ("0", "True True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "SIDECAR_NO_SPEEDUPS": value}, timeout=60)
        assert out.stdout.split() == want.split(), out.stderr
