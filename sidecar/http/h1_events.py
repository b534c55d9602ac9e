"""The events of the HTTP/1.1 request parser (``sidecar.http.h1``): Request, Body,
EndOfMessage and ProtocolError, and the cheap ways the parser makes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Request", "Body", "EndOfMessage", "ProtocolError"]


class Request(NamedTuple):
    """A complete request head (sidecar.http.h1_head says how each field is derived).

    Immutable, as the other events are.  A tuple rather than a frozen dataclass: one is built
    for every request, and a tuple is made in one C call (~0.3 us) where a frozen dataclass
    sets its 13 slots one by one (~1.5 us; the front-end's whole Python path per request is
    ~20 us)."""
    method: bytes          # b"GET"
    target: bytes          # request-target exactly as sent, e.g. b"/a%20b?x=1"
    path: str              # percent- and UTF-8-decoded path (latin-1 if not UTF-8)
    raw_path: bytes        # path part of the target, not decoded
    query_string: bytes    # after the first '?', without it
    http_version: str      # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]  # lowercased names, trimmed values, as ordered
    keep_alive: bool
    expect_continue: bool
    upgrade: bytes | None  # lowercased Upgrade value if this is an upgrade request
    content_length: int | None
    chunked: bool
    # The HTTP_REQUEST event's fields 2 to 11 (method .. root_path) as msgpack, packed by the
    # C speedup for a parser given its connection's scope (RequestParser.pack_requests);
    # None otherwise.  Not part of the head's value: equality, hash and repr leave it out.
    packed: bytes | None = None

    def __eq__(self, other):
        if type(other) is not Request:
            return NotImplemented
        return self[:12] == other[:12]

    def __ne__(self, other):
        if type(other) is not Request:
            return NotImplemented
        return self[:12] != other[:12]

    def __hash__(self):
        return hash(self[:12])

    def __repr__(self):
        return "Request(" + ", ".join(f"{name}={value!r}" for name, value in
                                      zip(self._fields[:12], self)) + ")"


@dataclass(frozen=True, slots=True)
class Body:
    """Request body bytes (never empty)."""
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The current request is complete."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Unacceptable input: answer ``status`` (unless a response started) and close."""
    status: int            # 400, 413, 414, 431, 501, 505
    reason: str            # short text for the log line and the response body


# A frozen dataclass's __init__ costs ~1 us (object.__setattr__ per field); setting the slot
# directly is cheaper, and a Body is made for every body chunk.
def _slot_setter(cls, name):
    return getattr(cls, name).__set__


_new = object.__new__
_new_request = tuple.__new__   # _new_request(Request, (13 fields)): no Python __new__ call
_set_data = _slot_setter(Body, "data")
_END = EndOfMessage()


def _body(data: bytes) -> Body:
    b = _new(Body)
    _set_data(b, data)
    return b
