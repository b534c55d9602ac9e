"""WSGI apps for tests/e2e/test_wsgi.py: a raw PEP 3333 app, a Flask app and a Django
project, each with the same routes (what it saw goes to marker files, ``?marker=``)."""
from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

CHUNK = 64 * 1024


def _mark(path, text: str) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)


class Zeros:
    """A response iterable with close(): ``n`` zero bytes in CHUNK pieces, ``delay`` seconds
    between pieces; close() writes ``closed after K`` to the marker."""

    def __init__(self, n: int, marker: str | None, delay: float = 0.0):
        self.left = n
        self.sent = 0
        self.marker = marker
        self.delay = delay

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.left <= 0:
            raise StopIteration
        if self.delay:
            time.sleep(self.delay)
        n = min(CHUNK, self.left)
        self.left -= n
        self.sent += 1
        return bytes(n)

    def close(self) -> None:
        _mark(self.marker, f"closed after {self.sent}")


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def raw(environ, start_response):
    args = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    path = environ["PATH_INFO"]
    marker = args.get("marker")
    if path == "/pid":
        return _json(start_response, {"pid": os.getpid()})
    if path == "/hash":   # streamed upload: hashed as it comes, never held whole
        h, n = hashlib.sha256(), 0
        read = environ["wsgi.input"].read
        while True:
            data = read(CHUNK)
            if not data:
                break
            h.update(data)
            n += len(data)
        return _json(start_response, {"n": n, "sha256": h.hexdigest()})
    if path == "/lines":
        lines = [line for line in environ["wsgi.input"]]
        return _json(start_response, {"lines": len(lines), "last": lines[-1].decode()
                                      if lines else None})
    if path == "/zeros":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Zeros(int(args.get("n", "0")), marker, float(args.get("delay", "0")))
    if path == "/error-before":
        raise RuntimeError("boom before the response")
    if path == "/error-after":
        def gen():
            yield b"first part\n"
            raise RuntimeError("boom mid-response")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("caught")
        except ValueError:
            import sys
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                       ("Content-Length", "6")],
                           sys.exc_info())
        return [b"sorry\n"]
    if path == "/errors":
        environ["wsgi.errors"].write("wsgi.errors line one\nand two\n")
        environ["wsgi.errors"].flush()
        return _json(start_response, {"ok": True})
    if path == "/environ":
        keep = {k: v for k, v in environ.items() if isinstance(v, (str, bool, tuple))}
        return _json(start_response, keep)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/bad-header":   # refused by the worker's header check: a 500
        def gen():
            yield b"x" * 100_000
            yield b"y" * 100_000   # more than fits before the refusal: the thread must not hang
        start_response("200 OK", [("X-Evil", "a\r\nInjected: yes")])
        return gen()
    if path == "/sleep":
        time.sleep(float(args.get("s", "1")))
        _mark(marker, "slept")
        return _json(start_response, {"pid": os.getpid()})
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


# --- Flask -------------------------------------------------------------------------------------

def _flask():
    from flask import Flask, Response, jsonify, request

    app = Flask(__name__)

    @app.get("/pid")
    def pid():
        return jsonify(pid=os.getpid())

    @app.post("/hash")
    def upload():
        h, n = hashlib.sha256(), 0
        stream = request.stream
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            h.update(data)
            n += len(data)
        return jsonify(n=n, sha256=h.hexdigest())

    @app.get("/zeros")
    def zeros():
        it = Zeros(int(request.args.get("n", "0")), request.args.get("marker"),
                   float(request.args.get("delay", "0")))
        return Response(it, mimetype="application/octet-stream")

    @app.get("/error-before")
    def error():
        raise RuntimeError("flask boom")

    return app


flask_app = _flask()


# --- Django ------------------------------------------------------------------------------------

def _django():
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["*"],
                           ROOT_URLCONF=__name__, MIDDLEWARE=[], INSTALLED_APPS=[],
                           DATA_UPLOAD_MAX_MEMORY_SIZE=None, LOGGING_CONFIG=None)
        django.setup()
    from django.core.wsgi import get_wsgi_application
    return get_wsgi_application()


def _django_views():
    from django.http import JsonResponse, StreamingHttpResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    def pid(request):
        return JsonResponse({"pid": os.getpid()})

    @csrf_exempt
    def upload(request):
        h, n = hashlib.sha256(), 0
        while True:
            data = request.read(CHUNK)
            if not data:
                break
            h.update(data)
            n += len(data)
        return JsonResponse({"n": n, "sha256": h.hexdigest()})

    def zeros(request):
        it = Zeros(int(request.GET.get("n", "0")), request.GET.get("marker"),
                   float(request.GET.get("delay", "0")))
        return StreamingHttpResponse(it, content_type="application/octet-stream")

    def error(request):
        raise RuntimeError("django boom")

    return [path("pid", pid), path("hash", upload), path("zeros", zeros),
            path("error-before", error)]


urlpatterns: list = []


def __getattr__(name):   # Django is set up only when a test serves it
    if name == "django_app":
        urlpatterns[:] = _django_views()
        app = _django()
        globals()["django_app"] = app
        return app
    raise AttributeError(name)
