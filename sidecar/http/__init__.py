"""HTTP/1.1 protocol logic of the front-end, without I/O (see h1.py)."""
