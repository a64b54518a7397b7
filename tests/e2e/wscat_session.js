#!/usr/bin/env node
// The seed README's Quick Start, as a person does it: an interactive wscat session
//   wscat -c "ws://127.0.0.1:18800/ws?senderId=user1&senderName=John"
// into which the README's test cases are typed one by one. wscat's stdin is a pipe kept
// open for the whole session; each line is written only after the previous answer
// arrived (wscat drops lines typed before the handshake completes, so the first one
// waits for the welcome frame). Each case must produce a chat.response whose content is
// the echo demo agent's "echo: {content}", with its chat.stream deltas adding up to it.
// Env: CLAWSOCKET_WS. Exit 0 = all cases passed. Bounded: 15 s per case, 120 s overall.
'use strict';
const { spawn } = require('child_process');
const path = require('path');

const URL = (process.env.CLAWSOCKET_WS || 'ws://127.0.0.1:18800/ws') + '?senderId=user1&senderName=John';
const WSCAT = path.join(__dirname, 'node_modules', '.bin', 'wscat');
const WELCOME = 'Connected to WebSocket chat server';

// The Quick Start test cases, verbatim.
const CASES = [
  ['Basic message', '{"type":"chat.send","content":"Hello!"}'],
  ['Message with custom sender', '{"type":"chat.send","content":"Hi there!","senderId":"user_123","senderName":"Alice"}'],
  ['Multi-turn 1', '{"type":"chat.send","content":"My name is John"}'],
  ['Multi-turn 2', '{"type":"chat.send","content":"What is my name?"}'],
  ['Reply to a message', '{"type":"chat.send","content":"I agree","replyToBody":"Let\'s use Python for this project"}'],
  ['Group chat message', '{"type":"chat.send","content":"Hello everyone!","chatType":"group","groupId":"dev-team","groupSubject":"Dev Team"}'],
  ['Message with custom data', '{"type":"chat.send","content":"Process this","customData":{"priority":"high","source":"api"}}'],
  ['Long message', '{"type":"chat.send","content":"Please write a Python function that calculates the factorial of a number recursively and iteratively, then compare their performance."}'],
];
const CASE_MS = 15000;

const child = spawn(WSCAT, ['-c', URL], { cwd: __dirname, stdio: ['pipe', 'pipe', 'pipe'] });
let buf = '';
let stderr = '';
const frames = [];
let wake = () => {};
child.stdout.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    // wscat writes its readline prompt "> " to stdout after each line it sends
    const line = buf.slice(0, i).trim().replace(/^(>\s*)+/, '');
    buf = buf.slice(i + 1);
    if (!line) continue;
    try { frames.push(JSON.parse(line)); } catch { frames.push({ type: '(not json)', raw: line }); }
    wake();
  }
});
child.stderr.on('data', (d) => { stderr += d; });
let exited = null;
child.on('exit', (code, sig) => { exited = { code, sig }; wake(); });

function waitFor(pred, ms) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const check = () => {
      const v = pred();
      if (v || exited || Date.now() - t0 > ms) { wake = () => {}; clearTimeout(timer); resolve(v); return; }
    };
    const timer = setTimeout(check, ms + 5);
    wake = check;
    check();
  });
}

const overall = setTimeout(() => {
  console.log('FAIL wscat interactive Quick Start: overall timeout');
  child.kill('SIGKILL');
  process.exit(1);
}, 120000);

(async () => {
  let passed = 0;
  let failed = 0;
  const welcome = await waitFor(() => frames.find((f) => f.type === 'chat.response' && f.content === WELCOME), 10000);
  if (!welcome) {
    console.log(`FAIL wscat interactive Quick Start: no welcome frame (wscat ${exited ? 'exited ' + JSON.stringify(exited) : 'still running'}; stderr: ${stderr.trim()})`);
    child.kill('SIGKILL');
    process.exit(1);
  }
  for (const [name, line] of CASES) {
    const start = frames.length;
    const content = JSON.parse(line).content;
    const expected = 'echo: ' + content;
    child.stdin.write(line + '\n');
    const isEnd = (f) => (f.type === 'chat.response' && f.content !== WELCOME) || f.type === 'chat.error';
    await waitFor(() => frames.slice(start).find(isEnd), CASE_MS);
    const got = frames.slice(start);
    const end = got.find(isEnd);
    const streams = got.filter((f) => f.type === 'chat.stream');
    const typing = got.filter((f) => f.type === 'chat.typing').length;
    let problem = null;
    if (!end) problem = `no chat.response within ${CASE_MS / 1000} s`;
    else if (end.type === 'chat.error') problem = `chat.error ${end.code}: ${end.error}`;
    else if (end.content !== expected) problem = `answer ${JSON.stringify(end.content)}, expected ${JSON.stringify(expected)}`;
    else if (end.done !== true) problem = 'chat.response without done:true';
    else if (streams.length && streams.map((s) => s.content).join('') !== expected) {
      problem = `deltas add up to ${JSON.stringify(streams.map((s) => s.content).join(''))}`;
    }
    if (problem) {
      failed++;
      console.log(`  FAIL ${name}: ${problem}`);
      console.log('    frames: ' + got.map((f) => f.type + (f.seq ? '#' + f.seq : '')).join(' '));
    } else {
      passed++;
      console.log(`  ok   ${name}: chat.response "${end.content.length > 50 ? end.content.slice(0, 50) + '…' : end.content}" (${typing} typing, ${streams.length} deltas)`);
    }
  }
  child.stdin.end();  // like Ctrl-D: wscat closes the socket and exits
  await waitFor(() => exited, 5000);
  if (!exited) child.kill('SIGKILL');
  clearTimeout(overall);
  const ok = failed === 0;
  console.log(`${ok ? 'PASS' : 'FAIL'} wscat interactive Quick Start: ${passed}/${CASES.length} test cases answered`);
  process.exit(ok ? 0 : 1);
})();
