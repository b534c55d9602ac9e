"""The front-end's WebSocket protocol object on its own, bytes in and bytes out: a close frame
between two fragments of a message (RFC 6455 5.4; Autobahn case 7.1.5)."""
from __future__ import annotations

from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from sidecar.http.ws_connection import _ServerProtocol


def _masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)  # as a client sends it


def _close_in_fragments(cls) -> tuple[list[Frame], list[Frame]]:
    """(frames the server got, frames it sent back, as a client parses them)."""
    server = cls(state=State.OPEN)
    server.receive_data(_masked(Opcode.TEXT, b"fragment1", fin=False)
                        + _masked(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "").serialize())
                        + _masked(Opcode.CONT, b"fragment2"))
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    for data in server.data_to_send():
        if data:
            client.receive_data(data)
    return server.events_received(), client.events_received()


def test_close_between_fragments_closes_normally():
    got, sent = _close_in_fragments(_ServerProtocol)
    assert [f.opcode for f in got] == [Opcode.TEXT, Opcode.CLOSE]  # fragment2 is discarded
    assert [f.opcode for f in sent] == [Opcode.CLOSE]
    assert Close.parse(sent[0].data).code == CloseCode.NORMAL_CLOSURE


def test_websockets_alone_would_answer_1002():
    """What the override is for: without it the same bytes fail the connection."""
    _got, sent = _close_in_fragments(ServerProtocol)
    assert Close.parse(sent[0].data).code == CloseCode.PROTOCOL_ERROR
