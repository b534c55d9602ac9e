"""response_head: framing and head in one call, and its C speedup (h1_response_head).

The rule is the request parser's: for any input the C function either declines or gives
exactly what the Python path gives (``response_framing`` + ``serialize_response_head``, and
the keep-alive they imply).  The rows run on both paths (tests/http/conftest.py); the
differential test builds random header lists, good and bad, and compares the two paths'
results or errors; the last tests pin what the C path must take (else it speeds nothing up).
"""
from __future__ import annotations

import random

import pytest

from sidecar.http import h1, h1_response
from sidecar.http.h1_response import HeaderError, response_head, response_whole

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"


def rh(status=200, headers=(), *, method=b"GET", version="1.1", keep_alive=True, date=DATE,
       server=b"sidecar"):
    return response_head(status, list(headers), method=method, http_version=version,
                         keep_alive=keep_alive, date=date, server=server)


ROWS = [
    # status, headers, kwargs -> (lines after the status line, chunked, length, keep_alive)
    (200, [(b"content-length", b"2")], {},
     ([b"content-length: 2", b"server: sidecar", b"date: " + DATE], False, 2, True)),
    (200, [], dict(date=None, server=None), ([b"transfer-encoding: chunked"], True, None, True)),
    (200, [], dict(method=b"HEAD", date=None, server=None), ([], False, 0, True)),
    (200, [], dict(version="1.0", date=None, server=None),
     ([b"connection: close"], False, None, False)),        # close-delimited body
    (200, [(b"Content-Length", b" 5\t")], dict(version="1.0", date=None, server=None),
     ([b"Content-Length:  5\t", b"connection: keep-alive"], False, 5, True)),
    (200, [(b"Connection", b"Keep-Alive, CLOSE")], dict(date=None, server=None),
     ([b"connection: close", b"transfer-encoding: chunked"], True, None, False)),
    (200, [(b"transfer-encoding", b"gzip"), (b"connection", b"keep-alive")],
     dict(keep_alive=False, date=None, server=None),
     ([b"connection: close", b"transfer-encoding: chunked"], True, None, False)),
    (204, [(b"Date", b"x"), (b"SERVER", b"app")], {}, ([b"Date: x", b"SERVER: app"], False, 0,
                                                       True)),
    (304, [(b"content-length", b"100")], dict(server=None),
     ([b"content-length: 100", b"date: " + DATE], False, 0, True)),
    (101, [(b"upgrade", b"websocket"), (b"connection", b"close, Upgrade")],
     dict(date=None, server=None),
     ([b"upgrade: websocket", b"connection: close, Upgrade"], False, 0, True)),
    (299, [(b"x", b"")], dict(date=None, server=None),
     ([b"x: ", b"transfer-encoding: chunked"], True, None, True)),
]


@pytest.mark.parametrize("status,headers,kw,expected", ROWS)
def test_rows(status, headers, kw, expected):
    lines, chunked, length, keep = expected
    head, got_chunked, got_length, got_keep = rh(status, headers, **kw)
    assert head.endswith(b"\r\n\r\n")
    first, *rest = head[:-4].split(b"\r\n")
    assert first.startswith(b"HTTP/1.1 %d " % status)
    assert (rest, got_chunked, got_length, got_keep) == (lines, chunked, length, keep)


@pytest.mark.parametrize("status,headers,kw", [
    (200, [(b"content-length", b"1"), (b"content-length", b"2")], {}),
    (200, [(b"content-length", b"")], {}),
    (200, [(b"content-length", b"1" * 19)], {}),
    (204, [(b"content-length", b"x")], {}),
    (200, [(b"x y", b"v")], {}),
    (200, [(b"", b"v")], {}),
    (200, [(b"x", b"a\r\nInjected: 1")], {}),
    (200, [(b"x", b"a\x00b")], {}),
    (200, [(b"x", b"a\x00b"), (b"y",)], {}),   # NULs that would line up with a short pair
    (200, [(b"x", b"v", b"w")], {}),
    (200, [(b"x",)], {}),
    (200, [("x", b"v")], {}),
    (200, [(b"x", 5)], {}),
    (200, [], dict(server=b"a\r\nb")),
    (200, [], dict(date=b"a\x00b")),
    (99, [], {}), (600, [], {}), (True, [], {}), ("200", [], {}),
])
def test_refused(status, headers, kw):
    with pytest.raises((HeaderError, TypeError, ValueError)):
        rh(status, headers, **kw)


def test_extra_fields_come_first_on_both_paths():
    extra = ((b"x-frame-options", b"DENY"), (b"strict-transport-security", b"max-age=60"))
    head, chunked, length, keep = response_head(
        200, [[b"content-length", b"0"]], method=b"GET", http_version="1.1", keep_alive=True,
        date=None, server=b"edge", extra=extra)
    assert head == (b"HTTP/1.1 200 OK\r\nx-frame-options: DENY\r\n"
                    b"strict-transport-security: max-age=60\r\ncontent-length: 0\r\n"
                    b"server: edge\r\n\r\n")
    assert (chunked, length, keep) == (False, 0, True)
    assert response_head(204, [], method=b"GET", http_version="1.1", keep_alive=True,
                         date=None, server=None, extra=extra[:1])[0] == (
        b"HTTP/1.1 204 No Content\r\nx-frame-options: DENY\r\n\r\n")


def test_a_head_over_the_c_buffer_takes_the_python_path():
    big = [(b"x-%d" % i, b"v" * 1000) for i in range(80)]
    head, chunked, length, keep = rh(200, big)
    lines = head.split(b"\r\n")
    assert len(head) > 80_000 and lines[1:81] == [b"x-%d: " % i + b"v" * 1000 for i in range(80)]
    assert lines[81:] == [b"server: sidecar", b"date: " + DATE, b"transfer-encoding: chunked",
                          b"", b""]
    assert chunked and length is None and keep


# --- the two paths compared ------------------------------------------------------------

NAMES = [b"content-type", b"Content-Length", b"content-length", b"date", b"Date", b"server",
         b"connection", b"Connection", b"transfer-encoding", b"x-a", b"set-cookie", b"X_Y",
         b"bad name", b"", b"a:b", b"\xff", b"te", b"CONTENT-LENGTH"]
VALUES = [b"", b"text/plain", b"0", b"12", b" 12 ", b"012", b"1" * 18, b"1" * 19, b"-1", b"1,1",
          b"close", b"keep-alive", b"Upgrade, Close", b"chunked", b"a\rb", b"a\nb", b"a\x00b",
          b"\xe2\x82\xac", b"\t x \t", b"x" * 300]


def _random_headers(rng: random.Random) -> list:
    out = []
    for _ in range(rng.randrange(0, 7)):
        r = rng.random()
        if r < 0.02:
            out.append((rng.choice(NAMES),))
        elif r < 0.04:
            out.append((rng.choice(NAMES), rng.choice(VALUES), b"z"))
        elif r < 0.06:
            out.append([rng.choice(NAMES).decode("latin-1"), rng.choice(VALUES)])
        else:
            out.append([rng.choice(NAMES[:12]) if rng.random() < 0.8 else rng.choice(NAMES),
                        rng.choice(VALUES[:13]) if rng.random() < 0.8 else rng.choice(VALUES)])
    return out


def _outcome(speedups: bool, monkeypatch, *args, **kw):
    monkeypatch.setattr(h1, "speedups", speedups)
    try:
        return response_head(*args, **kw)
    except (HeaderError, TypeError, ValueError) as exc:
        return type(exc).__name__ == "HeaderError" or isinstance(exc, (TypeError, ValueError))


def test_c_and_python_agree_on_random_heads(monkeypatch):
    if not h1.HAVE_SPEEDUPS:
        pytest.fail("sidecar._h1 is not built (pip install -e . or python build_ffi.py)")
    rng = random.Random(20261204)
    taken = 0
    for _ in range(20000):
        status = rng.choice([200, 200, 201, 204, 304, 101, 103, 299, 404, 500, 599, 99, 600])
        args = (status, _random_headers(rng))
        kw = dict(extra=rng.choice([(), (), ((b"x-extra", b"1"),),
                                    ((b"a", b"b"), (b"Content-Length", b"7"))]),
                  method=rng.choice([b"GET", b"HEAD", b"POST"]),
                  http_version=rng.choice(["1.1", "1.1", "1.0"]),
                  keep_alive=rng.random() < 0.8,
                  date=rng.choice([DATE, None, b"bad\r\n"]) if rng.random() < 0.1 else DATE,
                  server=rng.choice([b"sidecar", None, b"a\x00"]) if rng.random() < 0.1
                  else b"sidecar")
        c = _outcome(True, monkeypatch, *args, **kw)
        py = _outcome(False, monkeypatch, *args, **kw)
        assert c == py, (args, kw)
        if isinstance(c, tuple) and _c_takes(*args, **kw):
            taken += 1
    assert taken > 5000   # the C path really ran, not only the fallback


def _c_takes(status, headers, *, method, http_version, keep_alive, date, server,
             extra=()) -> bool:
    """Whether h1_response_head itself accepts this (no Python fallback)."""
    ffi, lib = h1._ffi, h1._lib
    line = h1_response._STATUS_LINES.get(status)
    if line is None or type(status) is not int:
        return False
    try:
        fields = b"\n".join(b"\0".join(pair) for pair in [*extra, *headers])
    except TypeError:
        return False
    out = ffi.new("char[]", 1 << 16)
    resp = ffi.new("int64_t[]", lib.H1_RESP_NFACTS)
    flags = ((lib.H1_RESP_HEAD_REQUEST if method == b"HEAD" else 0)
             | (lib.H1_RESP_HTTP10 if http_version == "1.0" else 0)
             | (lib.H1_RESP_KEEP_ALIVE if keep_alive else 0))
    n = lib.h1_response_head(status, line, len(line), fields, len(fields),
                             len(headers) + len(extra), flags,
                             ffi.NULL if date is None else date, len(date or b""),
                             ffi.NULL if server is None else server, len(server or b""),
                             out, 1 << 16, resp)
    return n > 0


@pytest.mark.parametrize("headers", [
    [], [[b"content-type", b"text/plain"], [b"content-length", b"13"]],
    [[b"content-type", b"application/json"], [b"set-cookie", b"a=b; Path=/; HttpOnly"],
     [b"Cache-Control", b"no-store"], [b"x-request-id", b"\xe2\x82\xac"]],
])
def test_ordinary_heads_take_the_c_path(headers):
    if not h1.HAVE_SPEEDUPS:
        pytest.fail("sidecar._h1 is not built (pip install -e . or python build_ffi.py)")
    for method in (b"GET", b"HEAD"):
        for version in ("1.1", "1.0"):
            assert _c_takes(200, headers, method=method, http_version=version,
                            keep_alive=True, date=DATE, server=b"sidecar")


# --- response_whole: head and body in one buffer (C: h1_response) -----------------------

BODIES = [b"", b"x", b"hello", b"\r\n0\r\n\r\n", b"y" * 255, b"z" * 4096, b"w" * 70_000]


def _whole_outcome(speedups: bool, monkeypatch, status, headers, body, **kw):
    monkeypatch.setattr(h1, "speedups", speedups)
    try:
        return response_whole(status, headers, body, **kw)
    except (HeaderError, TypeError, ValueError):
        return "refused"


def _whole_by_hand(status, headers, body, **kw):
    """What the connection writes for a head and a whole body sent one after the other."""
    head, chunked, _, keep = response_head(status, headers, **kw)
    if kw["method"] == b"HEAD":
        return head, chunked, keep
    if chunked:
        return head + h1_response.encode_chunk(body) + h1_response.LAST_CHUNK, chunked, keep
    return head + body, chunked, keep


def test_whole_responses_agree_with_head_then_body_on_both_paths(monkeypatch):
    if not h1.HAVE_SPEEDUPS:
        pytest.fail("sidecar._h1 is not built (pip install -e . or python build_ffi.py)")
    rng = random.Random(20261207)
    taken = 0
    for _ in range(4000):
        status = rng.choice([200, 200, 201, 204, 304, 101, 103, 299, 404, 500, 599, 99, 600])
        headers = _random_headers(rng)
        body = rng.choice(BODIES)
        kw = dict(extra=rng.choice([(), (), ((b"x-extra", b"1"),)]),
                  method=rng.choice([b"GET", b"HEAD", b"POST"]),
                  http_version=rng.choice(["1.1", "1.1", "1.0"]),
                  keep_alive=rng.random() < 0.8,
                  date=rng.choice([DATE, None, b"bad\r\n"]) if rng.random() < 0.1 else DATE,
                  server=b"sidecar")
        c = _whole_outcome(True, monkeypatch, status, headers, body, **kw)
        py = _whole_outcome(False, monkeypatch, status, headers, body, **kw)
        assert c == py, (status, headers, body[:20], kw)
        if c != "refused":
            monkeypatch.setattr(h1, "speedups", False)
            assert c == _whole_by_hand(status, headers, body, **kw)
            taken += len(body) < 60_000 and _c_takes(status, headers, **kw)
    assert taken > 1000   # the C path really ran, not only the fallback


def test_whole_responses_take_the_c_api_path_where_the_c_head_does(monkeypatch):
    """sidecar._h1api's response (native/h1_api.c) is what response_whole runs first: it
    answers wherever the cffi call would, with the same bytes, and leaves the rest (None)."""
    if h1_response._api_response is None:
        pytest.fail("sidecar._h1api is not built (pip install -e .)")
    rng = random.Random(25)
    answered = 0
    for _ in range(2000):
        status = rng.choice([200, 201, 204, 304, 404, 599, 600])
        headers = _random_headers(rng)
        body = rng.choice(BODIES)
        kw = dict(method=rng.choice([b"GET", b"HEAD"]), http_version=rng.choice(["1.1", "1.0"]),
                  keep_alive=rng.random() < 0.8, date=DATE, server=rng.choice([b"sidecar", None]),
                  extra=rng.choice([(), ((b"x-extra", b"1"),)]))
        got = h1_response._api_response(status, headers, body, kw["method"],
                                         kw["http_version"], kw["keep_alive"], kw["date"],
                                         kw["server"], kw["extra"])
        fits = len(body) < 60_000 or kw["method"] == b"HEAD"   # a HEAD answer has no body
        takes = fits and _c_takes(status, headers, **kw)
        assert (got is not None) == takes, (status, headers, kw)
        if got is not None:
            answered += 1
            assert got == _whole_outcome(False, monkeypatch, status, headers, body, **kw)
    assert answered > 500
    # what is not two bytes objects per pair is left to the Python path
    for odd in ([(b"a", b"b", b"c")], [(b"a",)], [(bytearray(b"a"), b"b")], [(b"a", "b")],
                ((b"a", b"b") for _ in ()), [[b"a", b"b"], None]):
        assert h1_response._api_response(200, odd, b"", b"GET", "1.1", True, None, None,
                                         ()) is None


@pytest.mark.parametrize("headers, body, kw, expected", [
    ([[b"content-length", b"2"]], b"ok", {}, b"content-length: 2\r\n\r\nok"),
    ([], b"abc", {}, b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ([], b"", {}, b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
    ([], b"q" * 300, {}, b"chunked\r\n\r\n12c\r\n" + b"q" * 300 + b"\r\n0\r\n\r\n"),
    ([[b"content-length", b"4"]], b"body", dict(method=b"HEAD"), b"content-length: 4\r\n\r\n"),
    ([], b"to the end", dict(version="1.0"), b"connection: close\r\n\r\nto the end"),
])
def test_whole_rows(headers, body, kw, expected):
    kw = dict(dict(method=b"GET", version="1.1"), **kw)
    data, chunked, keep = response_whole(
        200, headers, body, method=kw["method"], http_version=kw["version"], keep_alive=True,
        date=None, server=None)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(expected)
    assert keep == (kw["version"] == "1.1")


@pytest.mark.parametrize("headers", [[(b"bad name", b"x")], [(b"x", b"a\nb")],
                                     [(b"content-length", b"1"), (b"content-length", b"2")]])
def test_whole_refuses_what_the_head_refuses(headers):
    with pytest.raises(HeaderError):
        response_whole(200, headers, b"x", method=b"GET", http_version="1.1",
                       keep_alive=True, date=None, server=None)
