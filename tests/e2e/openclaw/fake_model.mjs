// A fake OpenAI-compatible model server for the OpenClaw end-to-end test.
//
// The real OpenClaw gateway calls it as a custom provider ("api": "openai-completions"),
// so every request it gets is what the gateway sends a real model: the gateway's own
// system prompt, the session's history (the gateway keeps the memory), the new turn.
// Its answer depends on that request, so the test can check memory per user:
//
//   "[model] <the last user message> | you told me your name is X"
//
// where X is taken from the latest "my name is X" in any user message it was sent
// (or "| I do not know your name" when there is none). A last user message that
// contains "SLOW" is streamed slowly (one word every 250 ms, about 10 s), for the
// abort check. Everything streams as real SSE (`data: {chunk}` lines, `data: [DONE]`),
// one word per chunk.
//
// Usage: node fake_model.mjs PORT LOG_FILE
// Listens on 127.0.0.1:PORT only; each request and how it ended is appended to
// LOG_FILE as one JSON line. Prints "fake-model listening on PORT" when ready.

import http from "node:http";
import fs from "node:fs";

const port = Number(process.argv[2] || 0);
const logFile = process.argv[3] || "";
const MODEL_ID = "memory-echo";

function log(entry) {
  if (logFile) fs.appendFileSync(logFile, JSON.stringify({ ts: Date.now(), ...entry }) + "\n");
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === "string" ? part : part && typeof part.text === "string" ? part.text : ""))
      .join("\n");
  }
  return "";
}

// The gateway sends its own blocks as user messages too (an "internal context"
// block after the turn); they are not what the user said.
function isGatewayBlock(text) {
  return text.trimStart().startsWith("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>");
}

// What the user said in one user message. The gateway prefixes a timestamp
// ("[Mon 2026-11-30 10:19 UTC] "), appends a "Runtime: ..." line to a session's first
// turn, and puts a message left over from an aborted turn before the new one, under a
// "[Queued user message ...]" note: keep the last line that is none of these.
function saidIn(text) {
  const lines = text
    .split("\n")
    .map((line) => line.replace(/^\[[A-Z][a-z]{2} \d{4}-\d{2}-\d{2} [^\]]*\]\s*/, "").trim())
    .filter((line) => line && !line.startsWith("Runtime:") && !/^\[[^\]]*\]$/.test(line));
  return lines.length ? lines[lines.length - 1] : "";
}

// The answer to one chat/completions request.
function answerFor(messages) {
  const users = (messages || [])
    .filter((m) => m && m.role === "user")
    .map((m) => textOf(m.content))
    .filter((text) => !isGatewayBlock(text));
  const last = users.length ? saidIn(users[users.length - 1]) : "";
  let name = null;
  for (const text of users) {
    for (const match of text.matchAll(/my name is ([A-Za-z][A-Za-z0-9_-]*)/gi)) name = match[1];
  }
  const memory = name ? `you told me your name is ${name}` : "I do not know your name";
  return { text: `[model] ${last} | ${memory}`, slow: /SLOW/.test(last) };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function chatCompletions(req, res) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    res.writeHead(400, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: "invalid JSON", type: "invalid_request_error" } }));
    return;
  }
  const { text, slow } = answerFor(body.messages);
  const id = `chatcmpl-fake-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const created = Math.floor(Date.now() / 1000);
  const model = body.model || MODEL_ID;
  const entry = {
    path: req.url,
    model,
    stream: body.stream === true,
    messages: (body.messages || []).map((m) => ({ role: m.role, text: textOf(m.content).slice(0, 2000) })),
    answer: text,
    slow,
  };
  if (body.stream !== true) {
    log({ ...entry, outcome: "complete" });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
        usage: { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 },
      }),
    );
    return;
  }
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  let closed = false;
  res.on("close", () => {
    if (!res.writableFinished) closed = true;
  });
  const send = (delta, finish) =>
    res.write(
      `data: ${JSON.stringify({
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`,
    );
  send({ role: "assistant", content: "" }, null);
  const words = text.split(/(?<= )/);
  for (const word of words) {
    if (closed) break;
    await sleep(slow ? 250 : 15);
    if (closed) break;
    send({ content: word }, null);
  }
  if (closed) {
    log({ ...entry, outcome: "client closed mid-stream" });
    return;
  }
  send({}, "stop");
  if (body.stream_options && body.stream_options.include_usage) {
    res.write(
      `data: ${JSON.stringify({
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices: [],
        usage: { prompt_tokens: 10, completion_tokens: words.length, total_tokens: 10 + words.length },
      })}\n\n`,
    );
  }
  res.write("data: [DONE]\n\n");
  res.end();
  log({ ...entry, outcome: "complete" });
}

const server = http.createServer((req, res) => {
  const path = (req.url || "").split("?")[0];
  if (req.method === "POST" && path.endsWith("/chat/completions")) {
    chatCompletions(req, res).catch((error) => {
      log({ path, error: String(error) });
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
    return;
  }
  if (req.method === "GET" && path.endsWith("/models")) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ object: "list", data: [{ id: MODEL_ID, object: "model", owned_by: "clawsocket-e2e" }] }));
    return;
  }
  log({ path, method: req.method, outcome: "404" });
  res.writeHead(404, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { message: `no route ${req.method} ${path}`, type: "not_found" } }));
});

server.listen(port, "127.0.0.1", () => {
  console.log(`fake-model listening on ${server.address().port}`);
});
