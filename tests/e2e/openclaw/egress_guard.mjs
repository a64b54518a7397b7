// Preloaded into the OpenClaw gateway (NODE_OPTIONS=--import) by driver.mjs: every
// TCP connection the gateway's process (and the node processes it starts) opens to an
// address outside loopback is refused and written down, one JSON line per attempt, in
// the file EGRESS_LOG names; so is every DNS lookup of a name that is not localhost.
// The test requires that file to stay empty: the gateway, configured as it is, never
// calls out.

import dns from "node:dns";
import fs from "node:fs";
import net from "node:net";

const logFile = process.env.EGRESS_LOG;

function isLoopback(host) {
  if (!host) return true; // no host: node connects to localhost
  const h = String(host).replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || h.startsWith("127.") || h === "0.0.0.0" || h === "::" || h === "::ffff:127.0.0.1";
}

function record(kind, target) {
  if (!logFile) return;
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  const stack = new Error().stack.split("\n").slice(3).map((line) => line.trim());
  Error.stackTraceLimit = limit;
  try {
    fs.appendFileSync(logFile, JSON.stringify({ ts: Date.now(), pid: process.pid, kind, target, stack }) + "\n");
  } catch {
    /* nowhere to write */
  }
}

// net.Socket#connect(options | port, host | path, ...): undici (fetch), http, https, tls and
// ws all end up here.
const originalConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function connect(...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0]; // internal normalized form
  let host;
  let port;
  let isPath = false;
  if (options && typeof options === "object") {
    host = options.host;
    port = options.port;
    isPath = typeof options.path === "string";
  } else if (typeof options === "string" && isNaN(Number(options))) {
    isPath = true; // a unix socket path
  } else {
    port = options;
    host = typeof args[1] === "string" ? args[1] : undefined;
  }
  if (!isPath && !isLoopback(host)) {
    record("connect", `${host}:${port}`);
    const error = Object.assign(new Error(`egress_guard: connection to ${host}:${port} refused (the test allows loopback only)`), { code: "ECONNREFUSED" });
    process.nextTick(() => this.destroy(error));
    return this;
  }
  return originalConnect.apply(this, args);
};

// Names other than localhost: written down and failed (a lookup itself may leave the
// machine, to the resolver).
for (const [target, name] of [
  [dns, "lookup"],
  [dns.promises, "lookup"],
]) {
  const original = target[name];
  target[name] = function lookup(hostname, ...rest) {
    if (typeof hostname === "string" && !isLoopback(hostname) && net.isIP(hostname) === 0) {
      record("dns", hostname);
      const error = Object.assign(new Error(`egress_guard: lookup of ${hostname} refused`), { code: "ENOTFOUND", hostname });
      if (target === dns.promises) return Promise.reject(error);
      const callback = rest.find((arg) => typeof arg === "function");
      if (callback) process.nextTick(() => callback(error));
      return undefined;
    }
    return original.call(this, hostname, ...rest);
  };
}
