// Browser e2e: the web chat page served by ClawSocket at GET /, driven in headless
// Debian Chromium with the keyboard. Needs a server running the built-in echo demo
// agent (settings/demo.toml, auth off). Env: CLAWSOCKET_URL (http base, default
// http://127.0.0.1:18800), ARTIFACTS_DIR (default artifacts). Prints PASS/FAIL,
// exits 0/1, never runs over 60 s.
import path from 'node:path';
import { launch, runTest, assert, artifactsDir, summarizeFrames, gotoChat } from './chromium.mjs';

const TEXT = 'Hello from the browser test';
// the smallest valid PNG (1×1), uploaded with fetch('/media') from the page
const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==';
const EXPECTED = `echo: ${TEXT}`;

runTest('browser web chat', 60000, async (setCleanup) => {
  const b = await launch();
  setCleanup(b.close);
  const { page, frames } = b;
  await gotoChat(page);
  for (const id of ['newChat', 'threadList', 'senderId', 'senderName', 'token', 'connect', 'status', 'message',
    'send', 'stop', 'attach', 'transcript', 'announcer', 'groupId']) {
    assert(await page.locator('#' + id).count() === 1, `the page has no #${id}`);
  }

  // It connects by itself, as a guest (auth is off), without a click.
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  const welcome = frames.find((f) => f.dir === 'in' && f.msg && f.msg.type === 'chat.response');
  assert(welcome && welcome.msg.content === 'Connected to WebSocket chat server', 'first chat.response is not the welcome frame');
  assert(await page.locator('#transcript .msg.agent').count() === 0, 'the welcome frame was rendered as an answer');

  // Keyboard only: the first Tab reaches the skip link, which leads to the message box;
  // Shift+Enter is a new line, Enter sends.
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.className) === 'skip-link', 'the first Tab is not the skip link');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.activeElement.id === 'message', null, { timeout: 3000 });
  await page.keyboard.type('first line');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('second line');
  assert(await page.inputValue('#message') === 'first line\nsecond line', 'Shift+Enter did not add a line');
  assert(!frames.some((f) => f.dir === 'out' && f.msg.type === 'chat.send'), 'Shift+Enter sent the message');
  await page.fill('#message', '');
  await page.keyboard.type(TEXT);
  await page.keyboard.press('Enter');

  const user = page.locator('#transcript .msg.user').last();
  await user.waitFor({ timeout: 5000 });
  assert((await user.locator('.body').textContent()) === TEXT, 'the user bubble does not show the sent text');

  const agent = page.locator('#transcript .msg.agent.done');
  try {
    await page.waitForFunction((exp) => {
      const a = document.querySelector('#transcript .msg.agent.done .answer');
      return a && a.innerText.trim() === exp;
    }, EXPECTED, { timeout: 20000 });
  } catch (e) {
    const shown = await page.locator('#transcript').innerText();
    throw new Error(`no final answer "${EXPECTED}" within 20 s; transcript:\n${shown}\nframes:\n${summarizeFrames(frames)}`);
  }
  assert(await agent.count() === 1, `expected 1 answer, found ${await agent.count()}`);
  assert(await agent.getAttribute('data-message-id'), 'the answer has no data-message-id');

  const inbound = frames.filter((f) => f.dir === 'in').map((f) => f.msg);
  const streams = inbound.filter((m) => m.type === 'chat.stream');
  assert(streams.length > 0, 'nothing streamed');
  const joined = streams.slice().sort((x, y) => x.seq - y.seq).map((m) => m.content).join('');
  assert(joined === EXPECTED, `stream deltas join to ${JSON.stringify(joined)}, expected ${JSON.stringify(EXPECTED)}`);
  const seqAttr = await agent.getAttribute('data-seq');
  assert(Number(seqAttr) === streams.length, `answer data-seq=${seqAttr}, ${streams.length} deltas arrived`);
  assert((await page.locator('#announcer').textContent()).includes(EXPECTED), 'the live region did not read the answer');
  assert(await agent.locator('button.copy-answer').count() === 1, 'no copy button on the answer');
  assert(await page.locator('#stop').isHidden(), 'Stop still shown after the answer');

  // The conversation is listed in the sidebar under its first message.
  await page.waitForSelector('#threadList .thread-item.current', { timeout: 10000 });
  assert((await page.locator('#threadList .thread-item.current').innerText()).includes(TEXT), 'the chat is not listed');
  assert(await page.locator('#transcript .msg.error').count() === 0, 'error line(s) in the transcript');

  // an upload from the page's origin, as the page's own attach button would make it:
  // fetch('/media') with the raw bytes gets 201 {mediaId, url}, the url serves the same
  // bytes back (as an image the browser displays), and another sender gets 404
  const upload = await page.evaluate(async ({ png, sender }) => {
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    const posted = await fetch(`/media?senderId=${encodeURIComponent(sender)}&name=dot.png`, {
      method: 'POST', headers: { 'Content-Type': 'image/png' }, body: new Blob([bytes], { type: 'image/png' }),
    });
    const created = await posted.json();
    const mine = `${created.url}?senderId=${encodeURIComponent(sender)}`;
    const got = await fetch(mine);
    const back = new Uint8Array(await got.arrayBuffer());
    const other = await fetch(`${created.url}?senderId=someone-else`);
    const img = new Image();
    const shown = await new Promise((resolve) => {
      img.onload = () => resolve(img.naturalWidth === 1 && img.naturalHeight === 1);
      img.onerror = () => resolve(false);
      img.src = mine;
    });
    return {
      status: posted.status, created, getStatus: got.status, otherStatus: other.status, shown,
      same: back.length === bytes.length && back.every((b, i) => b === bytes[i]),
      type: got.headers.get('content-type'), nosniff: got.headers.get('x-content-type-options'),
    };
  }, { png: PNG_BASE64, sender: welcome.msg.senderId });
  assert(upload.status === 201, `POST /media answered ${upload.status}: ${JSON.stringify(upload.created)}`);
  assert(upload.created.mediaType === 'image/png' && upload.created.bytes === 70 && upload.created.mediaId,
    `unexpected 201 body ${JSON.stringify(upload.created)}`);
  assert(upload.getStatus === 200 && upload.same, `GET ${upload.created.url} did not give the bytes back`);
  assert(upload.type === 'image/png' && upload.nosniff === 'nosniff', `served as ${upload.type}, nosniff ${upload.nosniff}`);
  assert(upload.shown, 'the uploaded image does not display in the page');
  assert(upload.otherStatus === 404, `another sender got ${upload.otherStatus}, not 404`);

  assert(b.pageErrors.length === 0, `page script errors: ${b.pageErrors.join('; ')}`);
  const favicon = await page.evaluate(() => fetch('/favicon.ico').then((r) => r.status));
  assert(favicon === 200, `/favicon.ico answered ${favicon}`);

  const dir = artifactsDir();
  const shot = path.join(dir, 'web-chat.png');
  await page.screenshot({ path: shot, fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(dir, 'web-chat-dark.png'), fullPage: true });

  return `"${EXPECTED}" streamed in ${streams.length} delta(s); fetch('/media') upload ${upload.created.mediaId} served back; screenshot ${shot}`;
});
