#!/usr/bin/env bash
# Runs every end-to-end test of tests/e2e against a real ClawSocket server:
#   the seed README's Node.js and Python examples, its wscat Quick Start lines,
#   the web chat page in headless Chromium (+ resume after a drop, a group), the page's
#   logic against a scripted mock server, the page against the openai backend and a
#   fake SSE model (web/chat.mjs, its own server), and that web/vendor matches its pins.
# Starts target/release/clawsocket (override with CLAWSOCKET_BIN) with settings/demo.toml
# (auth off, echo demo agent) on a free loopback port, stops it at the end, prints
# "N passed, M failed" and exits non-zero if anything failed.
# Installs only what is missing: `npm ci` here, `pip install websocket-client`.
# Chromium must be installed (apt-get install -y chromium); without it the browser
# tests count as failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${CLAWSOCKET_BIN:-$ROOT/target/release/clawsocket}"
CONFIG="${CLAWSOCKET_CONFIG:-settings/demo.toml}"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$ROOT/artifacts}"
WEBSOCKET_CLIENT_VERSION="1.9.2"
mkdir -p "$ARTIFACTS_DIR"

# --- dependencies (only if missing) ---
if [ ! -x "$HERE/node_modules/.bin/wscat" ] || [ ! -d "$HERE/node_modules/playwright-core" ] || [ ! -d "$HERE/node_modules/ws" ]; then
  echo "e2e: npm ci in tests/e2e"
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi
if ! python3 -c 'import websocket' 2>/dev/null; then
  echo "e2e: pip install websocket-client==$WEBSOCKET_CLIENT_VERSION"
  python3 -m pip install --quiet "websocket-client==$WEBSOCKET_CLIENT_VERSION"
fi

if [ ! -x "$BIN" ]; then
  echo "e2e: $BIN is missing: build it first (cargo build --release)"
  echo "0 passed, 1 failed"
  exit 1
fi

# --- start the server on a free loopback port ---
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/clawsocket-e2e-data.XXXXXX")"
SERVER_LOG="$ARTIFACTS_DIR/e2e-server.log"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "e2e: starting $BIN --config $CONFIG --host 127.0.0.1 --port $PORT (log: $SERVER_LOG)"
(cd "$ROOT" && RUST_LOG="${RUST_LOG:-info}" CLAWSOCKET__STORE__DIR="$DATA_DIR" \
  exec "$BIN" --config "$CONFIG" --host 127.0.0.1 --port "$PORT") >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

export CLAWSOCKET_URL="http://127.0.0.1:$PORT"
export CLAWSOCKET_WS="ws://127.0.0.1:$PORT/ws"
healthy() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "$CLAWSOCKET_URL/healthz" >/dev/null 2>&1
  else
    python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' \
      "$CLAWSOCKET_URL/healthz" >/dev/null 2>&1
  fi
}
ready=0
for _ in $(seq 150); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  if healthy; then ready=1; break; fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  echo "e2e: the server did not answer $CLAWSOCKET_URL/healthz within 30 s; its log:"
  tail -n 40 "$SERVER_LOG" | sed 's/^/  | /'
  echo "0 passed, 1 failed"
  exit 1
fi
echo "e2e: server ready at $CLAWSOCKET_URL"

# --- run the tests ---
PASSED=0
FAILED=0
FAILED_NAMES=()
run() {
  local name="$1"; shift
  echo "=== $name"
  if (cd "$HERE" && timeout --kill-after=5 "$@"); then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    echo "--- $name FAILED"
  fi
}

run "seed Node.js example" 30 node run_node_example.js
run "seed Python example" 30 python3 run_python_example.py
run "wscat Quick Start" 180 bash wscat_quickstart.sh
run "websocat one-liner" 30 bash websocat_oneliner.sh
run "web page in Chromium" 90 node browser.mjs
run "web page resume after a drop" 90 node browser_resume.mjs
run "web page group chat" 90 node browser_group.mjs
run "web page logic (mock server)" 90 node page_mock.mjs
run "web chat with a model (fake SSE agent, auth on)" 170 env CLAWSOCKET_BIN="$BIN" node web/chat.mjs
run "web/vendor matches its pinned npm packages" 120 bash "$ROOT/web/vendor/update.sh" --check

# --- the seed's examples once more, against the original protocol ---
# channels.websocket.events = [] must be exactly the original plugin's protocol: the
# seed README's examples run unchanged against a second server configured so.
ORIGINAL_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
ORIGINAL_DATA="$(mktemp -d "${TMPDIR:-/tmp}/clawsocket-e2e-original.XXXXXX")"
ORIGINAL_LOG="$ARTIFACTS_DIR/e2e-server-original-protocol.log"
(cd "$ROOT" && RUST_LOG="${RUST_LOG:-info}" CLAWSOCKET__STORE__DIR="$ORIGINAL_DATA" \
  CLAWSOCKET__CHANNELS__WEBSOCKET__EVENTS='[]' \
  exec "$BIN" --config "$CONFIG" --host 127.0.0.1 --port "$ORIGINAL_PORT") >"$ORIGINAL_LOG" 2>&1 &
ORIGINAL_PID=$!
for _ in $(seq 150); do
  curl -fsS --max-time 2 "http://127.0.0.1:$ORIGINAL_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
export CLAWSOCKET_URL="http://127.0.0.1:$ORIGINAL_PORT" CLAWSOCKET_WS="ws://127.0.0.1:$ORIGINAL_PORT/ws"
run "seed Node.js example, events = []" 30 node run_node_example.js
run "seed Python example, events = []" 30 python3 run_python_example.py
kill "$ORIGINAL_PID" 2>/dev/null || true
wait "$ORIGINAL_PID" 2>/dev/null || true
rm -rf "$ORIGINAL_DATA"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "e2e: the server died during the tests; its log:"
  tail -n 40 "$SERVER_LOG" | sed 's/^/  | /'
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("server alive at the end")
fi

[ "$FAILED" -eq 0 ] || echo "e2e failed: ${FAILED_NAMES[*]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
