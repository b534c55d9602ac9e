# metrics_app.py — from the python-node 2.0 announcement ("Server-Sent Events with FastAPI")
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
import asyncio
import json
import random
from datetime import datetime

app = FastAPI()

async def generate_metrics():
    """Generate fake system metrics as server-sent events"""
    while True:
        # Simulate collecting system metrics
        metrics = {
            'timestamp': datetime.now().isoformat(),
            'cpu_usage': random.uniform(20, 80),
            'memory_usage': random.uniform(40, 90),
            'active_connections': random.randint(10, 100),
            'requests_per_second': random.randint(50, 500)
        }

        # Format as SSE event
        data = f'data: {json.dumps(metrics)}\n\n'
        yield data.encode()

        # Send update every second
        await asyncio.sleep(1)

@app.get('/metrics/stream')
async def stream_metrics():
    """Endpoint that streams real-time metrics"""
    return StreamingResponse(
        generate_metrics(),
        media_type='text/event-stream',
        headers={
            'Cache-Control': 'no-cache',
            'Connection': 'keep-alive'
        }
    )

@app.get('/health')
async def health_check():
    """Standard health check endpoint"""
    return {'status': 'healthy', 'version': '1.0.0'}
