# Sourced by the suites with a run.sh of their own (openclaw/, realmodel/): where the
# repository, the binary and the artifacts are, and how a suite that cannot even set
# up reports it (as a failed check, so .ci/run stops). Set SUITE (the suite's name in
# messages) and HERE (its directory) before sourcing.
ROOT="$(cd "$HERE/../../.." && pwd)"
BIN="${CLAWSOCKET_BIN:-$ROOT/target/release/clawsocket}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-$ROOT/artifacts}"

fail_setup() {
  echo "$SUITE e2e: $*"
  echo "0 passed, 1 failed"
  exit 1
}
