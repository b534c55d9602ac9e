"""--access-log-format, unit by unit: the template and JSON compilers, every field from an
Entry, and escaping that no byte in a header can break (including the bytes the HTTP parser
would refuse, should a protocol one day let them through)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sidecar.frontend.access_format import DEFAULT_JSON, FIELDS, Entry, compile_format

HOSTILE = [bytes([b]) for b in range(256)] + [
    b'"}\n{"status": 200}', b"\r\nX: y", b"\\u0022", b"\xe2\x80\xa8 line sep", b"\xff\xfe",
    b"\x1b[31mred", b"a\x00b", b"\xed\xa0\x80 surrogate in utf-8"]


def entry(value: bytes = b"v", **kw) -> Entry:
    req = SimpleNamespace(method=b"GET", target=b"/p?q=1", http_version="1.1",
                          headers=[(b"user-agent", value), (b"referer", value),
                                   (b"x-a", value), (b"x-a", b"second")])
    args = dict(queue=0.001, ttfb=0.002, worker=1, worker_pid=42, sid=7,
                response_headers=[(b"Content-Type", b"text/plain")])
    args.update(kw)
    return Entry(req, 200, 10, 0.0031, "10.0.0.1:5", ["192.0.2.1", 0], "https", **args)


def test_combined_is_the_default_fast_path():
    assert compile_format("combined") is None


def test_every_field_in_json():
    fmt = compile_format("json:" + ",".join(FIELDS) + ",h=header:x-a,r=response_header:"
                         "content-type,n=header:nope")
    rec = json.loads(fmt.line(entry()))
    assert list(rec) == list(FIELDS) + ["h", "r", "n"]
    assert rec["request"] == "GET /p?q=1 HTTP/1.1" and rec["method"] == "GET"
    assert rec["target"] == "/p?q=1" and rec["path"] == "/p" and rec["query"] == "q=1"
    assert rec["protocol"] == "HTTP/1.1" and rec["scheme"] == "https"
    assert rec["status"] == 200 and rec["bytes"] == 10
    assert rec["referer"] == rec["user_agent"] == "v"
    assert rec["peer"] == "10.0.0.1:5" and rec["client"] == "192.0.2.1"
    assert rec["duration"] == 0.0031 and rec["duration_ms"] == 3.1
    assert rec["queue_ms"] == 1.0 and rec["ttfb_ms"] == 2.0
    assert rec["worker"] == 1 and rec["worker_pid"] == 42 and rec["stream"] == 7
    assert rec["h"] == "v, second" and rec["r"] == "text/plain" and rec["n"] is None
    assert isinstance(rec["msec"], float)


def test_missing_values_are_null_in_json_and_a_dash_in_text():
    e = entry(queue=None, ttfb=None, worker=None, worker_pid=None, response_headers=None)
    e.client = None
    rec = json.loads(compile_format("json").line(e))
    assert list(rec) == list(DEFAULT_JSON)
    assert rec["ttfb_ms"] is None and rec["worker"] is None and rec["client"] is None
    text = compile_format("{client} {ttfb_ms} {worker} {response_header:x} {query}").line(
        entry(queue=None, ttfb=None, worker=None, response_headers=None))
    assert text == "192.0.2.1 - - - q=1"


@pytest.mark.parametrize("value", HOSTILE)
def test_json_cannot_be_broken_or_forged(value):
    fmt = compile_format("json:ua=user_agent,referer,h=header:x-a,status")
    line = fmt.line(entry(value))
    assert "\n" not in line and "\r" not in line and line.isascii()
    rec = json.loads(line)
    assert list(rec) == ["ua", "referer", "h", "status"] and rec["status"] == 200
    assert rec["ua"] == value.decode("utf-8", "backslashreplace")


@pytest.mark.parametrize("value", HOSTILE)
def test_templates_escape_as_nginx(value):
    line = compile_format('"{user_agent}" {status}').line(entry(value))
    assert line.isascii() and line.isprintable()
    inner = line[1:line.rindex('"')]
    assert '"' not in inner
    assert line.endswith('" 200')


def test_literal_braces_and_text_are_kept():
    assert compile_format("{{ {status} }}").line(entry()) == "{ 200 }"


@pytest.mark.parametrize("spec", ["{x}", "{header}", "{header:}", "{Status}", "nothing",
                                  "{status", "status}", "json:a=", "json:", "{a\nb}",
                                  "line\nbreak {status}", "json:x=bogus"])
def test_mistakes_are_refused(spec):
    with pytest.raises(ValueError):
        compile_format(spec)
