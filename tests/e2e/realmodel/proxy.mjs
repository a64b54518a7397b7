// A logging HTTP proxy between ClawSocket and the model server, both on 127.0.0.1:
//   node proxy.mjs LISTEN_PORT UPSTREAM_PORT LOG_FILE
// Passes every request and answer through unchanged, streaming (an SSE answer reaches
// ClawSocket chunk by chunk as the server sends it), and appends one JSON line per
// request to LOG_FILE when it ends: the request body (parsed), the status, when the
// head and the first and last content deltas came, the finish_reason values and whether a usage object came in the answer's chunks, how
// many content deltas, and how it ended ("complete", "client-closed" when ClawSocket
// closed the connection before the answer ended, as on abort, or "upstream-error").
// Connects only to 127.0.0.1:UPSTREAM_PORT.
import fs from "node:fs";
import http from "node:http";

const [listenPort, upstreamPort, logFile] = process.argv.slice(2);
if (!listenPort || !upstreamPort || !logFile) {
  console.error("usage: node proxy.mjs LISTEN_PORT UPSTREAM_PORT LOG_FILE");
  process.exit(2);
}
// A fresh connection to the server for each request: a kept-alive one that the server
// closed after a failed answer would show up here as an error of the proxy's own.
const agent = new http.Agent({ keepAlive: false });
let count = 0;

const server = http.createServer((req, res) => {
  const n = ++count;
  const started = Date.now();
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const raw = Buffer.concat(chunks);
    let body = null;
    try {
      body = raw.length ? JSON.parse(raw.toString("utf8")) : null;
    } catch {
      body = raw.toString("utf8").slice(0, 2000);
    }
    const record = {
      n,
      method: req.method,
      url: req.url,
      body,
      startedAt: started,
      status: null,
      headAfterMs: null,
      finishReasons: [],
      usage: null,
      deltas: 0,
      firstDeltaAfterMs: null,
      lastDeltaAfterMs: null,
      text: "",
      ended: null,
      endedAfterMs: null,
    };
    let written = false;
    const finish = (how) => {
      if (written) return;
      written = true;
      record.ended = how;
      record.endedAfterMs = Date.now() - started;
      fs.appendFileSync(logFile, JSON.stringify(record) + "\n");
    };
    const headers = { ...req.headers, host: `127.0.0.1:${upstreamPort}` };
    const upstream = http.request(
      { host: "127.0.0.1", port: Number(upstreamPort), method: req.method, path: req.url, headers, agent },
      (up) => {
        record.status = up.statusCode;
        record.headAfterMs = Date.now() - started;
        res.writeHead(up.statusCode, up.headers);
        let pending = "";
        up.on("data", (chunk) => {
          res.write(chunk);
          // Read the SSE events as they pass (for the record only).
          pending += chunk.toString("utf8");
          let nl;
          while ((nl = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, nl).trim();
            pending = pending.slice(nl + 1);
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            try {
              const event = JSON.parse(data);
              if (event.usage) record.usage = event.usage;
              for (const choice of event.choices || []) {
                if (choice.finish_reason) record.finishReasons.push(choice.finish_reason);
                const content = choice.delta && choice.delta.content;
                if (content) {
                  if (record.firstDeltaAfterMs === null) record.firstDeltaAfterMs = Date.now() - started;
                  record.lastDeltaAfterMs = Date.now() - started;
                  record.deltas += 1;
                  record.text += content;
                }
              }
            } catch {
              /* not JSON: ignored */
            }
          }
        });
        up.on("end", () => {
          if (pending.trim().startsWith("{")) {
            // A plain JSON answer.
            try {
              const whole = JSON.parse(pending);
              if (whole.usage) record.usage = whole.usage;
              for (const choice of whole.choices || []) {
                if (choice.finish_reason) record.finishReasons.push(choice.finish_reason);
              }
            } catch {
              /* ignored */
            }
          }
          res.end();
          finish("complete");
        });
        up.on("error", () => {
          res.destroy();
          finish("upstream-error");
        });
      },
    );
    upstream.on("error", (error) => {
      record.error = String(error);
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end(`proxy: ${error}`);
      } else {
        res.destroy();
      }
      finish("upstream-error");
    });
    // ClawSocket went away before the answer ended (abort): pass that on, so the model
    // server sees its client disconnect, as it would without the proxy.
    res.on("close", () => {
      if (!res.writableFinished) {
        upstream.destroy();
        finish("client-closed");
      }
    });
    upstream.end(raw);
  });
});

server.listen(Number(listenPort), "127.0.0.1", () => {
  console.log(`proxy: 127.0.0.1:${listenPort} -> 127.0.0.1:${upstreamPort}, log ${logFile}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
