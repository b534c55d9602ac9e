"""Behind a real Caddy configured with examples/caddy/Caddyfile (only the site address and the
socket path replaced): GET with forwarded headers, SSE event by event, WebSockets."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.util import wait_for
from tests.server import ROOT, Sidecar, free_port

EXAMPLE = ROOT / "examples" / "caddy" / "Caddyfile"


def caddy_config(uds: str, port: int, example: Path = EXAMPLE, options: str = "") -> str:
    text = example.read_text()
    for old in ("example.com {", "unix//run/sidecar/sidecar.sock"):
        assert text.count(old) == 1, f"{example}: expected {old!r} once"
    site = text.replace("example.com {", f"http://127.0.0.1:{port} {{").replace(
        "unix//run/sidecar/sidecar.sock", f"unix/{uds}")
    # a throwaway Caddy: no admin endpoint, no certificates
    return "{\n    admin off\n    auto_https off\n" + options + "}\n" + site


class Caddy:
    def __init__(self, uds: str, example: Path = EXAMPLE, options: str = ""):
        self.uds = uds
        self.example = example
        self.options = options
        self.dir = tempfile.mkdtemp(prefix="caddy-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Caddy":
        caddy = shutil.which("caddy")
        if caddy is None:
            raise RuntimeError("caddy is not installed: run scripts/setup.sh as root")
        conf = Path(self.dir, "Caddyfile")
        conf.write_text(caddy_config(self.uds, self.port, self.example, self.options))
        env = dict(os.environ, XDG_DATA_HOME=self.dir, XDG_CONFIG_HOME=self.dir, HOME=self.dir)
        self._log = open(Path(self.dir, "caddy.log"), "wb")
        self.proc = subprocess.Popen([caddy, "run", "--config", str(conf), "--adapter",
                                      "caddyfile"], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"caddy exited: {Path(self.dir, 'caddy.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        try:
            wait_for(up, 20, what="caddy listening")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as s:
        yield s


def test_get_through_caddy(sc):
    with Caddy(sc.uds) as caddy, httpx.Client(base_url=caddy.url, timeout=30) as c:
        assert c.get("/pid").json()["pid"] in sc.worker_pids()
        scope = c.get("/scope/x?q=1").json()
        payload = os.urandom(200_000)
        assert c.post("/echo", content=payload).content == payload
    assert scope["path"] == "/scope/x" and scope["server"] == [sc.uds, None]
    assert scope["client"][0] == "127.0.0.1"  # Caddy's X-Forwarded-For, trusted from unix


def test_sse_and_websocket_through_caddy(demo):
    from websockets.sync.client import connect

    with Caddy(demo.uds) as caddy:
        with httpx.Client(base_url=caddy.url, timeout=30) as c:
            with c.stream("GET", "/sse/metrics?count=4&interval=0.3") as r:
                assert r.status_code == 200
                stamps, seqs = [], []
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        stamps.append(time.monotonic())
                        seqs.append(json.loads(line[5:])["seq"])
        assert seqs == [1, 2, 3, 4]
        assert stamps[-1] - stamps[0] > 0.6  # as sent, not in one burst
    with Sidecar("tests.e2e.ws_apps:app", workers=1) as ws_sc, Caddy(ws_sc.uds) as caddy:
        with connect(caddy.url.replace("http://", "ws://") + "/echo", open_timeout=30,
                     max_size=None) as ws:
            ws.send("hello through caddy")
            assert ws.recv(timeout=30) == "hello through caddy"
            blob = os.urandom(3 << 20)
            ws.send(blob)
            assert ws.recv(timeout=30) == blob


def test_caddy_h2c_transport_with_grpc(tmp_path):
    """examples/caddy/Caddyfile.h2c: Caddy speaks HTTP/2 to sidecar; gRPC (cleartext to Caddy
    here, as the example's comment says) with trailers, and plain requests, pass through."""
    from tests.e2e.test_grpc import check_rpcs
    with Sidecar("tests.e2e.grpc_app:app", workers=2) as sc, \
            Caddy(sc.uds, ROOT / "examples" / "caddy" / "Caddyfile.h2c",
                  "    servers {\n        protocols h1 h2 h2c\n    }\n") as caddy:
        check_rpcs(f"127.0.0.1:{caddy.port}", tmp_path, cancel_reaches_app=False)
    with Sidecar("tests.e2e.apps:app", workers=1) as sc, \
            Caddy(sc.uds, ROOT / "examples" / "caddy" / "Caddyfile.h2c") as caddy:
        r = httpx.get(caddy.url + "/scope", timeout=10)
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        assert r.json()["http_version"] == "2"   # Caddy to sidecar: HTTP/2
        body = bytes(range(256)) * 4096
        assert httpx.post(caddy.url + "/echo", content=body, timeout=30).content == body
