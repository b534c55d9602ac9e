"""The front-end's own CPU cost per request, without sockets or wrk.

    python -m benchmarks.frontend                       # bare hello, wrk's one-field head
    python -m benchmarks.frontend --browser-headers     # the 13 fields a browser adds
    python -m benchmarks.frontend --app benchmarks.apps:starlette_app --path /json
    python -m benchmarks.frontend --websocket           # per echoed WebSocket message
    python -m benchmarks.frontend --http2 --concurrency 4 --streams 16   # h2load -c 4 -m 16

One front-end process: the real ``FrontEnd``, ``WorkerPool`` and ``WorkerLink`` with one real
worker process serving the app over the rings, and ``--concurrency`` keep-alive connections
whose transports are in-process fakes: a request head goes straight into
``HTTPConnection.data_received``, and when the response has been written the connection's
next request comes on a later loop turn, as it would from wrk.  So the figure is the
front-end's Python path -- parse, stream, dispatch, events, msgpack, ring, response head,
write batching -- with no send/recv syscalls and no client sharing the CPU.  CPU time of this
process only (``time.process_time``; the worker is another process) per request of each run,
with the minimum and the median: compare two versions of the code by alternating them.
``python -m benchmarks.cpu`` measures whole servers (syscalls included) under wrk, and
``python -m benchmarks.worker`` the worker's side of the same path.

Under the figures, per request (or message), medians of the runs: the ring doorbells rung each
way (data doorbells: eventfd writes to wake a reader that slept; space: a writer waiting for
room), the context switches of the front-end and of the worker processes
(/proc/PID/status), and the workers' CPU µs (not with ``--in-process``).

``--in-process`` runs the worker's real ``HostLink`` and the app in this process and loop
instead (the figure is then front-end + worker), so that the whole path can be counted under
``valgrind --tool=callgrind``, whose instruction counts, unlike CPU time on a shared machine,
repeat: the difference between two ``--requests`` counts, divided, is instructions per request.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import uvloop

from benchmarks import _procstat
from benchmarks.cpu import BROWSER_HEADERS
from benchmarks.worker import _Worker, run_options, summary
from sidecar import gc_tuning
from sidecar.config import Config
from sidecar.frontend.http_conn import HTTPConnection
from sidecar.frontend.link import WorkerLink
from sidecar.frontend.server import FrontEnd
from sidecar.ring import Consumer, Producer
from sidecar.worker.link import HostLink
from sidecar.worker.loader import load_app


class _Transport(asyncio.Transport):
    """Just enough of a uvloop TCP transport for HTTPConnection, counting whole responses."""

    def __init__(self, conn: HTTPConnection, on_response, port: int,
                 marker: bytes = b"HTTP/1.1 "):
        super().__init__()
        self.conn = conn
        self.on_response = on_response
        self.port = port
        self.closing = False
        self.bytes = 0
        self.marker = marker     # what starts one response in the bytes written

    def set_protocol(self, protocol) -> None:   # a WebSocket takes the connection over
        self.conn = protocol

    def get_protocol(self):
        return self.conn

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", self.port),
                "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data) -> None:
        self.bytes += len(data)
        n = bytes(data).count(self.marker)
        if n:
            self.on_response(self, n)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True


async def run_once(fe: FrontEnd, head: bytes, requests: int, concurrency: int) -> float:
    """CPU µs per request of one run of ``requests`` over ``concurrency`` connections."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    sent = done = 0

    def on_response(transport: _Transport, n: int) -> None:
        nonlocal sent, done
        done += n
        if transport.closing:
            if not finished.done():
                finished.set_exception(RuntimeError("the front-end closed a connection"))
            return
        if sent < requests:
            sent += 1
            loop.call_soon(transport.conn.data_received, head)
        elif done >= requests and not finished.done():
            finished.set_result(None)

    conns = []
    for i in range(concurrency):
        conn = HTTPConnection(fe)
        conn.connection_made(_Transport(conn, on_response, 40000 + i))
        conns.append(conn)
    start = time.process_time()
    for conn in conns[:requests]:
        sent += 1
        conn.data_received(head)
    await finished
    elapsed = time.process_time() - start
    for conn in conns:
        conn.connection_lost(None)
    return elapsed / requests * 1e6


async def run_once_close(fe: FrontEnd, head: bytes, requests: int, concurrency: int) -> float:
    """run_once with a new connection for each request (``head`` says ``Connection:
    close``): the connection is made (HTTPConnection, connection_made), serves its one
    request, is closed by the front-end, and is lost (connection_lost) before the next one
    on its place is made, as wrk -H 'Connection: close' does."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    sent = done = 0
    port = 40000

    def connect() -> None:
        nonlocal sent, port
        sent += 1
        port = port + 1 if port < 60000 else 40000
        conn = HTTPConnection(fe)
        conn.connection_made(_Transport(conn, on_response, port))
        conn.data_received(head)

    def lost(conn: HTTPConnection) -> None:
        conn.connection_lost(None)
        if sent < requests:
            connect()
        elif done >= requests and not finished.done():
            finished.set_result(None)

    def on_response(transport: _Transport, n: int) -> None:
        nonlocal done
        done += n
        loop.call_soon(lost, transport.conn)   # once the front-end has closed it

    start = time.process_time()
    for _ in range(min(concurrency, requests)):
        connect()
    await finished
    return (time.process_time() - start) / requests * 1e6


H2_END = 0x1   # END_STREAM


def _h2_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + \
        payload


def _h2_ended(data: bytes) -> int:
    """Responses ended (DATA or HEADERS with END_STREAM) in the server's frames ``data``."""
    n, i, end = 0, 0, len(data)
    while i + 9 <= end:
        if data[i + 3] <= 0x1 and data[i + 4] & H2_END:
            n += 1
        i += 9 + int.from_bytes(data[i:i + 3], "big")
    return n


class _H2Client:
    """One h2load-like client connection: ``streams`` GETs in flight, a new one for each
    response ended; its frames are made once (the HPACK block of an indexed request is the
    same bytes every time), so the figure is the server's work alone."""

    def __init__(self, transport: _Transport, fields: list, streams: int, paths: int = 0):
        from hpack import Encoder
        enc = Encoder()
        self.first_block = enc.encode(fields)   # literals: the server's table learns them
        self.block = enc.encode(fields)         # then indexed, the same bytes from now on
        # --distinct-paths: the :path of each request one of ``paths`` in turn (an API's
        # /users/{id}), a literal never indexed, so each block is the same bytes every time
        # it comes round and the client's encoder keeps no state between them
        path = dict(fields)[b":path"]
        self.blocks = [enc.encode([(n, v) if n != b":path" else
                                   (n, b"%s/%d?page=%d" % (path.rstrip(b"/"), i, i % 7), True)
                                   for n, v in fields]) for i in range(paths)]
        self.transport = transport
        self.sid = 1
        self.streams = streams
        self.buf = b""

    def preface(self) -> bytes:
        from sidecar.http.h2_connection import PREFACE
        return (PREFACE + _h2_frame(0x4, 0, 0, b"")
                + _h2_frame(0x8, 0, 0, (2 ** 31 - 1 - 65535).to_bytes(4, "big")))

    def requests(self, n: int) -> bytes:
        out = []
        blocks = self.blocks
        for _ in range(n):
            if self.sid == 1:
                block = self.first_block
            elif blocks:
                block = blocks[(self.sid >> 1) % len(blocks)]
            else:
                block = self.block
            out.append(_h2_frame(0x1, 0x5, self.sid, block))   # END_STREAM, END_HEADERS
            self.sid += 2
        return b"".join(out)


async def run_once_h2(fe: FrontEnd, fields: list, requests: int, concurrency: int,
                      streams: int, paths: int = 0) -> float:
    """CPU µs per request of one run of ``requests`` HTTP/2 GETs over ``concurrency``
    connections with ``streams`` in flight on each (h2load -c, -m)."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    sent = done = 0

    def on_write(transport: _Transport, data: bytes) -> None:
        nonlocal sent, done
        n = _h2_ended(data)
        if not n:
            return
        done += n
        if transport.closing:
            if not finished.done():
                finished.set_exception(RuntimeError("the front-end closed a connection"))
            return
        more = min(n, requests - sent)
        if more > 0:
            sent += more
            loop.call_soon(transport.conn.data_received, transport.client.requests(more))
        elif done >= requests and not finished.done():
            finished.set_result(None)

    transports = []
    for i in range(concurrency):
        conn = HTTPConnection(fe)
        transport = _Transport(conn, None, 40000 + i)
        transport.write = lambda data, t=transport: on_write(t, bytes(data))
        transport.client = _H2Client(transport, fields, streams, paths)
        conn.connection_made(transport)
        transport.conn.data_received(transport.client.preface())
        transports.append(transport)
    start = time.process_time()
    for transport in transports:
        n = min(streams, requests - sent)
        if n > 0:
            sent += n
            transport.conn.data_received(transport.client.requests(n))
    await finished
    elapsed = time.process_time() - start
    for transport in transports:
        transport.conn.connection_lost(None)
    return elapsed / requests * 1e6


WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
WS_ECHOED = b"\x81\x40"   # the server's frame: FIN, text, 64 bytes, unmasked


def ws_message() -> bytes:
    """A client's 64-byte text message, masked as a client sends it."""
    from websockets.frames import Frame, Opcode
    return Frame(Opcode.TEXT, b"x" * 64).serialize(mask=True)


async def run_once_ws(fe: FrontEnd, messages: int, concurrency: int) -> float:
    """CPU µs per echoed message of ``messages`` over ``concurrency`` WebSockets (the
    upgrades are not counted), as the ws_echo scenario of benchmarks.http drives them."""
    loop = asyncio.get_running_loop()
    opened = loop.create_future()
    finished = loop.create_future()
    frame = ws_message()
    sent = done = upgraded = 0

    def on_open(transport: _Transport, n: int) -> None:
        nonlocal upgraded
        transport.marker, transport.on_response = WS_ECHOED, on_echo
        upgraded += 1
        if upgraded == concurrency:
            opened.set_result(None)

    def on_echo(transport: _Transport, n: int) -> None:
        nonlocal sent, done
        done += n
        if transport.closing:
            if not finished.done():
                finished.set_exception(RuntimeError("the front-end closed a WebSocket"))
            return
        if sent < messages:
            sent += 1
            loop.call_soon(transport.conn.data_received, frame)
        elif done >= messages and not finished.done():
            finished.set_result(None)

    transports = []
    for i in range(concurrency):
        conn = HTTPConnection(fe)
        transport = _Transport(conn, on_open, 40000 + i, b"HTTP/1.1 101 ")
        conn.connection_made(transport)
        transports.append(transport)
        conn.data_received(WS_UPGRADE)
    await asyncio.wait_for(opened, 10)
    start = time.process_time()
    for transport in transports[:messages]:
        sent += 1
        transport.conn.data_received(frame)
    await finished
    elapsed = time.process_time() - start
    for transport in transports:
        transport.conn.connection_lost(None)
    return elapsed / messages * 1e6


async def in_process_workers(fe: FrontEnd, app_spec: str, n: int, board: bool = False):
    """``n`` WorkerLinks of the pool whose workers are HostLinks serving the app in this loop
    (the pool spawns no process).  ``board``: with the load board's bookkeeping, as front-end
    0 of two (--frontends 2) and its workers keep it.  Returns a function that closes them."""
    loop = asyncio.get_running_loop()
    app = load_app(app_spec)
    pairs = []
    if board:
        from sidecar.load_board import Board
        board = Board.create()
    for index in range(n):
        link = WorkerLink(index, fe.config.ring_capacity, lambda link, why: print(why),
                          fe.batcher, fe.pool.costs)
        worker = _Worker(app)
        if board:
            worker.board, worker.board_entry = board, board.assign(index + 1)
            worker._inflight_at, worker._ended_at = board.load_words(worker.board_entry)
            link.board = board.view(worker.board_entry, 0, 2)
        host = worker.link = HostLink(worker, 0, Consumer.attach(link.to_worker.spec().dup()),
                                      Producer.attach(link.to_host.spec().dup()),
                                      fe.config.window)
        hello = loop.create_future()
        link.start(loop, lambda link, hello=hello: hello.done() or hello.set_result(None))
        host.start(loop)
        await asyncio.wait_for(hello, 10)
        fe.pool.dispatcher.add(link)
        pairs.append((link, host))

    def close() -> None:
        for link, host in pairs:
            fe.pool.dispatcher.remove(link)
            host.close()
            link.close()
    return close


def wakeup_counters(fe: FrontEnd) -> dict:
    """The rings' doorbell counters (ring.md: data doorbells are the producers'
    ``consumer_wakeups``, space doorbells the consumers' ``producer_wakeups``) and the context
    switches and CPU time of this process and of each worker process."""
    links = [s.worker.link for s in fe.pool.slots if s.worker is not None]
    pids = [os.getpid()] + [s.worker.pid for s in fe.pool.slots
                            if s.worker is not None and s.worker.pid]
    out = _procstat.snapshot(pids)
    for name, ring, counter in (("data_to_worker", "to_worker", "consumer_wakeups"),
                                ("data_to_host", "to_host", "consumer_wakeups"),
                                ("space_to_worker", "to_worker", "producer_wakeups"),
                                ("space_to_host", "to_host", "producer_wakeups")):
        out[name] = sum(getattr(link, ring).stats()[counter] for link in links)
    return out


def wakeups_between(before: dict, after: dict, n: int) -> dict:
    """Per request (message) between two ``wakeup_counters``: doorbells of each kind and
    direction, context switches (voluntary, nonvoluntary) of the front-end and the workers,
    the workers' CPU µs."""
    spent = _procstat.per(before, after, n, _procstat.roles(True, before["pids"]))
    out = {name: (after[name] - before[name]) / n for name in
           ("data_to_worker", "data_to_host", "space_to_worker", "space_to_host")}
    out["ctx_frontend"] = spent["ctx"].get("front-end", 0.0)
    out["ctx_workers"] = spent["ctx_total"] - out["ctx_frontend"]
    out["worker_cpu_us"] = spent["cpu_us_total"] - spent["cpu_us"].get("front-end", 0.0)
    return out


def format_wakeups(counts: list[dict], unit: str) -> str:
    """The medians of ``wakeups_between`` over the runs, one line each."""
    med = {key: statistics.median(c[key] for c in counts) for key in counts[0]}
    return (f"per {unit} (median of runs): doorbells {med['data_to_worker']:.3f} to the "
            f"worker, {med['data_to_host']:.3f} to the front-end (space: "
            f"{med['space_to_worker'] + med['space_to_host']:.3f}); context switches "
            f"{med['ctx_frontend']:.3f} front-end, {med['ctx_workers']:.3f} workers; "
            f"workers' CPU {med['worker_cpu_us']:.1f} µs")


def main(argv: list[str] | None = None) -> int:
    ap = run_options("python -m benchmarks.frontend", __doc__.split("\n")[0],
                     "keep-alive connections")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="a field added to every request (repeatable)")
    ap.add_argument("--browser-headers", action="store_true",
                    help=f"add the {len(BROWSER_HEADERS)} fields a browser sends")
    ap.add_argument("--in-process", action="store_true",
                    help="run the worker's HostLink and the app in this process (see above)")
    ap.add_argument("--board", action="store_true",
                    help="with --in-process: the load board's bookkeeping of --frontends 2 "
                         "(front-end 0's and its workers' share), to count what it costs")
    ap.add_argument("--websocket", action="store_true",
                    help="echo 64-byte text messages over WebSockets instead (per message)")
    ap.add_argument("--new-connections", action="store_true",
                    help="each request on a new connection (Connection: close): what making, "
                         "serving and losing a connection costs")
    ap.add_argument("--http2", action="store_true",
                    help="HTTP/2 GETs (prior knowledge), --streams in flight per connection")
    ap.add_argument("--streams", type=int, default=16,
                    help="--http2: streams in flight per connection (h2load -m; 16)")
    ap.add_argument("--distinct-paths", type=int, default=0, metavar="N",
                    help="--http2: each request's :path one of N in turn (PATH/i?page=i%%7, "
                         "as an API's ids), not the same one every time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.board and not args.in_process:
        ap.error("--board goes with --in-process")
    if min(args.requests, args.runs, args.concurrency, args.workers) < 1:
        ap.error("--requests, --runs, --concurrency and --workers must be at least 1")
    fields = (BROWSER_HEADERS if args.browser_headers else ()) + tuple(args.header)
    if args.new_connections:
        fields += ("Connection: close",)
    head = "".join([f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"]
                   + [f"{f}\r\n" for f in fields] + ["\r\n"]).encode("latin-1")

    async def runs() -> list[float]:
        config = Config(app=args.app, workers=args.workers, access_log=False, control="off",
                        log_level="warning")
        fe = FrontEnd(config, [], owned_paths=[])
        if args.in_process:
            close = await in_process_workers(fe, args.app, args.workers, args.board)
        else:
            fe.pool.start()
            await asyncio.wait_for(fe.pool.wait_ready(), 60)
        gc_tuning.tune()   # as FrontEnd.run and Worker.run do once started
        if args.websocket:
            def once(n: int):
                return run_once_ws(fe, n, args.concurrency)
        elif args.http2:
            h2_fields = [(b":method", b"GET"), (b":scheme", b"http"),
                         (b":authority", b"127.0.0.1:8000"), (b":path", args.path.encode()),
                         (b"user-agent", b"h2load nghttp2/1.52.0")]
            h2_fields += [tuple(x.strip().lower().encode() for x in f.split(":", 1))
                          for f in fields]

            def once(n: int):
                return run_once_h2(fe, h2_fields, n, args.concurrency, args.streams,
                                   args.distinct_paths)
        elif args.new_connections:
            def once(n: int):
                return run_once_close(fe, head, n, args.concurrency)
        else:
            def once(n: int):
                return run_once(fe, head, n, args.concurrency)
        try:
            await once(args.requests // 4 or 1)  # warm-up
            out, counts = [], []
            for _ in range(args.runs):
                before = wakeup_counters(fe)
                out.append(await once(args.requests))
                counts.append(wakeups_between(before, wakeup_counters(fe), args.requests))
            return out, counts if not args.in_process else []
        finally:
            if args.in_process:
                close()
            else:
                await fe.pool.stop(5.0)

    result, counts = uvloop.run(runs())
    if args.json:
        print(json.dumps({"app": args.app, "path": args.path, "head_bytes": len(head),
                          "workers": args.workers,
                          "concurrency": args.concurrency, "requests": args.requests,
                          "us_per_request": result, "min": min(result),
                          "median": statistics.median(result), "wakeups": counts}))
        return 0
    what = "front-end + worker (in process)" if args.in_process else "front-end"
    if args.websocket:
        print(f"== {what} CPU µs per echoed 64-byte WebSocket message, {args.app}, "
              f"{args.concurrency} WebSockets, {args.workers} worker(s), "
              f"{args.runs} runs of {args.requests}")
    elif args.http2:
        print(f"== {what} CPU µs per HTTP/2 request, {args.app} {args.path}, "
              f"{args.concurrency} connections x {args.streams} streams, {args.workers} "
              f"worker(s), {args.runs} runs of {args.requests}")
    else:
        kind = "new connections at once" if args.new_connections else "connections"
        print(f"== {what} CPU µs per request, {args.app} {args.path}, {len(head)}-byte head, "
              f"{args.concurrency} {kind}, {args.workers} worker(s), "
              f"{args.runs} runs of {args.requests}")
    print(summary(result))
    if counts:
        print(format_wakeups(counts, "message" if args.websocket else "request"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
