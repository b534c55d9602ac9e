"""Many clients at once (issue #3): 1,000 concurrent keep-alive connections.

The server is started with a low soft RLIMIT_NOFILE (256, as a shell or a unit might give it):
it must raise its own soft limit at start-up, or it could not accept the 1,000 connections.
"""
from __future__ import annotations

import asyncio
import os
import resource

import pytest

from tests.server import Sidecar

CONNECTIONS = 1000
REQUESTS_PER_CONNECTION = 3
LOW_SOFT_LIMIT = 256


class LowFdLimitSidecar(Sidecar):
    """A sidecar started with ``ulimit -Sn 256`` (exec keeps the pid: sc.proc.pid is sidecar)."""

    def command(self) -> list[str]:
        return ["sh", "-c", f'ulimit -Sn {LOW_SOFT_LIMIT} && exec "$@"', "sh",
                *super().command()]


def _raise_own_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # soft up to hard
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {need}: raise it (ulimit -Hn)")


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return 1 << 62 if soft == "unlimited" else int(soft)
    raise RuntimeError("no Max open files line")


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes]:
    writer.write(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert b"connection: close" not in head.lower()
    return status, await reader.readexactly(length)


async def _many_connections(sc) -> tuple[list[tuple[int, bytes]], int]:
    half = CONNECTIONS // 2
    # all connected at the same time: half over TCP, half over the Unix socket
    conns = await asyncio.gather(
        *[asyncio.open_connection("127.0.0.1", sc.port) for _ in range(half)],
        *[asyncio.open_unix_connection(sc.uds) for _ in range(CONNECTIONS - half)])
    try:
        results = []
        open_fds = 0
        for round_ in range(REQUESTS_PER_CONNECTION):
            results += await asyncio.gather(*[_request(r, w) for r, w in conns])
            if round_ == 0:  # every connection is open and has been served once
                open_fds = len(os.listdir(f"/proc/{sc.proc.pid}/fd"))
        return results, open_fds
    finally:
        for _, w in conns:
            w.close()
        await asyncio.gather(*[w.wait_closed() for _, w in conns], return_exceptions=True)


@pytest.fixture(scope="module")
def sc():
    _raise_own_limit(CONNECTIONS + 200)
    with LowFdLimitSidecar("tests.e2e.apps:app", ready_path="/pid", workers=2) as s:
        yield s


def test_server_raises_its_soft_fd_limit(sc):
    assert _soft_nofile(sc.proc.pid) > CONNECTIONS + 100, \
        "sidecar kept the low soft RLIMIT_NOFILE it was started with"


def test_1000_concurrent_keepalive_connections(sc):
    results, open_fds = asyncio.run(asyncio.wait_for(_many_connections(sc), 120))
    assert len(results) == CONNECTIONS * REQUESTS_PER_CONNECTION
    assert all(status == 200 for status, _ in results)
    pids = {int(body.split(b":")[1].strip(b" }")) for _, body in results}
    assert pids == set(sc.worker_pids())
    # the front-end held them all at once (plus its listeners, rings, eventfds...)
    assert open_fds >= CONNECTIONS
    # and it is still fine afterwards
    assert asyncio.run(asyncio.wait_for(_one_more(sc), 30)) == 200
    assert "Too many open files" not in sc.log()


async def _one_more(sc):
    r, w = await asyncio.open_connection("127.0.0.1", sc.port)
    try:
        return (await _request(r, w))[0]
    finally:
        w.close()
