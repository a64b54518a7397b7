// Deterministic test of the web page's logic (web/) in headless Chromium against a
// scripted mock server on 127.0.0.1 (no ClawSocket needed): the token from the URL
// fragment (kept out of the address bar and out of upload URLs), delta streaming,
// drop + reconnect with back-off, chat.join afterSeq resume without duplicates,
// catchUp, an answer that completed while away read from history once, errors in
// words (quota_exceeded with retryAfterMs), uploads (progress, thumbnail, mediaIds,
// 413 / 415 / quota explained), a group member's message with its name, the
// conversation list (rename, delete), close 4401 asking to sign in.
// Prints PASS/FAIL, exits 0/1, bounded to 60 s.
import http from 'node:http';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import { launch, runTest, assert, artifactsDir, pageFile, PAGE_FILES, PNG } from './chromium.mjs';

const WELCOME = 'Connected to WebSocket chat server';
const SESSION = 'agent:main:websocket:direct:';

// POST /media answers by the file's name: the refusals ClawSocket sends (SPEC §12).
const UPLOAD_REFUSALS = {
  'big.png': [413, { error: 'larger than channels.websocket.media.maxBytes', code: 'payload_too_large' }],
  'full.png': [413, { error: 'over channels.websocket.media.perUserBytes', code: 'quota_exceeded' }],
  'tool.bin': [415, { error: 'Content-Type "application/octet-stream" is not one this server takes', code: 'unsupported_type' }],
};

function startMock() {
  const conns = [];          // { ws, url, inbox: [] }
  const uploads = [];        // { url, headers, bytes }
  const media = new Map();   // mediaId -> { type, body }
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && PAGE_FILES[url.pathname]) {
      const file = pageFile(url.pathname);
      res.writeHead(200, { 'content-type': file.contentType });
      res.end(file.body);
    } else if (req.method === 'POST' && url.pathname === '/media') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        uploads.push({ url: req.url, headers: req.headers, bytes: Buffer.concat(chunks).length });
        const [status, body] = UPLOAD_REFUSALS[url.searchParams.get('name')] || [201, null];
        // Named after the file: uploads run in parallel, so their order is not fixed.
        const mediaId = 'media-' + url.searchParams.get('name');
        if (status === 201) media.set(mediaId, { type: req.headers['content-type'], body: Buffer.concat(chunks) });
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body || { mediaId, mediaType: req.headers['content-type'], bytes: uploads.at(-1).bytes, url: '/media/' + mediaId }));
      });
    } else if (req.method === 'GET' && media.has(url.pathname.replace('/media/', ''))) {
      const stored = media.get(url.pathname.replace('/media/', ''));
      res.writeHead(200, { 'content-type': stored.type });
      res.end(stored.body);
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
        senderId: q.get('senderId'), authenticated: true, protocol: 2, features: ['threads', 'media'] }));
      ws.on('message', (data) => c.inbox.push(JSON.parse(data.toString())));
    });
  });
  const until = async (pred, what, ms = 5000) => {
    const t0 = Date.now();
    for (;;) {
      const v = pred();
      if (v) return v;
      if (Date.now() - t0 > ms) throw new Error('mock server: timed out waiting for ' + what);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port, conns, uploads, until,
    last: () => conns[conns.length - 1],
    inbox: (type) => conns.flatMap((c) => c.inbox).filter((m) => m.type === type),
    send: (obj) => conns[conns.length - 1].ws.send(JSON.stringify(obj)),
    close: () => { wss.clients.forEach((w) => w.terminate()); server.close(); },
  })));
}

runTest('web page logic (mock server)', 60000, async (setCleanup) => {
  const mock = await startMock();
  const b = await launch();
  setCleanup(async () => { await b.close(); mock.close(); });
  const { page } = b;
  const answerText = (id) => page.evaluate((id) => {
    const d = document.querySelector(`#transcript .msg.agent[data-message-id="${id}"] .answer`);
    return d ? d.innerText.trim() : null;
  }, id);
  const waitText = async (id, want) => {
    try {
      await page.waitForFunction(([id, want]) => {
        const d = document.querySelector(`#transcript .msg.agent[data-message-id="${id}"] .answer`);
        return d && d.innerText.trim() === want;
      }, [id, want], { timeout: 5000 });
    } catch { throw new Error(`answer ${id}: expected ${JSON.stringify(want)}, shows ${JSON.stringify(await answerText(id))}`); }
  };
  const lastSend = () => mock.inbox('chat.send').at(-1);

  // 0. The token from the fragment: in the socket's URL, gone from the address bar.
  await page.goto(`http://127.0.0.1:${mock.port}/#token=sekret%20token`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 5000 });
  const q = new URL(mock.conns[0].url, 'http://x').searchParams;
  assert(q.get('token') === 'sekret token' && /^guest-/.test(q.get('senderId')), `query params wrong: ${mock.conns[0].url}`);
  assert(await page.evaluate(() => location.hash) === '', 'the token stayed in the address bar');
  const me = q.get('senderId');
  assert(mock.inbox('chat.threads').length === 1, 'no chat.threads on connect');

  // 1. A turn streams three deltas, then the connection drops mid-turn.
  await page.fill('#message', 'one two three four five');
  await page.press('#message', 'Enter');
  const send = await mock.until(() => lastSend(), 'chat.send');
  assert(send.content === 'one two three four five' && send.messageId && send.threadId, `bad chat.send ${JSON.stringify(send)}`);
  assert(!('chatType' in send) && !('groupId' in send), 'direct send carries group fields');
  const M = send.messageId;
  const key = SESSION + me + ':thread:' + send.threadId;
  mock.send({ type: 'chat.typing', messageId: M, sessionKey: key });
  await page.waitForSelector('#stop:not([hidden])', { timeout: 3000 });
  mock.send({ type: 'chat.stream', messageId: M, content: 'echo:', done: false, seq: 1 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' one', done: false, seq: 2 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' two', done: false, seq: 3 });
  await waitText(M, 'echo: one two');
  const t0 = Date.now();
  mock.conns[0].ws.terminate();

  // 2. The page reconnects by itself and joins with afterSeq 3; history is read again.
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 3000 });
  const join = await mock.until(() => mock.conns[1] && mock.conns[1].inbox.find((m) => m.type === 'chat.join'), 'chat.join');
  const reconnectMs = Date.now() - t0;
  assert(reconnectMs < 2500, `reconnect took ${reconnectMs} ms`);
  assert(join.afterSeq === 3 && join.threadId === send.threadId, `chat.join ${JSON.stringify(join)}`);
  await mock.until(() => mock.conns[1].inbox.find((m) => m.type === 'chat.history'), 'chat.history after the reconnect');
  mock.send({ type: 'chat.joined', sessionKey: key, inFlight: M });
  mock.send({ type: 'chat.history', sessionKey: key, messages: [] });
  mock.send({ type: 'chat.stream', messageId: M, content: ' one', done: false, seq: 2 });   // replayed: ignored
  mock.send({ type: 'chat.stream', messageId: M, content: ' two', done: false, seq: 3 });
  mock.send({ type: 'chat.stream', messageId: M, content: ' three', done: false, seq: 4 });
  await waitText(M, 'echo: one two three');
  mock.send({ type: 'chat.stream', messageId: M, content: ' four', done: false, seq: 5, catchUp: true });
  mock.send({ type: 'chat.stream', messageId: M, content: ' four', done: false, seq: 5 });   // dup of the catch-up
  mock.send({ type: 'chat.stream', messageId: M, content: ' five', done: false, seq: 6 });
  await waitText(M, 'echo: one two three four five');
  mock.send({ type: 'chat.response', messageId: M, content: 'echo: one two three four five!', done: true, sessionKey: key, agentId: 'main' });
  await waitText(M, 'echo: one two three four five!');
  assert(await page.locator('#transcript .msg.agent').count() === 1, 'more than one answer for one turn');
  assert(await page.locator('#transcript .msg.user').count() === 1, 'the question shows twice');
  assert(await page.locator('#stop').isHidden(), 'Stop still shown after chat.response');

  // Frames of shapes the page does not expect are skipped; the page goes on.
  for (const junk of ['not json', 'null', '[]', '{"type":5}', '{"type":"chat.threads","sessions":"x"}',
    `{"type":"chat.response","messageId":{},"content":"x"}`, `{"type":"chat.tool","messageId":"${M}","seq":"x"}`,
    `{"type":"chat.history","sessionKey":"${key}x","messages":[null,5]}`]) mock.last().ws.send(junk);

  // 3. An answer that completes while the page is away comes from history, once.
  await page.fill('#message', 'second');
  await page.press('#message', 'Enter');
  const M2 = (await mock.until(() => mock.conns[1].inbox.find((m) => m.type === 'chat.send'), 'second chat.send')).messageId;
  mock.send({ type: 'chat.stream', messageId: M2, content: 'echo:', done: false, seq: 1 });
  await waitText(M2, 'echo:');
  await page.evaluate(() => window.clawsocket.drop());
  await mock.until(() => mock.conns[2] && mock.conns[2].inbox.find((m) => m.type === 'chat.history'), 'history after the second drop');
  mock.send({ type: 'chat.history', sessionKey: key, messages: [
    { role: 'user', content: 'one two three four five', messageId: M, senderId: me, ts: 1 },
    { role: 'assistant', content: 'echo: one two three four five!', messageId: M, ts: 2 },
    { role: 'user', content: 'second', messageId: M2, senderId: me, ts: 3 },
    { role: 'assistant', content: 'echo: **second**', messageId: M2, ts: 4, usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 } },
  ] });
  await waitText(M2, 'echo: second');
  assert(await page.locator(`#transcript .msg.agent[data-message-id="${M2}"] .answer strong`).count() === 1, 'history not rendered as Markdown');
  assert(await page.locator('#transcript .msg.user').count() === 2 && await page.locator('#transcript .msg.agent').count() === 2,
    'history duplicated what was shown');
  assert((await page.locator(`#transcript .msg.agent[data-message-id="${M2}"] .usage`).innerText()) === '5 tokens', 'usage not shown');

  // 4. Errors in words: a usage limit with the time to wait.
  await page.fill('#message', 'third');
  await page.press('#message', 'Enter');
  const M3 = (await mock.until(() => mock.conns[2].inbox.find((m) => m.type === 'chat.send'), 'third chat.send')).messageId;
  mock.send({ type: 'chat.error', messageId: M3, error: 'over limits.perUser.turnsPerMinute', code: 'quota_exceeded', retryAfterMs: 30000 });
  const quota = page.locator('#transcript .msg.error[data-code="quota_exceeded"]');
  await quota.waitFor({ timeout: 3000 });
  assert((await quota.innerText()).includes('you can continue in 30 s'), `quota error: ${await quota.innerText()}`);

  // 5. Attachments: progress, a thumbnail, refusals explained, mediaIds sent.
  await page.setInputFiles('#fileInput', [
    { name: 'red.png', mimeType: 'image/png', buffer: PNG },
    { name: 'big.png', mimeType: 'image/png', buffer: PNG },
  ]);
  await page.waitForSelector('#attachments .chip.done img', { timeout: 5000 });
  await page.waitForSelector('#attachments .chip.failed', { timeout: 5000 });
  assert((await page.locator('#composeHint').innerText()).includes('"big.png" is too large'), 'no words for 413');
  await page.locator('#attachments .chip.failed button').click();
  for (const [file, words] of [['full.png', 'space for attachments is full'], ['tool.bin', 'kind of file this chat does not take']]) {
    await page.setInputFiles('#fileInput', [{ name: file, mimeType: file.endsWith('.png') ? 'image/png' : 'application/octet-stream', buffer: PNG }]);
    await page.waitForSelector('#attachments .chip.failed', { timeout: 5000 });
    assert((await page.locator('#composeHint').innerText()).includes(words), `${file}: ${await page.locator('#composeHint').innerText()}`);
    await page.locator('#attachments .chip.failed button').click();
  }
  const upload = mock.uploads[0];
  assert(upload.headers.authorization === 'Bearer sekret token' && !upload.url.includes('token'), `upload credentials: ${upload.url}`);
  assert(upload.headers['content-type'] === 'image/png' && upload.bytes === PNG.length, 'upload body or type');
  await page.fill('#message', 'see the picture');
  await page.press('#message', 'Enter');
  const withMedia = await mock.until(() => mock.inbox('chat.send').find((m) => m.content === 'see the picture'), 'chat.send with media');
  assert(JSON.stringify(withMedia.mediaIds) === '["media-red.png"]', `mediaIds ${JSON.stringify(withMedia.mediaIds)}`);
  await page.waitForSelector('#transcript .msg.user .media-list img', { timeout: 3000 });
  assert(await page.locator('#attachments .chip').count() === 0, 'attachments stayed after sending');

  // 6. The conversation list: rename and delete.
  mock.send({ type: 'chat.threads', sessions: [
    { sessionKey: key, threadId: send.threadId, title: 'one two three four five', lastActivity: 2, messageCount: 4 },
    { sessionKey: SESSION + me + ':thread:old', threadId: 'old', title: 'An older chat', lastActivity: 1, messageCount: 2 },
  ] });
  await page.waitForSelector('#threadList .thread-item.current', { timeout: 3000 });
  await page.locator('#threadList .thread-item').nth(1).locator('button.rename').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('Renamed chat');
  await page.keyboard.press('Enter');
  const titled = await mock.until(() => mock.inbox('chat.title')[0], 'chat.title');
  assert(titled.threadId === 'old' && titled.title === 'Renamed chat', `chat.title ${JSON.stringify(titled)}`);
  page.once('dialog', (dialog) => dialog.accept());
  await page.locator('#threadList .thread-item').nth(1).locator('button.delete').click();
  const deleted = await mock.until(() => mock.inbox('chat.delete')[0], 'chat.delete');
  assert(deleted.threadId === 'old', `chat.delete ${JSON.stringify(deleted)}`);
  mock.send({ type: 'chat.deleted', sessionKey: SESSION + me + ':thread:old', threadId: 'old' });
  await page.waitForFunction(() => document.querySelectorAll('#threadList .thread-item').length === 1, null, { timeout: 3000 });

  // 7. A group: joined when opened, a member's message shown with the member's name.
  await page.fill('#groupId', 'dev-team');
  await page.press('#groupId', 'Enter');
  await mock.until(() => mock.inbox('chat.join').find((m) => m.groupId === 'dev-team'), 'group join');
  mock.send({ type: 'chat.message', content: 'Hi from <b>Bob</b>', senderId: 'bob', senderName: 'Bob', groupId: 'dev-team', messageId: 'b1' });
  const member = page.locator('#transcript .msg.member').last();
  await member.waitFor({ timeout: 3000 });
  assert((await member.locator('.body').textContent()) === 'Hi from <b>Bob</b>', 'member text not shown as text');
  assert((await member.locator('.who').textContent()) === 'Bob', 'member name missing');
  await page.fill('#message', 'hello team');
  await page.press('#message', 'Enter');
  const groupSend = await mock.until(() => mock.inbox('chat.send').find((m) => m.content === 'hello team'), 'group send');
  assert(groupSend.chatType === 'group' && groupSend.groupId === 'dev-team' && !groupSend.threadId, `group send ${JSON.stringify(groupSend)}`);

  // 8. Close 4401 (auth failed): no reconnect, the sign-in form opens.
  const before = mock.conns.length;
  mock.last().ws.close(4401, 'invalid_token');
  await page.waitForSelector('#status[data-state="failed"]', { timeout: 3000 });
  await new Promise((r) => setTimeout(r, 1500));
  assert(mock.conns.length === before, `the page reconnected after close 4401 (${mock.conns.length} connections)`);
  assert(await page.locator('#account').getAttribute('open') !== null, 'the sign-in form did not open');
  assert(b.pageErrors.length === 0, `page script errors: ${b.pageErrors.join('; ')}`);

  await page.screenshot({ path: path.join(artifactsDir(), 'web-chat-mock.png'), fullPage: true });
  return `token from the fragment, resume after a drop in ${reconnectMs} ms with afterSeq=3, no duplicates, history, uploads, threads, group, 4401`;
});
