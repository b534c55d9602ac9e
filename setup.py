# Only here because cffi_modules has no pyproject.toml spelling yet; metadata is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["build.py:ring_ffi", "build.py:h1_ffi"])
