"""One WebSocket inside the worker: the ASGI ``receive``/``send`` pair of a websocket stream.

The host (front-end) owns the framing; here are ASGI messages only:

- ``receive()``: ``websocket.connect`` first, then ``websocket.receive`` ({text} or {bytes})
  for each WS_RECEIVE message (reassembled from its ``more`` chunks), then
  ``websocket.disconnect`` {code, reason} once WS_DISCONNECT (or DISCONNECT) came.
- ``send()``: ``websocket.accept`` -> WS_ACCEPT, ``websocket.send`` -> WS_SEND (chunked,
  awaiting send credit like a response body), ``websocket.close`` -> WS_CLOSE, and the denial
  extension ``websocket.http.response.start/body`` -> RESPONSE_START/RESPONSE_BODY.

Flow control (docs/protocol.md): WS_RECEIVE data counts against the window (``len(data)``:
bytes, or characters of text).  Chunks of a message still incomplete are credited as they
arrive (the host bounds a message's size); a complete message is credited when the app takes
it from ``receive()`` -- an app that stops reading stops the client.  ``send()`` spends
``send_credit`` and waits for SEND_CREDIT.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from sidecar.events import (
    DISCONNECT, FRAMING, MAX_CHUNK, RECV_CREDIT, RESPONSE_BODY, RESPONSE_START, SEND_CREDIT,
    WS_ACCEPT, WS_CLOSE, WS_DISCONNECT, WS_RECEIVE, WS_SEND, ProtocolError, pack,
)

from .http_stream import (ClientDisconnected, Waiting, _as_bytes, _check_headers,
                          describe_error)

__all__ = ["WsStream"]

log = logging.getLogger("sidecar.worker")


class WsStream(Waiting):
    """State of one WebSocket stream; ``handlers`` maps the host's event kinds to methods."""

    __slots__ = (
        "link", "sid", "scope", "task", "messages", "parts", "parts_text", "recv_outstanding",
        "unacked", "send_credit", "waiters", "connected", "accepted", "closed", "denial",
        "denial_done", "disconnected", "close_code", "close_reason", "finished",
    )

    def __init__(self, link, sid: int, scope: dict):
        self.link = link
        self.sid = sid
        self.scope = scope
        self.task: asyncio.Task | None = None
        self.messages: deque = deque()   # (message dict, units) ready for receive()
        self.parts: list = []            # chunks of the message being received
        self.parts_text = False
        self.recv_outstanding = 0        # units received and not yet credited back
        self.unacked = 0                 # of those, units owed as credit
        self.send_credit = link.window
        self.waiters: list | None = None
        self.connected = False           # websocket.connect was delivered
        self.accepted = False
        self.closed = False              # the app sent websocket.close
        self.denial = False              # websocket.http.response.start sent
        self.denial_done = False
        self.disconnected = False
        self.close_code = 1006
        self.close_reason = ""
        self.finished = False            # APP_DONE sent

    # --- the app's side ------------------------------------------------------------------

    async def run(self) -> None:
        error = "worker error"
        try:
            await self.link.worker.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            error = "CancelledError: stream cancelled by the worker"
        except Exception as exc:
            error = describe_error(exc)
            if self.disconnected and isinstance(exc, OSError):
                # the app noticed the client left (send() raised): not an app error
                log.debug("websocket client gone: %s: %s", self.scope["path"], error)
                error = None
            else:
                log.error("Exception in ASGI application (websocket %s)", self.scope["path"],
                          exc_info=exc)
        else:
            error = None
            if self.denial and not self.denial_done:
                error = "ASGI callable returned without completing the denial response"
        finally:
            self.link.stream_done(self, error)

    async def receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while True:
            messages = self.messages
            if messages:
                message, units = messages.popleft()
                owed = self.unacked + units
                if owed >= self.link.credit_batch:
                    self._grant(owed)
                else:
                    self.unacked = owed
                return message
            if self.disconnected:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            # Never block while the host might wait for credit: it may, once less than a chunk
            # of credit is left (small messages then cost no RECV_CREDIT each).
            if self.unacked and (self.link.window - self.recv_outstanding
                                 < min(MAX_CHUNK, self.link.window)):
                self._grant(self.unacked)
            # Waiting._wait, written out (once a message: no coroutine of its own)
            fut = self.link.loop.create_future()
            if self.waiters is None:
                self.waiters = [fut]
            else:
                self.waiters.append(fut)
            await fut

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if not self.accepted or self.closed:
                raise RuntimeError("websocket.send before websocket.accept" if not self.accepted
                                   else "websocket.send after websocket.close")
            if self.disconnected:
                raise ClientDisconnected("websocket client disconnected")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if type(data) is not str:
                    raise TypeError("websocket.send needs 'bytes' or 'text'")
            elif type(data) is not bytes:
                data = _as_bytes(data)
            n = len(data)
            if n <= self.send_credit and 4 * n <= self.link.chunk:
                # the common case, _send_data's first and last chunk written out: a whole
                # message in one record (4 * n: UTF-8 bytes a character, at most)
                self.send_credit -= n
                waiter = self.link.push([WS_SEND, self.sid, data, False],
                                        (4 * n if type(data) is str else n) + FRAMING)
                if waiter is not None:
                    await waiter
                return
            await self._send_data(WS_SEND, data, True)
        elif kind == "websocket.accept":
            if self.accepted or self.closed or self.denial:
                raise RuntimeError("websocket.accept in the wrong state")
            if self.disconnected:
                raise ClientDisconnected("websocket client disconnected")
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and type(subprotocol) is not str:
                raise TypeError("websocket.accept subprotocol must be a str or None")
            headers = _check_headers(message.get("headers") or [])
            self.accepted = True
            await self._push(pack([WS_ACCEPT, self.sid, subprotocol, headers]))
        elif kind == "websocket.close":
            if self.closed or self.denial:
                raise RuntimeError("websocket.close in the wrong state")
            if self.disconnected:
                return  # closing what the client already closed: nothing to do
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            if type(code) is not int or type(reason) is not str:
                raise TypeError("websocket.close code must be an int and reason a str")
            self.closed = True
            await self._push(pack([WS_CLOSE, self.sid, code, reason]))
        elif kind == "websocket.http.response.start":
            if self.accepted or self.closed or self.denial:
                raise RuntimeError("websocket.http.response.start in the wrong state")
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 999:
                raise RuntimeError(f"bad response status {status!r}")
            headers = _check_headers(message.get("headers", ()))
            self.denial = True
            await self._push(pack([RESPONSE_START, self.sid, status, headers, False]))
        elif kind == "websocket.http.response.body":
            if not self.denial or self.denial_done:
                raise RuntimeError("websocket.http.response.body outside a denial response")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = _as_bytes(body)
            more = True if message.get("more_body") else False
            if not more:
                self.denial_done = True
            await self._send_data(RESPONSE_BODY, body, more)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} on a websocket")

    async def _send_data(self, kind: int, data, last_more: bool) -> None:
        """WS_SEND (whole message: ``more`` marks chunks but the last) or RESPONSE_BODY
        (``last_more`` is the app's more_body), in chunks that wait for credit."""
        link = self.link
        size = link.chunk
        # UTF-8 bytes per character, at most: for the chunk size and push's bound
        wide = 4 if type(data) is str and not data.isascii() else 1
        if wide > 1:
            size = max(1, size // 4)  # a chunk must fit a record once UTF-8 encoded
        total = len(data)
        ws = kind == WS_SEND
        start = 0
        while True:
            piece = data[start:start + size] if total > size else data
            n = len(piece)
            while self.send_credit < n and not self.disconnected:
                await self._wait()
            if self.disconnected:
                raise ClientDisconnected("websocket client disconnected")
            self.send_credit -= n
            start += size
            more = start < total
            # queued unpacked: the turn's events are packed by one msgpack call
            if ws:
                waiter = link.push([WS_SEND, self.sid, piece, more], wide * n + FRAMING)
            else:
                waiter = link.push([RESPONSE_BODY, self.sid, piece, more or last_more],
                                   n + FRAMING)
            if waiter is not None:
                await waiter
            if not more:
                return

    async def _push(self, payload: bytes) -> None:
        waiter = self.link.push(payload, len(payload))
        if waiter is not None:
            await waiter

    # --- the host's side -------------------------------------------------------------------

    def on_receive(self, ev: list) -> None:
        data, more = ev[2], ev[3]
        n = len(data)
        self.recv_outstanding += n
        if self.recv_outstanding > self.link.window:
            raise ProtocolError("host sent more websocket data than the window allows", self.sid)
        if self.disconnected:
            return
        text = type(data) is str
        parts = self.parts
        if parts and text is not self.parts_text:
            raise ProtocolError("websocket message chunks of mixed types", self.sid)
        if more:
            parts.append(data)
            self.parts_text = text
            self.unacked += n  # an incomplete message is credited now: it cannot be taken yet
            if self.unacked >= self.link.credit_batch:
                self._grant(self.unacked)
            return
        units = n
        if parts:
            parts.append(data)
            data = ("" if text else b"").join(parts)
            parts.clear()
            units = n  # the earlier chunks were credited already
        self.messages.append(({"type": "websocket.receive", "text": data} if text else
                              {"type": "websocket.receive", "bytes": data}, units))
        self._wake()

    def on_ws_disconnect(self, ev: list) -> None:
        self.close_code = ev[2]
        self.close_reason = ev[3]
        self.disconnected = True
        self.parts.clear()
        self._wake()

    def on_disconnect(self, ev: list | None = None) -> None:
        self.disconnected = True
        self.parts.clear()
        self._wake()

    def on_send_credit(self, ev: list) -> None:
        self.send_credit += ev[2]
        if self.waiters is not None:
            self._wake()

    handlers = {WS_RECEIVE: on_receive, WS_DISCONNECT: on_ws_disconnect,
                DISCONNECT: on_disconnect, SEND_CREDIT: on_send_credit}

    # --- helpers ---------------------------------------------------------------------------

    def _grant(self, n: int) -> None:
        self.unacked = 0
        self.recv_outstanding -= n
        self.link.send([RECV_CREDIT, self.sid, n])

