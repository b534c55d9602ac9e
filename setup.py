# Only here because cffi_modules has no pyproject.toml spelling yet; metadata is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ring_ffi", "build_ffi.py:h1_ffi"])
