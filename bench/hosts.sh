#!/usr/bin/env bash
# Host figures: how long adding a host takes (this machine, and over SSH into network-
# namespace test hosts), how soon a cut link shows as `unreachable` and a healed one as
# `ready`, and how soon a killed agent is back. Prints the figures; asserts nothing.
# Needs root (test hosts) and a built binary: `cargo build` first, or set SOVDB_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SOVDB_BIN:-${CARGO_TARGET_DIR:-target}/debug/sovdb}
HOSTS=${HOSTS:-3}
PREFIX=bench
WORK=$(mktemp -d /tmp/sovdb-bench-XXXXXX)
export SOVDB_DATA_DIR=$WORK/data

cleanup() {
  [[ -n ${SERVE_PID:-} ]] && kill "$SERVE_PID" 2>/dev/null || true
  pkill -9 -f "$WORK" 2>/dev/null || true
  scripts/testhosts down --prefix "$PREFIX" --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
status() { "$BIN" host show "$1" -o json | field "['status']"; }
wait_status() { until [[ $(status "$1") == "$2" ]]; do sleep 0.05; done; }

scripts/testhosts up -n "$HOSTS" --prefix "$PREFIX" --subnet 10.79.1 --dir "$WORK/hosts" >/dev/null
"$BIN" serve --listen 127.0.0.1:0 >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
until [[ -f $SOVDB_DATA_DIR/api.url ]]; do sleep 0.05; done
wait_status local ready
"$BIN" op list -o json | python3 -c '
import json, sys
from datetime import datetime
op = json.load(sys.stdin)[0]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
took = (t(op["finished_at"]) - t(op["created_at"])).total_seconds()
print(f"local host add (operation, created -> finished): {took:.2f} s")
'

"$BIN" location create lab --provider ssh --region lab >/dev/null
for i in $(seq "$HOSTS"); do
  h=$PREFIX$i; addr=10.79.1.$((10 + i))
  t0=$(now)
  "$BIN" host add "$h" --location lab --address "$addr" --ssh-key "$WORK/hosts/id_ed25519" \
    --base-dir "$WORK/hosts/$h/base" --wait >/dev/null 2>&1
  echo "ssh host add --wait ($h, copies the $(du -h "$BIN" | cut -f1) binary): $(since "$t0") s"
done

t0=$(now); scripts/testhosts cut "${PREFIX}1" >/dev/null; wait_status "${PREFIX}1" unreachable
echo "link cut -> unreachable: $(since "$t0") s"
t0=$(now); scripts/testhosts heal "${PREFIX}1" >/dev/null; wait_status "${PREFIX}1" ready
echo "link healed -> ready: $(since "$t0") s"

pidf=$WORK/hosts/${PREFIX}2/base/agent/agent.pid
old=$(cat "$pidf"); t0=$(now); kill -9 "$old"
until [[ $(cat "$pidf") != "$old" && $(status "${PREFIX}2") == ready ]]; do sleep 0.05; done
echo "agent killed -> restarted over SSH and ready: $(since "$t0") s"
