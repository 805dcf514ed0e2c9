#!/usr/bin/env bash
# Provisioning figures on the local location: `cluster create` -> a writable primary, and
# -> every replica streaming (the cluster `ready`), for 1 and 3 members, RUNS times each
# (default 5); prints each run, then the median and the spread. Asserts nothing.
# Needs root and a built binary: `cargo build` first, or set SOVDB_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SOVDB_BIN:-${CARGO_TARGET_DIR:-target}/debug/sovdb}
RUNS=${RUNS:-5}
WORK=$(mktemp -d /tmp/sovdb-bench-XXXXXX)
chmod 711 "$WORK"
export SOVDB_DATA_DIR=$WORK/data HOME=$WORK

cleanup() {
  [[ -n ${SERVE_PID:-} ]] && kill "$SERVE_PID" 2>/dev/null || true
  sleep 1; pkill -9 -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
stats() { python3 -c '
import statistics, sys
v = sorted(float(x) for x in sys.argv[2:])
print(f"{sys.argv[1]}: median {statistics.median(v):.2f} s (min {v[0]:.2f}, max {v[-1]:.2f}, n={len(v)})")' "$@"; }

"$BIN" serve --listen 127.0.0.1:0 >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
until [[ -f $SOVDB_DATA_DIR/api.url ]]; do sleep 0.05; done
until [[ $("$BIN" host show local -o json | field "['status']") == ready ]]; do sleep 0.1; done
# The location's etcd is made by the first cluster: make it first, out of the figures.
"$BIN" cluster create warmup --wait >/dev/null 2>&1
"$BIN" cluster delete warmup --wait >/dev/null 2>&1

for members in 1 3; do
  writable=(); ready=()
  for run in $(seq "$RUNS"); do
    name=b${members}x$run
    t0=$(now)
    "$BIN" cluster create "$name" --replicas "$members" >/dev/null 2>&1
    until uri=$("$BIN" cluster connect "$name" 2>/dev/null) && psql "$uri" -XAtqc "SELECT 1" >/dev/null 2>&1; do sleep 0.05; done
    tw=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(now)")
    until [[ $("$BIN" cluster show "$name" -o json | field "['state']") == ready ]]; do sleep 0.05; done
    tr=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(now)")
    echo "$members member(s), run $run: writable after $tw s, every replica streaming after $tr s"
    writable+=("$tw"); ready+=("$tr")
    "$BIN" cluster delete "$name" --wait >/dev/null 2>&1
  done
  stats "$members member(s): create -> writable primary" "${writable[@]}"
  stats "$members member(s): create -> every replica streaming" "${ready[@]}"
done
