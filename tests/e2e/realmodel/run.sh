#!/usr/bin/env bash
# End-to-end test of ClawSocket against a REAL model: llama-cpp-python's
# OpenAI-compatible server running SmolLM2-135M-Instruct (Q4_1 GGUF) on the CPU.
#
#   ClawSocket (agent.kind "openai") -> proxy.mjs (logs each request) -> llama_cpp.server
#
# Installs what it needs once (./install: a source build of llama-cpp-python, about
# 5 minutes on 2 cores, cached with the model under $CLAWSOCKET_E2E_CACHE/realmodel),
# starts the model server, the proxy and the release binary on free 127.0.0.1 ports,
# runs driver.mjs (streaming, memory across two turns, two users at once, abort
# mid-answer), stops everything it started, prints "N passed, M failed" and exits
# non-zero if anything failed. Nothing here connects beyond 127.0.0.1 once installed.
#
# Env:
#   CLAWSOCKET_BIN        the binary (default target/release/clawsocket)
#   CLAWSOCKET_E2E_CACHE  the cache root (default /var/cache/clawsocket-e2e)
#   ARTIFACTS_DIR         where the logs and observations go (default artifacts/),
#                         in realmodel-e2e/
#   KEEP_RUN_DIR=1        keep the run's temporary directory
#   REALMODEL_INTERRUPT_REQUESTS  the server's --interrupt_requests (default False;
#                         True, the server's own default, is for trying what it breaks)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=realmodel
# shellcheck source=../suite.sh
. "$HERE/../suite.sh"
OUT="$ARTIFACTS_DIR/realmodel-e2e"
MODEL_NAME="smollm2-135m-instruct"

# --- install (cached) ---
t0=$SECONDS
install_env="$(bash "$HERE/install" --print-env)" || fail_setup "install failed (above)"
eval "$install_env" # REALMODEL_PYTHON, REALMODEL_GGUF
[ -x "$REALMODEL_PYTHON" ] && [ -f "$REALMODEL_GGUF" ] || fail_setup "install left no python or model"
echo "realmodel e2e: installed in $((SECONDS - t0)) s: $REALMODEL_PYTHON, $REALMODEL_GGUF"

command -v node >/dev/null || fail_setup "node is missing"
if [ ! -d "$ROOT/tests/e2e/node_modules/ws" ]; then
  echo "realmodel e2e: npm ci in tests/e2e (for ws)"
  (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund) >/dev/null 2>&1 || fail_setup "npm ci in tests/e2e failed"
fi
[ -x "$BIN" ] || fail_setup "$BIN is missing: build it first (cargo build --release)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
MODEL_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
WS_PORT="$(free_port)"
while [ "$PROXY_PORT" = "$MODEL_PORT" ]; do PROXY_PORT="$(free_port)"; done
while [ "$WS_PORT" = "$MODEL_PORT" ] || [ "$WS_PORT" = "$PROXY_PORT" ]; do WS_PORT="$(free_port)"; done

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/clawsocket-realmodel-e2e.XXXXXX")"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/data" "$OUT"
PIDS=()
cleanup() {
  local status=$?
  # each service runs in its own process group (setsid): stop the group
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  cp "$RUN_DIR"/logs/* "$RUN_DIR/clawsocket.toml" "$OUT/" 2>/dev/null || true
  if [ "${KEEP_RUN_DIR:-0}" = 1 ]; then
    echo "realmodel e2e: run dir kept: $RUN_DIR"
  else
    rm -rf "$RUN_DIR"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http NAME PID URL SECONDS LOG: until URL answers 200, the process dies, or time is up
wait_http() {
  local name="$1" pid="$2" url="$3" seconds="$4" logfile="$5"
  for _ in $(seq $((seconds * 5))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" | sed 's/^/  | /'
      fail_setup "$name exited before answering $url (log above)"
    fi
    if curl -fsS --max-time 2 "$url" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  tail -n 30 "$logfile" | sed 's/^/  | /'
  fail_setup "$name did not answer $url within $seconds s (log above)"
}
command -v curl >/dev/null || fail_setup "curl is missing"

# --- 1. the model server ---
# --interrupt_requests False: with the default (True) a request arriving while another
# streams cuts that one off (it ends with [DONE] and no finish_reason), so two users at
# once could not both get a whole answer; False queues the second behind the first.
echo "realmodel e2e: llama_cpp.server on 127.0.0.1:$MODEL_PORT (log: $OUT/model-server.log)"
setsid "$REALMODEL_PYTHON" -m llama_cpp.server \
  --model "$REALMODEL_GGUF" --model_alias "$MODEL_NAME" --chat_format chatml \
  --interrupt_requests "${REALMODEL_INTERRUPT_REQUESTS:-False}" --n_ctx 2048 --n_threads "$(nproc)" \
  --host 127.0.0.1 --port "$MODEL_PORT" </dev/null >"$RUN_DIR/logs/model-server.log" 2>&1 &
PIDS+=($!)
t1=$SECONDS
wait_http "the model server" "${PIDS[-1]}" "http://127.0.0.1:$MODEL_PORT/v1/models" 120 "$RUN_DIR/logs/model-server.log"
echo "realmodel e2e: model server ready in $((SECONDS - t1)) s"

# --- 2. the logging proxy between ClawSocket and the model server ---
PROXY_LOG="$RUN_DIR/logs/proxy-requests.jsonl"
setsid node "$HERE/proxy.mjs" "$PROXY_PORT" "$MODEL_PORT" "$PROXY_LOG" </dev/null >"$RUN_DIR/logs/proxy.log" 2>&1 &
PIDS+=($!)
wait_http "the proxy" "${PIDS[-1]}" "http://127.0.0.1:$PROXY_PORT/v1/models" 20 "$RUN_DIR/logs/proxy.log"

# --- 3. ClawSocket, kind "openai", pointed at the proxy ---
cat >"$RUN_DIR/clawsocket.toml" <<EOF
# ClawSocket for the real-model end-to-end test (written by tests/e2e/realmodel/run.sh)
[channels.websocket]
host = "127.0.0.1"
port = $WS_PORT

[channels.websocket.auth]
enabled = false

[agent]
kind = "openai"
url = "http://127.0.0.1:$PROXY_PORT/v1"
model = "$MODEL_NAME"
# The model server answers one request at a time: a turn queued behind another waits
# for its response head that long.
timeoutMs = 120000
# SmolLM2's context is 2048 tokens: history is kept well under it, and answers short
# (an answer the limit cuts ends with finishReason "length", which a check asks for).
maxHistoryBytes = 4096
maxTokens = 256

[store]
dir = "$RUN_DIR/data"
EOF
echo "realmodel e2e: $BIN on 127.0.0.1:$WS_PORT (log: $OUT/clawsocket.log)"
(cd "$RUN_DIR" && RUST_LOG="${RUST_LOG:-info}" exec setsid "$BIN" --config "$RUN_DIR/clawsocket.toml") \
  </dev/null >"$RUN_DIR/logs/clawsocket.log" 2>&1 &
PIDS+=($!)
wait_http "ClawSocket" "${PIDS[-1]}" "http://127.0.0.1:$WS_PORT/healthz" 30 "$RUN_DIR/logs/clawsocket.log"
curl -fsS --max-time 5 "http://127.0.0.1:$WS_PORT/readyz" >/dev/null 2>&1 \
  || fail_setup "ClawSocket's /readyz does not see the model server: $(curl -sS --max-time 5 "http://127.0.0.1:$WS_PORT/readyz" 2>&1)"

# --- 4. the checks ---
set +e
CLAWSOCKET_WS="ws://127.0.0.1:$WS_PORT/ws" \
PROXY_LOG="$PROXY_LOG" \
MODEL_URL="http://127.0.0.1:$MODEL_PORT/v1" \
MODEL_NAME="$MODEL_NAME" \
WS_MODULE_DIR="$ROOT/tests/e2e" \
OBSERVATIONS="$OUT/observations.md" \
  timeout --signal=TERM --kill-after=10 900 node "$HERE/driver.mjs" </dev/null
status=$?
set -e
if [ "$status" = 124 ]; then
  echo "realmodel e2e: the driver ran over 15 minutes and was stopped"
  echo "0 passed, 1 failed"
fi
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    echo "realmodel e2e: service #$((i + 1)) (pid ${PIDS[$i]}) died during the run; see $OUT"
    [ "$status" != 0 ] || { echo "0 passed, 1 failed"; status=1; }
  fi
done
exit "$status"
