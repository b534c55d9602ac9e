"""The floor of a front-end on uvloop: a server that answers every request head with one canned
response, and does nothing else -- no parsing beyond finding the end of each head, no app, no
ring, no worker.  What it spends per request is what the event loop and the socket calls cost
on this machine: the part of a front-end's cost per request that no code of ours can remove
while it keeps uvloop (``benchmarks/_servers.py`` kind ``floor``; ``nginx`` is the same floor
without Python: nginx's own ``return 200``).

    python -m benchmarks.floor --port 8000
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils

import uvloop

BODY = b"Hello, world!"


def response() -> bytes:
    """What ``benchmarks.apps:hello`` answers through sidecar, byte for byte in size: the same
    fields, a Date made once (the floor does not count making it)."""
    date = email.utils.formatdate(usegmt=True).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"date: %s\r\nserver: sidecar\r\n\r\n%s" % (len(BODY), date, BODY))


class Floor(asyncio.Protocol):
    """One keep-alive connection: a response per request head (``\\r\\n\\r\\n``), so pipelined
    heads and a head split over reads are answered once each.  Request bodies are not
    expected (the benchmarks send GETs)."""

    canned = b""

    def connection_made(self, transport) -> None:
        self.write = transport.write
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        if not self.tail and data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1:
            self.write(self.canned)   # the usual read: exactly one head
            return
        data = self.tail + data
        heads = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4:] if heads else data
        if heads:
            self.write(self.canned * heads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    Floor.canned = response()
    uvloop.install()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Floor, args.host, args.port, backlog=1024))
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
