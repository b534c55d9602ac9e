"""The link between one host and the worker: dispatch, protocol errors by scope, ring-level
backpressure."""
import asyncio
import os

from sidecar.events import (
    APP_DONE, DISCONNECT, HELLO, RECV_CREDIT, HTTP_BODY, HTTP_REQUEST, RESPONSE_BODY, SEND_CREDIT,
    WS_ACCEPT, WS_CONNECT, WS_DISCONNECT, WS_RECEIVE, WS_SEND,
)
from sidecar.events import pack
from sidecar.worker.config import EXIT_PROTOCOL_ERROR

from .apps import pattern
from .host import TIMEOUT, run_host


def test_ping_pong():
    async def scenario(host):
        await host.hello()
        for token in (0, 1, 2**40):
            await host.ping(token)

    run_host(scenario, "apps:router")


def test_garbage_record_exits_with_protocol_error():
    async def scenario(host):
        await host.hello()
        host.send_raw(b"\xc1garbage")  # 0xc1: "never used" in msgpack
        assert await host.exit_code() == EXIT_PROTOCOL_ERROR
        assert "protocol error from host 0: undecodable event" in host.log()

    run_host(scenario, "apps:router")


def test_bad_event_on_the_link_itself_exits_with_protocol_error():
    async def scenario(host):
        await host.hello()
        host.send([HELLO, 0, 1, 2, 3])  # a worker -> host kind, on stream 0
        assert await host.exit_code() == EXIT_PROTOCOL_ERROR

    run_host(scenario, "apps:router")


def test_stream_protocol_error_fails_only_that_stream():
    async def scenario(host):
        await host.hello()
        bad = host.request("POST", "/slow", body=b"a", more=True)
        good = host.request("POST", "/slow", body=b"b", more=True)
        host.send([HTTP_BODY, bad, "text, not bytes", False])
        failed = await host.response(bad)  # (after a RECV_CREDIT, if the app read "a" first)
        assert failed.error.startswith("protocol error: kind 2: bad field")
        host.body(good, b"c")
        response = await host.response(good)
        assert (response.body, response.error) == (b"done:bc", None)
        await host.ping()
        assert host.pending(bad) == []  # exactly one APP_DONE for the failed stream

    run_host(scenario, "apps:router")


def test_events_for_unknown_streams_are_ignored():
    async def scenario(host):
        await host.hello()
        host.send([HTTP_BODY, 999, b"late", False])
        host.send([SEND_CREDIT, 999, 10])
        host.send([DISCONNECT, 999])
        await host.ping()
        assert host.pending(999) == []
        response = await host.response(host.request("GET", "/hello"))
        assert response.status == 200

    run_host(scenario, "apps:router")


def test_malformed_request_is_answered_with_app_done():
    async def scenario(host):
        await host.hello()
        host.send([HTTP_REQUEST, 5, "GET", "http", "/hello"])  # far too short
        done = await host.recv(5)
        assert done[0] == APP_DONE and done[2].startswith("protocol error: ")
        await host.ping()

    run_host(scenario, "apps:router")


def test_reused_stream_id_fails_the_open_stream():
    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/slow", body=b"", more=True)
        host.request("GET", "/hello", sid=sid)
        failed = await host.response(sid)
        assert failed.status is None and "already open" in failed.error
        await host.ping()
        assert host.pending(sid) == []

    run_host(scenario, "apps:router")


async def _recv_skipping_credit(host, sid):
    while True:
        ev = await host.recv(sid)
        if ev[0] != RECV_CREDIT:
            return ev


def test_websocket_stream_in_the_worker():
    async def scenario(host):
        await host.hello()
        host.send([WS_CONNECT, 3, "ws", "/ws", b"/ws", b"", [], None, None, "1.1", "", ["chat"]])
        assert await _recv_skipping_credit(host, 3) == [WS_ACCEPT, 3, "chat", []]
        host.send([WS_RECEIVE, 3, "hé", False])
        assert await _recv_skipping_credit(host, 3) == [WS_SEND, 3, "hé", False]
        host.send([WS_RECEIVE, 3, b"ab", True])   # one message in two chunks
        host.send([WS_RECEIVE, 3, b"cd"])          # `more` is optional
        assert await _recv_skipping_credit(host, 3) == [WS_SEND, 3, b"abcd", False]
        host.send([WS_DISCONNECT, 3, 4002, "bye"])
        assert await _recv_skipping_credit(host, 3) == [APP_DONE, 3, None]

    run_host(scenario, "apps:ws_echo")


def test_websocket_flow_control_of_a_large_message():
    """A 600 KiB message each way with a 256 KiB window: the worker credits the chunks of an
    incomplete message as they arrive, and its echo waits for SEND_CREDIT."""
    async def scenario(host):
        await host.hello()
        window = 256 * 1024
        host.send([WS_CONNECT, 5, "ws", "/ws", b"/ws", b"", [], None, None, "1.1", "", []])
        assert (await host.recv(5))[0] == WS_ACCEPT
        data = os.urandom(600 * 1024)
        chunk = 64 * 1024
        credit, sent = window, 0
        while sent < len(data):
            piece = data[sent:sent + chunk]
            while credit < len(piece):
                ev = await host.recv(5)
                assert ev[0] == RECV_CREDIT, ev
                credit += ev[2]
            credit -= len(piece)
            sent += len(piece)
            host.send([WS_RECEIVE, 5, piece, sent < len(data)])
        echoed, granted_once = b"", False
        while True:
            ev = await host.recv(5)
            if ev[0] == RECV_CREDIT:
                continue
            assert ev[0] == WS_SEND, ev
            echoed += ev[2]
            if len(echoed) % window == 0 and ev[3]:  # window spent: the worker waits for credit
                await asyncio.sleep(0.2)
                assert not [e for e in host.pending(5) if e[0] == WS_SEND]
                host.send([SEND_CREDIT, 5, window])
                granted_once = True
            if not ev[3]:
                break
        assert echoed == data and granted_once

    run_host(scenario, "apps:ws_echo")


def test_websocket_refused_by_an_http_only_app():
    async def scenario(host):
        await host.hello()
        host.send([WS_CONNECT, 3, "ws", "/ws", b"/ws", b"", [], None, None, "1.1", "", []])
        assert await host.recv(3) == [APP_DONE, 3, "NotImplementedError: websocket"]

    run_host(scenario, "apps:router")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_full_ring_queues_in_order_without_spinning():
    capacity = 64 * 1024  # records of at most 8 KiB: the 1 MiB body spans ~130 of them
    size = 1 << 20

    async def scenario(host):
        await host.hello()  # read before we stop reading: hello() needs the host to read
        host.to_host.stop_reading()
        sid = host.request("GET", "/big_send", query=f"size={size}".encode())
        other = host.request("GET", "/hello")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while host.to_host.used() < capacity // 2:  # the worker fills the ring, then waits
            assert loop.time() < deadline, "the worker did not fill the ring"
            await asyncio.sleep(0.01)
        before = _cpu_seconds(host.proc.pid)
        await asyncio.sleep(0.3)  # measure, not wait-for: a waiting worker burns no CPU
        assert _cpu_seconds(host.proc.pid) - before < 0.1
        host.resume_reading()
        response = await host.response(sid)
        assert response.error is None and response.body == pattern(size)
        assert max(len(ev[2]) for ev in response.events if ev[0] == RESPONSE_BODY) < 8192
        hello = await host.response(other)
        assert (hello.status, hello.body) == (200, b"Hello, world!")
        await host.ping()

    run_host(scenario, "apps:router", capacity=capacity, window=4 << 20)


def test_a_finished_stream_is_published_before_the_next_task_runs(tmp_path):
    """Two requests read in one batch: /hello, then one that keeps the event loop without
    yielding.  /hello's response (and APP_DONE) must reach the host while the second still
    runs, not when the loop turn ends: a 0.1 ms response must not wait out a 20 ms one."""
    marker = tmp_path / "release"

    async def scenario(host):
        await host.hello()
        fast = host.request_event("GET", "/hello")
        hold = host.request_event("GET", "/holds_loop", query=f"marker={marker}".encode())
        assert host.to_worker.try_write_many([pack(fast), pack(hold)]) == 2  # one release
        response = await host.response(fast[1])  # /holds_loop waits for us: no timing
        assert (response.status, response.body, response.error) == (200, b"Hello, world!", None)
        marker.touch()
        held = await host.response(hold[1])
        assert held.body == b"released"

    run_host(scenario, "apps:router")
