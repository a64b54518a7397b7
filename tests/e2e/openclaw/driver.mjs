// The end-to-end test of ClawSocket against the real OpenClaw gateway.
//
// Started by run.sh (which installs node 24 and openclaw into a cache and says where
// through the environment). This driver starts every process itself, on 127.0.0.1
// only: the fake model (fake_model.mjs), the real OpenClaw gateway with a fresh HOME,
// config and state dir, and the ClawSocket release binary with the openclaw backend and
// dynamic agents, its agents file $included by the gateway's openclaw.json. It then
// talks to ClawSocket as WebSocket clients (?senderId=..., auth off) and prints one
// PASS/FAIL line per check, then "N passed, M failed"; exit 1 when anything failed.
//
// Env (set by run.sh):
//   OPENCLAW_NODE_DIR   the directory holding node >= 24.16 (put first on the gateway's PATH)
//   OPENCLAW_ENTRY      openclaw.mjs of the installed openclaw package
//   OPENCLAW_MODULES    that install's node_modules (json5 is read from there)
//   WS_MODULE_DIR       a directory whose node_modules holds the `ws` package
//   CLAWSOCKET_BIN      the ClawSocket binary
//   RUN_DIR             an empty directory for this run (configs, state, logs)
// Every process is started in its own process group, its pid written to
// RUN_DIR/pids/NAME.pid (run.sh's trap kills what is left), and stopped at the end.

import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`driver: ${name} is not set (run run.sh, not this file)`);
  return value;
};
const NODE_DIR = env("OPENCLAW_NODE_DIR");
const OPENCLAW_ENTRY = env("OPENCLAW_ENTRY");
const CLAWSOCKET_BIN = env("CLAWSOCKET_BIN");
const RUN_DIR = env("RUN_DIR");
const WebSocket = createRequire(path.join(env("WS_MODULE_DIR"), "package.json"))("ws");
const JSON5 = createRequire(path.join(env("OPENCLAW_MODULES"), "..", "package.json"))("json5");

const TOKEN = "clawsocket-e2e-gateway-token";
const HOST = "127.0.0.1";
const TURN_TIMEOUT_MS = 90_000; // a new agent's first turn: hot reload + workspace bootstrap
const OVERALL_DEADLINE_MS = 15 * 60_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.log("   ", ...args);

// ---------------------------------------------------------------- paths and ports

const HOME_DIR = path.join(RUN_DIR, "home");
const CONFIG_DIR = path.join(HOME_DIR, ".openclaw");
const GATEWAY_CONFIG = path.join(CONFIG_DIR, "openclaw.json");
const AGENTS_FILE = path.join(CONFIG_DIR, "clawsocket-agents.json");
const STATE_DIR = path.join(RUN_DIR, "openclaw-state");
const WORKSPACES = path.join(RUN_DIR, "workspaces");
const CLAWSOCKET_DATA = path.join(RUN_DIR, "clawsocket-data");
const CLAWSOCKET_CONFIG = path.join(RUN_DIR, "clawsocket.toml");
const LOGS = path.join(RUN_DIR, "logs");
const PIDS = path.join(RUN_DIR, "pids");
const MODEL_LOG = path.join(LOGS, "fake-model-requests.jsonl");
const GATEWAY_FILE_LOG = path.join(LOGS, "gateway-file.log");
const EGRESS_LOG = path.join(LOGS, "gateway-egress.jsonl");
for (const dir of [CONFIG_DIR, STATE_DIR, WORKSPACES, CLAWSOCKET_DATA, LOGS, PIDS, path.join(RUN_DIR, "tmp")]) {
  fs.mkdirSync(dir, { recursive: true });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- processes

const processes = new Map(); // name -> { child, pid, logPath }

let stopping = false; // set once the run is ending: nothing new is started

function start(name, command, args, options = {}) {
  if (stopping) throw new Error(`the run is stopping: ${name} not started`);
  const logPath = path.join(LOGS, `${name}.log`);
  const out = fs.openSync(logPath, "a");
  fs.writeSync(out, `\n===== ${new Date().toISOString()} start: ${command} ${args.join(" ")}\n`);
  const child = spawn(command, args, {
    cwd: options.cwd || RUN_DIR,
    env: options.env || process.env,
    stdio: ["ignore", out, out],
    detached: true, // its own process group: stop() ends the process and its children
  });
  fs.closeSync(out);
  const entry = { child, pid: child.pid, logPath, exited: false, exitCode: null, exitSignal: null };
  child.on("exit", (code, signal) => {
    entry.exited = true;
    entry.exitCode = code;
    entry.exitSignal = signal;
  });
  child.on("error", (error) => {
    entry.exited = true;
    entry.error = error;
  });
  fs.writeFileSync(path.join(PIDS, `${name}.pid`), `${child.pid}\n`);
  processes.set(name, entry);
  return entry;
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stop(name, { signal = "SIGTERM", graceMs = 15_000 } = {}) {
  const entry = processes.get(name);
  if (!entry) return;
  processes.delete(name);
  const { pid } = entry;
  try {
    process.kill(-pid, signal);
  } catch {
    /* already gone */
  }
  const deadline = Date.now() + graceMs;
  while (groupAlive(pid) && Date.now() < deadline) await sleep(100);
  if (groupAlive(pid)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      /* gone */
    }
    const hard = Date.now() + 5_000;
    while (groupAlive(pid) && Date.now() < hard) await sleep(100);
  }
  fs.rmSync(path.join(PIDS, `${name}.pid`), { force: true });
}

async function stopAll() {
  while (processes.size) await stop([...processes.keys()].pop(), { graceMs: 5_000 });
}

function tail(file, lines = 30) {
  try {
    return fs
      .readFileSync(file, "utf8")
      .replace(/\x1b\[[0-9;]*m/g, "")
      .split("\n")
      .slice(-lines)
      .map((line) => `      | ${line}`)
      .join("\n");
  } catch {
    return `      | (no ${file})`;
  }
}

async function waitFor(what, timeoutMs, probe, entry) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    if (entry && entry.exited) {
      throw new Error(`${what}: the process exited (code ${entry.exitCode}, signal ${entry.exitSignal}); its log:\n${tail(entry.logPath)}`);
    }
    try {
      if (await probe()) return;
    } catch (error) {
      last = String(error && error.message ? error.message : error);
    }
    await sleep(200);
  }
  throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (last: ${last})` : ""}${entry ? `; its log:\n${tail(entry.logPath)}` : ""}`);
}

async function httpStatus(url, init = {}) {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(5_000) });
  await response.arrayBuffer();
  return response.status;
}

// ---------------------------------------------------------------- the three services

let MODEL_PORT, GATEWAY_PORT, CLAWSOCKET_PORT;

async function startModel() {
  const entry = start("fake-model", process.execPath, [path.join(HERE, "fake_model.mjs"), String(MODEL_PORT), MODEL_LOG]);
  await waitFor("the fake model answers GET /v1/models", 15_000, async () => (await httpStatus(`http://${HOST}:${MODEL_PORT}/v1/models`)) === 200, entry);
}

function writeGatewayConfig() {
  // JSON5, as an operator writes it. Never calls out: no update check, no hosted model
  // catalog, no mDNS; the only model is the fake one on loopback.
  const config = `// openclaw.json for the ClawSocket end-to-end test (written by driver.mjs)
{
  gateway: {
    mode: "local",
    port: ${GATEWAY_PORT},
    bind: "loopback",
    auth: { mode: "token", token: "${TOKEN}" },
    http: { endpoints: { chatCompletions: { enabled: true } } },
  },
  update: { checkOnStart: false },
  discovery: { mdns: { mode: "off" } },
  logging: { file: ${JSON.stringify(GATEWAY_FILE_LOG)} },
  models: {
    catalogRefresh: { enabled: false },
    providers: {
      fake: {
        baseUrl: "http://${HOST}:${MODEL_PORT}/v1",
        apiKey: "fake-model-key",
        api: "openai-completions",
        models: [
          { id: "memory-echo", name: "Memory echo (fake)", reasoning: false, input: ["text"], contextWindow: 128000, maxTokens: 4096 },
        ],
      },
    },
  },
  // ClawSocket owns the agents file; the gateway hot-applies its changes.
  agents: {
    $include: "./clawsocket-agents.json",
    ownership: "explicit",
    defaults: { model: { primary: "fake/memory-echo" } },
  },
}
`;
  fs.writeFileSync(GATEWAY_CONFIG, config);
  // The gateway refuses an agents map without any agent: the file starts with the
  // default agent ClawSocket's agent.id names ("main"); ClawSocket keeps every entry.
  const agents = { entries: { main: { workspace: path.join(WORKSPACES, "workspace-main") } } };
  fs.writeFileSync(AGENTS_FILE, JSON.stringify(agents, null, 2) + "\n");
}

function gatewayEnv() {
  return {
    PATH: `${NODE_DIR}:${process.env.PATH || "/usr/bin:/bin"}`,
    HOME: HOME_DIR,
    TMPDIR: path.join(RUN_DIR, "tmp"),
    OPENCLAW_CONFIG_PATH: GATEWAY_CONFIG,
    OPENCLAW_STATE_DIR: STATE_DIR,
    OPENCLAW_NO_AUTO_UPDATE: "1",
    OPENCLAW_DISABLE_BONJOUR: "1",
    NO_COLOR: "1",
    LANG: "C.UTF-8",
    // refuses and writes down any connection outside loopback (check 8)
    NODE_OPTIONS: `--import ${pathToFileURL(path.join(HERE, "egress_guard.mjs")).href}`,
    EGRESS_LOG,
  };
}

async function startGateway() {
  const entry = start("gateway", path.join(NODE_DIR, "node"), [OPENCLAW_ENTRY, "gateway", "run", "--port", String(GATEWAY_PORT), "--bind", "loopback"], {
    env: gatewayEnv(),
    cwd: RUN_DIR,
  });
  const t0 = Date.now();
  await waitFor(
    "the gateway answers GET /v1/models",
    120_000,
    async () => (await httpStatus(`http://${HOST}:${GATEWAY_PORT}/v1/models`, { headers: { authorization: `Bearer ${TOKEN}` } })) === 200,
    entry,
  );
  log(`gateway pid ${entry.pid} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return entry;
}

function writeClawSocketConfig() {
  const toml = `# ClawSocket for the OpenClaw end-to-end test (written by driver.mjs)
[channels.websocket]
host = "${HOST}"
port = ${CLAWSOCKET_PORT}

[channels.websocket.auth]
enabled = false

[channels.websocket.dynamicAgentCreation]
enabled = true
workspaceTemplate = ${JSON.stringify(path.join(WORKSPACES, "workspace-{agentId}"))}
agentDirTemplate = ${JSON.stringify(path.join(RUN_DIR, "clawsocket-agents", "{agentId}", "agent"))}

[agent]
kind = "openclaw"
id = "main"
url = "http://${HOST}:${GATEWAY_PORT}"
token = "${TOKEN}"
openclawConfigPath = ${JSON.stringify(AGENTS_FILE)}
confirmAgentMs = 20000
timeoutMs = 60000

[store]
dir = ${JSON.stringify(CLAWSOCKET_DATA)}
`;
  fs.writeFileSync(CLAWSOCKET_CONFIG, toml);
}

async function startClawSocket() {
  const entry = start("clawsocket", CLAWSOCKET_BIN, ["--config", CLAWSOCKET_CONFIG], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info", HOME: HOME_DIR },
    cwd: RUN_DIR,
  });
  await waitFor("ClawSocket answers GET /healthz", 30_000, async () => (await httpStatus(`http://${HOST}:${CLAWSOCKET_PORT}/healthz`)) === 200, entry);
  return entry;
}

// ---------------------------------------------------------------- the agents file

function readAgentsFile() {
  return JSON5.parse(fs.readFileSync(AGENTS_FILE, "utf8"));
}

function agentIdsInFile() {
  const parsed = readAgentsFile();
  if (parsed && parsed.entries && typeof parsed.entries === "object") return Object.keys(parsed.entries);
  if (parsed && Array.isArray(parsed.list)) return parsed.list.map((item) => item.id);
  return [];
}

function gatewayLog() {
  try {
    return fs.readFileSync(path.join(LOGS, "gateway.log"), "utf8").replace(/\x1b\[[0-9;]*m/g, "");
  } catch {
    return "";
  }
}

function hotReloadsApplied() {
  return gatewayLog()
    .split("\n")
    .filter((line) => /config hot reload applied/.test(line));
}

// OpenClaw 2026.9.6 starts, after every gateway start, a "dashboard data prewarm"
// (server-startup-post-attach: scheduleGatewayHandlerPrewarm → listManagedPlugins →
// loadOfficialCatalog) that fetches the hosted official plugin catalog from clawhub.ai.
// That call passes no config, so no key turns it off (update.checkOnStart and
// models.catalogRefresh do not reach it). egress_guard.mjs refuses it and the gateway
// falls back to its bundled catalog; anything else beyond loopback fails check 8.
function isKnownUnconfigurableEgress(attempt) {
  return (
    attempt.target === "clawhub.ai" &&
    Array.isArray(attempt.stack) &&
    attempt.stack.some((frame) => frame.includes("loadHostedOfficialExternalPluginCatalogEntries"))
  );
}

// What the fake model was asked, one entry per request (fake_model.mjs writes them).
function modelRequests() {
  try {
    return fs
      .readFileSync(MODEL_LOG, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line));
  } catch {
    return [];
  }
}

// Asks the gateway itself (not ClawSocket) whether it knows an agent.
async function gatewayKnowsAgent(agentId) {
  const response = await fetch(`http://${HOST}:${GATEWAY_PORT}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "x-openclaw-agent-id": agentId },
    body: JSON.stringify({ model: `openclaw:${agentId}`, stream: false, user: `e2e-probe-${agentId}`, messages: [{ role: "user", content: "probe" }] }),
    signal: AbortSignal.timeout(60_000),
  });
  const body = await response.text();
  if (response.status === 400 && /Unknown agent/i.test(body)) return false;
  if (response.status === 200) return true;
  throw new Error(`gateway answered HTTP ${response.status}: ${body.slice(0, 300)}`);
}

// ---------------------------------------------------------------- WebSocket clients

let messageCounter = 0;

class Client {
  constructor(senderId) {
    this.senderId = senderId;
    this.frames = [];
    this.waiters = [];
  }

  open() {
    const url = `ws://${HOST}:${CLAWSOCKET_PORT}/ws?senderId=${encodeURIComponent(this.senderId)}&senderName=${encodeURIComponent(this.senderId)}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error(`${this.senderId}: no welcome frame within 10 s`)), 10_000);
      ws.on("message", (data) => {
        let frame;
        try {
          frame = JSON.parse(data.toString());
        } catch {
          return;
        }
        this.frames.push(frame);
        if (frame.type === "chat.response" && frame.connectionId && !frame.messageId) {
          clearTimeout(timer);
          resolve(this);
        }
        for (const waiter of [...this.waiters]) waiter();
      });
      ws.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ws.on("close", () => {
        this.closed = true;
        for (const waiter of [...this.waiters]) waiter();
      });
    });
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  // Sends one chat.send; resolves with every frame of that turn once it ended
  // (chat.response or chat.error with its messageId), or rejects after timeoutMs.
  // onFrame(frame) sees each frame of the turn as it arrives.
  turn(content, { timeoutMs = TURN_TIMEOUT_MS, onFrame } = {}) {
    const messageId = `e2e-${this.senderId}-${++messageCounter}-${Date.now()}`;
    const mine = [];
    let seen = this.frames.length;
    if (this.closed) return Promise.reject(new Error(`${this.senderId}: the socket is closed`));
    return new Promise((resolve, reject) => {
      const finish = (error) => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        if (error) {
          error.frames = mine;
          reject(error);
        } else resolve({ messageId, frames: mine });
      };
      const check = () => {
        while (seen < this.frames.length) {
          const frame = this.frames[seen++];
          if (frame.messageId !== messageId) continue;
          mine.push(frame);
          if (onFrame) onFrame(frame, messageId);
          if (frame.type === "chat.response" || frame.type === "chat.error") return finish();
        }
        if (this.closed) finish(new Error(`${this.senderId}: the socket closed during the turn`));
      };
      const timer = setTimeout(
        () => finish(new Error(`${this.senderId}: no chat.response or chat.error for "${content}" within ${timeoutMs / 1000} s (got: ${mine.map((f) => f.type).join(", ") || "nothing"})`)),
        timeoutMs,
      );
      this.waiters.push(check);
      this.send({ type: "chat.send", content, messageId });
    });
  }

  close() {
    this.closed = true;
    try {
      this.ws.close();
    } catch {
      /* gone */
    }
  }
}

async function connect(senderId) {
  return new Client(senderId).open();
}

function summary(result) {
  const end = result.frames[result.frames.length - 1] || {};
  if (end.type === "none") return end.error;
  if (end.type === "chat.error") return `chat.error code ${end.code}: ${end.error}`;
  return `${end.type} (agentId ${end.agentId}): ${JSON.stringify(end.content)}`;
}

function answerOf(result) {
  const end = result.frames[result.frames.length - 1] || {};
  if (end.type !== "chat.response") throw new Error(`expected a chat.response, got ${summary(result)}`);
  return end;
}

// ---------------------------------------------------------------- checks

const results = [];

function logSize(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

// The WARN and ERROR lines ClawSocket logged since `from` (a byte offset).
function clawSocketComplaints(from) {
  try {
    const text = fs.readFileSync(path.join(LOGS, "clawsocket.log")).subarray(from).toString("utf8");
    return text
      .split("\n")
      .filter((line) => /\b(WARN|ERROR)\b/.test(line) && !/auth is disabled/.test(line))
      .slice(-8);
  } catch {
    return [];
  }
}

async function check(name, body) {
  if (stopping) return;
  const t0 = Date.now();
  const logFrom = logSize(path.join(LOGS, "clawsocket.log"));
  try {
    const detail = await body();
    results.push(true);
    console.log(`PASS ${name}${detail ? `: ${detail}` : ""} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (error) {
    results.push(false);
    console.log(`FAIL ${name}: ${error && error.message ? error.message : error} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const complaints = clawSocketComplaints(logFrom);
    if (complaints.length) console.log(`    ClawSocket's log meanwhile:\n${complaints.map((line) => `      | ${line}`).join("\n")}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  [MODEL_PORT, GATEWAY_PORT, CLAWSOCKET_PORT] = [await freePort(), await freePort(), await freePort()];
  console.log(`openclaw e2e: run dir ${RUN_DIR}`);
  console.log(`openclaw e2e: fake model :${MODEL_PORT}, gateway :${GATEWAY_PORT}, ClawSocket :${CLAWSOCKET_PORT} (all ${HOST})`);
  writeGatewayConfig();
  writeClawSocketConfig();
  await startModel();
  const gateway = await startGateway();
  const gatewayPid = gateway.pid;
  await startClawSocket();

  const clients = {};
  const user = async (id) => (clients[id] ||= await connect(id));

  // 1. streaming
  await check("1 streaming: chat.typing, chat.stream deltas, a chat.response equal to their concatenation", async () => {
    const alice = await user("alice");
    const result = await alice.turn("my name is Alice");
    const types = result.frames.map((f) => f.type);
    const end = answerOf(result);
    const streams = result.frames.filter((f) => f.type === "chat.stream");
    assert(types.includes("chat.typing"), `no chat.typing (frames: ${types.join(", ")})`);
    assert(types.indexOf("chat.typing") < types.indexOf("chat.stream"), `chat.typing came after the first chat.stream (${types.join(", ")})`);
    assert(streams.length >= 1, "no chat.stream delta");
    const seqs = streams.map((f) => f.seq);
    assert(seqs.every((seq, i) => seq === i + 1), `chat.stream seq not 1, 2, 3…: ${seqs.join(",")}`);
    assert(streams.every((f) => f.done === false), "a chat.stream frame has done != false");
    const joined = streams.map((f) => f.content).join("");
    assert(joined === end.content, `the deltas concatenate to ${JSON.stringify(joined)}, the chat.response says ${JSON.stringify(end.content)}`);
    assert(end.content.includes("my name is Alice"), `the answer does not echo the message: ${JSON.stringify(end.content)}`);
    assert(end.agentId === "ws-alice", `agentId ${end.agentId}, expected ws-alice`);
    return `${streams.length} deltas → ${JSON.stringify(end.content)}`;
  });

  // 2. memory per user, kept by the gateway
  await check("2 memory per user: each user gets their own name back (the gateway's session memory)", async () => {
    const alice = await user("alice");
    const bob = await user("bob");
    answerOf(await bob.turn("my name is Bob"));
    const [a, b] = await Promise.all([alice.turn("what is my name?"), bob.turn("what is my name?")]);
    const aliceSays = answerOf(a).content;
    const bobSays = answerOf(b).content;
    assert(/your name is Alice\b/.test(aliceSays) && !/Bob/.test(aliceSays), `alice got ${JSON.stringify(aliceSays)}`);
    assert(/your name is Bob\b/.test(bobSays) && !/Alice/.test(bobSays), `bob got ${JSON.stringify(bobSays)}`);
    assert(answerOf(b).agentId === "ws-bob", `bob's answer came from ${answerOf(b).agentId}`);
    return `alice: ${JSON.stringify(aliceSays)}; bob: ${JSON.stringify(bobSays)}`;
  });

  // 3. hot registration, no restart
  await check("3 two users' agents hot-registered without a gateway restart", async () => {
    const ids = agentIdsInFile();
    assert(ids.includes("ws-alice") && ids.includes("ws-bob"), `the agents file names ${ids.join(", ")}`);
    assert(processes.get("gateway") && processes.get("gateway").pid === gatewayPid && !processes.get("gateway").exited, "the gateway process is not the one started");
    assert(groupAlive(gatewayPid), `the gateway (pid ${gatewayPid}) is gone`);
    const applied = hotReloadsApplied();
    for (const id of ["ws-alice", "ws-bob"]) {
      assert(applied.some((line) => line.includes(`agents.entries.${id}`)), `no "config hot reload applied (agents.entries.${id})" in the gateway log`);
    }
    const lines = gatewayLog().split("\n");
    const restarts = lines.filter((line) => /requires gateway restart|in-process restart/i.test(line));
    assert(restarts.length === 0, `the gateway log shows a restart: ${restarts[0]}`);
    const listening = lines.filter((line) => /http server listening/.test(line)).length;
    assert(listening === 1, `the gateway started its HTTP server ${listening} times`);
    assert(await gatewayKnowsAgent("ws-alice"), "the gateway does not know ws-alice");
    return `file: ${ids.join(", ")}; gateway pid ${gatewayPid} unchanged; ${applied.length} hot reload(s) applied`;
  });

  // 4. a comment in the agents file
  await check("4 an agents file with a // comment: a new user's agent is still registered and answers", async () => {
    const before = fs.readFileSync(AGENTS_FILE, "utf8");
    fs.writeFileSync(AGENTS_FILE, `// agents written by ClawSocket; an operator added this comment (JSON5, which OpenClaw accepts)\n${before}`);
    await sleep(2_000); // the gateway re-reads it (about 1 s): it must still accept it
    assert(await gatewayKnowsAgent("ws-bob"), "with the comment in the file the gateway no longer knows ws-bob");
    const carol = await user("carol");
    const result = await carol.turn("hello, I am new here");
    const end = answerOf(result);
    assert(end.agentId === "ws-carol", `answered by ${end.agentId}, expected ws-carol`);
    assert(end.content.includes("hello, I am new here"), `answer ${JSON.stringify(end.content)}`);
    const ids = agentIdsInFile();
    assert(ids.includes("ws-carol") && ids.includes("ws-alice") && ids.includes("ws-bob") && ids.includes("main"), `the agents file names ${ids.join(", ")}`);
    const kept = fs.readFileSync(AGENTS_FILE, "utf8").includes("an operator added this comment");
    return `${JSON.stringify(end.content)}; file: ${ids.join(", ")}; the comment was ${kept ? "kept" : "dropped"}`;
  });

  // 5. restart of ClawSocket with an entry removed from the file
  await check("5 ClawSocket restarted after ws-alice's entry was removed from the file: alice still gets an answer", async () => {
    for (const id of Object.keys(clients)) {
      clients[id].close();
      delete clients[id];
    }
    await stop("clawsocket");
    const parsed = readAgentsFile();
    if (parsed.entries) delete parsed.entries["ws-alice"];
    if (Array.isArray(parsed.list)) parsed.list = parsed.list.filter((item) => item.id !== "ws-alice");
    fs.writeFileSync(AGENTS_FILE, JSON.stringify(parsed, null, 2) + "\n");
    await waitFor("the gateway forgets ws-alice", 30_000, async () => !(await gatewayKnowsAgent("ws-alice")));
    await startClawSocket();
    // alice comes back at once, as a reconnecting client does
    const alice = await user("alice");
    const result = await alice.turn("are you still there?");
    const last = result.frames[result.frames.length - 1] || {};
    if (last.type !== "chat.response") {
      // Not a pass either way; say which half is missing: the file repair, or waiting
      // for the gateway to apply it (it hot-reloads in about a second).
      await sleep(3_000);
      const repaired = agentIdsInFile().includes("ws-alice");
      const again = await alice.turn("are you still there? (a second try, 3 s later)").catch((error) => ({ frames: [{ type: "none", error: error.message }] }));
      throw new Error(
        `the first turn after the restart ended with ${summary(result)}; the file names ws-alice again: ${repaired ? "yes" : "no"}; a second try 3 s later: ${summary(again)}`,
      );
    }
    assert(last.agentId === "ws-alice", `answered by ${last.agentId}, expected ws-alice`);
    const ids = agentIdsInFile();
    assert(ids.includes("ws-alice"), `the agents file names ${ids.join(", ")} (no ws-alice)`);
    return `${JSON.stringify(last.content)}; file: ${ids.join(", ")}`;
  });

  // 6. abort
  await check("6 abort: chat.abort during a slow answer gives chat.error \"aborted\", and the next turn works", async () => {
    const bob = await user("bob");
    let aborted = false;
    const result = await bob.turn("please answer SLOW", {
      timeoutMs: 60_000,
      onFrame: (frame, messageId) => {
        if (frame.type === "chat.stream" && !aborted) {
          aborted = true;
          bob.send({ type: "chat.abort", messageId });
        }
      },
    });
    const end = result.frames[result.frames.length - 1];
    assert(aborted, "no chat.stream arrived to abort");
    assert(end.type === "chat.error" && end.code === "aborted", `the turn ended with ${summary(result)}`);
    // the abort reaches the model: ClawSocket drops its request, the gateway its own
    await waitFor("the fake model sees the slow answer's stream closed", 15_000, async () =>
      modelRequests().some((entry) => entry.slow && entry.outcome === "client closed mid-stream"),
    );
    const next = answerOf(await bob.turn("what is my name?"));
    assert(/bob: what is my name\?/.test(next.content) && /your name is Bob\b/.test(next.content), `the next turn answered ${JSON.stringify(next.content)}`);
    const late = bob.frames.filter((f) => f.messageId === result.messageId && f.type === "chat.response");
    assert(late.length === 0, `the aborted turn still got a chat.response: ${JSON.stringify(late[0])}`);
    return `aborted after ${result.frames.filter((f) => f.type === "chat.stream").length} delta(s), the model's stream closed; next: ${JSON.stringify(next.content)}`;
  });

  // 7. the gateway killed and back
  await check("7 the gateway killed: a turn gets chat.error; the gateway restarted: the next turn works", async () => {
    const bob = await user("bob");
    await stop("gateway", { signal: "SIGKILL", graceMs: 5_000 });
    const down = await bob.turn("is anybody there?", { timeoutMs: 90_000 });
    const end = down.frames[down.frames.length - 1];
    assert(end.type === "chat.error", `with the gateway down the turn ended with ${summary(down)}`);
    assert(["agent_unavailable", "agent_error", "agent_timeout"].includes(end.code), `chat.error code ${end.code}: ${end.error}`);
    const restarted = await startGateway();
    assert(restarted.pid !== gatewayPid, "the gateway did not restart");
    const back = answerOf(await bob.turn("what is my name?"));
    assert(back.agentId === "ws-bob", `answered by ${back.agentId}`);
    return `down: chat.error ${end.code} (${end.error}); back: ${JSON.stringify(back.content)}`;
  });

  // 8. loopback only
  await check("8 the gateway tried to reach nothing beyond 127.0.0.1 but its unconfigurable plugin-catalog prewarm", async () => {
    let attempts = [];
    try {
      attempts = fs.readFileSync(EGRESS_LOG, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line));
    } catch {
      /* no attempt, no file */
    }
    const known = attempts.filter(isKnownUnconfigurableEgress);
    const other = attempts.filter((attempt) => !isKnownUnconfigurableEgress(attempt));
    const describe = (list) => [...new Set(list.map((a) => `${a.kind} ${a.target}`))].join(", ");
    assert(other.length === 0, `${other.length} attempt(s) refused: ${describe(other)} (the first from ${(other[0] && other[0].stack ? other[0].stack.slice(0, 8) : []).join(" < ")})`);
    return `${modelRequests().length} model requests, all to the fake model; refused: ${known.length ? `${known.length} × ${describe(known)} (the hosted plugin catalog)` : "nothing"}`;
  });

  // 9. /readyz with the gateway's credentials
  await check("9 /readyz is 200 with the right gateway token and 503 naming the refusal with a wrong one", async () => {
    const right = await fetch(`http://${HOST}:${CLAWSOCKET_PORT}/readyz`, { signal: AbortSignal.timeout(10_000) });
    assert(right.status === 200, `/readyz with the right token: HTTP ${right.status} ${await right.text()}`);
    const port = await freePort();
    const config = path.join(RUN_DIR, "clawsocket-wrong-token.toml");
    const toml = fs
      .readFileSync(CLAWSOCKET_CONFIG, "utf8")
      .replace(`port = ${CLAWSOCKET_PORT}`, `port = ${port}`)
      .replace(`token = "${TOKEN}"`, `token = "not-the-gateway-token"`)
      .replace("[channels.websocket.dynamicAgentCreation]\nenabled = true", "[channels.websocket.dynamicAgentCreation]\nenabled = false")
      .replace(JSON.stringify(CLAWSOCKET_DATA), JSON.stringify(CLAWSOCKET_DATA + "-wrong-token"));
    fs.writeFileSync(config, toml);
    const entry = start("clawsocket-wrong-token", CLAWSOCKET_BIN, ["--config", config], {
      env: { ...process.env, RUST_LOG: "info", HOME: HOME_DIR },
      cwd: RUN_DIR,
    });
    try {
      await waitFor("the wrong-token ClawSocket answers GET /healthz", 30_000, async () => (await httpStatus(`http://${HOST}:${port}/healthz`)) === 200, entry);
      const wrong = await fetch(`http://${HOST}:${port}/readyz`, { signal: AbortSignal.timeout(10_000) });
      const reason = await wrong.text();
      assert(wrong.status === 503, `/readyz with a wrong token: HTTP ${wrong.status} ${reason.trim()}`);
      assert(reason.includes("refused the configured credentials"), `the reason does not say so: ${reason.trim()}`);
      assert(!reason.includes("not-the-gateway-token"), "the token is shown");
      return reason.trim();
    } finally {
      await stop("clawsocket-wrong-token");
    }
  });

  for (const client of Object.values(clients)) client.close();
}

const overall = setTimeout(async () => {
  console.log(`FAIL the whole run: over ${OVERALL_DEADLINE_MS / 60_000} minutes`);
  results.push(false);
  await finish(1);
}, OVERALL_DEADLINE_MS);

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  stopping = true;
  clearTimeout(overall);
  await stopAll();
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || code ? 1 : 0);
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    console.log(`openclaw e2e: ${signal}, stopping`);
    results.push(false);
    finish(1);
  });
}

main().then(
  () => finish(0),
  (error) => {
    if (stopping) return; // a signal ended the run; finish() reports
    console.log(`FAIL setup: ${error && error.message ? error.message : error}`);
    results.push(false);
    finish(1);
  },
);
