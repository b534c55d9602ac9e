"""HTTP/2 end to end: real clients (curl, httpx, a raw h2 client) against a running sidecar.

Prior knowledge on TCP and Unix listeners, one worker per stream, flow control tied to the app
in both directions with bounded memory, and --no-http2.  Floods and limits: test_http2_limits.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time

import httpx
import pytest

from tests.e2e.h2client import H2Client, get
from tests.e2e.util import MiB, RssSampler, process_pids, wait_for
from tests.server import Sidecar

APP = "tests.e2e.apps:app"


@pytest.fixture(scope="module")
def sc():
    with Sidecar(APP, workers=2, capture_stdout=True) as s:
        yield s


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          text=True, timeout=30)


def test_curl_prior_knowledge_on_tcp_and_unix(sc):
    for extra, url in (((), sc.url + "/scope?q=1"), (("--unix-socket", sc.uds), "http://x/scope")):
        r = curl("--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", *extra, url)
        body, _, tail = r.stdout.rpartition("\n")
        assert tail == "2 200", r.stderr
        assert '"http_version": "2"' in body


def test_nghttp_prior_knowledge_download_and_upload(sc, tmp_path):
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"u" * 1_000_000)
    r = subprocess.run(["nghttp", "-n", "-s", f"{sc.url}/zeros?n=3000000",
                        f"{sc.url}/pid"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.strip().endswith(
        ("/pid", "/zeros?n=3000000"))]
    assert sorted((row[-3], row[-1]) for row in rows) == [("200", "/pid"),
                                                         ("200", "/zeros?n=3000000")], r.stdout
    r = subprocess.run(["nghttp", "-v", "-d", str(upload), f"{sc.url}/hash"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and ":status: 200" in r.stdout, r.stderr
    assert '"bytes": 1000000' in r.stdout


def test_curl_upgrade_h2c_then_http2_and_a_body_stays_http1(sc):
    r = curl("--http2", "-v", "-w", "\n%{http_version} %{http_code}", sc.url + "/scope")
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == "2 200" and "101 Switching Protocols" in r.stderr, r.stderr
    scope = __import__("json").loads(body)
    assert scope["http_version"] == "2"
    names = [name for name, _ in scope["headers"]]
    assert "upgrade" not in names and "http2-settings" not in names
    # a request with a body is not upgraded (RFC 9113 drops h2c; 7540 3.2 allows to decline)
    r = curl("--http2", "-d", "abc", "-w", "\n%{http_version} %{http_code}", sc.url + "/echo")
    assert r.stdout == "abc\n1.1 200", r.stderr


def test_httpx_scope_upload_and_download(sc):
    with httpx.Client(http1=False, http2=True, base_url=sc.url, timeout=30) as c:
        r = c.get("/scope/x%20y", params={"a": "1"}, headers={"cookie": "k=v"})
        assert r.http_version == "HTTP/2"
        scope = r.json()
        assert scope["http_version"] == "2" and scope["path"] == "/scope/x y"
        assert scope["raw_path"] == "/scope/x%20y" and scope["query_string"] == "a=1"
        headers = dict(scope["headers"])
        assert headers["host"].startswith("127.0.0.1:") and headers["cookie"] == "k=v"
        body = bytes(range(256)) * 8192   # 2 MiB: eight stream windows
        r = c.post("/hash", content=body)
        assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        r = c.get("/zeros", params={"n": 5 * MiB})
        assert len(r.content) == 5 * MiB and r.content.count(0) == 5 * MiB


def test_access_line_says_http_2_0(sc):
    with httpx.Client(http1=False, http2=True, base_url=sc.url, timeout=10) as c:
        assert c.get("/pid", headers={"user-agent": "h2-access-probe"}).status_code == 200

    def line():
        with open(sc.stdout_path, errors="replace") as fh:
            return [l for l in fh if "h2-access-probe" in l]
    found = wait_for(line, 5, what="the access line")
    assert '"GET /pid HTTP/2.0" 200' in found[0]


def test_streams_of_one_connection_spread_over_the_workers(sc):
    async def run():
        async with httpx.AsyncClient(http1=False, http2=True, base_url=sc.url,
                                     timeout=30) as c:
            rs = await asyncio.gather(*(c.get("/spin", params={"ms": 400}) for _ in range(4)))
            return {r.json()["pid"] for r in rs}, {r.http_version for r in rs}
    pids, versions = asyncio.run(run())
    assert versions == {"HTTP/2"}
    assert pids == set(sc.worker_pids())


def test_a_slow_reader_stream_does_not_hold_back_another(sc):
    with H2Client(sc.port) as cl:
        body = b"s" * (4 * MiB)
        slow = cl.request([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                           (":path", "/slow-reader")],
                          open_body=True)
        # as much as the windows take now, without waiting for the app
        conn, sent = cl.conn, 0
        while True:
            room = min(conn.local_flow_control_window(slow), conn.max_outbound_frame_size)
            if room <= 0:
                break
            conn.send_data(slow, body[sent:sent + room])
            sent += room
            cl.flush()
        fast = cl.request(get("/pid"))
        status, _, _ = cl.response(fast)
        assert status == 200 and slow not in cl.ended
        cl.send_body(slow, body[sent:], end=True)
        status, _, out = cl.response(slow, timeout=60)
        assert status == 200 and b'"bytes": 4194304' in out


def test_an_upload_the_app_does_not_read_gets_one_window_and_no_more(sc):
    """The app sleeps without reading: the client may send its stream window (the ring
    window, 256 KiB) and gets no WINDOW_UPDATE for it; another stream is served meanwhile."""
    with H2Client(sc.port) as cl:
        cl.pump(0.3)   # our SETTINGS: the stream window is 256 KiB
        sid = cl.request([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                          (":path", "/sleep?s=3")], open_body=True)
        conn, sent, deadline = cl.conn, 0, time.monotonic() + 2.0
        while time.monotonic() < deadline:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room > 0:
                conn.send_data(sid, b"u" * room)
                sent += room
                cl.flush()
            else:
                cl.pump(0.1)
        assert sent == 256 * 1024
        fast = cl.request(get("/pid"))
        assert cl.response(fast)[0] == 200


def test_a_response_the_client_never_reads_costs_one_window(sc):
    """One stream's window is never opened again while another stream downloads 64 MiB on
    the same connection: that one finishes, and neither process grows by the held bytes."""
    pids = process_pids(sc)
    with H2Client(sc.port) as cl, RssSampler(pids) as rss:
        held = cl.request(get("/zeros?n=%d" % (1024 * MiB)))
        cl.stalled.add(held)
        cl.until(lambda: len(cl.bodies[held]) >= 60000, what="the held stream's first window")
        fast = cl.request(get("/zeros?n=%d" % (64 * MiB)))
        status, _, body = cl.response(fast, timeout=120)
        assert status == 200 and len(body) == 64 * MiB
        time.sleep(1.0)   # the held stream has every chance to pile bytes up
        cl.pump(0.2)
        assert len(cl.bodies[held]) <= 16 * MiB   # the client's window and nothing more
        assert held not in cl.ended
    growth = rss.growth()
    assert max(growth.values()) < 48 * 1024, rss.report()


def test_no_http2_serves_http1_only():
    with Sidecar(APP, "--no-http2", workers=1) as s:
        r = curl("--http2-prior-knowledge", s.url + "/pid")
        assert r.returncode != 0
        with httpx.Client(http1=False, http2=True, base_url=s.url, timeout=5) as c:
            with pytest.raises(httpx.HTTPError):
                c.get("/pid")
        assert httpx.get(s.url + "/pid").status_code == 200


def raw_frames(data: bytes) -> list:
    """The frames in raw server bytes (h2's client reads nothing after a GOAWAY)."""
    from hyperframe.frame import Frame
    out = []
    while len(data) >= 9:
        f, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        f.parse_body(memoryview(data[9:9 + length]))
        out.append(f)
        data = data[9 + length:]
    return out


def test_sigterm_sends_goaway_and_the_streams_in_flight_finish():
    from hyperframe.frame import DataFrame, GoAwayFrame
    import signal
    with Sidecar(APP, workers=1) as s:
        cl = H2Client(s.port)
        cl.pump(0.2)
        sid = cl.request(get("/sleep?s=1.0"))
        time.sleep(0.3)   # dispatched, the app sleeping
        s.proc.send_signal(signal.SIGTERM)
        data = b""
        cl.sock.settimeout(10)
        while True:
            chunk = cl.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        cl.close()
        frames = raw_frames(data)
        goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaway and goaway[0].error_code == 0 and goaway[0].last_stream_id == sid
        body = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == sid]
        assert b"slept" in b"".join(f.data for f in body) and "END_STREAM" in body[-1].flags
        assert frames.index(goaway[0]) < frames.index(body[0])   # GOAWAY first, then the end
        assert s.proc.wait(30) == 0


def test_a_client_goaway_with_a_stream_in_flight_lets_it_finish_and_harms_no_worker(sc):
    """RFC 9113 6.8: the client's graceful GOAWAY (a proxy closing its upstream connection)
    while its stream waits for the app: the response still comes, then the close.  (It
    once made h2 refuse the response head, which blamed the worker: SIGKILLed.)"""
    workers = sc.worker_pids()
    cl = H2Client(sc.port)
    cl.pump(0.2)
    sid = cl.request(get("/sleep?s=0.5"))
    time.sleep(0.2)   # dispatched, the app sleeping
    cl.conn.close_connection()   # GOAWAY NO_ERROR
    cl.flush()
    data = b""
    cl.sock.settimeout(10)
    while chunk := cl.sock.recv(65536):
        data += chunk
    cl.sock.close()
    body = [f for f in raw_frames(data) if f.stream_id == sid and hasattr(f, "data")]
    assert body and b"slept" in b"".join(f.data for f in body), raw_frames(data)
    assert "END_STREAM" in body[-1].flags
    assert sc.worker_pids() == workers and "protocol error" not in sc.log()


def test_status_and_metrics_count_http2_streams(tmp_path):
    from tests.server import free_port
    port = free_port()
    with Sidecar(APP, "--metrics", f"127.0.0.1:{port}", workers=1) as s, \
            H2Client(s.port) as cl:
        sids = [cl.request(get("/sleep?s=2")) for _ in range(3)]
        wait_for(lambda: "sidecar_http2_streams 3" in httpx.get(
            f"http://127.0.0.1:{port}/metrics").text, 5, what="3 streams in the metrics")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "sidecar_http2_connections 1" in text and "sidecar_http2_streams_max 3" in text
        for sid in sids:
            assert cl.response(sid)[0] == 200
