"""A small blocking HTTP/2 client over a real socket, on python-hyper's h2, for the tests that
need to control frames (windows never opened, floods, raw bytes) -- what httpx and curl hide."""
from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def get(path: str, authority: str = "sidecar") -> list:
    return [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]


class H2Client:
    """``H2Client(sc.port)`` (TCP; ``tls``: over TLS) or ``H2Client(uds=sc.uds)``; ``auto_window``: give back
    window as data arrives (False: the client never opens its window again)."""

    def __init__(self, port: int | None = None, *, uds: str | None = None,
                 auto_window: bool = True, settings: dict | None = None, tls=None):
        if uds is not None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(uds)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port))
        if tls is not None:   # an ssl.SSLContext: HTTP/2 by ALPN
            tls.set_alpn_protocols(["h2"])
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.settimeout(10)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.auto_window = auto_window
        self.stalled: set[int] = set()   # streams whose window is never opened again
        self.events: list = []
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.closed = False
        self.error: Exception | None = None   # a protocol error the client's h2 raised
        self.flush()

    def flush(self, raw: bytes = b"") -> None:
        data = self.conn.data_to_send() + raw
        if data:
            self.sock.sendall(data)

    def request(self, headers, body: bytes | None = None, open_body: bool = False) -> int:
        """A new stream; ``open_body``: its body is sent later (send_body)."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=body is None and not open_body)
        self.bodies[sid] = bytearray()
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=True)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool) -> None:
        view = memoryview(body)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pump(0.5)
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False once the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, BlockingIOError):
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            evs = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.error = exc
            evs = []
        for ev in evs:
            self.events.append(ev)
            if isinstance(ev, h2.events.DataReceived):
                self.bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                n = ev.flow_controlled_length
                if ev.stream_id in self.stalled:   # the connection's window only
                    if n:
                        self.conn.increment_flow_control_window(n)
                elif self.auto_window:
                    self.conn.acknowledge_received_data(n, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def until(self, predicate, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            if not self.pump(0.1) and not predicate():
                raise AssertionError(f"connection closed while waiting for {what}")

    def response(self, sid: int, timeout: float = 10.0) -> tuple[int, dict, bytes]:
        self.until(lambda: sid in self.ended, timeout, f"stream {sid}")
        head = next(e for e in self.events
                    if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        headers = dict(head.headers)
        return int(headers[":status"]), headers, bytes(self.bodies[sid])

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("server did not close the connection")
            self.pump(0.1)

    def goaway(self):
        ends = [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]
        return ends[0] if ends else None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
