#!/usr/bin/env bash
# Provisioning figures on the local location: `cluster create` -> a writable primary, and
# -> every replica streaming (the cluster `ready`), for 1 and 3 members, RUNS times each
# (default 5); prints each run, then the median and the spread. Asserts nothing.
# Needs root and a built binary: `cargo build` first, or set SOVDB_BIN.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
now() { date +%s.%N; }

start_server
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
  stats "$members member(s): create -> writable primary (s)" "${writable[@]}"
  stats "$members member(s): create -> every replica streaming (s)" "${ready[@]}"
done
