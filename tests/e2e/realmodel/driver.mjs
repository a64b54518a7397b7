// The checks of the real-model end-to-end test (run.sh starts the services first):
// ClawSocket (kind "openai") -> proxy.mjs (logs each request) -> llama-cpp-python's
// server running SmolLM2-135M-Instruct on CPU, all on 127.0.0.1.
//
// Env:
//   CLAWSOCKET_WS       ws://127.0.0.1:PORT/ws
//   PROXY_LOG           the proxy's JSON-lines log (one line per request, when it ends)
//   MODEL_URL           the model server's base URL (…/v1), for the direct probe
//   MODEL_NAME          the model name ClawSocket is configured with
//   WS_MODULE_DIR       a directory whose node_modules holds `ws`
//   OBSERVATIONS        a file the observations (not pass/fail) are written to
//
// Checks today's protocol (README "Protocol"): streaming, memory across two turns,
// two users at once, abort mid-answer then a working turn. Prints "N passed, M failed".
// What the real model showed that is not pass/fail (finish reasons, whether the
// "{senderName}: " envelope shows in answers, usage) is printed as "observation:" lines.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`realmodel driver: ${name} is not set`);
    process.exit(2);
  }
  return value;
}
const WS_URL = env("CLAWSOCKET_WS");
const PROXY_LOG = env("PROXY_LOG");
const MODEL_URL = env("MODEL_URL");
const MODEL_NAME = env("MODEL_NAME");
const OBSERVATIONS = process.env.OBSERVATIONS || "";
const WebSocket = createRequire(path.join(env("WS_MODULE_DIR"), "package.json"))("ws");

// A turn of this 135M model on 2 cores takes seconds; one queued behind another, or one
// that runs to the context limit, longer.
const TURN_TIMEOUT_MS = 180_000;

const log = (...args) => console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
const observations = [];
function observe(text) {
  observations.push(text);
  console.log(`observation: ${text}`);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let idCounter = 0;
const newId = (prefix) => `${prefix}-${process.pid}-${++idCounter}`;
const short = (text, n = 120) => JSON.stringify(text.length > n ? text.slice(0, n) + "…" : text);

// --- a WebSocket client that keeps every frame ---
class Client {
  constructor(senderId, senderName) {
    this.senderId = senderId;
    this.senderName = senderName;
    this.frames = [];
    this.waiters = [];
  }
  async open() {
    const url = `${WS_URL}?senderId=${encodeURIComponent(this.senderId)}&senderName=${encodeURIComponent(this.senderName)}`;
    this.ws = new WebSocket(url);
    this.ws.on("message", (data) => {
      let frame;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        frame = { type: "<not json>", raw: data.toString() };
      }
      frame._at = Date.now();
      this.frames.push(frame);
      for (const waiter of [...this.waiters]) waiter();
    });
    this.closed = new Promise((resolve) => this.ws.on("close", resolve));
    await new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
    const welcome = await this.waitFor((f) => f.type === "chat.response" && !f.messageId, 10_000, "the welcome frame");
    if (welcome.senderId !== this.senderId) throw new Error(`welcome for ${welcome.senderId}, expected ${this.senderId}`);
    return this;
  }
  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }
  // Resolves with the first frame (from index `from` on) matching `predicate`.
  waitFor(predicate, timeoutMs, what, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.frames.length; i++) {
          if (predicate(this.frames[i])) {
            cleanup();
            resolve(this.frames[i]);
            return true;
          }
        }
        return false;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      if (!check()) this.waiters.push(check);
    });
  }
  // Sends one chat.send and resolves with that turn's frames when it ends.
  async turn(content, extra = {}) {
    const messageId = newId(this.senderId);
    const from = this.frames.length;
    const sentAt = Date.now();
    this.send({ type: "chat.send", content, messageId, ...extra });
    const end = await this.waitFor(
      (f) => f.messageId === messageId && (f.type === "chat.error" || (f.type === "chat.response" && f.done === true)),
      TURN_TIMEOUT_MS,
      `end of turn ${messageId}`,
      from,
    );
    const frames = this.frames.slice(from).filter((f) => f.messageId === messageId);
    return summarize(messageId, frames, end, sentAt);
  }
  async history(limit = 50) {
    const from = this.frames.length;
    this.send({ type: "chat.history", limit });
    const frame = await this.waitFor((f) => f.type === "chat.history", 10_000, "chat.history", from);
    return frame.messages;
  }
  close() {
    try {
      this.ws.close();
    } catch {
      /* already closed */
    }
  }
}

function summarize(messageId, frames, end, sentAt) {
  const streams = frames.filter((f) => f.type === "chat.stream");
  return {
    messageId,
    frames,
    end,
    sentAt,
    typing: frames.find((f) => f.type === "chat.typing"),
    streams,
    deltas: streams.map((f) => f.content).join(""),
    response: end.type === "chat.response" ? end : null,
    error: end.type === "chat.error" ? end : null,
    ms: end._at - sentAt,
  };
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// The whole-answer checks every completed turn must pass.
// (At least `minStreams` chat.stream frames: 2 where the answer is asked to be long enough.)
function assertWholeAnswer(turn, who, minStreams = 1) {
  assert(!turn.error, `${who}: chat.error ${turn.error && turn.error.code}: ${turn.error && turn.error.error}`);
  assert(turn.typing, `${who}: no chat.typing`);
  assert(turn.streams.length >= minStreams, `${who}: ${turn.streams.length} chat.stream frame(s), expected at least ${minStreams}`);
  assert(turn.typing._at <= turn.streams[0]._at, `${who}: chat.typing came after the first chat.stream`);
  turn.streams.forEach((f, i) => {
    assert(f.done === false, `${who}: chat.stream #${i + 1} has done=${f.done}`);
    assert(f.seq === i + 1, `${who}: chat.stream #${i + 1} has seq ${f.seq}, expected ${i + 1}`);
  });
  assert(turn.response.content.length > 0, `${who}: empty chat.response`);
  assert(
    turn.response.content === turn.deltas,
    `${who}: chat.response content ${short(turn.response.content)} differs from the concatenated deltas ${short(turn.deltas)}`,
  );
  assert(turn.response.sessionKey, `${who}: chat.response without sessionKey`);
}

// --- the proxy's log ---
function proxyRecords() {
  if (!fs.existsSync(PROXY_LOG)) return [];
  return fs
    .readFileSync(PROXY_LOG, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}
const isChat = (r) => r.method === "POST" && r.url.endsWith("/chat/completions");
const lastUserContent = (r) => {
  const messages = (r.body && r.body.messages) || [];
  const users = messages.filter((m) => m.role === "user");
  const last = users[users.length - 1];
  return last ? (typeof last.content === "string" ? last.content : JSON.stringify(last.content)) : "";
};
// The proxy's record of the request whose last user message contains `text` (it is
// written when the request ends, a moment after ClawSocket's frame may have gone out).
async function proxyRecordFor(text, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = proxyRecords().filter((r) => isChat(r) && lastUserContent(r).includes(text));
    if (found.length) return found[found.length - 1];
    if (Date.now() > deadline) throw new Error(`the proxy recorded no request with ${short(text)}`);
    await sleep(100);
  }
}

function noteAnswer(turn, record, who, senderName) {
  const answer = turn.response ? turn.response.content : "";
  const reasons = record ? record.finishReasons.join(",") || "none" : "?";
  log(`${who}: ${turn.streams.length} deltas in ${turn.ms} ms, finish_reason ${reasons}: ${short(answer, 160)}`);
  if (record && record.finishReasons.includes("length")) {
    const said = turn.response ? turn.response.finishReason : undefined;
    observe(`${who}: the server cut the answer with finish_reason "length" (${answer.length} chars); chat.response says finishReason ${JSON.stringify(said)}`);
  }
  const envelope = new RegExp(`^\\s*${senderName}\\s*:`);
  if (envelope.test(answer)) observe(`${who}: the answer starts with the "${senderName}:" envelope: ${short(answer, 80)}`);
  else if (/^\s*[A-Z][a-z]+\s*:/.test(answer)) observe(`${who}: the answer starts with a "Name:" prefix like the envelope: ${short(answer, 80)}`);
}

// --- the tests ---
const results = [];
async function test(name, fn) {
  log(`=== ${name}`);
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    log(`--- ok: ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (error) {
    results.push({ name, ok: false, error: error.message });
    log(`--- FAILED: ${name}: ${error.message}`);
  }
}

const clients = [];
async function client(senderId, senderName) {
  const c = await new Client(senderId, senderName).open();
  clients.push(c);
  return c;
}

await test("server: the model server answers a streamed chat completion directly (and what it does with stream_options.include_usage)", async () => {
  const response = await fetch(`${MODEL_URL}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL_NAME,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 8,
      messages: [{ role: "user", content: "Say hello." }],
    }),
  });
  const text = await response.text();
  assert(response.status === 200, `HTTP ${response.status}: ${text.slice(0, 300)}`);
  const events = text
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim());
  assert(events[events.length - 1] === "[DONE]", `the stream did not end with [DONE]: ${short(text, 300)}`);
  const chunks = events.filter((e) => e !== "[DONE]").map((e) => JSON.parse(e));
  const reasons = chunks.flatMap((c) => (c.choices || []).map((ch) => ch.finish_reason).filter(Boolean));
  const usage = chunks.filter((c) => c.usage);
  assert(reasons.length === 1, `finish_reason values: ${JSON.stringify(reasons)}`);
  observe(`with max_tokens 8 the server ended the stream with finish_reason "${reasons[0]}"`);
  observe(
    usage.length
      ? `stream_options.include_usage: the server sent usage ${JSON.stringify(usage[usage.length - 1].usage)}`
      : "stream_options.include_usage: the server accepted the field and sent no usage chunk (it ignores it)",
  );
});

await test("streaming: chat.typing, chat.stream deltas with seq 1, 2, 3…, chat.response = the deltas joined", async () => {
  const alice = await client("rm-alice", "Alice");
  const turn = await alice.turn("Name three colors of the rainbow.");
  const record = await proxyRecordFor("Name three colors of the rainbow.");
  noteAnswer(turn, record, "alice", "Alice");
  assertWholeAnswer(turn, "alice", 2);
  assert(record.status === 200, `the server answered HTTP ${record.status}`);
  assert(record.body.stream === true, "ClawSocket did not ask for a stream");
  assert(record.finishReasons.length === 1, `finish_reason values ${JSON.stringify(record.finishReasons)}`);
  // Every delta the server sent reached the client, in order.
  assert(record.text === turn.deltas, `the server streamed ${short(record.text)}, the client got ${short(turn.deltas)}`);
  observe(`a request from ClawSocket today: ${JSON.stringify({ ...record.body, messages: record.body.messages.length + " messages" })}; first user message ${short(lastUserContent(record))}`);
  if (!record.usage) observe("no usage in the server's answer to ClawSocket's request (ClawSocket does not ask for it)");
});

await test("usage and finishReason: chat.response estimates the usage (this server sends none) and says an answer the max_tokens cut ended by length", async () => {
  const frank = await client("rm-frank", "Frank");
  const turn = await frank.turn("Tell me a very long tale about a brave cat, at least three hundred words.");
  const record = await proxyRecordFor("Tell me a very long tale about a brave cat");
  noteAnswer(turn, record, "frank", "Frank");
  assertWholeAnswer(turn, "frank", 2);
  const response = turn.response;
  assert(record.body.max_tokens === 256, `ClawSocket sent max_tokens ${record.body.max_tokens}, expected agent.maxTokens 256`);
  assert(response.finishReason === "length", `finishReason ${response.finishReason}, expected "length" (the server's finish_reasons: ${JSON.stringify(record.finishReasons)})`);
  assert(response.usage && response.usage.estimated === true, `usage ${JSON.stringify(response.usage)}: expected an estimate, marked so`);
  assert(response.usage.completionTokens > 0 && response.usage.promptTokens > 0, `usage ${JSON.stringify(response.usage)}`);
  const user = record.body.messages[record.body.messages.length - 1];
  assert(user.name === "Frank" && !String(user.content).startsWith("Frank:"), `the sender goes in the name field: ${JSON.stringify(user)}`);
  observe(`frank: finishReason ${response.finishReason}, usage ${JSON.stringify(response.usage)}, ${turn.streams.length} deltas`);
});

await test("memory: the second turn carries the first (the history, and the request the server got)", async () => {
  const bob = await client("rm-bob", "Bob");
  const first = await bob.turn("My name is Zork. Please remember my name, and answer in one short sentence.");
  const firstRecord = await proxyRecordFor("My name is Zork.");
  noteAnswer(first, firstRecord, "bob turn 1", "Bob");
  assertWholeAnswer(first, "bob turn 1");
  const second = await bob.turn("What is my name?");
  const secondRecord = await proxyRecordFor("What is my name?");
  noteAnswer(second, secondRecord, "bob turn 2", "Bob");
  assertWholeAnswer(second, "bob turn 2");

  // What the server got for the second turn: system, turn 1 (user + answer), turn 2.
  const messages = secondRecord.body.messages;
  log(`bob turn 2: the server got ${messages.length} messages: ${messages.map((m) => m.role).join(", ")}`);
  assert(messages.length >= 3, `the second request carried ${messages.length} message(s), expected at least 3`);
  const users = messages.filter((m) => m.role === "user");
  const assistants = messages.filter((m) => m.role === "assistant");
  assert(users.some((m) => String(m.content).includes("My name is Zork.")), "the second request lacks the first question");
  assert(
    assistants.some((m) => m.content === first.response.content),
    "the second request lacks the first answer (as ClawSocket sent it to the client)",
  );
  assert(String(messages[messages.length - 1].content).includes("What is my name?"), "the second request does not end with the new question");
  const firstMessages = firstRecord.body.messages.length;
  observe(`bob: the first request had ${firstMessages} messages, the second ${messages.length} (${JSON.stringify(messages).length} bytes of JSON)`);
  observe(`bob turn 2 answer to "What is my name?" ${/zork/i.test(second.response.content) ? "names" : "does not name"} Zork: ${short(second.response.content, 100)}`);

  // ClawSocket's transcript: both turns, in order, as sent and answered.
  const history = await bob.history();
  const shown = history.map((m) => `${m.role}: ${short(m.content, 40)}`).join(" | ");
  log(`bob: chat.history ${history.length} messages: ${shown}`);
  assert(history.length === 4, `chat.history has ${history.length} messages, expected 4: ${shown}`);
  assert(history.map((m) => m.role).join(",") === "user,assistant,user,assistant", `roles ${history.map((m) => m.role)}`);
  assert(history[0].content === "My name is Zork. Please remember my name, and answer in one short sentence.", `history[0] ${short(history[0].content)}`);
  assert(history[1].content === first.response.content, "history[1] is not the first answer");
  assert(history[2].content === "What is my name?", `history[2] ${short(history[2].content)}`);
  assert(history[3].content === second.response.content, "history[3] is not the second answer");
  assert(history[1].messageId === first.messageId || history[0].messageId === first.messageId, "the first turn's messageId is not in the history");
});

await test("two users at once: each gets a whole answer of their own", async () => {
  const carol = await client("rm-carol", "Carol");
  const dave = await client("rm-dave", "Dave");
  const [c, d] = await Promise.all([
    carol.turn("What is the capital of France?"),
    dave.turn("Name two animals that live in the sea."),
  ]);
  const cr = await proxyRecordFor("What is the capital of France?");
  const dr = await proxyRecordFor("Name two animals that live in the sea.");
  noteAnswer(c, cr, "carol", "Carol");
  noteAnswer(d, dr, "dave", "Dave");
  assertWholeAnswer(c, "carol");
  assertWholeAnswer(d, "dave");
  assert(c.response.sessionKey !== d.response.sessionKey, "both answers carry the same sessionKey");
  assert(c.response.sessionKey.endsWith(":rm-carol"), `carol's sessionKey ${c.response.sessionKey}`);
  assert(d.response.sessionKey.endsWith(":rm-dave"), `dave's sessionKey ${d.response.sessionKey}`);
  // Each got the deltas the server streamed for their own request, and none of the other's.
  assert(cr.text === c.deltas, "carol's deltas are not what the server streamed for her request");
  assert(dr.text === d.deltas, "dave's deltas are not what the server streamed for his request");
  assert(!carol.frames.some((f) => f.messageId === d.messageId), "carol got a frame of dave's turn");
  assert(!dave.frames.some((f) => f.messageId === c.messageId), "dave got a frame of carol's turn");
  // The two requests reached the server together; did it answer them in turn or interleaved?
  const [a, b] = [cr, dr].sort((x, y) => x.startedAt - y.startedAt);
  const aLast = a.startedAt + a.lastDeltaAfterMs;
  const bFirst = b.startedAt + b.firstDeltaAfterMs;
  observe(
    `two users at once: the requests reached the server ${b.startedAt - a.startedAt} ms apart, both response heads within ` +
      `${Math.max(a.headAfterMs, b.headAfterMs)} ms; the later one's first delta came ${bFirst - aLast} ms after the earlier one's last ` +
      `(${bFirst >= aLast ? "the server answered them one after the other" : "the server interleaved them"})`,
  );
});

await test("abort mid-answer: chat.error code aborted, nothing stored, the next turn answers", async () => {
  const erin = await client("rm-erin", "Erin");
  const prompt = "Write a very long story about a dragon and a knight, with many details about their journey.";
  const messageId = newId("rm-erin");
  const from = erin.frames.length;
  const sentAt = Date.now();
  erin.send({ type: "chat.send", content: prompt, messageId });
  await erin.waitFor((f) => f.type === "chat.stream" && f.messageId === messageId && f.seq >= 3, TURN_TIMEOUT_MS, "3 chat.stream frames", from);
  erin.send({ type: "chat.abort", messageId });
  const abortedAt = Date.now();
  const end = await erin.waitFor(
    (f) => f.messageId === messageId && (f.type === "chat.error" || (f.type === "chat.response" && f.done === true)),
    30_000,
    "the end of the aborted turn",
    from,
  );
  log(`erin: turn ended ${end._at - abortedAt} ms after chat.abort: ${end.type} ${end.code || ""}`);
  assert(end.type === "chat.error", `the aborted turn ended with ${end.type} (the answer finished before the abort?)`);
  assert(end.code === "aborted", `chat.error code ${end.code}, expected aborted: ${end.error}`);
  const record = await proxyRecordFor("Write a very long story about a dragon");
  log(`erin: the proxy saw the aborted request end "${record.ended}" after ${record.endedAfterMs} ms, ${record.deltas} deltas from the server`);
  assert(record.ended === "client-closed", `ClawSocket did not close the aborted request (the proxy saw it end "${record.ended}", finish_reason ${record.finishReasons})`);
  await sleep(300);
  const lateFrames = erin.frames.slice(from).filter((f) => f.messageId === messageId && f._at > end._at);
  assert(lateFrames.length === 0, `${lateFrames.length} frame(s) of the aborted turn came after its chat.error`);
  void sentAt;

  const next = await erin.turn("Say hello to me.");
  const nextRecord = await proxyRecordFor("Say hello to me.");
  noteAnswer(next, nextRecord, "erin after the abort", "Erin");
  assertWholeAnswer(next, "erin after the abort");
  observe(
    `abort: ClawSocket closed the model request ${record.endedAfterMs} ms after it began (${record.deltas} deltas); the next turn's first delta came ` +
      `${nextRecord.firstDeltaAfterMs} ms after its request`,
  );
  const nextMessages = nextRecord.body.messages;
  assert(!nextMessages.some((m) => String(m.content).includes("dragon")), "the aborted question was sent again as history");
  const history = await erin.history();
  assert(history.length === 2, `chat.history has ${history.length} messages after an aborted turn and a whole one, expected 2`);
  assert(history[0].content === "Say hello to me.", `history[0] ${short(history[0].content)}`);
});

// --- the end ---
for (const c of clients) c.close();
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
const records = proxyRecords().filter(isChat);
const reasons = {};
for (const r of records) for (const fr of r.finishReasons.length ? r.finishReasons : [r.ended]) reasons[fr] = (reasons[fr] || 0) + 1;
observe(`requests ClawSocket sent to the model server: ${records.length}; how they ended: ${JSON.stringify(reasons)}`);
if (OBSERVATIONS) fs.writeFileSync(OBSERVATIONS, observations.map((o) => `- ${o}`).join("\n") + "\n");
for (const r of results) if (!r.ok) console.log(`FAILED: ${r.name}: ${r.error}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
