"""Benchmarks: sidecar against its peers (uvicorn, granian), side by side in one run.

``python -m benchmarks.http --help``
"""
