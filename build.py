"""cffi build of the ring library (out-of-line API mode).

The cdef is read from the real headers, between the ``cffi:begin`` / ``cffi:end`` markers, so
the C declarations live in one place (native/ring.h: the ring; native/frame.h: the event
framing checks that let one msgpack call decode a batch of records; native/h1.h: the fast
path of the HTTP/1.1 request-head parser, sidecar/http/h1.py's C speedup).  ``pip install .``
runs this through setup.py's ``cffi_modules``; ``python build.py`` builds the module in place
for development.
"""
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
NATIVE = ROOT / "native"


HEADERS = ("ring.h", "frame.h", "h1.h")  # frame.h uses ring_t: ring.h first


def read_cdef() -> str:
    parts = []
    for name in HEADERS:
        text = (NATIVE / name).read_text()
        start = text.index("/* cffi:begin */") + len("/* cffi:begin */")
        parts.append(text[start:text.index("/* cffi:end */")])
    return "\n".join(parts)


ffibuilder = FFI()
ffibuilder.cdef(read_cdef())
ffibuilder.set_source(
    "sidecar._ring",
    '#include "ring.h"\n#include "frame.h"\n#include "h1.h"',
    sources=["native/ring.c", "native/frame.c", "native/h1.c"],
    include_dirs=["native"],
    extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    # In-place development build: sidecar/_ring.*.so next to the package.
    ffibuilder.compile(tmpdir=str(ROOT), verbose=False)
    (ROOT / "sidecar" / "_ring.c").unlink(missing_ok=True)
