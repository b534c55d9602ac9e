"""TLS on the TCP listeners (--ssl-certfile and friends, sidecar/frontend/tls.py): a real
sidecar with a certificate made by openssl for this run, real clients (httpx, curl, the
websockets client, raw ssl sockets).  The Unix socket stays plain.
"""
from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.server import ROOT, Sidecar


def make_cert(directory, name: str, subject: str = "/CN=localhost") -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", subject, "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    return {"server": make_cert(d, "server"), "client": make_cert(d, "client"), "dir": d}


def trusting(cafile: str, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A client context that trusts cafile (and presents a client certificate)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if client is not None:
        ctx.load_cert_chain(*client)
    return ctx


class TLSSidecar(Sidecar):
    """A Sidecar whose TCP listener speaks TLS: url is https; readiness is checked over the
    Unix socket (which stays plain), so that it needs no client certificate."""

    def __init__(self, app: str, cert: str, key: str, *args: str, **kw):
        super().__init__(app, "--ssl-certfile", cert, "--ssl-keyfile", key, *args, **kw)
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert = cert

    def probe_address(self) -> tuple[int, object]:
        return socket.AF_UNIX, self.uds

    def client(self, uds: bool = False, **kw) -> httpx.Client:
        if uds:
            return super().client(uds=True, **kw)
        return httpx.Client(base_url=self.url, verify=trusting(self.cert),
                            timeout=kw.pop("timeout", 30), **kw)


@pytest.fixture(scope="module")
def sc(certs):
    cert, key = certs["server"]
    with TLSSidecar("tests.e2e.apps:app", cert, key, workers=2) as s:
        yield s


def test_https_get_and_the_scope(sc):
    with sc.client() as c:
        r = c.get("/scope?x=1")
    assert r.status_code == 200 and r.http_version == "HTTP/1.1"
    scope = r.json()
    assert scope["scheme"] == "https" and scope["query_string"] == "x=1"
    assert scope["server"] == ["127.0.0.1", sc.port]


def test_unix_socket_stays_plain(sc):
    with sc.client(uds=True) as c:
        assert c.get("/scope").json()["scheme"] == "http"
    ready = [line for line in sc.log().splitlines() if "sidecar ready on" in line]
    assert f"https://127.0.0.1:{sc.port}" in ready[0] and f"unix:{sc.uds}" in ready[0]


def test_bodies_both_ways_over_tls(sc):
    body = bytes(range(256)) * 8192   # 2 MiB
    with sc.client() as c:
        assert c.post("/echo", content=body).content == body
        n = 20 * 1024 * 1024
        digest = hashlib.sha256()
        with c.stream("GET", f"/zeros?n={n}") as r:
            for chunk in r.iter_bytes():
                digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(bytes(n)).hexdigest()


def test_pipelined_requests_over_tls(sc):
    ctx = trusting(sc.cert)
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n" * 3
                  + b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            out += data
    assert out.count(b"HTTP/1.1 200 OK") == 4


def test_curl_with_the_ca(sc, certs):
    out = subprocess.run(["curl", "-sS", "--cacert", sc.cert, f"{sc.url}/echo", "-d", "hi"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == b"hi", out.stderr
    # without the CA curl refuses the certificate: it is really TLS with this certificate
    out = subprocess.run(["curl", "-sS", f"{sc.url}/pid"], capture_output=True, timeout=30)
    assert out.returncode == 60


def test_plain_http_to_the_tls_port_is_dropped_and_nothing_else_is(sc):
    before = len(sc.log())
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        try:
            assert s.recv(100) == b""   # closed: not an HTTP answer in clear
        except ConnectionResetError:
            pass
    with sc.client() as c:
        assert c.get("/pid").status_code == 200
    assert "Traceback" not in sc.log()[before:]


def test_a_handshake_that_never_comes_is_dropped_after_the_header_timeout(certs):
    """A client that connects and sends nothing (no ClientHello) is closed after
    --timeout-header, like one that never sends a request head; others are served."""
    cert, key = certs["server"]
    with TLSSidecar("tests.e2e.apps:app", cert, key, "--timeout-header", "1", workers=1,
                    ready_path="/pid") as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as idle:
            t0 = time.monotonic()
            with s.client() as c:
                assert c.get("/pid").status_code == 200
            try:
                assert idle.recv(100) == b""
            except ConnectionResetError:
                pass
            assert 0.5 < time.monotonic() - t0 < 8


def test_websocket_over_tls_is_wss(certs):
    cert, key = certs["server"]
    with TLSSidecar("tests.e2e.ws_apps:app", cert, key, workers=1, ready_path="/pid") as s:
        ctx = trusting(cert)
        with connect(f"wss://127.0.0.1:{s.port}/scope", ssl=ctx, open_timeout=10) as ws:
            scope = json.loads(ws.recv(timeout=10))
    assert scope["scheme"] == "wss"


def test_client_certificates_required(certs):
    cert, key = certs["server"]
    ccert, ckey = certs["client"]
    with TLSSidecar("tests.e2e.apps:app", cert, key, "--ssl-ca-certs", ccert,
                    "--ssl-cert-reqs", "2", workers=1, ready_path="/pid") as s:
        with httpx.Client(verify=trusting(cert, (ccert, ckey)), timeout=10) as c:
            assert c.get(f"{s.url}/pid").status_code == 200
        with httpx.Client(verify=trusting(cert), timeout=10) as c, \
                pytest.raises(httpx.TransportError):
            c.get(f"{s.url}/pid")


@pytest.mark.parametrize("args,words", [
    (["--ssl-certfile", "/nonexistent/cert.pem"], "no such file"),
    (["--ssl-keyfile", "KEY"], "--ssl-keyfile needs --ssl-certfile"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "OTHERKEY"], "cannot load the TLS certificate"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-cert-reqs", "2"],
     "--ssl-ca-certs"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-ciphers", "NOPE"],
     "no cipher matches"),
])
def test_tls_mistakes_are_one_line_and_exit_2(certs, args, words):
    cert, key = certs["server"]
    other = certs["client"][1]
    args = [{"CERT": cert, "KEY": key, "OTHERKEY": other}.get(a, a) for a in args]
    out = subprocess.run([sys.executable, "-m", "sidecar", "tests.e2e.apps:app",
                          "--app-dir", str(ROOT), "--bind", "127.0.0.1:0", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_alpn_h2_with_httpx_and_curl(sc):
    with httpx.Client(base_url=sc.url, verify=trusting(sc.cert), http2=True, timeout=30) as c:
        r = c.get("/scope?x=1")
        assert r.http_version == "HTTP/2"
        scope = r.json()
        assert scope["http_version"] == "2" and scope["scheme"] == "https"
        body = bytes(range(256)) * 4096
        assert c.post("/echo", content=body).content == body
    r = subprocess.run(["curl", "-sS", "--http2", "--cacert", sc.cert, "-o", "/dev/null",
                        "-w", "%{http_version} %{http_code}", sc.url + "/pid"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "2 200", r.stderr


def test_no_http2_offers_only_http_1_1_by_alpn(certs):
    cert, key = certs["server"]
    with TLSSidecar("tests.e2e.apps:app", cert, key, "--no-http2", workers=1) as s:
        ctx = trusting(s.cert)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
        with httpx.Client(base_url=s.url, verify=trusting(s.cert), http2=True) as c:
            assert c.get("/pid").http_version == "HTTP/1.1"


# --- the ASGI tls extension (scope["extensions"]["tls"]) --------------------------------------

ALICE = "/C=FR/O=Example, Inc/CN=alice"


@pytest.fixture(scope="module")
def mtls(certs):
    """A TLS listener that asks for a client certificate (--ssl-cert-reqs 1: optional),
    trusting alice's."""
    cert, key = certs["server"]
    alice = make_cert(certs["dir"], "alice", ALICE)
    with TLSSidecar("tests.e2e.apps:app", cert, key, "--ssl-ca-certs", alice[0],
                    "--ssl-cert-reqs", "1", workers=1, ready_path="/pid") as s:
        s.alice = alice
        yield s


def der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def check_tls(tls: dict, sc, client_cert: str | None) -> None:
    assert set(tls) == {"server_cert", "client_cert_chain", "client_cert_name",
                        "client_cert_error", "tls_version", "cipher_suite"}
    with open(sc.cert) as fh:
        assert der(tls["server_cert"]) == der(fh.read())
    if client_cert is None:
        assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    else:
        with open(client_cert) as fh:
            assert [der(c) for c in tls["client_cert_chain"]] == [der(fh.read())]
        assert tls["client_cert_name"] == "CN=alice,O=Example\\, Inc,C=FR"
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] in (0x0303, 0x0304)
    # the IANA number of the suite the handshake chose (TLS 1.3's are 0x1301..0x1305)
    assert 0 < tls["cipher_suite"] <= 0xFFFF
    if tls["tls_version"] == 0x0304:
        assert 0x1301 <= tls["cipher_suite"] <= 0x1305


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_tls_extension_with_and_without_a_client_certificate(mtls, http2):
    with httpx.Client(verify=trusting(mtls.cert, mtls.alice), http2=http2, timeout=10) as c:
        r = c.get(f"{mtls.url}/tls")
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        check_tls(r.json()["tls"], mtls, mtls.alice[0])
        r = c.post(f"{mtls.url}/tls", content=b"x" * 100000)   # the packed request path too
        check_tls(r.json()["tls"], mtls, mtls.alice[0])
    with httpx.Client(verify=trusting(mtls.cert), http2=http2, timeout=10) as c:
        check_tls(c.get(f"{mtls.url}/tls").json()["tls"], mtls, None)


def test_tls_extension_with_curl_and_a_client_certificate(mtls):
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", mtls.cert, "--cert",
                          mtls.alice[0], "--key", mtls.alice[1], f"{mtls.url}/tls"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["http_version"] == "2"
    check_tls(got["tls"], mtls, mtls.alice[0])


def test_tls_extension_of_websockets_over_http1_and_http2(mtls):
    from tests.e2e.h2client import H2Client
    from tests.e2e.h2ws_client import H2WebSocket
    ctx = trusting(mtls.cert, mtls.alice)
    with connect(f"wss://127.0.0.1:{mtls.port}/tls", ssl=ctx, open_timeout=10) as ws:
        got = json.loads(ws.recv(timeout=10))
    assert got["http_version"] == "1.1"
    check_tls(got["tls"], mtls, mtls.alice[0])
    with H2Client(mtls.port, tls=trusting(mtls.cert, mtls.alice)) as c:
        got = json.loads(H2WebSocket(c, "/tls").recv())
    assert got["http_version"] == "2"
    check_tls(got["tls"], mtls, mtls.alice[0])


def test_no_tls_extension_on_the_plain_unix_socket(mtls):
    with mtls.client(uds=True) as c:
        assert c.get("/tls").json() == {"http_version": "1.1", "tls": None}
