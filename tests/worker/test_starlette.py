"""A real framework on the worker: Starlette routes, its lifespan state, streaming both ways."""
import json

from sidecar.events import RESPONSE_BODY

from .apps import pattern
from .host import run_host, sha


def test_starlette_json_streaming_and_upload():
    window = 64 * 1024

    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/json"))
        assert response.status == 200
        assert response.header(b"content-type") == b"application/json"
        assert json.loads(response.body) == {"message": "hi", "path": "/json", "started": True}

        response = await host.response(host.request("GET", "/numbers", query=b"count=4"))
        assert (response.status, response.body, response.error) == (200, b"0\n1\n2\n3\n", None)
        bodies = [ev for ev in response.events if ev[0] == RESPONSE_BODY]
        assert len(bodies) >= 4  # streamed, not buffered

        data = pattern(3 * window + 5)
        sid = host.request("POST", "/upload", body=b"", more=True)
        await host.upload(sid, data, piece=16 * 1024)
        response = await host.response(sid)
        assert json.loads(response.body) == {"bytes": len(data), "sha256": sha(data)}

        response = await host.response(host.request("GET", "/nowhere"))
        assert response.status == 404

    run_host(scenario, "apps:starlette_app", window=window, lifespan="on")
