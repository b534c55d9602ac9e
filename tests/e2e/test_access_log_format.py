"""--access-log-format against a real sidecar: every named field, templates escaped as nginx
does, and a JSON mode that hostile headers cannot break or forge: each line is one JSON
object with exactly the configured keys."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.util import recv_until_eof, wait_for
from tests.server import ROOT, Sidecar

JSON_FIELDS = ("peer,client,scheme,protocol,request,method,target,path,query,status,bytes,"
               "referer,user_agent,rid=header:x-request-id,evil=header:x-evil,"
               "ctype=response_header:content-type,missing=header:x-none,time_local,"
               "time_iso8601,msec,duration,duration_ms,queue_ms,ttfb_ms,worker,worker_pid,"
               "stream")
KEYS = [f.partition("=")[0] for f in JSON_FIELDS.split(",")]

# header values a client may send that a printf-style format would let through: quotes,
# backslashes, a forged JSON tail, tabs, DEL, and bytes that are not UTF-8
EVIL = [b'"quoted" and \\ back\\slash',
        b'x", "status": 200, "forged": "yes',
        b'tab\there',
        b'\xff\xfe not utf-8 \xc3\x28',
        b'caf\xc3\xa9 is utf-8',
        b'\\x41 looks escaped']


def raw_request(sc, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.sendall(head)
        return recv_until_eof(s)


def lines_of(sc, n: int, having: str) -> list[str]:
    """The access lines that contain ``having``, once there are ``n`` of them."""
    def read():
        out = [x for x in Path(sc.stdout_path).read_bytes().decode("utf-8").splitlines()
               if having in x]
        return out if len(out) >= n else None
    return wait_for(read, 10, what=f"{n} access lines")


@pytest.fixture(scope="module")
def sc_json():
    with Sidecar("tests.e2e.apps:app", "--access-log-format", "json:" + JSON_FIELDS,
                 workers=1, ready_path="/pid", capture_stdout=True) as s:
        yield s


def test_json_lines_parse_and_have_exactly_the_fields_whatever_the_headers(sc_json):
    for value in EVIL:
        out = raw_request(sc_json, b"GET /echo?a=%22b\\ HTTP/1.1\r\nHost: x\r\nX-Evil: " + value
                          + b"\r\nUser-Agent: " + value + b"\r\nReferer: " + value
                          + b"\r\nX-Request-Id: r1\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 "), out
    lines = lines_of(sc_json, len(EVIL), '"rid": "r1"')
    assert len(lines) == len(EVIL)
    for value, line in zip(EVIL, lines):
        rec = json.loads(line)
        assert list(rec) == KEYS, line
        expect = value.decode("utf-8", "backslashreplace")
        assert rec["evil"] == rec["user_agent"] == rec["referer"] == expect
        assert rec["status"] == 200 and rec["rid"] == "r1" and rec["missing"] is None
        assert "forged" not in rec
        assert line.isascii() and "\n" not in line
    rec = json.loads(lines[0])
    assert rec["method"] == "GET" and rec["path"] == "/echo" and rec["query"] == 'a=%22b\\'
    assert rec["target"] == '/echo?a=%22b\\' and rec["request"] == 'GET /echo?a=%22b\\ HTTP/1.1'
    assert rec["protocol"] == "HTTP/1.1" and rec["scheme"] == "http"
    assert rec["ctype"] == "application/octet-stream" and rec["bytes"] == 0
    assert re.fullmatch(r"127\.0\.0\.1:\d+", rec["peer"])
    assert rec["client"] == rec["peer"]
    assert rec["worker"] == 0 and rec["worker_pid"] in set(sc_json.worker_pids())
    assert isinstance(rec["stream"], int) and rec["stream"] > 0
    for key in ("duration", "duration_ms", "queue_ms", "ttfb_ms", "msec"):
        assert isinstance(rec[key], float) and rec[key] >= 0, key
    assert rec["queue_ms"] <= rec["ttfb_ms"] <= rec["duration_ms"]
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", rec["time_local"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d",
                        rec["time_iso8601"])
    # the stream ids differ per request
    assert len({json.loads(x)["stream"] for x in lines}) == len(lines)


def test_json_client_is_the_one_the_proxy_saw_and_the_body_is_counted(sc_json):
    out = raw_request(sc_json, b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9"
                      b"\r\nX-Forwarded-Proto: https\r\nContent-Length: 5\r\n"
                      b"Connection: close\r\n\r\nhello")
    assert b"hello" in out
    rec = json.loads(lines_of(sc_json, 1, '"POST /echo')[0])
    assert rec["client"] == "203.0.113.9" and rec["scheme"] == "https"
    assert rec["peer"].startswith("127.0.0.1:") and rec["bytes"] == 5
    assert rec["ttfb_ms"] is not None


def test_a_request_answered_by_the_server_has_no_ttfb(tmp_path):
    """An app that returns without a response: the 500 is the server's, and no response
    start ever came from the worker."""
    with Sidecar("tests.e2e.apps:app", "--access-log-format", "json", workers=1,
                 ready_path="/pid", capture_stdout=True) as s:
        out = raw_request(s, b"GET /no-response HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 ")
        found = wait_for(lambda: [x for x in Path(s.stdout_path).read_text().splitlines()
                                  if "no-response" in x], 10, what="the line")
    rec = json.loads(found[0])
    assert list(rec) == ["time_iso8601", "peer", "client", "method", "path", "query",
                         "protocol", "status", "bytes", "referer", "user_agent", "duration_ms",
                         "queue_ms", "ttfb_ms", "worker", "stream"]
    assert rec["status"] == 500 and rec["ttfb_ms"] is None and rec["referer"] is None


def test_template_fields_are_escaped_and_missing_ones_are_a_dash():
    fmt = ('{peer} {client} "{request}" {status} {bytes} rid={header:x-request-id} '
           'evil="{header:x-evil}" ct={response_header:content-type} none={header:x-none} '
           'w={worker} s={stream} q={queue_ms} t={ttfb_ms} d={duration_ms} {{literal}}')
    with Sidecar("tests.e2e.apps:app", "--access-log-format", fmt, workers=1,
                 ready_path="/pid", capture_stdout=True) as s:
        raw_request(s, b'GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-1\r\n'
                       b'X-Evil: say "hi" \\ \xff\r\nConnection: close\r\n\r\n')
        line = lines_of(s, 1, "rid=abc-1")[0]
    m = re.fullmatch(r'127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ "GET /echo HTTP/1\.1" 200 0 rid=abc-1 '
                     r'evil="say \\x22hi\\x22 \\x5C \\xFF" ct=application/octet-stream none=- '
                     r'w=0 s=\d+ q=\d+\.\d{3} t=\d+\.\d{3} d=\d+\.\d{3} \{literal\}', line)
    assert m, line


def test_websocket_lines_use_the_format_too():
    from websockets.sync.client import connect

    with Sidecar("tests.e2e.ws_apps:app", "--access-log-format", "json", workers=1,
                 ready_path="/", capture_stdout=True) as s:
        with connect(f"ws://127.0.0.1:{s.port}/echo", additional_headers={"User-Agent": "w\"s"}
                     ) as ws:
            ws.send("hello")
            assert ws.recv() == "hello"
        found = wait_for(lambda: [x for x in Path(s.stdout_path).read_text().splitlines()
                                  if '"/echo"' in x], 10, what="the WebSocket's line")
    rec = json.loads(found[0])
    assert rec["status"] == 101 and rec["user_agent"] == 'w"s' and rec["worker"] == 0
    assert rec["bytes"] > 0


@pytest.mark.parametrize("fmt,message", [
    ("{nope}", "unknown field {nope}"),
    ("{header}", "unknown field {header}"),
    ("{cookie:x}", "unknown field {cookie:x}"),
    ("plain text", "no {field}"),
    ("{status", "unmatched '{'"),
    ("json:status,status", "repeated key"),
    ("json:", "at least one field"),
])
def test_a_bad_format_is_one_clear_line_and_exit_2(fmt, message):
    proc = subprocess.run([sys.executable, "-m", "sidecar", "tests.e2e.apps:app",
                           "--access-log-format", fmt], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--access-log-format" in proc.stderr
    assert message in proc.stderr, proc.stderr
