"""WebSockets end to end (issue #4): a real sidecar, the ``websockets`` client, TCP and the Unix
socket.  The app is the raw ASGI app of tests/e2e/ws_apps.py; what it saw of a close is in
``ws_events.log`` in the server's working directory."""
from __future__ import annotations

import asyncio
import contextlib
import base64
import json
import os
import resource
import signal
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect, unix_connect

from tests.e2e.util import MiB, RssSampler, wait_for
from tests.server import Sidecar, rss_kib

MAX = 16 * MiB


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.ws_apps:app", workers=2) as s:
        yield s
        log = s.log()
        # the only traceback expected is the app's own, from /raise
        assert log.count("Traceback") == log.count("Exception in ASGI application (websocket /raise)"), log
        assert "unexpected event kind" not in log and "protocol error" not in log, log


@pytest.fixture(params=["tcp", "unix"])
def ws_connect(sc, request):
    """connect(path, **kw) through TCP or the Unix socket."""
    def opener(path: str, **kw):
        kw.setdefault("max_size", 2 * MAX)
        kw.setdefault("open_timeout", 10)
        if request.param == "tcp":
            return connect(f"ws://127.0.0.1:{sc.port}{path}", **kw)
        return unix_connect(sc.uds, f"ws://localhost{path}", **kw)
    return opener


def _events(sc) -> list[str]:
    try:
        with open(os.path.join(sc.tmp.name, "ws_events.log")) as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


def _wait_event(sc, line: str, timeout: float = 10.0) -> None:
    wait_for(lambda: line in _events(sc), timeout, what=f"app event {line!r}")


def _raw_handshake(sc, path: str) -> socket.socket:
    """A WebSocket opened by hand (so that the test controls reading and closing)."""
    s = socket.create_connection(("127.0.0.1", sc.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


# --- messages ------------------------------------------------------------------------------

def test_text_and_binary_echo(ws_connect):
    with ws_connect("/echo") as ws:
        ws.send("hello, wörld")
        assert ws.recv() == "hello, wörld"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        ws.send("")
        assert ws.recv() == ""
        ws.send(b"")
        assert ws.recv() == b""
        assert ws.response.headers["x-ws-app"] == "yes"


def test_fragmented_message_from_the_client(ws_connect):
    with ws_connect("/echo") as ws:
        ws.send(["frag", "mented ", "é" * 1000])  # an iterable: one message in fragments
        assert ws.recv() == "fragmented " + "é" * 1000
        ws.send([b"a" * 100_000, b"b" * 300_000, b"c"])
        assert ws.recv() == b"a" * 100_000 + b"b" * 300_000 + b"c"


def test_16mib_messages(ws_connect):
    big = os.urandom(MAX)
    with ws_connect("/echo", compression=None) as ws:
        ws.send(big)
        assert ws.recv() == big
        text = "é" * (MAX // 2)  # 16 MiB of UTF-8, split on character boundaries
        ws.send(text)
        assert ws.recv() == text


def test_compression_negotiated(ws_connect):
    with ws_connect("/echo") as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        text = "compress me " * 100_000
        ws.send(text)
        assert ws.recv() == text
    with ws_connect("/echo", compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv() == "plain"


def test_subprotocol_negotiation(ws_connect):
    with ws_connect("/echo", subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol == "superchat"
    with ws_connect("/echo", subprotocols=["chat"]) as ws:
        assert ws.subprotocol is None
    with ws_connect("/scope?x=1", subprotocols=["a", "b"]) as ws:
        scope = json.loads(ws.recv())
    assert scope["type"] == "websocket" and scope["path"] == "/scope"
    assert scope["subprotocols"] == ["a", "b"] and scope["query_string"] == "x=1"
    assert scope["scheme"] == "ws" and scope["extensions"] == {"websocket.http.response": {}}


# --- refusals ------------------------------------------------------------------------------

def test_denial_response(ws_connect):
    with pytest.raises(InvalidStatus) as info:
        ws_connect("/deny")
    assert info.value.response.status_code == 418
    assert info.value.response.body == b"no websockets for you"


def test_close_before_accept_is_403(ws_connect):
    with pytest.raises(InvalidStatus) as info:
        ws_connect("/reject")
    assert info.value.response.status_code == 403


def test_app_error_before_accept_is_500(sc, ws_connect):
    with pytest.raises(InvalidStatus) as info:
        ws_connect("/raise")
    assert info.value.response.status_code == 500


def test_invalid_handshake_is_refused(sc):
    r = httpx.get(f"{sc.url}/echo", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert r.status_code == 400  # no Sec-WebSocket-Key
    assert httpx.get(f"{sc.url}/plain").status_code == 200  # plain HTTP is unaffected


# --- closing -------------------------------------------------------------------------------

def test_app_closes_with_4001(ws_connect):
    with ws_connect("/close4001") as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
    assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "app says bye"


def test_client_closes_with_4002(sc, ws_connect):
    with ws_connect("/echo?tag=c4002") as ws:
        ws.send("x")
        ws.recv()
        ws.close(4002, "client bye")
    _wait_event(sc, "disconnect c4002 4002 client bye")


def test_client_close_without_code_is_1005(sc):
    s = _raw_handshake(sc, "/echo?tag=nocode")
    s.sendall(b"\x88\x80" + os.urandom(4))  # masked close frame, empty payload
    assert s.recv(2)[:1] == b"\x88"           # the server echoes the close
    s.close()
    _wait_event(sc, "disconnect nocode 1005 ")


def test_dropped_connection_is_1006(sc):
    s = _raw_handshake(sc, "/echo?tag=drop")
    s.close()
    _wait_event(sc, "disconnect drop 1006 ")


def test_invalid_utf8_is_1007(sc):
    from websockets.frames import Frame, Opcode
    s = _raw_handshake(sc, "/echo?tag=utf8")
    s.sendall(Frame(Opcode.TEXT, b"ok \xff\xfe").serialize(mask=True, extensions=[]))
    s.settimeout(5)
    reply = s.recv(64)
    assert reply[:1] == b"\x88" and int.from_bytes(reply[2:4], "big") == 1007
    s.close()
    _wait_event(sc, "disconnect utf8 1007 invalid start byte at position 3")


def test_client_ping_is_answered(ws_connect):
    with ws_connect("/echo") as ws:
        assert ws.ping(b"are you there").wait(5)


def test_message_over_max_size_is_1009(ws_connect):
    with ws_connect("/echo", compression=None) as ws:
        ws.send(b"z" * (MAX + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
    assert info.value.rcvd.code == 1009


def test_small_max_size_and_no_deflate_flags():
    with Sidecar("tests.e2e.ws_apps:app", "--ws-max-size", "1k", "--no-ws-per-message-deflate",
                 workers=1) as sc:
        with connect(f"ws://127.0.0.1:{sc.port}/echo") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            ws.send("a" * 1024)
            assert ws.recv() == "a" * 1024
            ws.send("a" * 1025)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv()
        assert info.value.rcvd.code == 1009


# --- load, backpressure, failures ------------------------------------------------------------

def test_many_concurrent_sockets(sc):
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * n), hard))

    url = f"ws://127.0.0.1:{sc.port}/echo"

    async def echo(i: int, ws) -> None:
        for j in range(3):
            await ws.send(f"{i}-{j}")
            assert await ws.recv() == f"{i}-{j}"
        data = os.urandom(1000)
        await ws.send(data)
        assert await ws.recv() == data

    async def main() -> None:
        sem = asyncio.Semaphore(100)  # handshakes at a time (the listen backlog)

        async def open_one():
            async with sem:
                return await aconnect(url, open_timeout=60)
        conns = await asyncio.gather(*(open_one() for _ in range(n)))
        try:  # all n are open at once here
            await asyncio.wait_for(asyncio.gather(*(echo(i, ws) for i, ws in enumerate(conns))),
                                   120)
        finally:
            await asyncio.gather(*(ws.close() for ws in conns))

    t0 = time.monotonic()
    asyncio.run(main())
    print(f"\n[ws] {n} concurrent echo sockets in {time.monotonic() - t0:.1f}s")


def test_client_that_stops_reading_bounds_frontend_memory(sc):
    s = _raw_handshake(sc, "/flood")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with RssSampler({"front-end": sc.proc.pid}) as rss:
        time.sleep(3.0)  # the app sends 64 KiB messages as fast as credit allows
    print(f"\n[rss] flood to a client that does not read: {rss.report()}")
    assert rss.growth()["front-end"] < 64 * 1024
    # and it really was flowing until the client stopped: read some of it back
    got = 0
    s.settimeout(5)
    while got < 1 * MiB:
        data = s.recv(65536)
        assert data
        got += len(data)
    s.close()


def test_app_that_stops_reading_holds_the_client_back(sc):
    from websockets.frames import Frame, Opcode
    s = _raw_handshake(sc, "/noread")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    frame = Frame(Opcode.BINARY, os.urandom(MiB)).serialize(mask=True, extensions=[])
    s.settimeout(2.0)
    sent = 0
    with RssSampler({"front-end": sc.proc.pid}) as rss:
        try:
            while sent < 256 * MiB:
                s.sendall(frame)
                sent += len(frame)
        except (socket.timeout, TimeoutError):
            pass
    print(f"\n[ws] client held back after {sent / MiB:.0f} MiB; {rss.report()}")
    assert sent < 32 * MiB  # a window at the worker, one at the front-end, socket buffers
    assert rss.growth()["front-end"] < 64 * 1024
    s.close()


def test_worker_killed_closes_its_sockets_with_1011(sc):
    socks: dict[int, object] = {}
    with contextlib.ExitStack() as opened:
        for _ in range(40):
            ws = opened.enter_context(connect(f"ws://127.0.0.1:{sc.port}/pid", open_timeout=10))
            pid = int(ws.recv())
            socks.setdefault(pid, ws)
            if len(socks) == 2:
                break
        assert len(socks) == 2, "sockets did not spread over both workers"
        (victim, doomed), (other, survivor) = socks.items()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(ConnectionClosed) as info:
            doomed.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        survivor.send("still here")
        assert survivor.recv(timeout=10) == "still here"
    # a new worker replaces the dead one and takes WebSockets
    wait_for(lambda: len(sc.worker_pids()) == 2 and victim not in sc.worker_pids(), 15,
             what="replacement worker")
    with connect(f"ws://127.0.0.1:{sc.port}/echo") as ws:
        ws.send("again")
        assert ws.recv() == "again"


# --- the demo app, nginx, keepalive, shutdown ------------------------------------------------

def test_demo_echo_and_chat():
    with Sidecar("examples.demo:app", workers=1) as demo:
        base = f"ws://127.0.0.1:{demo.port}"
        with connect(f"{base}/ws/echo") as ws:
            ws.send("hi")
            assert ws.recv() == "hi"
            ws.send(b"\x01\x02")
            assert ws.recv() == b"\x01\x02"
        # one worker: one room
        with connect(f"{base}/ws/chat?name=ann") as ann:
            assert json.loads(ann.recv())["event"] == "join"
            with connect(f"{base}/ws/chat?name=bob") as bob:
                assert json.loads(bob.recv()) ["name"] == "bob"
                assert json.loads(ann.recv())["name"] == "bob"
                bob.send("hello ann")
                for ws in (ann, bob):
                    msg = json.loads(ws.recv(timeout=10))
                    assert msg == {"event": "message", "name": "bob", "text": "hello ann"}
            assert json.loads(ann.recv(timeout=10)) == {"event": "leave", "name": "bob"}


def test_websocket_through_nginx(sc):
    from tests.nginx import NginxServer
    with NginxServer(sc.uds) as base:
        url = base.replace("http://", "ws://")
        with connect(f"{url}/echo?tag=nginx", max_size=None) as ws:
            ws.send("through nginx")
            assert ws.recv() == "through nginx"
            big = os.urandom(4 * MiB)
            ws.send(big)
            assert ws.recv() == big
            ws.close(4003, "via nginx")
        _wait_event(sc, "disconnect nginx 4003 via nginx")


def test_keepalive_ping_closes_a_dead_peer():
    with Sidecar("tests.e2e.ws_apps:app", "--ws-ping-interval", "1", "--ws-ping-timeout", "1",
                 workers=1) as sc:
        # a live client (the websockets client answers pings) stays connected
        with connect(f"ws://127.0.0.1:{sc.port}/echo") as live:
            # a "dead" peer: handshake done, then it never reads nor answers
            dead = _raw_handshake(sc, "/echo?tag=dead")
            _wait_event(sc, "disconnect dead 1006 ", timeout=15)
            live.send("still alive")
            assert live.recv(timeout=5) == "still alive"
            dead.close()


def test_shutdown_closes_websockets_with_1012():
    sc = Sidecar("tests.e2e.ws_apps:app", workers=1).start()
    try:
        with connect(f"ws://127.0.0.1:{sc.port}/echo") as ws:
            sc.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd.code == 1012
        assert sc.proc.wait(15) == 0
    finally:
        sc.stop()
        sc.tmp.cleanup()


NODE_CLIENT = r"""
const ws = new WebSocket(process.argv[1], ["chat", "superchat"]);
ws.binaryType = "arraybuffer";
const out = {messages: []};
ws.onopen = () => {
  out.protocol = ws.protocol;
  out.extensions = ws.extensions;
  ws.send("héllo from node");
  ws.send(new Uint8Array([0, 1, 2, 255]));
  ws.send("x".repeat(300000));
};
ws.onmessage = (event) => {
  const d = event.data;
  out.messages.push(typeof d === "string"
    ? (d.length > 100 ? "text:" + d.length : "text:" + d)
    : "binary:" + Array.from(new Uint8Array(d)).join(","));
  if (out.messages.length === 3) ws.close(4002, "node bye");
};
ws.onclose = (event) => {
  out.code = event.code;
  console.log(JSON.stringify(out));
};
ws.onerror = (event) => { console.log(JSON.stringify({error: String(event.message)})); };
"""


def test_independent_client_node_websocket(sc):
    """Node's built-in WebSocket (undici: the WHATWG WebSocket API browsers implement)."""
    import shutil
    import subprocess
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    probe = subprocess.run([node, "--experimental-websocket", "-e",
                            "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this node has no WebSocket client")
    out = subprocess.run([node, "--experimental-websocket", "-e", NODE_CLIENT,
                          f"ws://127.0.0.1:{sc.port}/echo?tag=node"],
                         capture_output=True, text=True, timeout=30)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["protocol"] == "superchat"
    assert result["messages"] == ["text:héllo from node", "binary:0,1,2,255", "text:300000"]
    assert result["code"] == 4002
    _wait_event(sc, "disconnect node 4002 node bye")
