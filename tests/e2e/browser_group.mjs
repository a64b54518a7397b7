// Browser e2e of a group chat: two pages (alice, bob) join the same group; alice's
// message shows on bob's page as a member message (chat.message) and the echo agent's
// answer streams into both pages. Needs a server with the echo demo agent.
// Env: CLAWSOCKET_URL, ARTIFACTS_DIR. Prints PASS/FAIL, exits 0/1, bounded to 60 s.
import path from 'node:path';
import { launch, runTest, assert, artifactsDir, gotoChat } from './chromium.mjs';

const GROUP = 'e2e-group-' + Math.random().toString(36).slice(2, 8);
const TEXT = 'Hello everyone!';
const EXPECTED = `echo: ${TEXT}`;

async function openAs(page, id, name) {
  await gotoChat(page);
  await page.click('#account summary');
  await page.fill('#senderId', id);
  await page.fill('#senderName', name);
  await page.click('#connect');
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  await page.fill('#groupId', GROUP);
  await page.press('#groupId', 'Enter');
  await page.waitForSelector('#groupList .thread-item.current', { timeout: 5000 });
}

const finalAnswer = (page) => page.waitForFunction((exp) => {
  const a = document.querySelector('#transcript .msg.agent.done .answer');
  return a && a.innerText.trim() === exp;
}, EXPECTED, { timeout: 20000 });

runTest('browser group chat (two pages)', 60000, async (setCleanup) => {
  const b = await launch();
  setCleanup(b.close);
  const alice = b.page;
  const bob = await b.context.newPage();
  await openAs(alice, 'alice-' + GROUP, 'Alice');
  await openAs(bob, 'bob-' + GROUP, 'Bob');
  // the page joins the group on connect when a group id is set; give bob's join a moment
  await bob.waitForTimeout(300);

  await alice.fill('#message', TEXT);
  await alice.press('#message', 'Enter');
  const member = bob.locator('#transcript .msg.member');
  await member.first().waitFor({ timeout: 10000 });
  assert((await member.first().locator('.body').textContent()) === TEXT, 'bob does not see alice\'s message');
  const label = await member.first().locator('.who').textContent();
  assert(label.includes('Alice'), `member label ${JSON.stringify(label)} does not name Alice`);
  await Promise.all([finalAnswer(alice), finalAnswer(bob)]);
  for (const p of [alice, bob]) {
    assert(await p.locator('#transcript .msg.agent').count() === 1, 'expected one agent bubble per page');
    assert(await p.locator('#transcript .msg.error').count() === 0, 'error line(s) in a transcript: ' + await p.locator('#transcript').innerText());
  }
  assert(await alice.locator('#transcript .msg.member').count() === 0, 'alice sees her own message as a member message');
  await bob.screenshot({ path: path.join(artifactsDir(), 'web-chat-group.png'), fullPage: true });
  return `bob saw alice's message and both pages got "${EXPECTED}"`;
});
