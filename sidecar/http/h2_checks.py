"""Where sidecar completes or corrects python-hyper's h2 checks of what a client sends, so that
each error is the one RFC 9113 and RFC 7541 require (tests/e2e/test_h2_conformance.py).

- A malformed request (RFC 9113 8.2, 8.3: uppercase or connection-specific fields, TE other
  than "trailers", bad or missing pseudo-fields) is a stream error, PROTOCOL_ERROR, and the
  connection's other streams go on (8.1.1).  h2's own inbound check raises from
  ``receive_data``, which ends the whole connection, so it is off (H2Connection) and
  ``valid_fields`` runs the same validator per request and per trailer block instead.
- h2 answers PROTOCOL_ERROR to a header block HPACK cannot decode and to a SETTINGS ACK with
  a payload; the RFCs say COMPRESSION_ERROR (9113 4.3) and FRAME_SIZE_ERROR (9113 6.5):
  ``rfc_code`` names the code for the GOAWAY instead.
- h2's own GOAWAY (``close_connection``) would make it refuse the DATA of the streams still
  finishing: ``goaway_frame`` writes one past its state machine.
"""
from __future__ import annotations

import re

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.utilities import CONNECTION_HEADERS, HeaderValidationFlags, validate_headers
from hyperframe.frame import GoAwayFrame

__all__ = ["goaway_frame", "rfc_code", "valid_fields"]

_REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                                 is_push_promise=False)
_TRAILERS = _REQUEST._replace(is_trailer=True)


# usual_request's name check: bytes.translate deletes these, a name of nothing else
# (0x21-0x7e but uppercase; a colon is looked for apart) leaves b""
_NAME_BYTES = bytes(c for c in range(0x21, 0x7f) if not 0x41 <= c <= 0x5a)
_VALUE_BAD = re.compile(rb"[\x00\n\r]|^[ \t]|[ \t]$").search
_PSEUDO = {b":method": 0, b":scheme": 1, b":path": 2, b":authority": 3}


def usual_request(headers) -> bool:
    """True for the usual request block, which validate_headers (h2's, the reference) would
    pass: every check it makes, in one loop over the fields.  False is no verdict: anything
    unusual (CONNECT, :protocol, an odd byte, a missing field, TE, ...) goes to the
    reference.  Each distinct head is checked once (h2_fast.RequestHeads), but a client
    whose every request has a new path (an API's ids) has all of them checked: h2's chain
    of generators cost ~10 µs a request there."""
    seen = [None, None, None, None]   # :method, :scheme, :path, :authority
    regular = False
    host = None
    for name, value in headers:
        if not name or name.translate(None, _NAME_BYTES) or (value and _VALUE_BAD(value)):
            return False
        if name[0] == 0x3A:   # ":"
            slot = _PSEUDO.get(name)
            if slot is None or regular or seen[slot] is not None:
                return False
            seen[slot] = value
        else:
            regular = True
            if b":" in name or name in CONNECTION_HEADERS or name == b"te":
                return False
            if name == b"host":
                if host is not None:
                    return False
                host = value
    method, scheme, path, authority = seen
    if method is None or scheme is None or not path or method == b"CONNECT":
        return False
    if authority is None:
        return host is not None
    return host is None or host == authority


def valid_fields(headers, trailers: bool = False) -> bool:
    """A request's fields (or its trailers) as RFC 9113 8.2 and 8.3 want them."""
    if not trailers and usual_request(headers):
        return True
    try:
        for _ in validate_headers(headers, _TRAILERS if trailers else _REQUEST):
            pass
    except ProtocolError:
        return False
    return True


def rfc_code(exc: Exception) -> ErrorCodes | None:
    """The error code the RFC names for h2's ProtocolError ``exc``, where it is not h2's."""
    if str(exc).startswith("Error decoding header block"):
        return ErrorCodes.COMPRESSION_ERROR
    if str(exc.__cause__ or "").startswith("SETTINGS ack frame must not have payload"):
        return ErrorCodes.FRAME_SIZE_ERROR
    return None


def goaway_frame(last_stream_id: int, code: ErrorCodes) -> bytes:
    """A GOAWAY frame written past h2's state machine, which would refuse to send the DATA of
    the streams still finishing after its own (close_connection) one."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = code
    return frame.serialize()
