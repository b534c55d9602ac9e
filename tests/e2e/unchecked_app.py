"""limit_apps.app in a worker that does not check response headers (as a foreign or buggy
worker might not): only the front-end's own check stands between the app and the socket."""
from sidecar.worker import http_stream

from tests.e2e.limit_apps import app  # noqa: F401  (the app this module serves)

http_stream._check_headers = lambda headers: [list(pair) for pair in headers]
