"""The control socket's command registry, in-process over a real Unix socket: a registered
command receives the connection and can take it over and pass descriptors (issue #7's
``attach`` will), while the built-in commands keep answering on other connections."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile

import uvloop

from sidecar.frontend.control import ControlServer


def test_registered_command_takes_the_connection_and_passes_fds():
    with tempfile.TemporaryDirectory(prefix="ctl-") as d:
        path = os.path.join(d, "c.sock")
        rfd, wfd = os.pipe()
        os.write(wfd, b"through SCM_RIGHTS")
        os.close(wfd)

        async def give(conn, request):
            await conn.reply({"ok": True, "sending": 1})
            await conn.send_fds(b"F", [rfd])
            conn.writer.close()
            return None  # taken over: the server neither replies nor closes again

        async def main():
            lsock = socket.socket(socket.AF_UNIX)
            lsock.bind(path)
            lsock.listen()
            server = ControlServer(frontend=None, sock=lsock)
            server.register("give", give)
            await server.start()

            def client():
                with socket.socket(socket.AF_UNIX) as c:
                    c.settimeout(10)
                    c.connect(path)
                    c.sendall(b'{"cmd": "give"}\n')
                    buf = b""
                    while not buf.endswith(b"\n"):
                        buf += c.recv(1)
                    data, fds, _, _ = socket.recv_fds(c, 16, 4)
                    assert c.recv(16) == b""  # then closed
                    return json.loads(buf), data, fds

            reply, data, fds = await asyncio.to_thread(client)
            server.close()
            lsock.close()
            return reply, data, fds

        reply, data, fds = uvloop.run(main())
        os.close(rfd)
        assert reply == {"ok": True, "sending": 1} and data == b"F" and len(fds) == 1
        with os.fdopen(fds[0], "rb") as fh:
            assert fh.read() == b"through SCM_RIGHTS"
