// Deterministic test of the web page's protocol logic (web/index.html) in headless
// Chromium against a scripted mock server on 127.0.0.1 (no ClawSocket needed):
// delta streaming, welcome as a status line, typing, drop + reconnect with back-off,
// chat.join afterSeq resume without duplicates, catchUp append, history fallback,
// chat.message from a group member, chat.error with code, group/thread/quote fields,
// close 4401 stops reconnecting. Prints PASS/FAIL, exits 0/1, bounded to 60 s.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { launch, runTest, assert, artifactsDir } from './chromium.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const HTML = fs.readFileSync(path.join(here, '..', '..', 'web', 'index.html'), 'utf8');
const WELCOME = 'Connected to WebSocket chat server';

function startMock() {
  const conns = [];          // { ws, url, inbox: [] }
  const waiters = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(HTML);
    } else { res.writeHead(404); res.end(); }
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, sock, head) => {
    if (!req.url.startsWith('/ws')) { sock.destroy(); return; }
    wss.handleUpgrade(req, sock, head, (ws) => {
      const c = { ws, url: req.url, inbox: [] };
      conns.push(c);
      const q = new URL(req.url, 'http://x').searchParams;
      ws.send(JSON.stringify({ type: 'chat.response', content: WELCOME, connectionId: 'conn-' + conns.length,
        senderId: q.get('senderId'), authenticated: false }));
      ws.on('message', (data) => {
        c.inbox.push(JSON.parse(data.toString()));
        waiters.splice(0).forEach((w) => w());
      });
      waiters.splice(0).forEach((w) => w());
    });
  });
  const until = (pred, what, ms = 5000) => new Promise((resolve, reject) => {
    const t0 = Date.now();
    const check = () => {
      const v = pred();
      if (v) return resolve(v);
      if (Date.now() - t0 > ms) return reject(new Error('mock server: timed out waiting for ' + what));
      waiters.push(check);
      setTimeout(check, 50);
    };
    check();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port, conns, until,
    last: () => conns[conns.length - 1],
    send: (obj) => conns[conns.length - 1].ws.send(JSON.stringify(obj)),
    close: () => { wss.clients.forEach((w) => w.terminate()); server.close(); },
  })));
}

runTest('web page protocol logic (mock server)', 60000, async (setCleanup) => {
  const mock = await startMock();
  const b = await launch();
  setCleanup(async () => { await b.close(); mock.close(); });
  const { page } = b;
  const bubbleText = (id) => page.evaluate((id) => {
    const d = document.querySelector(`#transcript .msg.agent[data-message-id="${id}"]`);
    return d ? d.textContent : null;
  }, id);
  const waitText = async (id, text) => {
    try {
      await page.waitForFunction(([id, text]) => {
        const d = document.querySelector(`#transcript .msg.agent[data-message-id="${id}"]`);
        return d && d.textContent === text;
      }, [id, text], { timeout: 5000 });
    } catch { throw new Error(`bubble ${id}: expected ${JSON.stringify(text)}, shows ${JSON.stringify(await bubbleText(id))}`); }
  };

  await page.goto(`http://127.0.0.1:${mock.port}/`);
  await page.fill('#senderId', 'alice');
  await page.fill('#senderName', 'Alice A');
  await page.fill('#token', 'sekret token');
  await page.click('#connect');
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 5000 });
  const q = new URL(mock.conns[0].url, 'http://x').searchParams;
  assert(q.get('senderId') === 'alice' && q.get('senderName') === 'Alice A' && q.get('token') === 'sekret token',
    `query params wrong: ${mock.conns[0].url}`);
  assert(await page.locator('#transcript .msg.agent').count() === 0, 'welcome rendered as an agent bubble');

  // 1. a turn streams three deltas, then the connection drops mid-turn
  await page.fill('#message', 'one two three four five');
  await page.press('#message', 'Enter');
  const send = await mock.until(() => mock.conns[0].inbox.find((m) => m.type === 'chat.send'), 'chat.send');
  assert(send.content === 'one two three four five' && send.messageId, `bad chat.send ${JSON.stringify(send)}`);
  assert(!('chatType' in send) && !('groupId' in send) && !('threadId' in send), 'direct send carries group fields');
  const M = send.messageId;
  mock.send({ type: 'chat.typing', messageId: M, sessionKey: 'agent:main:websocket:direct:alice' });
  await page.waitForFunction(() => document.getElementById('typing').textContent.trim() !== '', null, { timeout: 3000 });
  mock.send({ type: 'chat.stream', messageId: M, content: 'echo:', done: false, seq: 1 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' one', done: false, seq: 2 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' two', done: false, seq: 3 });
  await waitText(M, 'echo: one two');
  const t0 = Date.now();
  mock.conns[0].ws.terminate();

  // 2. the page reconnects by itself (first back-off 0.25-0.5 s) and joins with afterSeq 3
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 3000 });
  const join = await mock.until(() => mock.conns[1] && mock.conns[1].inbox.find((m) => m.type === 'chat.join'), 'chat.join');
  const reconnectMs = Date.now() - t0;
  assert(reconnectMs < 2500, `reconnect took ${reconnectMs} ms`);
  assert(join.afterSeq === 3, `chat.join afterSeq=${join.afterSeq}, expected 3`);
  assert(!('groupId' in join) && !('threadId' in join), `direct join carries group fields: ${JSON.stringify(join)}`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 3000 });
  mock.send({ type: 'chat.joined', sessionKey: 'agent:main:websocket:direct:alice', inFlight: M });
  // replayed deltas already rendered must be ignored
  mock.send({ type: 'chat.stream', messageId: M, content: ' one', done: false, seq: 2 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' two', done: false, seq: 3 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' three', done: false, seq: 4 });
  await waitText(M, 'echo: one two three');
  // catchUp: every delta after the rendered seq, in one frame, is appended
  mock.send({ type: 'chat.stream', messageId: M, content: ' four', done: false, seq: 5, catchUp: true });
  await waitText(M, 'echo: one two three four');
  mock.send({ type: 'chat.stream', messageId: M, content: ' four', done: false, seq: 5 });   // dup of the catch-up
  mock.send({ type: 'chat.stream', messageId: M, content: ' five', done: false, seq: 6 });
  await waitText(M, 'echo: one two three four five');
  mock.send({ type: 'chat.response', messageId: M, content: 'echo: one two three four five!', done: true,
    sessionKey: 'agent:main:websocket:direct:alice', agentId: 'main' });
  await waitText(M, 'echo: one two three four five!');
  assert(await page.locator('#transcript .msg.agent').count() === 1, 'more than one agent bubble for one turn');
  assert((await page.locator('#typing').textContent()).trim() === '', 'typing indicator still on after chat.response');

  // 3. answer completes while the page is away; the join hears nothing -> history fallback
  await page.fill('#message', 'second');
  await page.click('#send');
  const send2 = await mock.until(() => mock.conns[1].inbox.find((m) => m.type === 'chat.send'), 'second chat.send');
  const M2 = send2.messageId;
  mock.send({ type: 'chat.stream', messageId: M2, content: 'echo:', done: false, seq: 1 });
  await waitText(M2, 'echo:');
  await page.evaluate(() => window.clawsocket.drop());
  const join2 = await mock.until(() => mock.conns[2] && mock.conns[2].inbox.find((m) => m.type === 'chat.join'), 'second chat.join');
  assert(join2.afterSeq === 1, `second join afterSeq=${join2.afterSeq}, expected 1`);
  mock.send({ type: 'chat.joined', sessionKey: 'agent:main:websocket:direct:alice' });
  const hist = await mock.until(() => mock.conns[2].inbox.find((m) => m.type === 'chat.history'), 'chat.history fallback', 6000);
  assert(!('groupId' in hist), 'direct history request carries groupId');
  mock.send({ type: 'chat.history', sessionKey: 'agent:main:websocket:direct:alice', messages: [
    { role: 'user', content: 'second', messageId: M2, senderId: 'alice', senderName: 'Alice A', ts: 1 },
    { role: 'assistant', content: 'echo: second', messageId: M2, ts: 2 },
  ] });
  await waitText(M2, 'echo: second');

  // 4. group + thread + quote fields; a member's message; an error with its code
  await page.click('#convOptions summary');
  await page.fill('#groupId', 'dev-team');
  await page.fill('#groupSubject', 'Dev Team');
  await page.fill('#threadId', 't1');
  mock.send({ type: 'chat.message', content: 'Hi from Bob', senderId: 'bob', senderName: 'Bob', groupId: 'dev-team', messageId: 'b1' });
  const member = page.locator('#transcript .msg.member').last();
  await member.waitFor({ timeout: 3000 });
  assert((await member.textContent()) === 'Hi from Bob', 'chat.message not shown with its text');
  const label = await member.getAttribute('data-label');
  assert(label.includes('Bob'), `member bubble label ${label} lacks the sender`);
  await member.click();
  await page.waitForSelector('#quoteBar:not([hidden])');
  await page.click('#quoteClear');
  assert(await page.locator('#quoteBar').isHidden(), 'quote did not clear');
  await member.click();
  await page.fill('#message', '<b>not html</b>');
  await page.click('#send');
  const send3 = await mock.until(() => mock.conns[2].inbox.filter((m) => m.type === 'chat.send')[0], 'group chat.send');
  const want = { chatType: 'group', groupId: 'dev-team', groupSubject: 'Dev Team', threadId: 't1',
    replyToBody: 'Hi from Bob', replyToMessageId: 'b1', content: '<b>not html</b>' };
  for (const [k, v] of Object.entries(want)) assert(send3[k] === v, `group send ${k}=${JSON.stringify(send3[k])}, expected ${JSON.stringify(v)}`);
  const userB = page.locator('#transcript .msg.user').last();
  assert((await userB.locator('b').count()) === 0, 'user text was rendered as HTML');
  mock.send({ type: 'chat.error', messageId: send3.messageId, error: 'Session is busy', code: 'session_busy' });
  const err = page.locator('#transcript .msg.error').last();
  await err.waitFor({ timeout: 3000 });
  assert((await err.textContent()).includes('session_busy'), 'error line lacks its code');
  assert(await err.getAttribute('data-code') === 'session_busy', 'error line lacks data-code');

  // 5. a reconnect rejoins the group/thread session too
  await page.evaluate(() => window.clawsocket.drop());
  await mock.until(() => mock.conns[3] && mock.conns[3].inbox.some((m) => m.type === 'chat.join' && m.groupId === 'dev-team' && m.threadId === 't1'),
    'group rejoin');

  // 6. close 4401 (auth failed): no reconnect
  mock.send({ type: 'chat.error', error: 'Authentication failed', code: 'auth_failed' });
  mock.last().ws.close(4401, 'auth failed');
  await page.waitForSelector('#status[data-state="failed"]', { timeout: 3000 });
  await new Promise((r) => setTimeout(r, 1500));
  assert(mock.conns.length === 4, `the page reconnected after close 4401 (${mock.conns.length} connections)`);
  assert((await page.locator('#connect').textContent()) === 'Connect', 'connect button did not reset after 4401');
  assert(b.pageErrors.length === 0, `page script errors: ${b.pageErrors.join('; ')}`);

  await page.screenshot({ path: path.join(artifactsDir(), 'web-chat-mock.png'), fullPage: true });
  return `resume after drop in ${reconnectMs} ms with afterSeq=3, no duplicate deltas, catchUp, history fallback, group/thread/quote, 4401`;
});
