#!/usr/bin/env bash
# ClawSocket benchmark driver.
#
#   bench/run.sh quick            # seconds, small N; exits non-zero unless every
#                                 # scenario completes with zero errors
#   bench/run.sh full             # the sizes of BENCHMARKS.md (minutes)
#   bench/run.sh quick stream     # only the cases whose name starts with "stream"
#
# Every case runs against ClawSocket (target/release/clawsocket of the repo root,
# `openai` backend pointed at the fake agent) and against the bare relay, each with
# a fresh fake agent and a fresh broker; reports go to bench/results/<mode>-<time>/
# (one JSON per case and target, combined.json, summary.md with ratios).
#
# Environment knobs:
#   TARGETS="clawsocket bare"  which targets to run (e.g. TARGETS=bare before the server exists),
#                              separated by spaces or commas. clusterN (cluster1, cluster2, ...):
#                              a fresh redis-server and N ClawSocket nodes in cluster mode on it;
#                              connection i goes to node i mod N (see bench/README.md)
#   REDIS_SERVER=redis-server  the redis-server binary of the cluster targets
#   REDIS_CPU=$BROKER_CPU      where redis-server is pinned (with the nodes, by default)
#   AGENT_KIND=openai          ClawSocket backend; `echo` runs its built-in demo agent
#                              (2 deltas per turn, no time stamps: latency reported n/a)
#   CLAWSOCKET_BIN=path        the broker binary (default: <repo>/target/release/clawsocket)
#   SKIP_BUILD=1               do not run cargo build
#   PIN=1                      pin with taskset: broker/relay on CPU $BROKER_CPU (0), fake
#                              agent and load generator on CPU $LOAD_CPU (1), so the
#                              broker has one core to itself and its CPU use shows
#                              whether it is the bottleneck (PIN=0: no pinning)
#   PORT_BASE=28700            agent PORT_BASE+1, broker +2, bare relay +3, redis +4 (or the
#                              next free port), cluster node k +10+k
#   OUT=dir                    where the results go
#   LOADGEN_THREADS=1          load generator runtime threads
#   SWEEP="500 1500 2000 3000"  extra user counts of the 20 ms paced run (full mode; 1000 always runs)
set -uo pipefail

MODE=${1:-quick}
shift || true
ONLY=("$@")
case "$MODE" in quick|full) ;; *) echo "usage: $0 quick|full [case-prefix...]" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=$HERE/target/release
CLAW=${CLAWSOCKET_BIN:-$ROOT/target/release/clawsocket}
TARGETS=${TARGETS:-"clawsocket bare"}
TARGETS=${TARGETS//,/ }
AGENT_KIND=${AGENT_KIND:-openai}
PIN=${PIN:-1}
BROKER_CPU=${BROKER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-28700}
AGENT_PORT=$((PORT_BASE + 1))
BROKER_PORT=$((PORT_BASE + 2))
BARE_PORT=$((PORT_BASE + 3))
NODE_PORT_BASE=$((PORT_BASE + 10))
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo redis-server)}
REDIS_CPU=${REDIS_CPU:-$BROKER_CPU}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$HERE/results/$MODE-$STAMP}
mkdir -p "$OUT/logs"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/clawbench.XXXXXX")

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[run.sh] $*" >&2; }

# Command prefixes that pin a process (exec'd in place, so $! is the process itself).
PIN_BROKER=()
PIN_LOAD=()
PIN_REDIS=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_BROKER=(taskset -c "$BROKER_CPU")
  PIN_LOAD=(taskset -c "$LOAD_CPU")
  PIN_REDIS=(taskset -c "$REDIS_CPU")
fi

# The number of nodes of a cluster target (cluster2 -> 2), or nothing for other targets.
cluster_nodes() { [[ $1 =~ ^cluster([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 1 ] && echo "${BASH_REMATCH[1]}"; }
uses_claw() { # targets...: whether any of them runs the ClawSocket binary
  local t
  for t in "$@"; do [ "$t" = clawsocket ] || [ -n "$(cluster_nodes "$t")" ] && return 0; done
  return 1
}
MAX_NODES=0
for t in $TARGETS; do n=$(cluster_nodes "$t"); [ -n "$n" ] && [ "$n" -gt $MAX_NODES ] && MAX_NODES=$n; done
# Quick mode adds a two-node sanity case when redis-server is installed.
[ "$MODE" = quick ] && [ $MAX_NODES -lt 2 ] && command -v "$REDIS_SERVER" >/dev/null && MAX_NODES=2

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid name
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then log "$3 exited before listening on $1"; return 1; fi
    sleep 0.1
  done
  log "$3 is not listening on $1 after 30 s"
  return 1
}

stop() { # pid...
  local p
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  local keep=() q
  for q in "${PIDS[@]}"; do
    local gone=1
    for p in "$@"; do [ "$q" = "$p" ] && gone=0; done
    [ $gone = 1 ] && keep+=("$q")
  done
  PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building bench/ (release)"
  (cd "$HERE" && cargo build --release --quiet) || { log "bench build failed"; exit 1; }
  if { uses_claw $TARGETS || [ $MAX_NODES -gt 0 ]; } && [ -z "${CLAWSOCKET_BIN:-}" ]; then
    log "building the ClawSocket release binary"
    (cd "$ROOT" && cargo build --release --quiet --bin clawsocket) || { log "clawsocket build failed"; exit 1; }
  fi
fi
for b in fake-agent bare-relay loadgen bench-report; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build bench/ first)"; exit 1; }
done
if { uses_claw $TARGETS || [ $MAX_NODES -gt 0 ]; } && [ ! -x "$CLAW" ]; then
  log "missing ClawSocket binary $CLAW (build it, set CLAWSOCKET_BIN, or run with TARGETS=bare)"
  exit 1
fi
for p in $AGENT_PORT $BROKER_PORT $BARE_PORT $(seq "$NODE_PORT_BASE" $((NODE_PORT_BASE + MAX_NODES - 1))); do
  port_free "$p" || { log "port $p is in use; set PORT_BASE to a free range"; exit 1; }
done
if [ "$MAX_NODES" -gt 0 ] && ! command -v "$REDIS_SERVER" >/dev/null; then
  log "the cluster targets need redis-server (apt-get install redis-server, or set REDIS_SERVER)"
  exit 1
fi

# ---------------------------------------------------------------- environment record
cat > "$OUT/env.json" <<EOF
{
  "mode": "$MODE",
  "date_utc": "$STAMP",
  "host": "$(uname -srm)",
  "cpus": "$(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//;s/"//g')",
  "memory": "$(free -g 2>/dev/null | awk '/Mem:/{print $2" GiB"}')",
  "load_average_at_start": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "open_file_limit": "$(ulimit -Hn)",
  "pinning": "$( [ "$PIN" = 1 ] && echo "broker/relay (every cluster node) on CPU $BROKER_CPU; redis-server on CPU $REDIS_CPU; fake agent + loadgen on CPU $LOAD_CPU" || echo none)",
  "redis_server": "$( [ "$MAX_NODES" -gt 0 ] && "$REDIS_SERVER" --version 2>/dev/null | cut -d' ' -f1-3), run with --save \"\" --appendonly no (no persistence)",
  "agent_kind": "$AGENT_KIND",
  "repo_commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)",
  "clawsocket_bin": "$CLAW"
}
EOF

# The echo demo agent pauses between words (agent.echoDelayMs); 0 unless ECHO_DELAY_MS says.
ECHO_ENV=""
[ "$AGENT_KIND" = echo ] && ECHO_ENV="CLAWSOCKET__AGENT__ECHODELAYMS=${ECHO_DELAY_MS:-0}"

# ---------------------------------------------------------------- one case
FAILED=()
PASSED=0

# start_claw LOG PORT STORE AUTH_ON [VAR=VALUE...]: one ClawSocket process, pinned like the
# broker, with the bench config (plus the given variables); its pid in STARTED.
start_claw() {
  local log_file=$1 port=$2 store=$3 auth_on=$4
  shift 4
  rm -rf "$store"; mkdir -p "$store"
  env RUST_LOG="${BROKER_LOG:-warn}" \
    CLAWSOCKET__AGENT__KIND="$AGENT_KIND" \
    CLAWSOCKET__AGENT__URL="http://127.0.0.1:$AGENT_PORT/v1" \
    CLAWSOCKET__AGENT__MODEL=bench \
    CLAWSOCKET__STORE__DIR="$store" \
    CLAWSOCKET__LIMITS__MAXCONNECTIONS=20000 \
    CLAWSOCKET__LIMITS__MESSAGESPERMINUTE=100000 \
    ${ECHO_ENV} \
    WS_AUTH_ENABLED="$auth_on" \
    WS_AUTH_ENDPOINT="http://127.0.0.1:$AGENT_PORT/auth/verify" \
    "$@" \
    bash -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' _ \
    "${PIN_BROKER[@]}" "$CLAW" --host 127.0.0.1 --port "$port" >"$log_file" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

# start_redis LOG DIR: a redis-server for one case, without persistence (--save "",
# --appendonly no), on the first free port from PORT_BASE+4, pinned to REDIS_CPU; its pid
# in STARTED, its port in REDIS_PORT.
start_redis() {
  local p
  STARTED=""
  for p in $(seq $((PORT_BASE + 4)) $((PORT_BASE + 9))) $(seq $((PORT_BASE + 100)) $((PORT_BASE + 199))) ""; do
    [ -n "$p" ] && port_free "$p" && break
  done
  [ -n "$p" ] || { log "no free port for redis-server"; return 1; }
  mkdir -p "$2"
  "${PIN_REDIS[@]}" "$REDIS_SERVER" --port "$p" --bind 127.0.0.1 --dir "$2" --save "" --appendonly no \
    --daemonize no --logfile "" >"$1" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  REDIS_PORT=$p
  wait_port "$p" "$STARTED" redis-server
}

# wait_ready PORT PID NAME: until GET /readyz answers 200 (a cluster node is ready once
# its first Redis health check answered).
wait_ready() {
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3 | grep -q ' 200') 2>/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || { log "$3 exited before it was ready"; return 1; }
    sleep 0.1
  done
  log "$3 is not ready (/readyz) after 10 s"
  return 1
}

# run_case NAME SCENARIO "AGENT ARGS" "LOADGEN ARGS" [FLAGS] [TARGETS]
#   FLAGS: fanout, auth, nobare (the case means nothing to the bare relay: skipped there)
#   TARGETS: the targets of this case (default: $TARGETS)
run_case() {
  local name=$1 scen=$2 agent_args=$3 lg_args=$4 flags=${5:-} targets=${6:-$TARGETS}
  if [ ${#ONLY[@]} -gt 0 ]; then
    local hit=0 o
    for o in "${ONLY[@]}"; do [[ $name == "$o"* ]] && hit=1; done
    [ $hit = 1 ] || return 0
  fi
  local target
  for target in $targets; do
    [ "$target" = bare ] && [[ $flags == *nobare* ]] && continue
    log "case $name ($scen) against $target"
    local alog="$OUT/logs/$name.$target.agent.log" blog="$OUT/logs/$name.$target.broker.log"
    # shellcheck disable=SC2086
    "${PIN_LOAD[@]}" "$BIN/fake-agent" --port "$AGENT_PORT" $agent_args >"$alog" 2>&1 &
    local apid=$!
    PIDS+=("$apid")
    wait_port "$AGENT_PORT" "$apid" fake-agent || { FAILED+=("$name.$target"); stop "$apid"; continue; }
    local nodes auth_on=false url="" extra="" protocol=clawsocket rpid="" k up=1
    local bpids=() bports=() blogs=() redis_args=()
    nodes=$(cluster_nodes "$target")
    [[ $flags == *auth* ]] && auth_on=true
    if [ "$target" = clawsocket ]; then
      start_claw "$blog" "$BROKER_PORT" "$TMP/store-$name" "$auth_on"
      bpids=("$STARTED"); bports=("$BROKER_PORT"); blogs=("$blog")
    elif [ -n "$nodes" ]; then
      # A fresh Redis and N nodes on it, each with its own store dir and node id.
      if ! start_redis "$OUT/logs/$name.$target.redis.log" "$TMP/redis-$name"; then
        FAILED+=("$name.$target"); stop "$STARTED" "$apid"; continue
      fi
      rpid=$STARTED
      redis_args=(--redis-port "$REDIS_PORT")
      for k in $(seq 0 $((nodes - 1))); do
        blogs+=("$OUT/logs/$name.$target.node$k.log")
        start_claw "${blogs[$k]}" $((NODE_PORT_BASE + k)) "$TMP/store-$name-$k" "$auth_on" \
          CLAWSOCKET__CLUSTER__REDIS__URL="redis://127.0.0.1:$REDIS_PORT" CLAWSOCKET__CLUSTER__NODEID="bench$k"
        bpids+=("$STARTED"); bports+=($((NODE_PORT_BASE + k)))
      done
    else
      protocol=bare
      local rargs=()
      [[ $flags == *fanout* ]] && rargs+=(--fanout-group)
      [[ $flags == *auth* ]] && rargs+=(--auth "http://127.0.0.1:$AGENT_PORT/auth/verify")
      "${PIN_BROKER[@]}" "$BIN/bare-relay" --port "$BARE_PORT" --agent "127.0.0.1:$AGENT_PORT" "${rargs[@]}" >"$blog" 2>&1 &
      bpids=("$!"); bports=("$BARE_PORT"); blogs=("$blog")
      PIDS+=("$!")
    fi
    for k in "${!bpids[@]}"; do
      url+="${url:+,}ws://127.0.0.1:${bports[$k]}/ws"
      if ! wait_port "${bports[$k]}" "${bpids[$k]}" "$target" \
        || { [ -n "$nodes" ] && ! wait_ready "${bports[$k]}" "${bpids[$k]}" "$target node $k"; }; then
        tail -5 "${blogs[$k]}" >&2
        up=0
      fi
    done
    if [ $up = 0 ]; then
      FAILED+=("$name.$target"); stop "${bpids[@]}" $rpid "$apid"; continue
    fi
    [ "$protocol" = clawsocket ] && [ "$AGENT_KIND" = echo ] && extra="--no-expect"
    local lga=$lg_args
    if [ "$extra" = "--no-expect" ]; then
      # The echo agent streams its own 2 deltas: do not check the count.
      lga=$(echo "$lg_args" | sed -E 's/(^| )-d [0-9]+//')
    fi
    # shellcheck disable=SC2086
    "${PIN_LOAD[@]}" "$BIN/loadgen" --scenario "$scen" --target "$protocol" --url "$url" \
      --broker-pid "$(IFS=,; echo "${bpids[*]}")" --agent-pid "$apid" --threads "$LOADGEN_THREADS" \
      "${redis_args[@]}" --sender-prefix "${name//[^A-Za-z0-9]/}" --label "$name" \
      --json "$OUT/$name.$target.json" --quiet-json --fail-on-error $lga \
      2> >(tee "$OUT/logs/$name.$target.loadgen.log" >&2)
    local rc=$?
    if [ -n "$rpid" ] && command -v redis-cli >/dev/null; then
      redis-cli -p "$REDIS_PORT" INFO all >"$OUT/logs/$name.$target.redis-info.txt" 2>&1
    fi
    if [ $rc != 0 ]; then
      log "case $name against $target FAILED (loadgen exit $rc); logs in $OUT/logs/"
      FAILED+=("$name.$target")
      for k in "${!bpids[@]}"; do
        if ! kill -0 "${bpids[$k]}" 2>/dev/null; then log "$target (${blogs[$k]##*/}) died:"; tail -20 "${blogs[$k]}" >&2; fi
      done
    fi
    [ $rc = 0 ] && PASSED=$((PASSED + 1))
    stop "${bpids[@]}"
    stop $rpid "$apid"
  done
}

# ---------------------------------------------------------------- the cases
if [ "$MODE" = quick ]; then
  run_case idle-200 idle "--deltas 20" "-n 200 --rate 1000 --hold-secs 1 --settle-secs 0.5 --max-secs 60"
  run_case stream-20x2x20 stream "--deltas 20 --delta-bytes 64" "-n 20 -t 2 -d 20 --turn-timeout-secs 20 --max-secs 60"
  run_case stream-paced-20 stream "--deltas 20 --delta-bytes 64 --pace-ms 5" "-n 20 -t 2 -d 20 --start-spread-ms 5 --turn-timeout-secs 20 --max-secs 60"
  run_case fanout-20 fanout "--deltas 20 --delta-bytes 64 --pace-ms 5" "-n 20 -t 2 -d 20 --turn-timeout-secs 20 --max-secs 60" fanout
  run_case connect-50 connect "--deltas 1" "-n 50 --rate 500 --max-secs 60" auth
  # Sanity of cluster mode (whatever TARGETS says): two nodes on one Redis, every user
  # with one tab on each node, and a group with members on both.
  if command -v "$REDIS_SERVER" >/dev/null; then
    run_case cluster-tabs-20 stream "--deltas 20 --delta-bytes 64 --pace-ms 5" "-n 20 -t 2 -d 20 --tabs 2 --start-spread-ms 5 --turn-timeout-secs 20 --max-secs 60" nobare cluster2
    run_case cluster-fanout-20 fanout "--deltas 20 --delta-bytes 64 --pace-ms 5" "-n 20 -t 2 -d 20 --turn-timeout-secs 20 --max-secs 60" fanout cluster2
  else
    log "quick: no redis-server ($REDIS_SERVER): the two-node cluster cases are skipped"
  fi
else
  run_case idle-10k idle "--deltas 20" "-n 10000 --rate 2000 --hold-secs 10 --max-secs 300"
  run_case idle-19.9k idle "--deltas 20" "-n 19900 --rate 2000 --hold-secs 10 --max-secs 300"
  run_case stream-full-1000 stream "--deltas 200 --delta-bytes 64" "-n 1000 -t 10 -d 200 --turn-timeout-secs 120 --max-secs 600"
  run_case stream-paced-1000 stream "--deltas 50 --delta-bytes 64 --pace-ms 20" "-n 1000 -t 3 -d 50 --start-spread-ms 20 --turn-timeout-secs 60 --max-secs 600"
  for c in ${SWEEP:-500 1500 2000 3000}; do
    run_case "sweep-paced-$c" stream "--deltas 50 --delta-bytes 64 --pace-ms 20" "-n $c -t 3 -d 50 --start-spread-ms 20 --rate 2000 --turn-timeout-secs 60 --max-secs 600"
  done
  # Every user with a second tab that joined its session before the turns (--tabs 2). On
  # cluster2 tab j of user i is on node (i + j) mod 2: every session has a subscriber on
  # each node, and the tab on the node that does not run the turn gets it through Redis.
  run_case tabs2-full-1000 stream "--deltas 200 --delta-bytes 64" "-n 1000 -t 10 -d 200 --tabs 2 --turn-timeout-secs 120 --max-secs 600" nobare
  run_case tabs2-pace20-1000 stream "--deltas 50 --delta-bytes 64 --pace-ms 20" "-n 1000 -t 3 -d 50 --tabs 2 --start-spread-ms 20 --turn-timeout-secs 60 --max-secs 600" nobare
  # The same at a load one core carries without queueing (the relay path's own latency).
  run_case tabs2-pace20-150 stream "--deltas 50 --delta-bytes 64 --pace-ms 20" "-n 150 -t 3 -d 50 --tabs 2 --start-spread-ms 20 --turn-timeout-secs 60 --max-secs 600" nobare
  run_case fanout-1000 fanout "--deltas 50 --delta-bytes 64 --pace-ms 20" "-n 1000 -t 5 -d 50 --turn-timeout-secs 60 --max-secs 600" fanout
  run_case connect-5000 connect "--deltas 1" "-n 5000 --rate 5000 --max-secs 300" auth
fi

"$BIN/bench-report" "$OUT" --env "$OUT/env.json" >/dev/null || log "bench-report failed"
log "results: $OUT/summary.md and $OUT/combined.json"
cat "$OUT/summary.md"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "FAILED: ${FAILED[*]}"
  echo "bench: $PASSED passed, ${#FAILED[@]} failed"
  exit 1
fi
if [ "$PASSED" = 0 ]; then
  log "no case ran (case filter: ${ONLY[*]:-none})"
  exit 1
fi
log "$MODE: every case completed with zero errors"
echo "bench: $PASSED passed, 0 failed"
exit 0
