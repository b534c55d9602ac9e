"""What the front-end imports before it serves: the HTTP/1.1 stack, not HTTP/2's (h2, hpack)
nor WebSocket's (websockets, which also loads importlib.metadata): those come with the first
connection that needs them (frontend/http_conn.py, frontend/server.py).  Together they were
about 0.2 s of CPU of every start (python -m benchmarks.startup)."""
import subprocess
import sys

from tests.server import ROOT

LAZY = ("h2", "hpack", "hyperframe", "websockets", "sidecar.frontend.h2_conn",
        "sidecar.frontend.ws_conn", "sidecar.http.h2_connection")


def test_the_http1_stack_loads_without_http2_and_websockets():
    code = ("import sys, sidecar.cli, sidecar.frontend.server, sidecar.frontend.http_conn; "
            f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.split() == []


def test_the_preface_sniffed_is_the_one_h2_connection_checks():
    from sidecar.frontend import http_conn
    from sidecar.http import h2_connection

    assert http_conn.PREFACE is h2_connection.PREFACE
    assert http_conn.PREFACE_HEAD is h2_connection.PREFACE_HEAD
