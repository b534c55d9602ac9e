"""The stream of one WebSocket: between its connection (sidecar.http.ws_connection) and its
worker, on the stream layer's credit (sidecar.frontend.stream.StreamBase).

    WS_CONNECT        -> the worker (dispatch), with the connection's scope
    WS_ACCEPT         -> 101 (the chosen subprotocol, the app's headers), frames flow
    WS_SEND           -> frames; credited back (SEND_CREDIT) once written, in batches
    WS_RECEIVE        <- client message chunks, each waiting for RECV_CREDIT
    WS_DISCONNECT     <- the client closed or left (its code)

The error policy, as the HTTP stream's:

    before accept     WS_CLOSE -> 403;  RESPONSE_START/BODY -> that response, then close
                      APP_DONE -> 403 (500 if the app raised);  worker lost -> 502
    after accept      APP_DONE -> close 1000 (1011 if the app raised);  worker lost -> 1011
    denial response   the app ended or its worker was lost mid-response -> the connection
                      is cut (a truncated body, never a second status line)
"""
from __future__ import annotations

import logging

from sidecar.events import (APP_DONE, MAX_CHUNK, RECV_CREDIT, RESPONSE_BODY, RESPONSE_START,
                            SEND_CREDIT, WS_ACCEPT, WS_CLOSE, WS_CONNECT, WS_DISCONNECT,
                            WS_RECEIVE, WS_SEND)
from sidecar.frontend.stream import StreamBase
from sidecar.http.h1_response import RETRY_AFTER
from sidecar.http.ws_connection import CONNECTING, DENIAL, DONE, OPEN, subprotocols
from websockets.frames import CloseCode

log = logging.getLogger("sidecar.websocket")



class WebSocketStream(StreamBase):
    """One WebSocket, from the upgrade request to the close."""

    __slots__ = ("ws", "connect_event", "credit_batch", "disconnect_sent")

    DATA = WS_RECEIVE

    def __init__(self, conn, ws, sid: int, scope: tuple, tls: list | None = None):
        StreamBase.__init__(self, conn, ws, sid, ws.req)
        self.ws = ws
        ws.stream = self
        scheme = {"http": "ws", "https": "wss"}.get(scope[1], scope[1])
        self.connect_event = [WS_CONNECT, sid, scheme, scope[2], scope[3], scope[4], scope[5],
                              scope[6], scope[7], scope[8], scope[9],
                              subprotocols(ws.req.headers)]
        if tls is not None:   # a TLS connection's ASGI tls extension (docs/protocol.md)
            self.connect_event.append(tls)
        self.credit_batch = 1
        self.disconnect_sent = False

    # --- the pool's side -----------------------------------------------------------------

    def dispatch(self, link, body: bytes, more: bool) -> None:
        event, self.connect_event = self.connect_event, None
        self._attach(link, event, 0)
        self.chunk = max(link.chunk, 16)
        # hold credit below this: the worker's chunks are at most min(MAX_CHUNK, window)
        self.credit_batch = max(1, min(link.window // 4,
                                       link.window - min(MAX_CHUNK, link.window) + 1))

    def overloaded(self) -> None:
        self.app_done = True
        self.ws.refuse(503, RETRY_AFTER)

    def drain_start(self) -> None:
        """Its worker drains: an open WebSocket is closed 1012 (service restart), as on
        shutdown (one accepted later is closed as it opens)."""
        if self.ws.phase == OPEN:
            self.ws.start_drain()

    # --- client -> app -------------------------------------------------------------------

    def on_body(self, data, more: bool) -> None:
        """StreamBase.on_body's usual case written out (once a message): a whole message that
        fits one record (4 * n: UTF-8 bytes a character, at most) and the credit, with
        nothing queued ahead of it, goes to the worker at once, without the queue."""
        n = len(data)
        if (not more and not self.pending and self.dispatched and not self.app_done
                and n <= self.recv_credit and 4 * n <= (self.chunk or self.link.chunk)):
            self.recv_credit -= n
            self.link.send([WS_RECEIVE, self.sid, data, False])
            self.ws.resume_receiving()   # as _flush_data ends (over HTTP/2: the window)
            return
        StreamBase.on_body(self, data, more)

    # --- worker events -------------------------------------------------------------------

    def on_worker_event(self, ev: list) -> None:
        kind = ev[0]
        if kind == WS_SEND:
            self._on_send(ev[2], ev[3])
        elif kind == RECV_CREDIT:
            self._on_recv_credit(ev[2])
        elif kind == WS_ACCEPT:
            self._on_accept(ev[2], ev[3])
        elif kind == WS_CLOSE:
            self._on_close(ev[2], ev[3])
        elif kind == APP_DONE:
            self._on_app_done(ev[2])
        elif kind == RESPONSE_START:
            self._on_denial_start(ev[2], ev[3])
        elif kind == RESPONSE_BODY:
            self._on_denial_body(ev[2], ev[3])
        else:
            self._fail(f"unexpected event kind {kind} on a WebSocket stream")

    def _on_accept(self, subprotocol: str | None, headers: list) -> None:
        ws = self.ws
        if ws.phase == DONE or ws.closed:
            return  # already answered (shutdown, overload) or the client left
        if ws.phase != CONNECTING:
            return self._fail("websocket.accept in the wrong state")
        ws.accept(subprotocol, headers)
        if ws.phase != OPEN:
            return
        if self.pending_bytes <= self.conn.window:
            ws.resume_receiving()
        if self.link.draining:   # accepted by a worker that drains: close 1012 at once
            ws.start_drain()

    def _on_send(self, data, more: bool) -> None:
        phase = self.ws.phase
        if phase != OPEN:
            if phase == DONE:
                return self.grant(len(data))
            return self._fail("websocket.send before websocket.accept")
        self.ws.send_message(data, more)
        self.grant(len(data))

    def _on_close(self, code: int, reason: str) -> None:
        phase = self.ws.phase
        if phase == CONNECTING:
            self.ws.refuse(403)
        elif phase == OPEN:
            self.ws.close(code, reason)

    def _on_denial_start(self, status: int, headers: list) -> None:
        ws = self.ws
        if ws.phase == DONE:
            return
        if ws.phase != CONNECTING:
            return self._fail("websocket.http.response.start in the wrong state")
        if ws.closed:
            return
        try:
            ws.deny_start(status, headers)
        except (ValueError, TypeError) as exc:
            log.error("invalid denial response from the app for %s: %s",
                      self.req.target.decode("latin-1"), exc)
            ws.refuse(500)

    def _on_denial_body(self, data: bytes, more: bool) -> None:
        phase = self.ws.phase
        if phase == DONE:
            return self.grant(len(data))
        if phase != DENIAL:
            return self._fail("websocket.http.response.body outside a started response")
        self.ws.deny_body(data, more)
        if more and data:
            self.grant(len(data))

    def _on_app_done(self, error: str | None) -> None:
        self.app_done = True
        ws = self.ws
        if error:
            log.error("app error in WebSocket %s: %s", self.req.target.decode("latin-1"), error)
        phase = ws.phase
        if phase == CONNECTING:
            ws.refuse(500 if error else 403)
        elif phase == OPEN:
            ws.close(CloseCode.INTERNAL_ERROR if error else CloseCode.NORMAL_CLOSURE, "")
        elif phase == DENIAL:
            ws.abort("app ended mid-response")

    def on_worker_lost(self) -> None:
        if self.app_done:
            return
        self.app_done = True
        ws = self.ws
        phase = ws.phase
        if phase == CONNECTING:
            ws.refuse(502)
        elif phase == OPEN:
            ws.close(CloseCode.INTERNAL_ERROR, "worker lost")
        elif phase == DENIAL:
            ws.abort("worker lost mid-response")

    # --- credit --------------------------------------------------------------------------

    def _pause(self) -> None:
        self.ws.pause_receiving()

    def _resume(self) -> None:
        self.ws.resume_receiving()

    def _sending(self) -> bool:
        return not self.app_done and not self.ws.closed

    def grant(self, n: int) -> None:
        """Credits are batched: held while they stay under ``credit_batch`` -- by then the
        worker still has at least a chunk of credit, so it cannot be waiting -- and while the
        socket is backed up (granted by flush_owed): a slow client costs a window here,
        never a worker.  (StreamBase.grant, written out: this is per message.)"""
        ws = self.ws
        if self.app_done or ws.closed:
            return
        due = self.owed + n
        if due >= self.credit_batch and not ws.write_blocked:
            self.owed = 0
            self.link.send([SEND_CREDIT, self.sid, due])
        else:
            self.owed = due

    # --- the connection's side -----------------------------------------------------------

    def client_gone(self, code: int, reason: str) -> None:
        """The client closed (its close frame) or the socket is gone: the app is told once;
        what was waiting for credit is dropped."""
        if self.pending:
            self.pending.clear()
            self.pending_bytes = 0
        if self.disconnect_sent:
            return
        self.disconnect_sent = True
        if self.link is not None and not self.app_done:
            self.link.send([WS_DISCONNECT, self.sid, code, reason])


__all__ = ["WebSocketStream"]
