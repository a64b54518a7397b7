#!/usr/bin/env node
// Runs the seed README's Node.js example (seed_node_example.js, kept verbatim) against a
// ClawSocket server running the echo demo agent and checks what it prints:
//   Connected
//   Agent: Connected to WebSocket chat server      (the welcome frame is a chat.response)
//   Agent is typing...
//   echo: Hello, how are you?                       (the deltas, appended by the example)
//   Agent: echo: Hello, how are you?
// The example never exits by itself: it is killed once the answer is printed.
// Env: CLAWSOCKET_WS (default ws://127.0.0.1:18800/ws). Exit 0 = PASS, 1 = FAIL; 20 s max.
'use strict';
const { spawn } = require('child_process');
const path = require('path');

const EXPECTED = 'Agent: echo: Hello, how are you?';
const TIMEOUT_MS = 20000;
const NAME = 'seed Node.js example';

const child = spawn(process.execPath, [path.join(__dirname, 'seed_node_example.js')], {
  cwd: __dirname,
  env: process.env,
  stdio: ['ignore', 'pipe', 'pipe'],
});
let out = '';
let err = '';
let finished = false;

function finish(ok, why) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  child.kill('SIGTERM');
  if (!ok) {
    console.error('--- example stdout ---\n' + out + '\n--- example stderr ---\n' + err);
  }
  console.log(`${ok ? 'PASS' : 'FAIL'} ${NAME}: ${why}`);
  process.exitCode = ok ? 0 : 1;
  setTimeout(() => process.exit(ok ? 0 : 1), 200);
}

function check() {
  const lines = out.split('\n');
  const i = lines.indexOf(EXPECTED);
  if (i < 0) return;
  // the streamed deltas, appended by the example, form the line just before "Agent: ..."
  const streamed = lines[i - 1];
  if (!lines.includes('Connected')) return finish(false, 'no "Connected" line');
  if (streamed !== 'echo: Hello, how are you?') {
    return finish(false, `the appended chat.stream deltas printed ${JSON.stringify(streamed)}, expected "echo: Hello, how are you?"`);
  }
  if (!lines.includes('Agent is typing...')) return finish(false, 'no chat.typing before the answer');
  finish(true, `printed "${EXPECTED}" after streaming the deltas`);
}

child.stdout.on('data', (d) => { out += d; check(); });
child.stderr.on('data', (d) => { err += d; });
child.on('exit', (code, sig) => { if (!finished) finish(false, `the example exited early (code ${code}, signal ${sig})`); });
const timer = setTimeout(() => finish(false, `"${EXPECTED}" not printed within ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS);
