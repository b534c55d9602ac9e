# Only here because cffi_modules has no pyproject.toml spelling yet; metadata is in pyproject.toml.
from setuptools import Extension, setup

setup(
    cffi_modules=["build_ffi.py:ring_ffi", "build_ffi.py:h1_ffi"],
    # the fast path's per-request calls as C-API functions (a cffi call's own cost is most
    # of theirs): native/h1_api.c over the same h1.c and events.c as sidecar._h1 (build_ffi.py's FLAGS)
    ext_modules=[Extension("sidecar._h1api", sources=["native/h1_api.c", "native/h1.c", "native/events.c"],
                           include_dirs=["native"],
                           extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"]),
                 # the worker's per-request calls (scope, response head): native/worker_api.c
                 Extension("sidecar._workerapi", sources=["native/worker_api.c"],
                           extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"]),
                 # the front-end's per-message WebSocket frames (plain messages in, whole
                 # messages out): native/ws_api.c, the C twins of sidecar/http/ws_frames.py's
                 Extension("sidecar._wsapi", sources=["native/ws_api.c"],
                           extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"]),
                 # an HTTP/2 header block decoded in one call, on hpack's own table:
                 # native/hpack_api.c, the C twin of sidecar/http/h2_fast.py's Decoder._decode
                 Extension("sidecar._hpackapi", sources=["native/hpack_api.c"],
                           extra_compile_args=["-std=c11", "-O2", "-fno-strict-aliasing"])],
)
