# The seed README's Python example, verbatim except for the URL: the server address comes
# from CLAWSOCKET_WS (e.g. ws://127.0.0.1:18801/ws); the query string is the seed's.
# Needs the websocket-client package. Run by run_python_example.py.
import os
import websocket
import json

def on_message(ws, message):
    msg = json.loads(message)
    if msg['type'] == 'chat.response':
        print(f"Agent: {msg['content']}")
    elif msg['type'] == 'chat.error':
        print(f"Error: {msg['error']}")

def on_open(ws):
    ws.send(json.dumps({
        'type': 'chat.send',
        'content': 'Hello!'
    }))

ws = websocket.WebSocketApp(
    os.environ.get('CLAWSOCKET_WS', 'ws://127.0.0.1:18800/ws') + '?senderId=user1&senderName=John',
    on_message=on_message,
    on_open=on_open
)
ws.run_forever()
