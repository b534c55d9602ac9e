"""Responses of every common shape, chosen by the query (tests/e2e/test_h1_twins.py):
``s`` the status, ``h`` headers as name=value pairs joined by ``;``, ``b`` the body, ``n`` how
many body messages it is sent in (the last one empty when n > 1)."""
from urllib.parse import parse_qs, unquote_to_bytes


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    q = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    status = int(q.get("s", ["200"])[0])
    headers = []
    for pair in q.get("h", [""])[0].split(";"):
        if pair:
            name, _, value = pair.partition("=")
            headers.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    body = unquote_to_bytes(q.get("b", [""])[0])
    n = int(q.get("n", ["1"])[0])
    while True:   # the request body, read whole
        msg = await receive()
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for _ in range(n - 1):
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": body if n == 1 else b""})
