// The seed README's "JavaScript / Node.js" example, verbatim except for the URL: the
// server address comes from CLAWSOCKET_WS (e.g. ws://127.0.0.1:18801/ws) so the test
// can run on any port; the query string is the seed's. Run by run_node_example.js.
const WebSocket = require('ws');

const ws = new WebSocket((process.env.CLAWSOCKET_WS || 'ws://127.0.0.1:18800/ws') + '?senderId=user1&senderName=John');

ws.on('open', () => {
  console.log('Connected');
  ws.send(JSON.stringify({
    type: 'chat.send',
    content: 'Hello, how are you?'
  }));
});

ws.on('message', (data) => {
  const msg = JSON.parse(data);
  switch (msg.type) {
    case 'chat.typing':
      console.log('Agent is typing...');
      break;
    case 'chat.stream':
      process.stdout.write(msg.content);
      break;
    case 'chat.response':
      console.log('\nAgent:', msg.content);
      break;
    case 'chat.error':
      console.error('Error:', msg.error);
      break;
  }
});
