"""The front-end leaves TCP_NODELAY to uvloop (HTTPConnection.connection_made no longer sets
it: a socket object and a syscall per connection).  This holds uvloop to that: every TCP
transport its servers make has Nagle's algorithm off, so a response head and its body written
apart are not held back for the client's delayed ACK."""
import asyncio
import socket

import uvloop


def test_uvloop_tcp_transports_have_nodelay():
    async def main():
        seen = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert uvloop.run(main()) != 0
