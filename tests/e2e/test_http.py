"""HTTP/1.1 end to end: a real sidecar, real sockets (TCP and Unix), real clients."""
import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from tests.e2e.util import recv_until_eof
from tests.server import Sidecar


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.apps:app", "--root-path", "", ready_path="/pid") as s:
        yield s


@pytest.fixture(params=["tcp", "uds"])
def client(request, sc):
    with sc.client(uds=request.param == "uds", timeout=30) as c:
        yield c


def raw(sc, data: bytes, *, uds: bool = False, until_close: bool = True, timeout=10) -> bytes:
    """Send raw bytes, return everything the server wrote until it closed (or timeout)."""
    if uds:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sc.uds)
    else:
        s = socket.create_connection(("127.0.0.1", sc.port))
    s.settimeout(timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not until_close and out.count(b"HTTP/1.1") and out.endswith(b"\r\n\r\n"):
                break
    except socket.timeout:
        pass
    s.close()
    return out


def test_get_json(client):
    r = client.get("/pid")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["server"] == "sidecar"
    assert "date" in r.headers
    assert r.json()["pid"] > 0


def test_scope_tcp(sc):
    with sc.client() as c:
        s = c.get("/scope/caf%C3%A9%2Fx?a=1&b=%20", headers={"X-Dup": "1"}).json()
    assert s["type"] == "http"
    assert s["http_version"] == "1.1"
    assert s["method"] == "GET"
    assert s["scheme"] == "http"
    assert s["path"] == "/scope/café/x"
    assert s["raw_path"] == "/scope/caf%C3%A9%2Fx"
    assert s["query_string"] == "a=1&b=%20"
    assert s["root_path"] == ""
    assert s["client"][0] == "127.0.0.1" and isinstance(s["client"][1], int)
    assert s["server"] == ["127.0.0.1", sc.port]
    assert s["state"] == {"booted": "yes"}
    assert ["x-dup", "1"] in s["headers"]
    assert s["headers"][0][0] == "host"


def test_scope_unix_socket(sc):
    with sc.client(uds=True) as c:
        s = c.get("/scope").json()
    assert s["server"] == [sc.uds, None]
    assert s["client"] is None


def test_headers_in_order_with_duplicates(sc):
    req = (b"GET /scope HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n"
           b"Connection: close\r\n\r\n")
    body = raw(sc, req).split(b"\r\n\r\n", 1)[1]
    headers = json.loads(body)["headers"]
    assert headers == [["host", "x"], ["x-a", "1"], ["x-b", "2"], ["x-a", "3"],
                       ["connection", "close"]]


def test_post_content_length_and_chunked(client):
    payload = os.urandom(300_000)
    assert client.post("/echo", content=payload).content == payload

    def gen():
        for i in range(0, len(payload), 7000):
            yield payload[i:i + 7000]
    r = client.post("/echo", content=gen())  # httpx sends this chunked
    assert r.content == payload


def test_head_has_no_body(sc):
    out = raw(sc, b"HEAD /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length:" in head.lower()
    assert body == b""


def test_pipelining_keeps_order(sc):
    reqs = b"".join(b"GET /sleep?s=%s HTTP/1.1\r\nHost: x\r\n\r\n" % d
                    for d in (b"0.2", b"0", b"0.1", b"0"))
    reqs += b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(sc, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 5
    # responses come back in request order: four /sleep answers, then /pid
    positions = [out.find(b'"slept"', i) for i in [0]]
    assert positions[0] > 0
    assert out.rfind(b'"slept"') < out.find(b'{"pid"')


def test_expect_100_continue(sc):
    s = socket.create_connection(("127.0.0.1", sc.port))
    s.settimeout(10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"hello")
    out = b""
    while not out.endswith(b"0\r\n\r\n"):
        out += s.recv(1000)
    assert out.startswith(b"HTTP/1.1 200")
    assert b"5\r\nhello\r\n" in out
    s.close()


def test_expect_100_not_sent_when_app_does_not_read(sc):
    s = socket.create_connection(("127.0.0.1", sc.port))
    s.settimeout(10)
    s.sendall(b"POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    out = recv_until_eof(s)
    assert out.startswith(b"HTTP/1.1 200")
    assert b"100 Continue" not in out
    s.close()


def test_keepalive_requests_go_to_whichever_worker_is_free(sc):
    """Dispatch is per request, not per connection.  An idle pool serves one connection's
    requests on one worker (packing: the other stays asleep); while another connection holds
    a worker in a CPU-bound request, the same keep-alive connection's requests go to the
    other worker, and come back once it is free.  (Which worker the spin lands on is the
    dispatcher's choice: the test reads it, and the spin's own clock, from the answer.)"""
    with sc.client() as c:
        # the pool learns that /spin is costly first: a route not seen yet counts as 4 ms, and
        # a cheap request dispatched in the few ms before the spinning worker's silence shows
        # can be packed behind it (docs/operations.md, "Dispatch": known)
        c.get("/spin", params={"ms": 50})
        first = {c.get("/pid").json()["pid"] for _ in range(5)}
        assert len(first) == 1, first
        spin = {}

        def spinner():
            with sc.client(timeout=30) as c2:
                spin.update(c2.get("/spin", params={"ms": 1500}).json())

        t = threading.Thread(target=spinner)
        t.start()
        during = []   # (sent, answered, pid): time.monotonic() is the workers' clock too
        deadline = time.monotonic() + 20
        while t.is_alive() and time.monotonic() < deadline:
            sent = time.monotonic()
            pid = c.get("/pid").json()["pid"]
            during.append((sent, time.monotonic(), pid))
            time.sleep(0.01)
        t.join(30)
        after = c.get("/pid").json()["pid"]
    # requests made while the spin held its worker's loop (from 100 ms after it began: the
    # front-end counts a loop silent for 12 ms as held) all went to the other worker
    held = {pid for sent, done, pid in during if sent > spin["t0"] + 0.1 and done < spin["t1"]}
    assert held, f"no request was made while the spin ran: {during}"
    assert held | {spin["pid"]} == set(sc.worker_pids()) and spin["pid"] not in held
    assert after in first   # free again: packed onto the first worker as before


def test_app_error_before_start_is_500(client, sc):
    r = client.get("/error-before")
    assert r.status_code == 500
    assert "boom before start" in sc.log()
    assert client.get("/pid").status_code == 200  # nothing else affected


def test_app_returning_without_response_is_500(client):
    assert client.get("/no-response").status_code == 500


def test_app_error_after_start_closes_connection(sc):
    out = raw(sc, b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in out.lower()
    assert b"partial" in out
    assert not out.endswith(b"0\r\n\r\n")  # no last chunk: the client sees a truncated body
    assert out.count(b"HTTP/1.1") == 1


def test_response_header_injection_refused(client, sc):
    r = client.get("/bad-header")
    assert r.status_code == 500
    assert "injected" not in str(r.headers).lower()


def test_streamed_download(client):
    n = 5 * 1024 * 1024 + 123
    with client.stream("GET", f"/zeros?n={n}") as r:
        assert r.headers["transfer-encoding"] == "chunked"
        total = sum(len(c) for c in r.iter_bytes())
    assert total == n


def test_demo_download_upload_sse_ndjson(demo):
    import examples.demo as d
    with demo.client(timeout=30) as c:
        size = 3 * 1024 * 1024 + 5
        r = c.get(f"/download?size={size}")
        assert len(r.content) == size
        expected = hashlib.sha256(b"".join(d.pattern_chunks(size))).hexdigest()
        assert hashlib.sha256(r.content).hexdigest() == expected
        body = os.urandom(2_000_000)
        up = c.post("/upload", content=body).json()
        assert up["bytes"] == len(body) and up["sha256"] == hashlib.sha256(body).hexdigest()
        with c.stream("GET", "/sse/metrics?count=3&interval=0.05") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line.startswith("data:")]
        assert len(events) == 3
        with c.stream("GET", "/ndjson/progress?steps=4&delay=0.01") as r:
            lines = [json.loads(x) for x in r.iter_lines() if x.strip()]
        assert len(lines) >= 4


def test_sse_arrives_event_by_event(demo):
    """Each event reaches the client while the stream is still open (no buffering)."""
    with demo.client(timeout=30) as c:
        with c.stream("GET", "/sse/metrics?count=4&interval=0.3") as r:
            stamps = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    stamps.append(time.monotonic())
    assert len(stamps) == 4
    assert stamps[-1] - stamps[0] > 0.6  # spread out, not delivered at the end in one burst


def test_client_disconnect_reaches_app(sc, tmp_path):
    marker = tmp_path / "seen"
    s = socket.create_connection(("127.0.0.1", sc.port))
    s.sendall(b"GET /disconnect?m=%s HTTP/1.1\r\nHost: x\r\n\r\n" % str(marker).encode())
    s.settimeout(10)
    out = b""
    while b"tick" not in out:
        out += s.recv(1000)
    s.close()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "http.disconnect"


def test_response_for_a_client_that_left_is_dropped_quietly(sc):
    """The client leaves while its worker is busy: the worker hears of it only after it has
    sent the whole response, which then reaches a closed connection.  It is dropped with no
    error line (it was a "protocol error from worker" line per stream), and the server goes
    on serving."""
    before = len(sc.log())
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", sc.port))
        s.sendall(b"GET /spin?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        s.close()
    time.sleep(1.5)   # the spins end and their responses come back to closed connections
    with sc.client() as c:
        assert c.get("/pid").status_code == 200
    log = sc.log()[before:]
    assert "protocol error" not in log and "ERROR" not in log, log


def test_curl_over_unix_socket_and_tcp(sc):
    out = subprocess.run(["curl", "-sS", "--unix-socket", sc.uds, "http://x/pid"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and b'"pid"' in out.stdout
    out = subprocess.run(["curl", "-sS", "-d", "hello", f"{sc.url}/echo"],
                         capture_output=True, timeout=30)
    assert out.stdout == b"hello"


def test_proxy_headers_trusted_from_loopback(sc):
    with sc.client() as c:
        s = c.get("/scope", headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.1",
                                     "X-Forwarded-Proto": "https"}).json()
    assert s["client"][0] == "203.0.113.7"
    assert s["scheme"] == "https"


def test_proxy_headers_answers_kept_per_value_not_per_connection(sc):
    """The front-end keeps what a trusted peer's proxy fields mean (server.proxy_scopes): on
    one keep-alive connection, each request still gets its own fields' client and scheme,
    and a request without them the connection's own."""
    sent = [({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
             "203.0.113.7", "https"),
            ({"X-Forwarded-For": "198.51.100.2"}, "198.51.100.2", "http"),
            ({}, "127.0.0.1", "http"),
            ({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
             "203.0.113.7", "https"),
            ({"Forwarded": "for=192.0.2.60;proto=https"}, "192.0.2.60", "https"),
            ({"X-Forwarded-For": "198.51.100.2"}, "198.51.100.2", "http")]
    with sc.client() as c:
        ports = set()
        for _ in range(2):
            for headers, client, scheme in sent:
                s = c.get("/scope", headers=headers).json()
                assert (s["client"][0], s["scheme"]) == (client, scheme), (headers, s)
                if not headers:
                    ports.add(s["client"][1])
    assert len(ports) == 1   # one connection throughout


def test_proxy_headers_answers_shared_by_unix_socket_connections(sc):
    """On the Unix socket (nginx's path) the answers are kept for every connection: a second
    and a third connection with the fields the first one sent (found in C now) still get
    their own client and scheme, and one without them the socket's own (no client)."""
    fields = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    for _ in range(3):
        with sc.client(uds=True) as c:
            for _ in range(2):
                s = c.get("http://x/scope", headers=fields).json()
                assert (s["client"][0], s["scheme"]) == ("203.0.113.9", "https"), s
                s = c.get("http://x/scope", headers={"X-Forwarded-For": "198.51.100.3"}).json()
                assert (s["client"][0], s["scheme"]) == ("198.51.100.3", "http"), s
                s = c.get("http://x/scope").json()
                assert s["client"] is None and s["scheme"] == "http", s


def test_date_header_is_now_and_moves_on(client):
    """Date is formatted once a second by a timer at each wall-clock second: an IMF-fixdate
    of the current second (give or take one), and a later second a second later."""
    from email.utils import parsedate_to_datetime
    first = client.get("/pid").headers["date"]
    assert first.endswith(" GMT") and len(first) == 29
    assert abs(parsedate_to_datetime(first).timestamp() - time.time()) <= 2
    time.sleep(1.2)
    second = client.get("/pid").headers["date"]
    assert parsedate_to_datetime(second) > parsedate_to_datetime(first)


def test_no_date_header_holds_for_the_servers_own_responses_too(sc):
    """--no-date-header leaves Date out of every response: the app's, and the ones the server
    writes itself (here a 400 for a bad head); without it, both carry one."""
    bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
    out = raw(sc, bad)
    assert out.startswith(b"HTTP/1.1 400") and b"\r\ndate: " in out.lower()
    with Sidecar("tests.e2e.apps:app", "--no-date-header", workers=1,
                 ready_path="/pid") as quiet:
        assert "date" not in httpx.get(quiet.url + "/pid").headers
        out = raw(quiet, bad)
        assert out.startswith(b"HTTP/1.1 400") and b"date:" not in out.lower(), out


def test_bad_request_gets_400_and_server_survives(sc):
    out = raw(sc, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert httpx.get(sc.url + "/pid").status_code == 200


def test_http10_close_delimited(sc):
    out = raw(sc, b"GET /zeros?n=1000 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert len(body) == 1000


@pytest.mark.parametrize("uds", [False, True])
def test_app_connection_close_closes_after_the_response(sc, uds):
    """An app's ``Connection: close`` is what the head says and what the server does: the
    requests pipelined after it are never answered (RFC 9112 section 9.6)."""
    out = raw(sc, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", uds=uds)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert head.lower().count(b"connection: close") == 1
    assert body == b"bye"   # and then EOF: raw() returned because the server closed


def test_idle_keepalive_connection_is_closed():
    with Sidecar("tests.e2e.apps:app", "--timeout-keep-alive", "1", ready_path="/pid",
                 workers=1) as sc:
        s = socket.create_connection(("127.0.0.1", sc.port))
        s.settimeout(10)
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert s.recv(100) == b""  # closed by the server (our own timeout would raise)
        s.close()
