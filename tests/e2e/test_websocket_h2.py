"""WebSockets over HTTP/2 (RFC 8441, extended CONNECT) against a real sidecar: python-hyper's
h2 as the client over a real socket, carrying the frames of websockets' own ClientProtocol
(tests/e2e/h2ws_client.py).  The same apps as the HTTP/1.1 WebSocket tests (ws_apps.py).
The protocol-level cases (the SETTINGS, malformed CONNECTs) are rows of the conformance
table, tests/e2e/test_h2_conformance.py."""
from __future__ import annotations

import json
import os
import signal

import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from tests.e2e.h2client import H2Client, get
from tests.e2e.h2ws_client import H2WebSocket
from tests.e2e.util import wait_for
from tests.server import Sidecar


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.ws_apps:app", workers=2, ready_path="/pid",
                 capture_stdout=True) as s:
        yield s


def read(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path) as fh:
        return fh.read()


def events_log(sc) -> str:
    return read(os.path.join(sc.tmp.name, "ws_events.log"))


def test_an_app_that_does_not_read_holds_the_client_by_its_window(sc):
    """/noread accepts and never reads: what the client may send is bounded by the stream's
    window (no WINDOW_UPDATE past what the app took), and the connection's other streams
    are served meanwhile."""
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/noread?s=1")
        sent = 0
        chunk = b"x" * 16384
        for _ in range(200):   # up to 3 MiB, as far as the windows let it
            if c.conn.local_flow_control_window(ws.sid) < len(chunk) + 64:
                c.pump(0.2)
                if c.conn.local_flow_control_window(ws.sid) < len(chunk) + 64:
                    break
            ws.proto.send_binary(chunk)
            ws._out()
            sent += len(chunk)
        # at most: a ring window with the worker, one waiting for it, one in the h2 window
        # (about 3 x 256 KiB; 770 KiB measured)
        assert 256 * 1024 < sent < 1024 * 1024, sent
        assert c.response(c.request(get("/pid")))[0] == 200


def test_echo_text_and_binary_and_the_scope(sc):
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/echo", subprotocols=["superchat", "other"])
        assert c.conn.remote_settings.enable_connect_protocol == 1
        assert ws.status == 200
        assert ws.headers["sec-websocket-protocol"] == "superchat"
        assert ws.headers["x-ws-app"] == "yes"
        assert "sec-websocket-accept" not in ws.headers and "upgrade" not in ws.headers
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(bytes(range(256)))
        assert ws.recv() == bytes(range(256))
        scope = json.loads(H2WebSocket(c, "/scope?x=1").recv())
    assert scope["type"] == "websocket" and scope["http_version"] == "2"
    assert scope["scheme"] == "ws" and scope["path"] == "/scope"
    assert scope["query_string"] == "x=1" and scope["client"][0] == "127.0.0.1"


def test_a_large_fragmented_message_both_ways_through_the_windows(sc):
    """3 MiB in 24 fragments, far past the client's 64 KiB windows and the ring window:
    flow control carries it both ways, whole and in order."""
    body = os.urandom(1 << 17) * 24
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/echo")
        ws.send(body, fragments=24)
        assert ws.recv(timeout=30) == body


def test_close_codes_both_ways(sc):
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/echo?tag=h2bye")
        ws.send("x")
        assert ws.recv() == "x"
        ws.close(4003, "client says bye")
        assert ws.wait_closed() == 4003   # the server's close frame echoes the code
        c.until(lambda: ws.sid in c.ended, 10, "the server's END_STREAM")
        server = H2WebSocket(c, "/close4001")
        assert server.wait_closed() == 4001
        assert server.proto.close_rcvd.reason == "app says bye"
        # the connection goes on
        assert c.response(c.request(get("/pid")))[0] == 200
    wait_for(lambda: "disconnect h2bye 4003 client says bye" in events_log(sc), 10,
             what="the app to see the client's close code")


def test_denial_refusal_and_app_error_are_responses_on_the_stream(sc):
    with H2Client(sc.port) as c:
        deny = H2WebSocket(c, "/deny")
        status, headers, body = c.response(deny.sid)
        assert (status, body) == (418, b"no websockets for you")
        assert H2WebSocket(c, "/reject").status == 403
        assert H2WebSocket(c, "/raise").status == 500
        # each ended its own stream; the connection serves on
        assert c.response(c.request(get("/pid")))[0] == 200
        assert not [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert "refusing in style" in sc.log()


def test_many_websockets_beside_http_streams_on_one_connection(sc):
    """Twenty WebSockets and HTTP requests interleaved on one connection (each stream
    dispatched on its own): each stream gets its own answers, and closes on its own."""
    with H2Client(sc.port) as c:
        sockets = [H2WebSocket(c, f"/echo?tag=many{i}") for i in range(20)]
        for i, ws in enumerate(sockets):
            ws.send(f"message {i}" * (i + 1))
            status, _, body = c.response(c.request(get("/pid")))
            assert status == 200 and json.loads(body)["pid"] in sc.worker_pids()
        for i, ws in enumerate(reversed(sockets)):
            assert ws.recv() == f"message {19 - i}" * (20 - i)
        for ws in sockets[::2]:
            ws.close()
        for ws in sockets[::2]:
            assert ws.wait_closed() == 1000
        for i, ws in enumerate(sockets[1::2]):   # the others are still open
            ws.send(b"again")
            assert ws.recv() == b"again"


def test_a_client_that_does_not_read_holds_the_app(sc):
    """/flood sends 64 KiB messages forever; a client that never opens the stream's window
    gets one window of it, and the connection's other streams are served meanwhile."""
    before = len(sc.log())
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/flood", stalled=True)
        c.until(lambda: len(c.bodies[ws.sid]) >= 65535, 10, "the first window")
        for _ in range(5):
            c.pump(0.1)
        assert len(c.bodies[ws.sid]) == 65535   # the client's initial stream window
        assert c.response(c.request(get("/pid")))[0] == 200
        c.conn.reset_stream(ws.sid, ErrorCodes.CANCEL)
        c.flush()
    assert "Traceback" not in sc.log()[before:]


def test_the_access_line_names_http_2(sc):
    with H2Client(sc.port) as c:
        ws = H2WebSocket(c, "/echo?tag=access")
        ws.close()
        ws.wait_closed()
    wait_for(lambda: '"CONNECT /echo?tag=access HTTP/2.0" 200 ' in read(sc.stdout_path),
             5, what="the WebSocket's access line")


def test_shutdown_sends_goaway_and_closes_open_websockets_1012():
    """SIGTERM: GOAWAY NO_ERROR on the connection, then its open WebSockets are closed 1012
    (service restart) as on HTTP/1.1; once they answered, each stream ends, the connection
    closes and sidecar exits.  (Read as raw frames: h2's client state machine takes no frame
    after a GOAWAY.)"""
    with Sidecar("tests.e2e.ws_apps:app", workers=1, ready_path="/pid") as sc, \
            H2Client(sc.port) as c:
        sockets = {}
        for i in range(3):
            ws = H2WebSocket(c, f"/echo?tag=down{i}")
            ws.send("up")
            assert ws.recv() == "up"
            sockets[ws.sid] = ws
        sc.proc.send_signal(signal.SIGTERM)
        frames, buf = [], b""
        c.sock.settimeout(15)
        while data := c.sock.recv(65536):
            buf += data
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                n = 9 + int.from_bytes(buf[:3], "big")
                frame, _ = Frame.parse_frame_header(memoryview(buf[:9]))
                frame.parse_body(memoryview(buf[9:n]))
                buf = buf[n:]
                frames.append(frame)
                ws = sockets.get(frame.stream_id)
                if isinstance(frame, DataFrame) and ws is not None:
                    ws.proto.receive_data(frame.data)   # a close frame: answered
                    ws.proto.events_received()
                    ws._out()
        assert isinstance(frames[0], GoAwayFrame) and frames[0].error_code == 0
        for sid, ws in sockets.items():
            assert (ws.proto.close_rcvd.code, ws.proto.close_rcvd.reason) == \
                (1012, "server shutting down")
            ends = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == sid]
            assert "END_STREAM" in ends[-1].flags
        assert sc.proc.wait(timeout=15) == 0
