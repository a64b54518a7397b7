// A fake OpenAI-compatible model and auth service for the web page's end-to-end test,
// on 127.0.0.1 only. ClawSocket's `openai` backend calls POST /v1/chat/completions and
// gets real SSE (`data: {chunk}` lines, then `data: [DONE]`); its readiness probe gets
// GET /v1/models; its auth check POSTs to /auth/verify.
//
// What it answers depends on the last user message (every answer ends with a counter,
// so a regenerated answer differs from the one it replaces):
//   MARKDOWN  Markdown with a heading, a list, a link, a code block, and two XSS
//             payloads (a <script> and an <img onerror>) that would set window.__pwned
//   THINK     reasoning_content deltas, a short text, then a tool call (get_weather)
//   SLOW      SLOW_WORDS words, one every SLOW_DELAY_MS (for Stop and reload)
//   IMAGE     says how many image_url parts the message carried
//   anything  "Answer N to: <the message>"
// Every request is kept in `requests` (parsed JSON bodies), for the test to inspect.
import http from 'node:http';

export const SLOW_WORDS = 60;
export const SLOW_DELAY_MS = 120;
export const GOOD_TOKEN = 'web-e2e-token';
export const USER = { userId: 'web-user', username: 'Web User' };

export const MARKDOWN_ANSWER = [
  '## Sorting in JavaScript',
  '',
  'Use **`Array.prototype.sort`** with a comparator:',
  '',
  '- numbers: `(a, b) => a - b`',
  '- see [MDN](https://developer.mozilla.org/)',
  '',
  '```js',
  'const sorted = [3, 1, 2].sort((a, b) => a - b);',
  'console.log(sorted);',
  '```',
  '',
  '<script>window.__pwned=1</script>',
  '<img src=x onerror="window.__pwned=1">',
  '',
].join('\n');
export const REASONING = 'The user asks about the weather. I should call the weather tool for Paris.';
export const TOOL_ARGUMENTS = '{"city":"Paris","unit":"celsius"}';

/** The words of the SLOW answer, as streamed (each piece is one delta). */
export function slowPieces(label) {
  return Array.from({ length: SLOW_WORDS }, (_, i) => `${i ? ' ' : ''}${label}${i + 1}`);
}

function lastUserText(messages) {
  const user = [...(messages || [])].reverse().find((m) => m && m.role === 'user');
  if (!user) return { text: '', images: 0 };
  if (typeof user.content === 'string') return { text: user.content, images: 0 };
  const parts = Array.isArray(user.content) ? user.content : [];
  return {
    text: parts.filter((p) => p && p.type === 'text').map((p) => p.text).join('\n'),
    images: parts.filter((p) => p && p.type === 'image_url').length,
  };
}

const chunk = (delta, finish = null) => ({ id: 'fake', object: 'chat.completion.chunk', model: 'fake',
  choices: [{ index: 0, delta, finish_reason: finish }] });

// The chunks (and the pause before each) for one request.
function script(body, count) {
  const { text, images } = lastUserText(body.messages);
  const tail = ` (answer ${count})`;
  const content = (piece) => ({ pause: 15, data: chunk({ content: piece }) });
  if (text.includes('MARKDOWN')) {
    return (MARKDOWN_ANSWER + tail).match(/[^\n]*\n|[^\n]+/g).map(content);
  }
  if (text.includes('THINK')) {
    return [
      ...REASONING.match(/\S+\s*/g).map((piece) => ({ pause: 15, data: chunk({ reasoning_content: piece }) })),
      content('Let me check the weather.'),
      { pause: 15, data: chunk({ tool_calls: [{ index: 0, id: 'call_weather', type: 'function',
        function: { name: 'get_weather', arguments: TOOL_ARGUMENTS.slice(0, 10) } }] }) },
      { pause: 15, data: chunk({ tool_calls: [{ index: 0, function: { arguments: TOOL_ARGUMENTS.slice(10) } }] }) },
      { pause: 15, data: chunk({}, 'tool_calls') },
    ];
  }
  if (text.includes('SLOW')) {
    const label = (text.match(/SLOW-(\w+)/) || [null, 'w'])[1];
    return slowPieces(label).map((piece) => ({ pause: SLOW_DELAY_MS, data: chunk({ content: piece }) }));
  }
  if (text.includes('IMAGE')) return [content(`I got ${images} image(s).${tail}`)];
  return `Answer ${count} to: ${text}`.match(/\S+\s*/g).map(content);
}

async function stream(res, steps, includeUsage, closed) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for (const step of steps) {
    await new Promise((resolve) => setTimeout(resolve, step.pause));
    if (closed()) return 'closed by the client';
    res.write(`data: ${JSON.stringify(step.data)}\n\n`);
  }
  const last = steps[steps.length - 1];
  if (!last || !last.data.choices[0].finish_reason) res.write(`data: ${JSON.stringify(chunk({}, 'stop'))}\n\n`);
  if (includeUsage) {
    res.write(`data: ${JSON.stringify({ id: 'fake', object: 'chat.completion.chunk', choices: [],
      usage: { prompt_tokens: 12, completion_tokens: steps.length, total_tokens: 12 + steps.length } })}\n\n`);
  }
  res.end('data: [DONE]\n\n');
  return 'completed';
}

function readBody(req) {
  return new Promise((resolve) => {
    let raw = '';
    req.on('data', (piece) => { raw += piece; });
    req.on('end', () => { try { resolve(JSON.parse(raw)); } catch { resolve({}); } });
  });
}

/** Starts the fake on a free 127.0.0.1 port: `{ port, requests, close }`. */
export function startFakeAgent() {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake', object: 'model' }] }));
      return;
    }
    const body = await readBody(req);
    if (req.url === '/auth/verify') {
      const ok = body.token === GOOD_TOKEN;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? { success: true, data: USER } : { success: false }));
      return;
    }
    if (req.url !== '/v1/chat/completions') { res.writeHead(404); res.end(); return; }
    requests.push(body);
    let gone = false;
    res.on('close', () => { gone = true; });
    const includeUsage = Boolean(body.stream_options && body.stream_options.include_usage);
    await stream(res, script(body, requests.length), includeUsage, () => gone);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    requests,
    close: () => new Promise((done) => { server.closeAllConnections(); server.close(done); }),
  })));
}
