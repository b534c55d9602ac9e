# starlette_app.py — a Starlette app for the REFERENCE.md examples that need one (request data,
# header manipulation, error handling) and the 2.0 article's request streaming.
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def data(request):
    body = await request.json()
    return JSONResponse({"received": body, "authorization": request.headers.get("authorization")})


async def headers(request):
    return JSONResponse({"accept": request.headers.getlist("accept"),
                         "accept-language": request.headers.getlist("accept-language"),
                         "authorization": request.headers.get("authorization")},
                        headers={"x-handled-by": "starlette"})


async def missing(request):
    return PlainTextResponse("no such thing", status_code=404)


async def upload(request):
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return PlainTextResponse(f"received {size} bytes")


app = Starlette(routes=[
    Route("/api/data", data, methods=["GET", "POST"]),
    Route("/api/headers", headers),
    Route("/api/missing", missing),
    Route("/upload", upload, methods=["POST"]),
])
