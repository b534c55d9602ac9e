"""What may go into a header field line we write (RFC 9110 section 5): shared by the
front-end, which must not trust a worker, and the worker, which tells the app at send().

A name is a token; a value may hold any byte but CR, LF and NUL (obs-text passes, as RFC
9110 section 5.5 allows; other CTLs pass too, as in nginx, h11 and uvicorn: only the three
that could end the line or the head are refused).
"""
from __future__ import annotations

import re

__all__ = ["TCHARS", "CR_LF_NUL", "field_error", "check_fields"]

#: Every byte allowed in a token (RFC 9110 section 5.6.2).
TCHARS = bytes(c for c in range(256)
               if re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]", bytes([c])))
CR_LF_NUL = re.compile(rb"[\r\n\x00]")


def field_error(name, value) -> str | None:
    """Why (name, value) cannot be written as a field line, or None if it can."""
    if type(name) not in (bytes, bytearray) or type(value) not in (bytes, bytearray):
        return f"header names and values must be bytes: {name!r}: {value!r}"
    if not name or name.translate(None, TCHARS):
        return f"invalid header name {bytes(name)!r}"
    if CR_LF_NUL.search(value):
        return f"CR, LF or NUL in the value of {bytes(name)!r}"
    return None


def check_fields(fields) -> None:
    """ValueError for an app's field that must not be written: a name that is not a token,
    CR, LF or NUL in a value (what h2's outbound validation refuses, checked in bulk)."""
    if not fields:
        return
    names = b"".join([n for n, _ in fields])
    if (names.translate(None, TCHARS) or CR_LF_NUL.search(b"".join([v for _, v in fields]))
            or not all(n for n, _ in fields)):
        for name, value in fields:
            error = field_error(name, value)
            if error is not None:
                raise ValueError(error)
