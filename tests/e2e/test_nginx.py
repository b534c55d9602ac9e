"""Behind a real nginx, configured as the deployment docs say (tests/nginx.py), over the Unix
socket (issue #3): GET, a streamed chunked upload, SSE event by event, big downloads."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import httpx
import pytest

from tests.e2e.util import MiB
from tests.nginx import NginxServer
from tests.server import Sidecar


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as s:
        yield s


@pytest.fixture(scope="module")
def nginx(sc):
    server = NginxServer(sc.uds)
    with server as base:
        yield base, server
        errors = [line for line in server.error_log().splitlines()
                  if "[error]" in line or "[crit]" in line or "[alert]" in line]
        assert not errors, "\n".join(errors)


def test_get_through_nginx(sc, nginx):
    base, _ = nginx
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.get("/pid")
        assert r.status_code == 200
        assert r.json()["pid"] in sc.worker_pids()
        scope = c.get("/scope/x?q=1").json()
    assert scope["path"] == "/scope/x" and scope["query_string"] == "q=1"
    assert scope["server"] == [sc.uds, None]  # nginx came in through the Unix socket
    # nginx's X-Forwarded-For is trusted from the Unix socket: the client is the real one
    assert scope["client"][0] == "127.0.0.1"
    assert ["x-forwarded-for", "127.0.0.1"] in scope["headers"]


def test_streamed_chunked_upload_through_nginx(nginx):
    base, _ = nginx
    size, block, sent = 48 * MiB, os.urandom(MiB), hashlib.sha256()

    def body():
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            yield chunk

    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/hash", content=body())  # Transfer-Encoding: chunked, passed through
    assert r.status_code == 200
    assert r.json() == {"bytes": size, "sha256": sent.hexdigest()}


def test_echo_post_through_nginx(nginx):
    base, _ = nginx
    payload = os.urandom(300_000)
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.post("/echo", content=payload).content == payload


def test_sse_arrives_event_by_event_through_nginx(demo):
    with NginxServer(demo.uds) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            with c.stream("GET", "/sse/metrics?count=4&interval=0.3") as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                stamps, seqs = [], []
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        stamps.append(time.monotonic())
                        seqs.append(json.loads(line[5:])["seq"])
    assert seqs == [1, 2, 3, 4]
    # spread out as the app sent them (3 intervals of 0.3 s), not one burst at the end
    assert stamps[-1] - stamps[0] > 0.6


def test_download_through_nginx(demo):
    import examples.demo as d

    size = 64 * MiB + 7
    expected = hashlib.sha256()
    for chunk in d.pattern_chunks(size):
        expected.update(chunk)
    with NginxServer(demo.uds) as base:
        got, n = hashlib.sha256(), 0
        with httpx.Client(base_url=base, timeout=60) as c:
            with c.stream("GET", f"/download?size={size}") as r:
                assert r.status_code == 200
                assert r.headers["content-length"] == str(size)
                for chunk in r.iter_bytes():
                    got.update(chunk)
                    n += len(chunk)
    assert n == size
    assert got.hexdigest() == expected.hexdigest()


def test_big_chunked_download_through_nginx(nginx):
    base, _ = nginx
    n = 512 * MiB
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download}", f"{base}/zeros?n={n}"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"200 {n}"


def test_websocket_through_nginx():
    """examples/nginx/sidecar.conf passes the upgrade on: echo both ways, big messages, the
    app's close code back to the client, and plain requests still keep-alive upstream."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with Sidecar("tests.e2e.ws_apps:app", workers=2) as ws_sc, NginxServer(ws_sc.uds) as base:
        url = base.replace("http://", "ws://")
        with connect(url + "/echo", open_timeout=30, max_size=None) as ws:
            ws.send("hello through nginx")
            assert ws.recv(timeout=30) == "hello through nginx"
            blob = os.urandom(3 * MiB)
            ws.send(blob)
            assert ws.recv(timeout=30) == blob
        with connect(url + "/pid", open_timeout=30) as ws:
            assert int(ws.recv(timeout=30)) in ws_sc.worker_pids()
        with connect(url + "/close4001", open_timeout=30) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
        assert ws.close_code == 4001 and ws.close_reason == "app says bye"
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/").json()["pid"] in ws_sc.worker_pids()
