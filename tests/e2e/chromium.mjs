// Shared helpers for the browser tests: launch Debian's Chromium through playwright-core
// with a fresh profile, watch the page's WebSocket frames, bound the whole run in time.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// The web page's files as the server serves them (src/web_page.rs): path -> [type, file in web/].
export const PAGE_FILES = {
  '/': ['text/html; charset=utf-8', 'index.html'],
  '/assets/app.js': ['text/javascript; charset=utf-8', 'app.js'],
  '/assets/app.css': ['text/css; charset=utf-8', 'app.css'],
  '/assets/vendor/marked.js': ['text/javascript; charset=utf-8', 'vendor/marked/marked.umd.js'],
  '/assets/vendor/purify.js': ['text/javascript; charset=utf-8', 'vendor/dompurify/purify.min.js'],
  '/favicon.svg': ['image/svg+xml', 'favicon.svg'],
  '/favicon.ico': ['image/svg+xml', 'favicon.svg'],
};

// One of the page's files from the repo: { status, contentType, body }.
export function pageFile(pathname) {
  const [contentType, file] = PAGE_FILES[pathname];
  return { status: 200, contentType, body: fs.readFileSync(new URL('../../web/' + file, import.meta.url)) };
}

// A 2x2 red PNG, as a user's picture for the upload tests.
export const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==', 'base64');

export function baseUrl() {
  return (process.env.CLAWSOCKET_URL || 'http://127.0.0.1:18800').replace(/\/+$/, '');
}

export function artifactsDir() {
  const dir = process.env.ARTIFACTS_DIR || 'artifacts';
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// Launch Chromium with a temp --user-data-dir (playwright passes it from userDataDir;
// it refuses --user-data-dir in args). Returns { context, page, frames, close }.
export async function launch() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clawsocket-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    // a page answered by page.route has no IP address space, so Chromium's Local Network
    // Access checks would block its WebSocket to 127.0.0.1: lift them in that mode only
    args: process.env.E2E_LOCAL_PAGE === '1'
      ? [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks'] : CHROMIUM_ARGS,
    viewport: { width: 1000, height: 820 },
    timeout: 30000,
  });
  const page = context.pages()[0] || (await context.newPage());
  if (process.env.E2E_LOCAL_PAGE === '1') {
    // Development aid: answer GET / and the page's files with the checked-in web/
    // files instead of the server's copies (for a server that does not serve this page
    // yet, or an older build). The page still connects to the server's /ws.
    await context.route((url) => url.origin === baseUrl() && PAGE_FILES[url.pathname] !== undefined,
      (route) => route.fulfill(pageFile(new URL(route.request().url()).pathname)));
  }
  const frames = []; // { dir: 'in'|'out', msg, t, sock: 1, 2, … (the page's nth socket) }
  let sockets = 0;
  page.on('websocket', (ws) => {
    const sock = ++sockets;
    const record = (dir) => ({ payload }) => {
      let msg = payload;
      try { msg = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8')); } catch { /* keep raw */ }
      frames.push({ dir, msg, t: Date.now(), sock });
    };
    ws.on('framereceived', record('in'));
    ws.on('framesent', record('out'));
  });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try { await context.close(); } catch { /* already gone */ }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, frames, pageErrors, close };
}

// Run main() under a hard deadline; print one PASS/FAIL line; exit 0/1.
export function runTest(name, timeoutMs, main) {
  let cleanup = async () => {};
  const setCleanup = (fn) => { cleanup = fn; };
  const timer = setTimeout(async () => {
    console.log(`FAIL ${name}: timed out after ${timeoutMs / 1000} s`);
    try { await Promise.race([cleanup(), new Promise((r) => setTimeout(r, 3000))]); } catch { /* ignore */ }
    process.exit(1);
  }, timeoutMs);
  main(setCleanup)
    .then(async (detail) => {
      await cleanup();
      clearTimeout(timer);
      console.log(`PASS ${name}${detail ? ': ' + detail : ''}`);
      process.exit(0);
    })
    .catch(async (err) => {
      console.error(err && err.stack ? err.stack : String(err));
      await cleanup().catch(() => {});
      clearTimeout(timer);
      console.log(`FAIL ${name}: ${err && err.message ? err.message : err}`);
      process.exit(1);
    });
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function summarizeFrames(frames, limit = 40) {
  return frames.slice(0, limit).map((f) => {
    const m = f.msg;
    if (!m || typeof m !== 'object') return `${f.dir} ${String(m).slice(0, 80)}`;
    const bits = [m.type];
    if (m.seq !== undefined) bits.push(`seq=${m.seq}`);
    if (m.afterSeq !== undefined) bits.push(`afterSeq=${m.afterSeq}`);
    if (m.messageId) bits.push(`id=${m.messageId}`);
    if (m.code) bits.push(`code=${m.code}`);
    if (m.catchUp) bits.push('catchUp');
    if (typeof m.content === 'string') bits.push(JSON.stringify(m.content.slice(0, 40)));
    return `${f.dir} ${bits.join(' ')}`;
  }).join('\n');
}

// Open the chat page at GET / of the server; a clear error when it is not served.
export async function gotoChat(page) {
  const url = baseUrl() + '/';
  let resp;
  try {
    resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  } catch (e) {
    let status = 'no answer';
    try { status = String((await fetch(url)).status); } catch { /* server down */ }
    throw new Error(`GET ${url} failed (HTTP ${status}): the server must serve web/index.html at / ` +
      `(set E2E_LOCAL_PAGE=1 to try the checked-in page anyway). ${e.message.split('\n')[0]}`);
  }
  assert(resp && resp.status() === 200, `GET ${url} answered ${resp && resp.status()}`);
  assert((resp.headers()['content-type'] || '').includes('text/html'),
    `GET / content-type is ${resp.headers()['content-type']}, expected text/html`);
  return resp;
}
