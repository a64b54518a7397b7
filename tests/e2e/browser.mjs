// Browser e2e: the web chat page served by ClawSocket at GET /, driven in headless
// Debian Chromium. Needs a server running the built-in echo demo agent
// (settings/demo.toml). Env: CLAWSOCKET_URL (http base, default http://127.0.0.1:18800),
// ARTIFACTS_DIR (default artifacts). Prints PASS/FAIL, exits 0/1, never runs over 60 s.
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
  for (const id of ['senderId', 'senderName', 'token', 'connect', 'status', 'message', 'send',
    'transcript', 'typing', 'groupId', 'groupSubject', 'threadId']) {
    assert(await page.locator('#' + id).count() === 1, `the page has no #${id}`);
  }

  const senderId = 'web-e2e-' + Math.random().toString(36).slice(2, 8);
  await page.fill('#senderId', senderId);
  await page.fill('#senderName', 'Web E2E');
  await page.click('#connect');
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });

  // the welcome frame is a status line, not an agent bubble
  const welcome = frames.find((f) => f.dir === 'in' && f.msg && f.msg.type === 'chat.response');
  assert(welcome && welcome.msg.content === 'Connected to WebSocket chat server',
    'first chat.response is not the welcome frame');
  assert(await page.locator('#transcript .msg.agent').count() === 0, 'the welcome frame was rendered as an agent bubble');
  const statusLine = await page.locator('#transcript .msg.status').first().textContent();
  assert(statusLine.includes(senderId), `welcome status line "${statusLine}" does not name ${senderId}`);

  // record whether the typing indicator ever shows while the answer streams
  await page.evaluate(() => {
    window.__typingSeen = false;
    const t = document.getElementById('typing');
    new MutationObserver(() => { if (t.textContent.trim()) window.__typingSeen = true; })
      .observe(t, { childList: true, characterData: true, subtree: true });
  });

  await page.click('#message');
  await page.keyboard.type(TEXT);
  await page.click('#send');

  const user = page.locator('#transcript .msg.user').last();
  await user.waitFor({ timeout: 5000 });
  assert((await user.textContent()) === TEXT, 'the user bubble does not show the sent text');

  const agent = page.locator('#transcript .msg.agent.done');
  try {
    await page.waitForFunction((exp) => {
      const a = document.querySelector('#transcript .msg.agent.done');
      return a && a.textContent === exp;
    }, EXPECTED, { timeout: 20000 });
  } catch (e) {
    const shown = await page.locator('#transcript').innerText();
    throw new Error(`no final agent bubble "${EXPECTED}" within 20 s; transcript:\n${shown}\nframes:\n${summarizeFrames(frames)}`);
  }
  assert(await agent.count() === 1, `expected 1 agent bubble, found ${await agent.count()}`);
  const messageId = await agent.getAttribute('data-message-id');
  assert(messageId, 'the agent bubble has no data-message-id');

  const inbound = frames.filter((f) => f.dir === 'in').map((f) => f.msg);
  const typing = inbound.filter((m) => m.type === 'chat.typing');
  const streams = inbound.filter((m) => m.type === 'chat.stream');
  const typingSeen = await page.evaluate(() => window.__typingSeen);
  assert(typing.length > 0 || streams.length > 0, 'neither chat.typing nor chat.stream arrived');
  assert(typingSeen || streams.length > 0, 'the typing indicator never showed and nothing streamed');
  if (streams.length) {
    // deltas: concatenated in seq order they give the final answer
    const joined = streams.slice().sort((x, y) => x.seq - y.seq).map((m) => m.content).join('');
    assert(joined === EXPECTED, `stream deltas join to ${JSON.stringify(joined)}, expected ${JSON.stringify(EXPECTED)}`);
    const seqs = streams.map((m) => m.seq);
    assert(seqs.every((s, i) => s === i + 1), `stream seq is not 1,2,3…: ${seqs.join(',')}`);
    const seqAttr = await agent.getAttribute('data-seq');
    assert(Number(seqAttr) === streams.length, `bubble data-seq=${seqAttr}, ${streams.length} deltas arrived`);
  }
  assert((await page.locator('#typing').textContent()).trim() === '', 'the typing indicator is still on after the answer');

  // reply-quote: click the answer, the quote shows, send, frame carries replyToBody/Id
  await agent.click();
  await page.waitForSelector('#quoteBar:not([hidden])', { timeout: 3000 });
  assert((await page.locator('#quoteText').textContent()) === EXPECTED, 'the quote bar does not show the answer');
  await page.fill('#message', 'I agree');
  await page.press('#message', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#transcript .msg.agent.done').length === 2, null, { timeout: 20000 });
  const sentReply = frames.filter((f) => f.dir === 'out' && f.msg.type === 'chat.send').pop().msg;
  assert(sentReply.replyToBody === EXPECTED && sentReply.replyToMessageId === messageId,
    `reply frame lacks the quote: ${JSON.stringify(sentReply)}`);
  assert(await page.locator('#quoteBar').isHidden(), 'the quote bar did not clear after sending');

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
  }, { png: PNG_BASE64, sender: senderId });
  assert(upload.status === 201, `POST /media answered ${upload.status}: ${JSON.stringify(upload.created)}`);
  assert(upload.created.mediaType === 'image/png' && upload.created.bytes === 70 && upload.created.mediaId,
    `unexpected 201 body ${JSON.stringify(upload.created)}`);
  assert(upload.getStatus === 200 && upload.same, `GET ${upload.created.url} did not give the bytes back`);
  assert(upload.type === 'image/png' && upload.nosniff === 'nosniff', `served as ${upload.type}, nosniff ${upload.nosniff}`);
  assert(upload.shown, 'the uploaded image does not display in the page');
  assert(upload.otherStatus === 404, `another sender got ${upload.otherStatus}, not 404`);

  const errors = await page.locator('#transcript .msg.error').count();
  assert(errors === 0, `${errors} error line(s) in the transcript`);
  assert(b.pageErrors.length === 0, `page script errors: ${b.pageErrors.join('; ')}`);

  const dir = artifactsDir();
  const shot = path.join(dir, 'web-chat.png');
  await page.screenshot({ path: shot, fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(dir, 'web-chat-dark.png'), fullPage: true });

  return `"${EXPECTED}" streamed in ${streams.length} delta(s), ${typing.length} typing frame(s); fetch('/media') upload ${upload.created.mediaId} served back; screenshot ${shot}`;
});
