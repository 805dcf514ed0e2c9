#!/usr/bin/env bash
# How small can Patroni's timings be here? For each candidate "ttl loop_wait retry_timeout"
# (TIMINGS, default "4 1 1;6 1 2;8 1 3"), a 3-member --sync cluster on the local location
# gets them through Patroni's PATCH /config, then runs under load for SOAK seconds (default
# 180): pgbench (8 clients through the cluster's URI), two busy loops on the 2 cores and a
# disk writer with fsync (etcd's fsync latency is what a lease renewal waits for). Printed:
# the failovers and degraded spells nobody caused (sovdb's own events: a safe setting has
# none), then TRIALS (default 3) losses of the primary under the same load with the write
# gap of writeloop.py. Asserts nothing. Needs root and a built binary.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TIMINGS=${TIMINGS:-4 1 1;6 1 2;8 1 3}
SOAK=${SOAK:-180}
TRIALS=${TRIALS:-3}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

# patch_config NAME JSON: PATCH Patroni's dynamic configuration through a member's REST API
# (its address and password from the member's patroni.yml; root reads it).
patch_config() {
  local yml; yml=$(member_dir "$1" "$(primary "$1")")/patroni.yml
  /usr/bin/python3 - "$yml" "$2" <<'PY'
import json, ssl, sys, urllib.request, base64, yaml
c = yaml.safe_load(open(sys.argv[1]))
r = c["restapi"]
ctx = ssl.create_default_context(cafile=r["cafile"])
req = urllib.request.Request(f"https://{r['connect_address']}/config", data=sys.argv[2].encode(), method="PATCH")
auth = base64.b64encode(f"{r['authentication']['username']}:{r['authentication']['password']}".encode()).decode()
req.add_header("Authorization", f"Basic {auth}")
urllib.request.urlopen(req, context=ctx, timeout=10).read()
PY
}
# count NAME KIND: how many events of that kind the cluster has.
count() { "$BIN" cluster events "$1" -o json | python3 -c "import json,sys; print(sum(e['kind'] == '$2' for e in json.load(sys.stdin)))"; }
LOAD=()
load_start() {
  "$PGBENCH" -n -c 8 -j 2 -T 100000 "$1" >/dev/null 2>&1 & LOAD+=($!)
  for _ in 1 2; do (while :; do :; done) & LOAD+=($!); done
  (while :; do dd if=/dev/zero of="$WORK/io" bs=1M count=256 conv=fsync status=none; done) & LOAD+=($!)
}
load_stop() { kill "${LOAD[@]}" 2>/dev/null || true; wait "${LOAD[@]}" 2>/dev/null || true; LOAD=(); rm -f "$WORK/io"; }
trap 'load_stop; cleanup' EXIT
# settle NAME: waits up to 120 s for the cluster to be healthy; fails if it isn't.
settle() {
  local deadline=$((SECONDS + 120))
  until healthy "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

start_server
IFS=';' read -ra CANDIDATES <<<"$TIMINGS"
for t in "${CANDIDATES[@]}"; do
  read -r ttl loop retry <<<"$t"
  name=tm-$ttl-$loop-$retry
  "$BIN" cluster create "$name" --replicas 3 --sync --wait >/dev/null 2>&1
  uri=$("$BIN" cluster connect "$name")
  patch_config "$name" "{\"ttl\": $ttl, \"loop_wait\": $loop, \"retry_timeout\": $retry}"
  "$PGBENCH" -i -s 10 -q "$uri" >/dev/null 2>&1
  sleep 3
  fo0=$(count "$name" failover); dg0=$(count "$name" degraded)
  load_start "$uri"
  sleep "$SOAK"
  fo=$(( $(count "$name" failover) - fo0 )); dg=$(( $(count "$name" degraded) - dg0 ))
  echo "ttl $ttl, loop_wait $loop, retry_timeout $retry: ${SOAK} s under load: $fo failovers and $dg degraded spells nobody caused"
  gaps=(); lost=()
  for trial in $(seq "$TRIALS"); do
    if ! settle "$name"; then
      echo "  ttl $ttl: the cluster is not healthy 120 s after the soak (no primary, or a member out): not safe; no trial"
      break
    fi
    writer_start "$uri"
    sleep 3
    p=$(lose_primary "$name")
    writable_again "$name" "$uri"
    sleep 3
    writer_stop
    echo "  trial $trial under load: lost $p; write gap $GAP s; $MISSING acknowledged writes missing"
    gaps+=("$GAP"); lost+=("$MISSING")
    host_returns
  done
  if ((${#gaps[@]})); then
    stats "  ttl $ttl: write gap after losing the primary, under load (s)" "${gaps[@]}"
    stats "  ttl $ttl: acknowledged writes missing" "${lost[@]}"
  fi
  load_stop
  settle "$name" || true
  "$BIN" cluster delete "$name" --wait >/dev/null 2>&1
done
