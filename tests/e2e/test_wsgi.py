"""WSGI apps in the workers (--interface wsgi / auto): a raw PEP 3333 app, Flask and Django,
through a real sidecar: bodies streamed both ways with bounded memory, close() always called,
500 for app errors, exc_info, wsgi.errors, and the worker machinery (max-requests, reload,
request timeout, the thread cap) unchanged."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from sidecar.worker.wsgi import is_wsgi
from tests.e2e.util import MiB, RssSampler, process_pids, wait_for
from tests.server import Sidecar

APPS = {"raw": "tests.e2e.wsgi_apps:raw", "flask": "tests.e2e.wsgi_apps:flask_app",
        "django": "tests.e2e.wsgi_apps:django_app"}
BIG = int(os.environ.get("SIDECAR_TEST_WSGI_BYTES", str(1 << 30)))   # 1 GiB
RSS_BOUND = 64 * 1024   # KiB a process may grow by while 1 GiB goes through it


@pytest.fixture(scope="module", params=list(APPS))
def sc(request):
    # Flask's is detected (auto); the others are named
    args = [] if request.param == "flask" else ["--interface", "wsgi"]
    with Sidecar(APPS[request.param], *args, workers=1, ready_path="/pid") as s:
        s.kind = request.param
        yield s


def pattern_body(total: int, piece: int = MiB):
    block = hashlib.sha256(b"sidecar").digest() * (piece // 32)
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n


def expected_sha(total: int) -> str:
    h = hashlib.sha256()
    for part in pattern_body(total):
        h.update(part)
    return h.hexdigest()


def test_streaming_upload_of_1_gib_with_bounded_rss(sc):
    with RssSampler(process_pids(sc)) as rss:
        # with a Content-Length: Django reads no chunked body under WSGI (no length, no body)
        r = httpx.post(sc.url + "/hash", content=pattern_body(BIG), timeout=300,
                       headers={"Content-Length": str(BIG)})
    assert r.status_code == 200, r.text
    assert r.json() == {"n": BIG, "sha256": expected_sha(BIG)}
    assert all(g < RSS_BOUND for g in rss.growth().values()), rss.report()


def test_streaming_download_of_1_gib_with_bounded_rss(sc, tmp_path):
    marker = tmp_path / "closed"
    n = 0
    with RssSampler(process_pids(sc)) as rss:
        with httpx.stream("GET", sc.url + "/zeros", params={"n": BIG, "marker": str(marker)},
                          timeout=300) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(MiB):
                n += len(chunk)
    assert n == BIG
    assert all(g < RSS_BOUND for g in rss.growth().values()), rss.report()
    # the iterable's close() ran at its end
    wait_for(marker.exists, 10, what="close()")
    assert marker.read_text() == f"closed after {BIG // (64 * 1024)}"


def test_close_is_called_when_the_client_leaves(sc, tmp_path):
    """An endless slow download: the client reads a little and goes; the app's iterable is
    closed (its thread is free again) and the worker serves on."""
    marker = tmp_path / "closed"
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.sendall(b"GET /zeros?n=%d&delay=0.02&marker=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                  % (1 << 40, str(marker).encode()))
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_for(marker.exists, 10, what="close() after the client left")
    assert marker.read_text().startswith("closed after ")
    assert httpx.get(sc.url + "/pid", timeout=10).status_code == 200


def test_an_app_exception_is_a_500(sc):
    r = httpx.get(sc.url + "/error-before", timeout=10)
    assert r.status_code == 500
    assert httpx.get(sc.url + "/pid", timeout=10).status_code == 200


# --- the raw app: the rest of PEP 3333 ---------------------------------------------------------

@pytest.fixture(scope="module")
def raw():
    with Sidecar(APPS["raw"], "--interface", "wsgi", "--root-path", "/mount", workers=1,
                 ready_path="/pid") as s:
        yield s


def test_exception_after_the_head_cuts_the_response(raw):
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(raw.url + "/error-after", timeout=10)
    assert "boom mid-response" in raw.log()


def test_start_response_with_exc_info_replaces_a_head_not_sent(raw):
    r = httpx.get(raw.url + "/exc-info", timeout=10)
    assert r.status_code == 503 and r.text == "sorry\n"


def test_the_legacy_write_callable(raw):
    assert httpx.get(raw.url + "/write", timeout=10).text == "written and returned"


def test_wsgi_errors_goes_to_the_workers_log(raw):
    assert httpx.get(raw.url + "/errors", timeout=10).status_code == 200
    wait_for(lambda: "wsgi.errors line one" in raw.log() and "and two" in raw.log(), 5,
             what="the lines")


def test_environ(raw):
    # (a proxy stripped /mount: the scope's path has it again, as uvicorn's --root-path)
    r = httpx.get(raw.url + "/environ", params={"q": "a b"},
                  headers={"X-Thing": "1", "X_Thing": "spoof", "Content-Type": "text/x"},
                  timeout=10)
    env = r.json()
    assert env["SCRIPT_NAME"] == "/mount" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "q=a+b" and env["REQUEST_METHOD"] == "GET"
    assert env["HTTP_X_THING"] == "1"   # the underscore spelling is dropped, not merged
    assert env["CONTENT_TYPE"] == "text/x" and "HTTP_CONTENT_TYPE" not in env
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.input_terminated"] is True
    assert env["wsgi.multithread"] is True and env["wsgi.version"] == [1, 0]


def test_input_lines_and_a_chunked_body(raw):
    def body():
        for i in range(1000):
            yield b"line %d\n" % i
    r = httpx.post(raw.url + "/lines", content=body(), timeout=10)
    assert r.json() == {"lines": 1000, "last": "line 999\n"}


def test_threads_cap_the_streams_a_worker_takes():
    """--wsgi-threads 2: a third request waits in the front-end for a thread, and all are
    served."""
    with Sidecar(APPS["raw"], "--interface", "wsgi", "--wsgi-threads", "2", workers=1,
                 ready_path="/pid") as s:
        out = []

        def one():
            out.append(httpx.get(s.url + "/sleep", params={"s": "0.5"}, timeout=30).status_code)
        threads = [threading.Thread(target=one) for _ in range(5)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == [200] * 5
        assert time.monotonic() - t0 >= 1.0   # 2 at a time: three rounds of 0.5 s


def test_a_refused_header_is_a_500_and_frees_the_thread():
    """The app's head fails the worker's header check: 500, and the thread (the only one)
    is free for the next request."""
    with Sidecar(APPS["raw"], "--interface", "wsgi", "--wsgi-threads", "1", workers=1,
                 ready_path="/pid") as s:
        for _ in range(3):
            assert httpx.get(s.url + "/bad-header", timeout=10).status_code == 500
        assert httpx.get(s.url + "/pid", timeout=10).status_code == 200


def test_request_timeout_answers_504_and_the_thread_finishes(tmp_path):
    marker = tmp_path / "slept"
    with Sidecar(APPS["raw"], "--interface", "wsgi", "--timeout-request", "1", workers=1,
                 ready_path="/pid") as s:
        pid = httpx.get(s.url + "/pid", timeout=10).json()["pid"]
        r = httpx.get(s.url + "/sleep", params={"s": "3", "marker": str(marker)}, timeout=30)
        assert r.status_code == 504
        assert httpx.get(s.url + "/pid", timeout=10).json()["pid"] == pid   # other threads
        wait_for(marker.exists, 10, what="the thread to finish")
        assert httpx.get(s.url + "/pid", timeout=10).json()["pid"] == pid


def test_max_requests_and_reload_carry_over():
    with Sidecar(APPS["raw"], "--interface", "wsgi", "--max-requests", "5", workers=1,
                 ready_path="/pid") as s:
        first = httpx.get(s.url + "/pid", timeout=10).json()["pid"]
        # recycled after 5 requests, no request lost: the old worker serves until its
        # replacement is ready, so the new pid shows after a start's time, not at request 6
        pids = {first}
        for _ in range(200):
            pids.add(httpx.get(s.url + "/pid", timeout=10).json()["pid"])
            if len(pids) >= 2:
                break
            time.sleep(0.02)
        assert len(pids) >= 2
        before = set(s.worker_pids())
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: set(s.worker_pids()).isdisjoint(before) and s.worker_pids(), 30,
                 what="new workers after SIGHUP")
        assert httpx.get(s.url + "/pid", timeout=10).status_code == 200


def test_a_wsgi_interface_for_an_asgi_app_is_a_clear_failure():
    """--interface asgi serves Flask as ASGI: it fails at the first request, as any app that
    does not speak ASGI (the rule is the operator's word)."""
    with Sidecar(APPS["flask"], "--interface", "asgi", "--lifespan", "off", workers=1,
                 ready_path="/pid") as s:
        assert httpx.get(s.url + "/pid", timeout=10).status_code == 500


# --- --interface auto's rule --------------------------------------------------------------------

def test_auto_detection_rule():
    from tests.e2e import apps, wsgi_apps

    async def asgi3(scope, receive, send):
        pass

    class AsgiObject:
        async def __call__(self, scope, receive, send):
            pass

    class WsgiObject:
        def __call__(self, environ, start_response):
            return []

    def wrapped(*args, **kwargs):
        pass

    def three(a, b, c):
        pass

    def two_and_default(environ, start_response, extra=None):
        return []

    assert is_wsgi(wsgi_apps.raw) and is_wsgi(wsgi_apps.flask_app) and is_wsgi(WsgiObject())
    assert is_wsgi(two_and_default)
    assert not is_wsgi(asgi3) and not is_wsgi(AsgiObject()) and not is_wsgi(apps.app)
    assert not is_wsgi(wrapped) and not is_wsgi(three) and not is_wsgi(WsgiObject)
    assert not is_wsgi(print)   # a builtin whose signature cannot be read: ASGI, as before
