#!/usr/bin/env bash
# Backup and restore throughput with the repository on another host than the database:
# two test hosts (network namespaces over a bridge, reached over SSH), a posix
# repository on the first, a 1-member cluster on the second, pgbench -i at SCALE
# (default 70, about 1 GB). Everything crosses pgBackRest's TLS servers: the backups run
# on the repository's host and read the primary through its host's server; the restore
# runs on the database host and reads the repository through the repository host's
# server. Timed: a full backup, an incremental one after RUN seconds (default 30) of
# pgbench, and a restore of the latest state into a new cluster on the database host (the
# whole operation, and start-members .. wait-primary from its step times). Beside them, in
# the same run, `cp -a` of the member's data directory (every file fsync'd). Compare with
# bench/backup.sh (the repository on the database's own host). Asserts nothing. Needs
# root and a built binary (`cargo build`, or SOVDB_BIN).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SCALE=${SCALE:-70}
RUN=${RUN:-30}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
PREFIX=bkr

now() { date +%s.%N; }
since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }
line() { python3 -c '
import sys
what, secs, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
print(f"{what:<58} {secs:7.2f} s {size / 1e6 / secs:7.1f} MB/s")' "$1" "$2" "$SIZE"; }
newest_op() { "$BIN" op list -o json | python3 -c '
import json, sys; print(json.dumps(next(o for o in json.load(sys.stdin) if o["kind"] == sys.argv[1])))' "$1"; }
span() { python3 -c '
import json, sys
from datetime import datetime as d
s = {x["name"]: x for x in json.load(sys.stdin)["steps"]}
print((d.fromisoformat(s[sys.argv[2]]["finished_at"]) - d.fromisoformat(s[sys.argv[1]]["started_at"])).total_seconds())' "$@"; }

trap 'cleanup; scripts/testhosts down --prefix "$PREFIX" --dir "$WORK/hosts" >/dev/null 2>&1 || true' EXIT
scripts/testhosts up -n 2 --prefix "$PREFIX" --subnet 10.79.2 --dir "$WORK/hosts" >/dev/null
start_server
"$BIN" location create lab --provider ssh --region lab >/dev/null
for i in 1 2; do
  h=$PREFIX$i
  role=$([[ $i == 1 ]] && echo backup || echo db)
  "$BIN" host add "$h" --location lab --address "10.79.2.$((10 + i))" --ssh-key "$WORK/hosts/id_ed25519" \
    --base-dir "$WORK/hosts/$h/base" --label "role=$role" --wait >/dev/null 2>&1
done
"$BIN" repo create far --location lab --type posix --path "$WORK/hosts/${PREFIX}1/base/repo" --host "${PREFIX}1" >/dev/null
"$BIN" cluster create bk --location lab --require-label role=db --backup-repo far --wait >/dev/null 2>&1
uri=$("$BIN" cluster connect bk)
t=$(now)
"$PGBENCH" -i -q -s "$SCALE" "$uri" >/dev/null 2>&1
echo "pgbench -i -s $SCALE: $(since "$t") s"
SIZE=$(psql "$uri" -XAtc "SELECT pg_database_size(current_database())")
id=$("$BIN" cluster show bk -o json | field "['id']" | tr -d -)
data=$WORK/hosts/${PREFIX}2/base/pg/${id: -8}-1/data
echo "database $((SIZE / 1000000)) MB ($SIZE bytes); data directory $(du -sh "$data" | cut -f1); repository on ${PREFIX}1, database on ${PREFIX}2"

newest_backup() {
  "$BIN" backup list bk -o json | python3 -c '
import json, sys
b = json.load(sys.stdin)[-1]
label, size, stored = b["id"], b["size"] / 1e6, b["repo_size"] / 1e6
print(f"  {label}: {size:.0f} MB, {stored:.0f} MB in the repository")'
}

t=$(now)
"$BIN" backup create bk --type full --wait >/dev/null 2>&1
line "full backup through TLS (backup create --type full --wait)" "$(since "$t")"
newest_backup
"$PGBENCH" -n -c 4 -j 2 -T "$RUN" "$uri" 2>/dev/null | grep -E '^tps' | sed 's/^/  pgbench: /'
t=$(now)
"$BIN" backup create bk --type incr --wait >/dev/null 2>&1
line "incremental backup through TLS after ${RUN} s of pgbench" "$(since "$t")"
newest_backup

t=$(now)
"$BIN" cluster restore bk --as bk-copy --latest --require-label role=db --wait >/dev/null 2>&1
line "restore through TLS, whole operation (--latest --wait)" "$(since "$t")"
op=$(newest_op cluster.restore)
line "  restore itself (start-members .. wait-primary)" "$(span start-members wait-primary <<<"$op")"
line "  the copy's first full backup (first-backup)" "$(span first-backup first-backup <<<"$op")"
copy=$("$BIN" cluster connect bk-copy)
echo "  the copy has $(psql "$copy" -XAtc "SELECT count(*) FROM pgbench_accounts") accounts (the source $(psql "$uri" -XAtc "SELECT count(*) FROM pgbench_accounts"))"

sync -f "$WORK"
t=$(now)
cp -a "$data" "$WORK/cp-synced" 2>/dev/null || true
find "$WORK/cp-synced" -type f -print0 | xargs -0 sync --
line "cp -a of the data directory, every file fsync'd" "$(since "$t")"
rm -rf "$WORK/cp-synced"
