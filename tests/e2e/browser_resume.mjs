// Browser e2e of resume: the page's socket drops in the middle of a streamed answer
// (window.clawsocket.drop(), as a network failure would), the page reconnects with
// back-off, sends chat.join with afterSeq = the last delta it rendered, and the server
// replays the rest (or the stored answer if the turn ended meanwhile). Checks that the
// bubble only ever shows prefixes of the answer (no duplicated delta) and ends with the
// whole of it. Needs a server with the echo demo agent. Env: CLAWSOCKET_URL,
// ARTIFACTS_DIR. Prints PASS/FAIL, exits 0/1, bounded to 60 s.
import path from 'node:path';
import { launch, runTest, assert, artifactsDir, summarizeFrames, gotoChat } from './chromium.mjs';

const WORDS = Array.from({ length: 120 }, (_, i) => `word${i + 1}`);
const TEXT = WORDS.join(' ');
const EXPECTED = `echo: ${TEXT}`;

runTest('browser resume after a dropped connection', 60000, async (setCleanup) => {
  const b = await launch();
  setCleanup(b.close);
  const { page, frames } = b;
  await gotoChat(page);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });

  // every text the agent bubble shows must be a prefix of the answer
  await page.evaluate((expected) => {
    window.__bad = [];
    window.__texts = 0;
    new MutationObserver(() => {
      document.querySelectorAll('#transcript .msg.agent .answer').forEach((d) => {
        window.__texts++;
        if (!expected.startsWith(d.innerText.trim())) window.__bad.push(d.innerText);
      });
    }).observe(document.getElementById('transcript'), { childList: true, characterData: true, subtree: true });
  }, EXPECTED);

  await page.fill('#message', TEXT);
  await page.press('#message', 'Enter');
  const firstDelta = () => frames.some((f) => f.dir === 'in' && f.msg.type === 'chat.stream');
  const t0 = Date.now();
  while (!firstDelta() && Date.now() - t0 < 15000) await page.waitForTimeout(5);
  assert(firstDelta(), `no chat.stream within 15 s; frames:\n${summarizeFrames(frames)}`);
  const droppedAt = frames.length;
  await page.evaluate(() => window.clawsocket.drop());
  const renderedSeq = await page.evaluate(() => {
    const a = document.querySelector('#transcript .msg.agent');
    return a ? Number(a.dataset.seq) : 0;
  });

  try {
    await page.waitForFunction((exp) => {
      const a = document.querySelector('#transcript .msg.agent');
      return a && a.classList.contains('done') && a.querySelector('.answer').innerText.trim() === exp;
    }, EXPECTED, { timeout: 30000 });
  } catch {
    const shown = await page.evaluate(() => { const a = document.querySelector('#transcript .msg.agent .answer'); return a && a.innerText; });
    throw new Error(`the answer did not complete after the drop; bubble shows ${JSON.stringify(shown && shown.slice(0, 120))}\nframes after the drop:\n${summarizeFrames(frames.slice(droppedAt), 60)}`);
  }
  const after = frames.slice(droppedAt);
  const join = after.find((f) => f.dir === 'out' && f.msg.type === 'chat.join');
  assert(join, 'the page sent no chat.join after reconnecting');
  // The page may render a delta that was already on its way when the drop was read
  // (the frame listener sees a frame before the page's handler does): afterSeq lies
  // between what was rendered then and what had arrived before the drop.
  const arrived = Math.max(0, ...frames.slice(0, droppedAt).filter((f) => f.dir === 'in' && f.msg.type === 'chat.stream').map((f) => f.msg.seq));
  assert(join.msg.afterSeq >= renderedSeq && join.msg.afterSeq <= arrived,
    `chat.join afterSeq=${join.msg.afterSeq}, the page had rendered seq ${renderedSeq} and received ${arrived}`);
  const bad = await page.evaluate(() => window.__bad);
  assert(bad.length === 0, `the bubble showed text that is not a prefix of the answer (duplicated deltas?): ${String(bad[0]).slice(0, 200)}`);
  assert(await page.locator('#transcript .msg.agent').count() === 1, 'more than one agent bubble for one turn');
  assert(await page.locator('#transcript .msg.error').count() === 0, 'error line(s) in the transcript');

  const inAfter = after.filter((f) => f.dir === 'in' && f.sock === join.sock).map((f) => f.msg);
  const replayed = inAfter.filter((m) => m.type === 'chat.stream');
  const how = replayed.length
    ? `${replayed.length} delta(s) after the rejoin, the first seq ${replayed[0].seq}${replayed[0].catchUp ? ' (catch-up)' : ''}`
    : inAfter.some((m) => m.type === 'chat.response' && m.content === EXPECTED)
      ? 'stored answer sent on join'
      : after.some((f) => f.dir === 'out' && f.msg.type === 'chat.history') ? 'answer read from chat.history' : 'answer arrived';
  await page.screenshot({ path: path.join(artifactsDir(), 'web-chat-resume.png'), fullPage: true });
  return `dropped after seq ${renderedSeq}, rejoined with afterSeq=${join.msg.afterSeq}, ${how}`;
});
