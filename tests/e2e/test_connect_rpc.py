"""Connect RPC (PyPI ``connectrpc``): its Python client against a connect-python ASGI service
(tests/e2e/connect_app.py) served by sidecar -- unary, client-streaming, server-streaming and
bidi, in each of the client's three protocols (Connect, gRPC, gRPC-Web), over HTTP/2 with
prior knowledge (h2c) directly and through nginx (examples/nginx/grpc.conf, grpc_pass to
the Unix socket)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from connectrpc.client import ConnectClient
from connectrpc.protocol import ProtocolType
from pyqwest import Client, HTTPTransport, HTTPVersion

from tests.e2e.connect_app import CHAT, COLLECT, COUNT, SAY, Text
from tests.nginx import NginxServer
from tests.server import Sidecar

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = [ProtocolType.CONNECT, ProtocolType.GRPC, ProtocolType.GRPC_WEB]


@pytest.fixture(scope="module")
def sc():
    with Sidecar("tests.e2e.connect_app:app", workers=2) as s:
        yield s


async def _texts(*items: str):
    for item in items:
        yield Text(item)


async def _rpcs(base_url: str, protocol: ProtocolType) -> None:
    async with HTTPTransport(http_version=HTTPVersion.HTTP2) as transport, ConnectClient(
            base_url, protocol=protocol, http_client=Client(transport),
            timeout_ms=30000) as client:
        assert (await client.execute_unary(request=Text("hello"), method=SAY)).text == "HELLO"
        got = await client.execute_client_stream(request=_texts("a", "b", "c"),
                                                 method=COLLECT)
        assert got.text == "a,b,c"
        stream = client.execute_server_stream(request=Text("5"), method=COUNT)
        assert [m.text async for m in stream] == ["0", "1", "2", "3", "4"]
        stream = client.execute_bidi_stream(request=_texts("x", "y"), method=CHAT)
        got = [m.text async for m in stream]
        assert got == ["re: x", "re: y"]
        # many calls in flight at once on the client's HTTP/2 connection(s)
        says = await asyncio.gather(*(client.execute_unary(request=Text(f"m{i}"), method=SAY)
                                      for i in range(50)))
        assert [r.text for r in says] == [f"M{i}" for i in range(50)]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_connect_client_over_h2c(sc, protocol):
    asyncio.run(asyncio.wait_for(_rpcs(sc.url, protocol), 120))


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_connect_client_through_nginx_grpc_pass(sc, protocol):
    with NginxServer(sc.uds, site=ROOT / "examples" / "nginx" / "grpc.conf") as url:
        asyncio.run(asyncio.wait_for(_rpcs(url, protocol), 120))
