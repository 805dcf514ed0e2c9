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

# healthy NAME: every member runs, one primary (and a synchronous standby when asked).
healthy() {
  "$BIN" cluster show "$1" -o json | python3 -c '
import json, sys
c = json.load(sys.stdin)
ok = c["state"] == "ready" and sum(m["role"] == "primary" for m in c["members"]) == 1
ok = ok and (not c["sync"] or any(m["sync"] for m in c["members"]))
sys.exit(0 if ok else 1)'
}
# primary NAME: the name of the cluster's primary.
primary() { "$BIN" cluster show "$1" -o json | python3 -c '
import json, sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["role"] == "primary"))'; }
# member_dir NAME MEMBER: the member's directory on the local host.
member_dir() {
  local id; id=$("$BIN" cluster show "$1" -o json | field "['id']" | tr -d -)
  echo "$SOVDB_DATA_DIR/hosts/local/pg/${id: -8}-${2##*-}"
}
# lose_primary NAME: the primary's host "dies": its supervisor (so nothing restarts it),
# Patroni and PostgreSQL get SIGKILL. Prints the lost member's name.
lose_primary() {
  local p dir pm; p=$(primary "$1"); dir=$(member_dir "$1" "$p")
  pm=$(pgrep -f "postgres -D $dir/data" || true)
  kill -9 $(pgrep -f "pg-$(basename "$dir")-patroni") $(pgrep -f "$dir/patroni.yml") $pm $( [[ -n $pm ]] && pgrep -P "$pm") 2>/dev/null || true
  echo "$p"
}
# host_returns: the local host's agent (killed) is restarted by the control plane, adopts
# the members and starts them; Patroni rejoins a lost primary as a replica (pg_rewind).
host_returns() {
  for p in $(pgrep -f "agent --base-dir $SOVDB_DATA_DIR/hosts/local"); do
    grep -q supervise "/proc/$p/cmdline" 2>/dev/null || kill -9 "$p" 2>/dev/null || true
  done
}
# writer_start URI: a write loop (bench/writeloop.py: a row every ~10 ms) in the background
# until writer_stop.
writer_start() {
  WRITER_STOP=$WORK/stop-$RANDOM$RANDOM
  /usr/bin/python3 bench/writeloop.py "$1" "$WRITER_STOP" >"$WORK/w.json" &
  WRITER=$!
}
# writer_stop: ends the write loop; sets GAP (the longest write gap, s), ACKED and MISSING
# (acknowledged writes, and those of them not in the table afterwards).
writer_stop() {
  touch "$WRITER_STOP"; wait "$WRITER"
  GAP=$(field "['gap_s']" <"$WORK/w.json"); ACKED=$(field "['acked']" <"$WORK/w.json")
  MISSING=$(field "['missing']" <"$WORK/w.json")
}
# writable_again NAME URI: waits until the cluster has a primary and its URI takes a query.
writable_again() {
  until "$BIN" cluster show "$1" -o json | grep -q '"role": "primary"' && psql "$2" -XAtqc "SELECT 1" >/dev/null 2>&1; do
    sleep 0.1
  done
}
