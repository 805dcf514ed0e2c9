# Shared by the cluster benchmarks: a private data directory and home, a server on it
# that is stopped (with everything it started) on exit, and the helpers that read JSON
# and print a median with its spread. Source it after `set -euo pipefail`.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${SOVDB_BIN:-${CARGO_TARGET_DIR:-target}/debug/sovdb}
WORK=$(mktemp -d /tmp/sovdb-bench-XXXXXX)
chmod 711 "$WORK"
export SOVDB_DATA_DIR=$WORK/data HOME=$WORK

cleanup() {
  [[ -n ${SERVE_PID:-} ]] && kill "$SERVE_PID" 2>/dev/null || true
  sleep 1; pkill -9 -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# stats LABEL VALUE...: the median, min, max and count.
stats() { python3 -c '
import statistics, sys
v = sorted(float(x) for x in sys.argv[2:])
print(f"{sys.argv[1]}: median {statistics.median(v):.2f} (min {v[0]:.2f}, max {v[-1]:.2f}, n={len(v)})")' "$@"; }

# Starts the server in the background and waits until the local host is ready.
start_server() {
  "$BIN" serve --listen 127.0.0.1:0 >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  until [[ -f $SOVDB_DATA_DIR/api.url ]]; do sleep 0.05; done
  until [[ $("$BIN" host show local -o json | field "['status']") == ready ]]; do sleep 0.1; done
}
