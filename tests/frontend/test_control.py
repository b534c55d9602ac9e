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


def test_where_the_control_socket_goes(monkeypatch, tmp_path):
    import pytest

    from sidecar.frontend import control

    monkeypatch.delenv("SIDECAR_RUNTIME_DIR", raising=False)
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert control.runtime_dir(env) == "/run/sidecar"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert control.runtime_dir(env) == "/run/user/1000/sidecar"
    assert control.runtime_dir({}) == "/tmp/sidecar-1000"
    assert control.runtime_dir({"SIDECAR_RUNTIME_DIR": "/x", **env}) == "/x"
    monkeypatch.undo()
    with socket.socket() as tcp4, socket.socket(socket.AF_INET6) as tcp6:
        tcp4.bind(("127.0.0.1", 0))
        tcp6.bind(("::1", 0))
        p4, p6 = tcp4.getsockname()[1], tcp6.getsockname()[1]
        env = {"SIDECAR_RUNTIME_DIR": "/rt"}
        # systemd's RuntimeDirectory= and --uds first, as before
        assert control.default_path("s.sock", {"RUNTIME_DIRECTORY": "/run/a:/run/b"},
                                    [tcp4]) == "/run/a/control.sock"
        assert control.default_path("s.sock", env, [tcp4]) == "s.sock.ctl"
        assert control.default_path(None, env, [tcp4, tcp6]) == f"/rt/127.0.0.1:{p4}.ctl"
        assert control.default_path(None, env, [tcp6]) == f"/rt/[::1]:{p6}.ctl"
        assert control.default_path(None, env, []) is None
        with socket.socket(socket.AF_UNIX) as unix:   # e.g. passed in by socket activation
            assert control.default_path(None, env, [unix, tcp4]) is None
    # the runtime directory: made 0700; one another user could write to is refused
    made = tmp_path / "a" / "sidecar"
    control.ensure_dir(str(made))
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    made.chmod(0o777)
    with pytest.raises(control.Unusable, match="another user"):
        control.ensure_dir(str(made))
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(control.Unusable, match="not a directory"):
        control.ensure_dir(str(tmp_path / "link"))
