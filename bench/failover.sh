#!/usr/bin/env bash
# Failover figures on the local location: a 3-member cluster (synchronous, then
# asynchronous) under a write loop (a row every ~10 ms through the cluster's URI, see
# writeloop.py); the primary is lost TRIALS times (default 10): its supervisor (so nothing
# restarts it), Patroni and PostgreSQL are killed with SIGKILL. Per trial: the write gap and
# the acknowledged writes missing afterwards. Then the old primary's host "returns" (its
# agent is restarted and starts the member again) and rejoins before the next trial.
# Asserts nothing. Needs root and a built binary (`cargo build`, or SOVDB_BIN).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TRIALS=${TRIALS:-10}
MODES=${MODES:-sync async}
start_server

for mode in $MODES; do
  name=fo-$mode
  flag=(); [[ $mode == sync ]] && flag=(--sync)
  "$BIN" cluster create "$name" --replicas 3 "${flag[@]}" --wait >/dev/null 2>&1
  uri=$("$BIN" cluster connect "$name")
  gaps=(); lost=()
  for trial in $(seq "$TRIALS"); do
    until healthy "$name"; do sleep 0.2; done
    writer_start "$uri"
    sleep 3
    primary=$(lose_primary "$name")
    # Writes resume once a replica is promoted; give the loop a few more seconds.
    writable_again "$name" "$uri"
    sleep 3
    writer_stop
    echo "$mode trial $trial: lost $primary; write gap $GAP s; $ACKED writes acknowledged, $MISSING missing"
    gaps+=("$GAP"); lost+=("$MISSING")
    host_returns
  done
  stats "$mode: write gap after losing the primary (s)" "${gaps[@]}"
  stats "$mode: acknowledged writes missing" "${lost[@]}"
  until healthy "$name"; do sleep 0.2; done
  "$BIN" cluster delete "$name" --wait >/dev/null 2>&1
done
