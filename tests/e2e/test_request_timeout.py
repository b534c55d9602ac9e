"""--timeout-request against a real sidecar: a request with no response start in time gets
504 from the front-end; the app is told http.disconnect and then cancelled; the worker and
its other streams carry on; the 504 is in the access log and the metrics."""
from __future__ import annotations

import os
import socket
import threading
import time

import h2.events
import httpx
import pytest
from h2.errors import ErrorCodes

from tests.e2e.h2client import H2Client, get
from tests.e2e.util import alive, wait_for
from tests.server import Sidecar, free_port

TIMEOUT = 1.0
SLACK = 4.0   # the deadline is checked once a second, on a shared machine


def start(workers: int) -> Sidecar:
    port = free_port()
    sc = Sidecar("tests.e2e.timeout_apps:app", "--timeout-request", str(TIMEOUT),
                 "--metrics", f"127.0.0.1:{port}", workers=workers, ready_path="/pid",
                 capture_stdout=True)
    sc.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return sc


@pytest.fixture(scope="module")
def sc1():
    with start(1) as s:
        yield s


@pytest.fixture(scope="module")
def sc2():
    with start(2) as s:
        yield s


def access_lines(sc) -> list[str]:
    with open(sc.stdout_path) as fh:
        return fh.read().splitlines()


def metric(sc, name: str) -> float:
    for line in httpx.get(sc.metrics_url, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def in_thread(fn):
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as exc:   # reported by the test
            out["error"] = exc
        out["elapsed"] = time.monotonic() - t0
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_an_app_that_awaits_forever_gets_504_and_is_told_then_cancelled(sc1, tmp_path):
    marker = tmp_path / "seen"
    pid = int(httpx.get(sc1.url + "/pid", timeout=10).text)
    before = metric(sc1, "sidecar_request_timeouts_total")
    t, out = in_thread(lambda: httpx.get(sc1.url + "/listen-forever",
                                         params={"marker": str(marker)}, timeout=30))
    # the same (only) worker keeps serving other streams meanwhile
    served = 0
    while t.is_alive():
        r = httpx.get(sc1.url + "/sleep", params={"s": "0.05"}, timeout=10)
        assert r.status_code == 200 and r.text == "slept"
        served += 1
    t.join()
    r = out["result"]
    assert r.status_code == 504, r.text
    assert TIMEOUT <= out["elapsed"] < TIMEOUT + SLACK
    assert served >= 3
    # told first (the app read http.disconnect), then cancelled after the grace
    wait_for(lambda: marker.exists() and marker.read_text() == "http.disconnect cancelled",
             10, what="the app to be told and then cancelled")
    assert int(httpx.get(sc1.url + "/pid", timeout=10).text) == pid   # not restarted
    assert alive(pid)
    assert metric(sc1, "sidecar_request_timeouts_total") == before + 1
    wait_for(lambda: any('"GET /listen-forever?marker=' in line and '" 504 ' in line
                         for line in access_lines(sc1)), 5, what="the 504's access line")
    assert "request timeout (1s): GET /listen-forever" in sc1.log()


def test_an_app_that_never_reads_is_cancelled(sc1, tmp_path):
    marker = tmp_path / "seen"
    r = httpx.get(sc1.url + "/await-forever", params={"marker": str(marker)}, timeout=30)
    assert r.status_code == 504
    assert r.headers["connection"] == "close"
    wait_for(lambda: marker.exists() and marker.read_text() == "cancelled", 10,
             what="the app to be cancelled")


def test_pipelined_request_behind_a_timed_out_one_is_answered_in_order(sc1, tmp_path):
    """The 504 of a request behind another is written in its turn; the late app's own
    response, if it comes, is dropped (no second status line)."""
    with socket.create_connection(("127.0.0.1", sc1.port), timeout=30) as s:
        s.sendall(b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /await-forever HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 2, data
    first, _, second = data.partition(b"HTTP/1.1 504 ")
    assert first.startswith(b"HTTP/1.1 200 ") and b"slept" in first
    assert second


def test_a_slow_upload_is_not_the_apps_time(sc1):
    """The clock starts when the request was received whole: a body that takes longer than
    the timeout to arrive (steadily) is not cut off."""
    def body():
        for _ in range(8):
            time.sleep(0.4)
            yield b"x" * 1000
    r = httpx.post(sc1.url + "/upload", content=body(), timeout=30)
    assert r.status_code == 200 and r.text == "8000"


def test_no_limit_once_the_response_started(sc1):
    r = httpx.get(sc1.url + "/slow-body", params={"n": "3", "s": "0.9"}, timeout=30)
    assert r.status_code == 200 and r.text == "tick\n" * 3


def test_a_quick_app_is_untouched(sc1):
    r = httpx.get(sc1.url + "/sleep", params={"s": "0.3"}, timeout=30)
    assert r.status_code == 200


def test_a_blocked_loop_gets_504_while_other_workers_serve(sc2, tmp_path):
    """time.sleep() holds the worker's loop: the front-end answers 504 on time all the same;
    new requests go to the other worker; once the loop runs again the app ends (its response
    goes nowhere) and the worker, which was only blocked for less than
    --timeout-worker-hang, is not restarted."""
    marker = tmp_path / "seen"
    pids = set(sc2.worker_pids())
    t, out = in_thread(lambda: httpx.get(sc2.url + "/block",
                                         params={"s": "4", "marker": str(marker)}, timeout=30))
    served = set()
    while t.is_alive():
        r = httpx.get(sc2.url + "/pid", timeout=10)
        assert r.status_code == 200
        served.add(int(r.text))
        time.sleep(0.05)
    t.join()
    assert out["result"].status_code == 504
    assert out["elapsed"] < 4.0 + 1.0   # answered while the loop was still held (4 s)
    assert served and served <= pids
    wait_for(marker.exists, 10, what="the loop to run again")
    # both workers serve afterwards, none was replaced
    wait_for(lambda: set(sc2.worker_pids()) == pids and all(alive(p) for p in pids), 5,
             what="the same workers")
    assert "protocol error" not in sc2.log()
    assert os.path.exists(sc2.stdout_path)


# --- HTTP/2: the same deadline per stream --------------------------------------------------

def post(path: str) -> list:
    return [(":method", "POST"), (":scheme", "http"), (":authority", "sidecar"),
            (":path", path)]


def test_http2_stream_gets_504_while_its_neighbours_are_served(sc1, tmp_path):
    """Over HTTP/2 the deadline is per stream: the stream whose app never starts a response
    gets 504 (its app told, then cancelled), the connection's other streams are served
    meanwhile and after, and nothing is reset."""
    marker = tmp_path / "seen"
    with H2Client(sc1.port) as c:
        t0 = time.monotonic()
        slow = c.request(get(f"/listen-forever?marker={marker}"))
        served = 0
        while slow not in c.ended:
            status, _, body = c.response(c.request(get("/sleep?s=0.05")))
            assert (status, body) == (200, b"slept")
            served += 1
        status, _, _ = c.response(slow)
        assert status == 504 and TIMEOUT <= time.monotonic() - t0 < TIMEOUT + SLACK
        assert served >= 3
        assert c.response(c.request(get("/pid")))[0] == 200
        assert not [e for e in c.events if isinstance(e, h2.events.StreamReset)]
    wait_for(lambda: marker.exists() and marker.read_text() == "http.disconnect cancelled",
             10, what="the app to be told and then cancelled")
    wait_for(lambda: any('"GET /listen-forever?marker=' in line and 'HTTP/2.0" 504 ' in line
                         for line in access_lines(sc1)), 5, what="the 504's access line")


def test_http2_504_while_the_body_still_comes_then_rst_no_error(sc1):
    """A request whose body stalls and whose app never answers: 504 a timeout after the last
    DATA, then RST_STREAM NO_ERROR -- the client may stop sending (RFC 9113 8.1)."""
    with H2Client(sc1.port) as c:
        sid = c.request(post("/await-forever"), open_body=True)
        c.send_body(sid, b"x" * 1000, end=False)
        assert c.response(sid, timeout=TIMEOUT + SLACK)[0] == 504
        reset = c.until(lambda: [e for e in c.events if isinstance(e, h2.events.StreamReset)],
                        5, "the RST_STREAM")
        assert (reset[0].stream_id, reset[0].error_code) == (sid, ErrorCodes.NO_ERROR)
        assert c.response(c.request(get("/pid")))[0] == 200


def test_http2_no_limit_once_the_response_started(sc1):
    with H2Client(sc1.port) as c:
        status, _, body = c.response(c.request(get("/slow-body?n=2&s=0.8")), timeout=15)
    assert (status, body) == (200, b"tick\n" * 2)   # 1.6 s, past the 1 s timeout
