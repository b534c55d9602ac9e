"""cffi build of the ring library (out-of-line API mode).

The cdef is read from the real header, between the ``cffi:begin`` / ``cffi:end`` markers, so
the C declarations live in one place (native/ring.h).  ``pip install .`` runs this through
setup.py's ``cffi_modules``; ``python build.py`` builds the module in place for development.
"""
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
NATIVE = ROOT / "native"


def read_cdef() -> str:
    text = (NATIVE / "ring.h").read_text()
    start = text.index("/* cffi:begin */") + len("/* cffi:begin */")
    end = text.index("/* cffi:end */")
    return text[start:end]


ffibuilder = FFI()
ffibuilder.cdef(read_cdef())
ffibuilder.set_source(
    "sidecar._ring",
    '#include "ring.h"',
    sources=["native/ring.c"],
    include_dirs=["native"],
    extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    # In-place development build: sidecar/_ring.*.so next to the package.
    ffibuilder.compile(tmpdir=str(ROOT), verbose=False)
    (ROOT / "sidecar" / "_ring.c").unlink(missing_ok=True)
