"""Chromium's own WebSocket against the demo app (issue #4), headless.

The demo's ``/ws/check`` page (examples/ws_check.html) runs a WebSocket conversation with
``/ws/echo`` and ``/ws/chat`` and resolves ``window.wsCheck`` with what it observed; these tests
read that over the DevTools protocol (tests/browser.py) and check every value themselves.
Chromium cannot open a Unix socket: the nginx test is the path through sidecar's Unix socket.
"""
from __future__ import annotations

import pytest

from tests.browser import Chromium
from tests.e2e.util import wait_for
from tests.nginx import NginxServer
from tests.server import Sidecar

MiB = 1 << 20
LARGE = 16 * MiB  # sidecar's default --ws-max-size: the largest message it takes
CHECKS = ["open /ws/echo", "compression", "text message", "binary message",
          "large message (16 MiB)", "subprotocol", "close from the browser",
          "close from the server", "chat room"]
CLIENT_CLOSE_LOGGED = "echo: client closed with 4000 'check done'"


@pytest.fixture(scope="module")
def browser():
    # (the TLS test's certificate is made for the run: no CA to install)
    with Chromium(args=["--ignore-certificate-errors"]) as chromium:
        yield chromium


def run_check_page(browser, url: str) -> dict:
    """Load the check page, wait for every check, return {check name: result}."""
    page = browser.open(url)
    try:
        results = page.evaluate("window.wsCheck", timeout=120)
        assert isinstance(results, list), (results, page.console())
    finally:
        page.close()
    by_name = {r["name"]: r for r in results}
    assert len(by_name) == len(results), results  # names are unique
    return by_name


def assert_conversation(checks: dict, compressed: bool = True, large: int = LARGE) -> None:
    """What the browser saw, value by value (not only the page's own verdicts)."""
    failed = {name: r["detail"] for name, r in checks.items() if not r["ok"]}
    if compressed:
        assert not failed, failed
        assert "permessage-deflate" in checks["compression"]["observed"]["extensions"]
    else:
        assert failed == {"compression": checks["compression"]["detail"]}
        assert checks["compression"]["observed"]["extensions"] == ""

    opened = checks["open /ws/echo"]["observed"]
    assert opened["protocol"] == ""  # nothing offered, nothing chosen

    text = checks["text message"]["observed"]
    assert text["received"] == text["sent"] and "wörld ✓ 🚀" in text["sent"]

    assert checks["binary message"]["observed"] == {"type": "[object ArrayBuffer]", "bytes": 256}

    big = [r for name, r in checks.items() if name.startswith("large message")][0]["observed"]
    assert (big["sent"], big["received"], big["same"]) == (large, large, True)

    sub = checks["subprotocol"]["observed"]
    assert sub["protocol"] == "echo"
    assert sub["close"] == {"code": 1000, "reason": "", "wasClean": True}

    # the browser closes with 4000: the front-end answers with the same code, cleanly
    assert checks["close from the browser"]["observed"] == {
        "code": 4000, "reason": "check done", "wasClean": True}

    # the app closes with 1008 and a reason: the browser gets both, cleanly
    server_close = checks["close from the server"]["observed"]
    assert server_close["code"] == 1008 and server_close["wasClean"]
    assert server_close["reason"].startswith("name: 1 to 32"), server_close

    chat = checks["chat room"]["observed"]
    assert chat["join"]["event"] == "join" and chat["join"]["name"] == "checker"
    assert chat["said"] == {"event": "message", "name": "checker", "text": "hi, room"}


def _app_saw_client_close(sc, before: int) -> None:
    """The app (not only the front-end) got the browser's close code and reason."""
    wait_for(lambda: sc.log().count(CLIENT_CLOSE_LOGGED) > before, 10,
             what="the echo app's log line for the browser's close")


def test_chromium_websocket_over_tcp(demo, browser):
    before = demo.log().count(CLIENT_CLOSE_LOGGED)
    checks = run_check_page(browser, demo.url + "/ws/check")
    assert list(checks) == CHECKS
    assert_conversation(checks)
    _app_saw_client_close(demo, before)


def test_chromium_websocket_through_nginx_to_the_unix_socket(demo, browser, tmp_path):
    before = demo.log().count(CLIENT_CLOSE_LOGGED)
    with NginxServer(demo.uds, directory=tmp_path / "nginx") as base:
        checks = run_check_page(browser, base + "/ws/check")
    assert list(checks) == CHECKS
    assert_conversation(checks)
    _app_saw_client_close(demo, before)


def test_chromium_without_compression(browser):
    """--no-ws-per-message-deflate: nothing negotiated, and the page says so."""
    with Sidecar("examples.demo:app", "--no-ws-per-message-deflate", workers=1) as sc:
        checks = run_check_page(browser, sc.url + f"/ws/check?large={MiB}")
    assert_conversation(checks, compressed=False, large=MiB)
    assert "large message (1 MiB)" in checks


def test_chromium_message_over_max_size_is_1009(browser):
    """A message over --ws-max-size: the browser sees close code 1009, and the page says so."""
    with Sidecar("examples.demo:app", "--ws-max-size", "1m", workers=1) as sc:
        checks = run_check_page(browser, sc.url + f"/ws/check?large={2 * MiB}")
    failed = {name: r["detail"] for name, r in checks.items() if not r["ok"]}
    # the echo socket is gone after the large message; the checks on other sockets pass
    assert set(failed) == {"large message (2 MiB)", "close from the browser"}, failed
    assert failed["large message (2 MiB)"] == "closed with 1009"
    closed = checks["close from the browser"]["observed"]  # how the echo socket ended
    assert closed["code"] == 1009 and closed["wasClean"], closed
    assert checks["subprotocol"]["ok"] and checks["chat room"]["ok"]
    assert checks["close from the server"]["observed"]["code"] == 1008


def test_chromium_websockets_over_http2(browser, tmp_path):
    """Over TLS, Chromium speaks HTTP/2 (ALPN h2) and, as sidecar's SETTINGS allow extended
    CONNECT, opens its WebSockets as streams of that connection (RFC 8441): the whole
    conversation passes, and the access lines show CONNECT over HTTP/2.0 on the page's own
    connection."""
    from tests.e2e.test_tls import TLSSidecar, make_cert
    cert, key = make_cert(tmp_path, "server")
    with TLSSidecar("examples.demo:app", cert, key, workers=1, capture_stdout=True) as sc:
        checks = run_check_page(browser, sc.url + f"/ws/check?large={MiB}")
        assert_conversation(checks, large=MiB)
        wait_for(lambda: '"CONNECT /ws/chat?name=checker HTTP/2.0" 200 ' in _read(sc.stdout_path),
                 10, what="the WebSocket access lines")
        lines = _read(sc.stdout_path).splitlines()
    page = [line for line in lines if '"GET /ws/check?' in line]
    assert len(page) == 1 and "HTTP/2.0" in page[0]
    sockets = [line for line in lines if '"CONNECT /ws/' in line]
    assert len(sockets) >= 3 and all(" 200 " in line for line in sockets), sockets
    assert {line.split()[0] for line in sockets} == {page[0].split()[0]}   # one connection


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()
