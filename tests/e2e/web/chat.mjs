// The web chat page as a user meets it, in Debian's Chromium, against a real ClawSocket
// (the binary, agent.kind "openai", auth on) and fake_agent.mjs (a real SSE model and
// auth service on 127.0.0.1). Each step saves a screenshot in $ARTIFACTS_DIR/web-e2e/:
// auto-connect with the token from the URL fragment; a Markdown answer with a code
// block (and XSS payloads in it not executed); Regenerate; Stop mid-stream (Escape);
// a new chat, then back to the first one with its history; reload in the middle of an
// answer, resumed without a duplicated word; reasoning folded and a tool card; an
// image upload that reaches the model as an image_url part; a phone-sized and a
// dark-mode screenshot; a tab without a token asked to sign in.
// Env: CLAWSOCKET_BIN (default target/release/clawsocket), ARTIFACTS_DIR.
// Prints PASS/FAIL, exits 0/1, bounded to 150 s.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, runTest, assert, artifactsDir, summarizeFrames, PNG } from '../chromium.mjs';
import { startFakeAgent, GOOD_TOKEN, USER, REASONING, slowPieces, SLOW_WORDS } from './fake_agent.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = process.env.CLAWSOCKET_BIN || path.join(ROOT, 'target', 'release', 'clawsocket');

async function freePort() {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// ClawSocket with the openai backend pointed at the fake, auth checked by the fake.
async function startClawSocket(agentPort, logFile) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clawsocket-web-e2e-'));
  const config = path.join(dir, 'clawsocket.toml');
  fs.writeFileSync(config, [
    '[channels.websocket.auth]', 'enabled = true', 'required = true',
    `endpoint = "http://127.0.0.1:${agentPort}/auth/verify"`,
    '[agent]', 'kind = "openai"', `url = "http://127.0.0.1:${agentPort}/v1"`, 'model = "fake"',
    '[store]', `dir = "${path.join(dir, 'data')}"`, '',
  ].join('\n'));
  const log = fs.openSync(logFile, 'w');
  const child = spawn(BIN, ['--config', config, '--host', '127.0.0.1', '--port', String(port)],
    { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) break;
    try { if ((await fetch(url + '/healthz')).ok) break; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert(child.exitCode === null, `clawsocket exited (${child.exitCode}); log: ${logFile}`);
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => { child.once('exit', r); setTimeout(r, 5000); });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { url, stop };
}

runTest('web chat page (fake SSE model, real ClawSocket)', 150000, async (setCleanup) => {
  const out = path.join(artifactsDir(), 'web-e2e');
  fs.mkdirSync(out, { recursive: true });
  const agent = await startFakeAgent();
  const server = await startClawSocket(agent.port, path.join(out, 'server.log'));
  process.env.CLAWSOCKET_URL = server.url;
  const b = await launch();
  setCleanup(async () => { await b.close(); await server.stop(); await agent.close(); });
  const { page, frames } = b;
  const cspViolations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  let step = 0;
  const shot = (name) => page.screenshot({ path: path.join(out, `${String(++step).padStart(2, '0')}-${name}.png`) });
  const sent = (type) => frames.filter((f) => f.dir === 'out' && f.msg.type === type).map((f) => f.msg);
  const answers = () => page.locator('#transcript .msg.agent');
  const lastAnswerText = () => answers().last().locator('.answer').innerText();
  const send = async (words) => {
    await page.click('#message');
    await page.keyboard.type(words);
    await page.keyboard.press('Enter');
  };
  const answered = async (count, what) => {
    try {
      await page.waitForFunction((n) => document.querySelectorAll('#transcript .msg.agent.done').length === n
        && !document.querySelector('#transcript .msg.agent.streaming'), count, { timeout: 20000 });
    } catch {
      throw new Error(`${what}: no ${count} finished answer(s); transcript:\n${await page.locator('#transcript').innerText()}\n` +
        summarizeFrames(frames.slice(-30)));
    }
  };

  // 1. Auto-connect: the token comes from the fragment and leaves the address bar.
  const response = await page.goto(`${server.url}/#token=${GOOD_TOKEN}`, { waitUntil: 'domcontentloaded' });
  const policy = response.headers()['content-security-policy'] || '';
  assert(process.env.E2E_LOCAL_PAGE === '1' || /default-src 'self'/.test(policy), 'GET / has no CSP');
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  assert(await page.evaluate(() => location.hash) === '', 'the token stayed in the address bar');
  assert(!page.url().includes(GOOD_TOKEN), 'the token is in the page URL');
  const welcome = frames.find((f) => f.dir === 'in' && f.msg.connectionId).msg;
  assert(welcome.authenticated === true && welcome.senderId === USER.userId, `welcome ${JSON.stringify(welcome)}`);
  await shot('connected');

  // 2. Markdown with a code block, rendered; the model's HTML never runs.
  await send('Show me MARKDOWN please');
  await answered(1, 'markdown');
  const md = answers().last();
  assert(await md.locator('.answer h2').innerText() === 'Sorting in JavaScript', 'no heading rendered');
  assert(await md.locator('.answer strong code').count() === 1, 'bold code not rendered');
  const code = await md.locator('.code-block pre code').innerText();
  assert(code.includes('const sorted = [3, 1, 2].sort((a, b) => a - b);'), `code block: ${code}`);
  assert(await md.locator('.code-block .copy-code').count() === 1, 'no copy button on the code block');
  const link = md.locator('.answer a[href="https://developer.mozilla.org/"]');
  assert(await link.getAttribute('target') === '_blank' && /noopener/.test(await link.getAttribute('rel')), 'link not opening safely');
  assert(await page.evaluate(() => window.__pwned) === undefined, 'the model\'s script ran');
  assert(await page.locator('#transcript script, #transcript [onerror]').count() === 0, 'unsanitized HTML reached the DOM');
  assert(!(await md.innerText()).includes('**'), 'raw Markdown shown');
  await page.waitForTimeout(300);   // an <img onerror> would have fired by now
  assert(await page.evaluate(() => window.__pwned) === undefined, 'the model\'s onerror ran');
  await shot('markdown');

  // 3. Regenerate the last answer: a new answer replaces it.
  const before = await lastAnswerText();
  await md.locator('button.regenerate').click();
  await page.waitForFunction((old) => {
    const all = document.querySelectorAll('#transcript .msg.agent');
    const last = all[all.length - 1];
    return all.length === 1 && last.classList.contains('done') && last.innerText !== old;
  }, await md.innerText(), { timeout: 20000 });
  const regenerated = await lastAnswerText();
  assert(regenerated !== before && /answer \d+\)/.test(regenerated), `regenerated: ${regenerated}`);
  assert(sent('chat.regenerate').length === 1, 'no chat.regenerate sent');
  await shot('regenerated');

  // 4. Stop mid-stream with Escape.
  await send('Tell me something SLOW-stop');
  await page.waitForFunction(() => {
    const a = document.querySelectorAll('#transcript .msg.agent');
    return a.length === 2 && a[1].innerText.includes('stop3');
  }, null, { timeout: 15000 });
  assert(await page.locator('#stop').isVisible(), 'no Stop button while the answer runs');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#transcript .msg.agent >> text=Stopped', { timeout: 10000 });
  const abort = sent('chat.abort')[0];
  assert(abort && abort.messageId === sent('chat.send').pop().messageId, `chat.abort: ${JSON.stringify(abort)}`);
  const stoppedText = await lastAnswerText();
  await page.waitForTimeout(600);
  assert(await lastAnswerText() === stoppedText, 'the answer kept growing after Stop');
  assert(!stoppedText.includes(`stop${SLOW_WORDS}`), 'the whole answer arrived despite Stop');
  assert(await page.locator('#stop').isHidden(), 'Stop still shown');
  assert(await page.locator('#transcript button.regenerate:visible').count() === 0, 'Regenerate offered on a stopped turn');
  await shot('stopped');

  // 5. A new chat, then back to the first: its history.
  const firstThread = sent('chat.send')[0].threadId;
  await page.click('#newChat');
  assert(await answers().count() === 0, 'the new chat shows old answers');
  await send('Hello from the second chat');
  await answered(1, 'second chat');
  await page.waitForSelector('#threadList li:nth-child(2)', { timeout: 10000 });
  await shot('second-chat');
  await page.locator('#threadList .thread-open', { hasText: 'Show me MARKDOWN please' }).click();
  await page.waitForFunction(() => document.querySelector('#transcript .msg.agent.done .answer h2'), null, { timeout: 10000 });
  assert(await page.locator('#transcript .msg.user', { hasText: 'second chat' }).count() === 0, 'second chat leaked');
  assert(await lastAnswerText().then((t) => t.includes(regenerated.trim().slice(-12))) ||
    (await page.locator('#transcript').innerText()).includes(regenerated.trim().slice(-12)), 'the regenerated answer is not in history');
  assert(sent('chat.history').some((h) => h.threadId === firstThread), 'no chat.history for the first chat');
  await shot('back-to-first-chat');

  // 6. Reload in the middle of an answer: it resumes, no word twice, one bubble.
  await page.click('#newChat');
  await send('Now SLOW-resume please');
  await page.waitForFunction(() => (document.querySelector('#transcript .msg.agent') || {}).innerText?.includes('resume5'),
    null, { timeout: 15000 });
  await page.reload({ waitUntil: 'domcontentloaded' });
  const expected = slowPieces('resume').join('');
  await page.evaluate((exp) => {
    window.__bad = [];
    new MutationObserver(() => document.querySelectorAll('#transcript .msg.agent .answer').forEach((a) => {
      const shown = a.innerText.trim();
      if (shown && !exp.startsWith(shown)) window.__bad.push(shown);
    })).observe(document.getElementById('transcript'), { childList: true, characterData: true, subtree: true });
  }, expected);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  await shot('reloaded-mid-answer');
  await page.waitForFunction((exp) => {
    const a = document.querySelectorAll('#transcript .msg.agent.done .answer');
    return a.length === 1 && a[0].innerText.trim() === exp;
  }, expected, { timeout: 30000 });
  const bad = await page.evaluate(() => window.__bad);
  assert(bad.length === 0, `after the reload the answer showed a non-prefix (duplicate?): ${String(bad[0]).slice(0, 160)}`);
  assert(await page.locator('#transcript .msg.user').count() === 1, 'the question shows twice (or not) after the reload');
  await shot('resumed');

  // 7. Reasoning folded under the answer, the tool call as a card.
  await page.click('#newChat');
  await send('THINK about the weather');
  await answered(1, 'reasoning');
  const reasoning = page.locator('#transcript .msg.agent details.reasoning');
  assert(await reasoning.count() === 1 && !(await reasoning.getAttribute('open')), 'reasoning missing or not folded');
  await reasoning.locator('summary').click();
  assert((await reasoning.innerText()).includes(REASONING.slice(0, 30)), 'reasoning text missing');
  const card = page.locator('#transcript .tool-card');
  assert(await card.count() === 1 && (await card.innerText()).includes('get_weather'), 'no tool card');
  await shot('reasoning-and-tool');

  // 8. An image upload that reaches the model.
  const features = Array.isArray(welcome.features) ? welcome.features : [];
  assert(features.includes('media'), `the server does not announce media: ${JSON.stringify(features)}`);
  {
    await page.click('#newChat');
    await page.setInputFiles('#fileInput', { name: 'red.png', mimeType: 'image/png', buffer: PNG });
    await page.waitForSelector('#attachments .chip.done img', { timeout: 10000 });
    await send('What is in this IMAGE?');
    await answered(1, 'image');
    assert((await lastAnswerText()).includes('I got 1 image(s)'), `the model saw no image: ${await lastAnswerText()}`);
    const asked = agent.requests[agent.requests.length - 1];
    const parts = asked.messages[asked.messages.length - 1].content;
    assert(Array.isArray(parts) && parts.some((p) => p.type === 'image_url'), 'no image_url part in the request');
    await page.waitForSelector('#transcript .msg.user .media-list img', { timeout: 10000 });
    await shot('image-upload');
    // From history too: fetched with the tab's token, shown as a thumbnail.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#transcript .msg.user .media-list img', { timeout: 10000 });
    assert(await page.locator('#transcript .msg.user .media-list img').evaluate((img) => img.naturalWidth) === 2,
      'the attachment from history is not the uploaded picture');
    await shot('image-in-history');
  }
  const media = 'image_url reached the model, the picture shown from history';

  // 9. Phone width and dark mode.
  await page.setViewportSize({ width: 375, height: 740 });
  await page.waitForTimeout(400);   // the sidebar slides out
  assert(await page.locator('#sidebar').isHidden() || !(await page.locator('#newChat').isVisible()), 'the sidebar covers the phone screen');
  await page.screenshot({ path: path.join(out, 'phone-375.png') });
  await page.click('#menuToggle');
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, 'phone-375-sidebar.png') });
  await page.keyboard.press('Escape');
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.setViewportSize({ width: 1000, height: 760 });
  await page.screenshot({ path: path.join(out, 'dark.png') });

  // 10. A tab without a token is asked to sign in (close 4401), and no request logged a token.
  const other = await b.context.newPage();
  await other.goto(server.url + '/');
  await other.waitForSelector('#status[data-state="failed"]', { timeout: 10000 });
  assert(await other.locator('#account').getAttribute('open') !== null, 'the sign-in form is not shown');
  await other.screenshot({ path: path.join(out, `${String(++step).padStart(2, '0')}-sign-in-needed.png`) });
  assert(!fs.readFileSync(path.join(out, 'server.log'), 'utf8').includes(GOOD_TOKEN), 'the token is in the server log');
  // Parsing the model's `<img onerror>` (DOMPurify parses before it strips) makes
  // Chromium compile the handler, which the policy blocks and reports: expected, and
  // the second line of defence. Any other violation is a page that breaks its policy.
  const unexpected = cspViolations.filter((v) => !/inline event handler/.test(v));
  assert(unexpected.length === 0, `CSP violations: ${unexpected.join('; ')}`);
  assert(b.pageErrors.length === 0, `page errors: ${b.pageErrors.join('; ')}`);
  return `auto-connect, Markdown + code, no XSS, regenerate, stop, threads, reload resume, reasoning + tool, ${media}`;
});
