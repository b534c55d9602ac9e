"""HTTP streams end to end: a real worker process, real rings, the host played by the test."""
import json

import os

from sidecar.events import (
    APP_DONE, DISCONNECT, HTTP_BODY, MAX_CHUNK, RECV_CREDIT, RESPONSE_BODY, RESPONSE_PATHSEND,
    RESPONSE_START, SEND_CREDIT,
)

from .apps import pattern
from .host import REPO, run_host, sha


def test_hello_and_hello_event():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/hello"))
        assert (response.status, response.body, response.error) == (200, b"Hello, world!", None)
        assert response.header(b"content-length") == b"13"
        assert [ev[0] for ev in response.events] == [RESPONSE_START, RESPONSE_BODY, APP_DONE]
        assert response.events[0][4] is False  # no trailers
        assert response.events[1][3] is False  # the one body record is the last

    run_host(scenario, "apps:router")


def test_scope_is_built_from_the_request_event():
    async def scenario(host):
        await host.hello()
        headers = [[b"host", b"example"], [b"x-twice", b"1"], [b"x-twice", b"2"]]
        sid = host.request("POST", "/scope", query=b"a=1&b=%20", headers=headers)
        got = json.loads((await host.response(sid)).body)
        scope, types = got["scope"], got["types"]
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
        assert (scope["http_version"], scope["method"], scope["scheme"]) == ("1.1", "POST",
                                                                             "http")
        assert (scope["path"], scope["raw_path"]) == ("/scope", "/scope")
        assert scope["query_string"] == "a=1&b=%20"
        assert scope["headers"] == [["host", "example"], ["x-twice", "1"], ["x-twice", "2"]]
        assert scope["client"] == ["127.0.0.1", 50000]
        assert scope["server"] == ["/run/sidecar.sock", None]
        assert scope["root_path"] == "/mounted"  # the event's is empty: the config's
        assert scope["state"] == {}
        assert types == {"headers": "list", "header": "tuple", "client": "tuple",
                         "server": "tuple"}
        sid = host.request("GET", "/scope", root_path="/from-host")
        assert json.loads((await host.response(sid)).body)["scope"]["root_path"] == "/from-host"

    run_host(scenario, "apps:router", root_path="/mounted")


def test_echo_body_inside_the_request_event():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("POST", "/echo", body=b"ping!"))
        assert (response.status, response.body) == (200, b"ping!")
        assert not any(ev[0] == RECV_CREDIT for ev in response.events)  # body was complete

    run_host(scenario, "apps:router")


def test_response_stops_at_the_window_until_send_credit():
    window = 64 * 1024
    size, chunk = 4 * window + 1000, 16 * 1024

    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/stream", query=f"size={size}&chunk={chunk}".encode())
        assert (await host.recv(sid))[0] == RESPONSE_START
        received = b""
        while len(received) < window:
            ev = await host.recv(sid)
            assert ev[0] == RESPONSE_BODY and ev[3] is True
            received += ev[2]
        assert len(received) == window
        await host.ping()  # the worker went round its loop: nothing more was sent
        assert host.pending(sid) == []
        host.send([SEND_CREDIT, sid, chunk])  # room for exactly one more chunk
        ev = await host.recv(sid)
        assert (ev[0], len(ev[2])) == (RESPONSE_BODY, chunk)
        received += ev[2]
        await host.ping()
        assert host.pending(sid) == []
        host.send([SEND_CREDIT, sid, size])  # everything else
        rest = await host.response(sid, grant=False)
        assert rest.error is None
        assert received + rest.body == pattern(size)
        assert rest.events[-2] == [RESPONSE_BODY, sid, b"", False]

    run_host(scenario, "apps:router", window=window)


def test_one_big_send_is_split_into_chunks():
    size = 5 * MAX_CHUNK + 123

    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/big_send", query=f"size={size}".encode())
        response = await host.response(sid)
        assert response.body == pattern(size)
        bodies = [ev for ev in response.events if ev[0] == RESPONSE_BODY]
        assert all(len(ev[2]) <= MAX_CHUNK for ev in bodies)
        assert [ev[3] for ev in bodies] == [True] * (len(bodies) - 1) + [False]

    run_host(scenario, "apps:router")


def test_request_body_larger_than_the_window_is_credited_as_read():
    window = 64 * 1024
    data = pattern(5 * window + 777)

    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/digest", body=data[:1000], more=True)
        credits = await host.upload(sid, data[1000:], piece=8 * 1024, outstanding=1000)
        response = await host.response(sid)
        got = json.loads(response.body)
        assert (got["bytes"], got["sha256"]) == (len(data), sha(data))
        credits += [ev[2] for ev in response.events if ev[0] == RECV_CREDIT]
        # Credits came while the body was read, each at most the window, and never more
        # than the bytes the app took.
        assert len(credits) >= 4
        assert all(0 <= c <= window for c in credits)
        assert sum(credits) <= len(data)

    run_host(scenario, "apps:router", window=window)


def test_first_receive_sends_credit_zero_before_any_body():
    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/digest", body=b"", more=True)  # Expect: 100-continue
        assert await host.recv(sid) == [RECV_CREDIT, sid, 0]
        host.body(sid, b"abc", more=True)
        host.body(sid, b"def", more=False)
        response = await host.response(sid)
        assert json.loads(response.body)["bytes"] == 6

    run_host(scenario, "apps:router")


def test_no_credit_while_the_app_does_not_read():
    window = 64 * 1024

    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/no_read", body=b"x" * window, more=True)
        assert (await host.recv(sid))[0] == RESPONSE_START
        await host.ping()
        assert host.pending(sid) == []  # no RECV_CREDIT: the host must not send more

    run_host(scenario, "apps:router", window=window)


def test_app_raising_before_the_response_start():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/raise_before"))
        assert response.status is None
        assert response.error == "ValueError: boom before start"
        await host.ping()
        log = host.log()
        assert "Exception in ASGI application (GET /raise_before)" in log
        assert "Traceback" in log

    run_host(scenario, "apps:router")


def test_app_raising_after_the_response_start():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/raise_after"))
        assert (response.status, response.body) == (200, b"partial")
        assert response.error == "ValueError: boom after start"

    run_host(scenario, "apps:router")


def test_invalid_response_start_fails_the_app():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/bad_status"))
        assert response.status is None and response.error.startswith("TypeError: ")
        response = await host.response(host.request("GET", "/bad_headers"))
        assert response.status is None and response.error.startswith("TypeError: ")
        response = await host.response(host.request("GET", "/injected_header"))
        assert response.status is None
        assert response.error.startswith("ValueError: CR, LF or NUL in the value of")
        response = await host.response(host.request("GET", "/injected_header", query=b"name=1"))
        assert response.status is None
        assert response.error.startswith("ValueError: invalid header name")

    run_host(scenario, "apps:router")


def test_headers_are_checked_each_time_and_sent_as_they_were_at_send():
    """Header names found valid once are remembered, and values found clean (a bad one is
    never remembered: it is checked each time, and a value equal to a clean one but not bytes
    is still refused); what the app does to its header list after send() returns does not
    reach the host (the record is packed at the end of the loop turn)."""
    async def scenario(host):
        await host.hello()
        for _ in range(2):
            response = await host.response(host.request("GET", "/reuses_headers"))
            assert (response.status, response.headers, response.body) == (
                200, [[b"x-a", b"1"]], b"ok")
            response = await host.response(host.request("GET", "/injected_header"))
            assert response.status is None
            assert response.error.startswith("ValueError: CR, LF or NUL in the value of")
            response = await host.response(host.request("GET", "/view_header"))
            assert response.status is None and response.error.startswith("TypeError: ")

    run_host(scenario, "apps:router")


def test_sending_after_the_response_or_an_unknown_message_raises():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/misuse"))
        assert (response.status, response.body) == (200, b"ok")
        assert response.error == (
            "ValueError: http.response.body after the response completed | "
            "unexpected ASGI message type 'http.response.push' on an http stream")

    run_host(scenario, "apps:router")


def test_pathsend_names_the_file_with_the_response_length():
    """http.response.pathsend: one RESPONSE_PATHSEND with the absolute path and the
    Content-Length the app sent (the host sends the file: tests/e2e/test_pathsend.py)."""
    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/pathsend")
        events = []
        while not events or events[-1][0] != APP_DONE:
            events.append(await host.recv(sid))
        assert [ev[0] for ev in events] == [RESPONSE_START, RESPONSE_PATHSEND, APP_DONE]
        assert events[1][2:] == [os.path.join(REPO, "data.bin"), 12]   # (the worker's cwd)
        assert events[2][2] == (
            "ValueError: http.response.pathsend before http.response.start | "
            "http.response.pathsend after the response completed | "
            "['http.response.pathsend']")

    run_host(scenario, "apps:router")


def test_many_concurrent_streams():
    async def scenario(host):
        await host.hello()
        sids = {}
        for i in range(300):
            if i % 3:
                sids[host.request("POST", "/echo", body=b"%d" % i)] = b"%d" % i
            else:
                sids[host.request("GET", "/hello")] = b"Hello, world!"
        for sid, expected in sids.items():
            response = await host.response(sid)
            assert (response.status, response.body, response.error) == (200, expected, None)

    run_host(scenario, "apps:router")


def test_app_returning_without_a_response():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/returns_early"))
        assert response.status is None
        assert response.error == "ASGI callable returned without starting a response"

    run_host(scenario, "apps:router")


def test_disconnect_ends_receive_and_fails_send():
    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/disconnect_probe")
        assert (await host.recv(sid))[0] == RESPONSE_START
        host.send([DISCONNECT, sid])
        response = await host.response(sid)
        assert response.error == ("RuntimeError: first=http.request second=http.disconnect "
                                  "send=ClientDisconnected OSError=True")

    run_host(scenario, "apps:router")


def test_disconnect_wakes_a_send_waiting_for_credit():
    window = 16 * 1024

    async def scenario(host):
        await host.hello()
        sid = host.request("GET", "/stream", query=b"size=100000&chunk=4096")
        received = 0
        while received < window:
            ev = await host.recv(sid)
            if ev[0] == RESPONSE_BODY:
                received += len(ev[2])
        host.send([DISCONNECT, sid])
        done = await host.recv(sid)
        assert done[0] == APP_DONE and done[2].startswith("ClientDisconnected")
        await host.ping()
        assert "Traceback" not in host.log()  # a client leaving is not an app error

    run_host(scenario, "apps:router", window=window)


def test_host_exceeding_the_window_fails_the_stream():
    window = 64 * 1024

    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/no_read", body=b"x" * (window - 10), more=True)
        assert (await host.recv(sid))[0] == RESPONSE_START
        host.send([HTTP_BODY, sid, b"y" * 11, True])
        done = await host.recv(sid)
        assert done[0] == APP_DONE and done[2].startswith("protocol error: ")
        await host.ping()

    run_host(scenario, "apps:router", window=window)
