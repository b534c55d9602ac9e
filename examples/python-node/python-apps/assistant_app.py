# assistant_app.py — from the python-node 2.0 announcement ("WebSocket Support")
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
import json
from datetime import datetime

app = FastAPI()

@app.websocket('/ws/assistant')
async def assistant_endpoint(websocket: WebSocket):
    await websocket.accept()

    # Send welcome message
    await websocket.send_text('Hello! I am your AI assistant. Ask me anything or try /help for commands.')

    try:
        while True:
            # Receive message from client
            message = await websocket.receive_text()

            # Simple routing based on message content
            if message.startswith('/help'):
                response = 'Available commands: /help, /status, /about, or ask any question'
            elif message.startswith('/status'):
                response = 'System status: All services operational'
            elif message.startswith('/about'):
                response = 'AI Assistant v1.0 - Powered by Python and Node.js'
            elif message.lower() in ['hi', 'hello', 'hey']:
                response = 'Hello! How can I help you today?'
            elif 'time' in message.lower():
                response = f'The current time is {datetime.now().strftime("%H:%M:%S")}'
            else:
                # Echo back with a simulated AI response
                response = f'You said: "{message}". I am processing your request...'

            # Send response back to client
            await websocket.send_text(response)
    except WebSocketDisconnect:
        pass  # Client disconnected
