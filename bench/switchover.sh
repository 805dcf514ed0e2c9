#!/usr/bin/env bash
# Switchover figures on the local location: a 3-member cluster (synchronous, then
# asynchronous) under a write loop (a row every ~10 ms through the cluster's URI, see
# writeloop.py); `sovdb cluster switchover --wait` TRIALS times (default 10), each to the
# member Patroni picks. Per trial: the write gap, the acknowledged writes missing
# afterwards, and how long the operation took (API call → old primary streaming from the
# new one). Asserts nothing. Needs root and a built binary (`cargo build`, or SOVDB_BIN).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TRIALS=${TRIALS:-10}
MODES=${MODES:-sync async}

start_server

for mode in $MODES; do
  name=so-$mode
  flag=(); [[ $mode == sync ]] && flag=(--sync)
  "$BIN" cluster create "$name" --replicas 3 "${flag[@]}" --wait >/dev/null 2>&1
  uri=$("$BIN" cluster connect "$name")
  gaps=(); lost=(); took=()
  for trial in $(seq "$TRIALS"); do
    from=$(primary "$name")
    writer_start "$uri"
    sleep 2
    t0=$(date +%s.%N)
    "$BIN" cluster switchover "$name" --wait >/dev/null 2>&1
    t1=$(date +%s.%N)
    sleep 2
    writer_stop
    op=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    echo "$mode trial $trial: $from → $(primary "$name"); write gap $GAP s; $ACKED acknowledged, $MISSING missing; operation $op s"
    gaps+=("$GAP"); lost+=("$MISSING"); took+=("$op")
  done
  stats "$mode: write gap during a switchover (s)" "${gaps[@]}"
  stats "$mode: acknowledged writes missing" "${lost[@]}"
  stats "$mode: switchover operation, call to settled (s)" "${took[@]}"
  "$BIN" cluster delete "$name" --wait >/dev/null 2>&1
done
