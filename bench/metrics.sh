#!/usr/bin/env bash
# Metrics ingest for MEMBERS simulated members (default 100): one real one-member cluster
# on the local host, sampled MEMBERS times per round by its agent (the hidden
# `sovdb serve --metrics-bench-fanout`), so every sample takes the whole real path: psql
# over the Unix socket and Patroni's REST API, the agent's buffer, the control plane's
# pull with its cursor, the encoding and the store (SQLite), rollups and pruning.
# After a warm-up, prints over WINDOW seconds (default 120) the CPU seconds of the
# control plane and of the agent (and of the psql processes the agent ran), their peak
# RSS, and the samples stored. Asserts nothing. Needs root and a built binary.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MEMBERS=${MEMBERS:-100}
WINDOW=${WINDOW:-120}
WARMUP=${WARMUP:-30}
TCK=$(getconf CLK_TCK)

"$BIN" serve --listen 127.0.0.1:0 --metrics-bench-fanout "$MEMBERS" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
until [[ -f $SOVDB_DATA_DIR/api.url ]]; do sleep 0.05; done
until [[ $("$BIN" host show local -o json | field "['status']") == ready ]]; do sleep 0.1; done
"$BIN" cluster create b --wait >/dev/null
AGENT_PID=$(for p in $(pgrep -f "agent --base-dir $SOVDB_DATA_DIR/hosts/local"); do
  grep -q supervise "/proc/$p/cmdline" 2>/dev/null || echo "$p"; done | head -1)

# cpu PID: "self children" CPU seconds.
cpu() { awk -v t="$TCK" '{ sub(/^.*\) /, ""); printf "%.2f %.2f\n", ($12 + $13) / t, ($14 + $15) / t }' "/proc/$1/stat"; }
rss() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rows() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM metric_samples').fetchone()[0])" "$SOVDB_DATA_DIR/sovdb.db"; }

sleep "$WARMUP"
read -r s0 _ <<<"$(cpu "$SERVE_PID")"; read -r a0 c0 <<<"$(cpu "$AGENT_PID")"; r0=$(rows)
sleep "$WINDOW"
read -r s1 _ <<<"$(cpu "$SERVE_PID")"; read -r a1 c1 <<<"$(cpu "$AGENT_PID")"; r1=$(rows)

python3 - "$MEMBERS" "$WINDOW" "$s0" "$s1" "$a0" "$a1" "$c0" "$c1" "$r0" "$r1" "$(rss "$SERVE_PID")" "$(rss "$AGENT_PID")" \
  "$(cat "$SOVDB_DATA_DIR"/sovdb.db* | wc -c)" <<'PY'
import sys
m, w, s0, s1, a0, a1, c0, c1, r0, r1, srss, arss, dbb = sys.argv[1:]
w = float(w)
d = lambda a, b: float(b) - float(a)
print(f"{m} simulated members, {w:.0f} s window (samples every 10 s)")
print(f"control plane: {d(s0, s1):.2f} CPU s ({100 * d(s0, s1) / w:.1f}% of a core), peak RSS {srss} MiB")
print(f"agent:         {d(a0, a1):.2f} CPU s ({100 * d(a0, a1) / w:.1f}% of a core), peak RSS {arss} MiB")
print(f"agent's psql:  {d(c0, c1):.2f} CPU s ({100 * d(c0, c1) / w:.1f}% of a core)")
print(f"stored: {int(r1) - int(r0)} samples ({(int(r1) - int(r0)) / w:.1f}/s); store files {int(dbb) / 2**20:.1f} MiB")
PY
