"""cffi builds of the C in native/ (out-of-line API mode), one module per job:

- ``sidecar._ring``: the ring (native/ring.h) and the event framing (native/frame.h: the
  checks that let one msgpack call decode a batch of records, and the writer of a packed
  batch as records).  The framing reads and writes ring records, so it lives with the ring;
  sidecar/ring.py is the module's only user.
- ``sidecar._h1``: the fast path of the HTTP/1.1 request-head parser and response-head writer
  (native/h1.h), sidecar/http/h1.py's C speedup, and the C event codec (native/events.h:
  the HTTP_REQUEST of a parsed head, packed as sidecar/events.py packs it).  The codec sits
  beside frame.c in native/ but is built here: its input is the parser's h1_head_t, and it
  needs neither the ring nor the framing (it packs msgpack into a caller's buffer).

The cdefs are read from the real headers, between the ``cffi:begin`` / ``cffi:end`` markers,
so the C declarations live in one place.  ``pip install .`` runs this through setup.py's
``cffi_modules``; ``python build_ffi.py`` builds the modules in place for development.
"""
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
NATIVE = ROOT / "native"
FLAGS = ["-std=c11", "-O2", "-fno-strict-aliasing"]


def read_cdef(headers: tuple[str, ...]) -> str:
    parts = []
    for name in headers:
        text = (NATIVE / name).read_text()
        start = text.index("/* cffi:begin */") + len("/* cffi:begin */")
        parts.append(text[start:text.index("/* cffi:end */")])
    return "\n".join(parts)


def builder(module: str, headers: tuple[str, ...], sources: tuple[str, ...]) -> FFI:
    ffi = FFI()
    ffi.cdef(read_cdef(headers))
    ffi.set_source(module, "".join(f'#include "{name}"\n' for name in headers),
                   sources=[f"native/{name}" for name in sources], include_dirs=["native"],
                   extra_compile_args=FLAGS)
    return ffi


# frame.h uses ring_t: ring.h first
ring_ffi = builder("sidecar._ring", ("ring.h", "frame.h"), ("ring.c", "frame.c"))
# events.h uses h1_head_t: h1.h first
h1_ffi = builder("sidecar._h1", ("h1.h", "events.h"), ("h1.c", "events.c"))

if __name__ == "__main__":
    # In-place development build: sidecar/_ring.*.so and sidecar/_h1.*.so next to the package.
    for name, ffi in (("_ring", ring_ffi), ("_h1", h1_ffi)):
        built = pathlib.Path(ffi.compile(tmpdir=str(ROOT), verbose=False)).resolve()
        for other in (ROOT / "sidecar").glob(f"{name}.*.so"):
            if other.resolve() != built:   # an abi3 build from pip -e would shadow or be
                other.unlink()             # shadowed by this one: one build per module
        (ROOT / "sidecar" / f"{name}.c").unlink(missing_ok=True)
