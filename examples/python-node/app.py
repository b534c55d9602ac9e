# app.py — from @platformatic/python-node's REFERENCE.md, "Basic ASGI Application", unchanged
async def app(scope, receive, send):
    """Basic ASGI application"""
    assert scope['type'] == 'http'

    # Read the request
    request = await receive()

    # Send response
    await send({
        'type': 'http.response.start',
        'status': 200,
        'headers': [[b'content-type', b'text/plain']],
    })

    await send({
        'type': 'http.response.body',
        'body': b'Hello from Python!',
        'more_body': False,
    })
