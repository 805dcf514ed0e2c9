#!/usr/bin/env bash
# Alert notification latency on the local location: a 2-member cluster and a webhook
# channel to a receiver on loopback (bench/webhook.py, which stamps each POST as it
# arrives). TRIALS times (default 5): the replica's Patroni is frozen with SIGSTOP (so its
# key in etcd expires and nothing restarts it) until the `member-down` firing notice
# arrives, then thawed until the resolved one arrives. Per trial: seconds from the freeze
# to the firing notice (Patroni's ttl, the rule's `for` of 20 s, the evaluator's 10 s
# round and the delivery), and from the thaw to the resolved notice.
# Asserts nothing. Needs root and a built binary (`cargo build`, or SOVDB_BIN).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TRIALS=${TRIALS:-5}
start_server

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/bin/python3 bench/webhook.py "$PORT" "$WORK/hooks.jsonl" &
disown
until [[ -f $WORK/hooks.jsonl ]]; do sleep 0.05; done
"$BIN" alert channel create bench --type webhook --url "http://127.0.0.1:$PORT/" >/dev/null
"$BIN" cluster create al --replicas 2 --wait >/dev/null 2>&1
until healthy al; do sleep 0.2; done

# notice STATUS AFTER: waits for a member-down notice with STATUS that arrived after the
# time AFTER (unix seconds); prints its arrival time.
notice() {
  while true; do
    local at; at=$(python3 - "$WORK/hooks.jsonl" "$1" "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    n = json.loads(line)
    if n["body"].get("rule") == "member-down" and n["body"].get("status") == sys.argv[2] and n["at"] > float(sys.argv[3]):
        print(n["at"]); break
EOF
)
    [[ -n $at ]] && { echo "$at"; return; }
    sleep 0.2
  done
}

fired=(); resolved=()
for trial in $(seq "$TRIALS"); do
  until healthy al; do sleep 0.2; done
  replica=$("$BIN" cluster show al -o json | python3 -c '
import json, sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["role"] != "primary"))')
  dir=$(member_dir al "$replica")
  pids=$(pgrep -f "$dir/patroni.yml" || true)
  frozen_at=$(date +%s.%N)
  kill -STOP $pids
  at=$(notice firing "$frozen_at")
  thawed_at=$(date +%s.%N)
  kill -CONT $pids
  back=$(notice resolved "$thawed_at")
  f=$(python3 -c "print(f'{$at - $frozen_at:.1f}')"); r=$(python3 -c "print(f'{$back - $thawed_at:.1f}')")
  echo "trial $trial: $replica frozen: firing notice after $f s; thawed: resolved notice after $r s"
  fired+=("$f"); resolved+=("$r")
done
stats "member-down: freeze to firing notice (s)" "${fired[@]}"
stats "member-down: thaw to resolved notice (s)" "${resolved[@]}"
"$BIN" cluster delete al --wait >/dev/null 2>&1
