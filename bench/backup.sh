#!/usr/bin/env bash
# Backup and restore throughput on the local location: a 1-member cluster with a posix
# repository (encrypted, zstd: the defaults), pgbench -i at SCALE (default 70, about
# 1 GB). Timed: a full backup (`backup create --type full --wait`), an incremental one
# after RUN seconds (default 30) of pgbench, and a restore of the latest state into a new
# cluster (`cluster restore --latest --wait`): the whole operation, and the restore
# itself from the operation's step times (start-members, when Patroni runs pgBackRest's
# restore, until wait-primary, when recovery has promoted; the copy's first full backup
# is a step of its own); and pgBackRest's own backup and restore commands (the times
# they log). Beside them, in the same run, copies of the member's data directory: read to
# /dev/null, `cp -a`, and `cp -a` with every copied file fsync'd (pgBackRest syncs what
# it writes). Every MB/s is the database's size (10^6 bytes) over the seconds; the copies
# also say what they moved. The page cache is warm for all of them alike. Asserts
# nothing. Needs root and a built binary (`cargo build`, or SOVDB_BIN).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SCALE=${SCALE:-70}
RUN=${RUN:-30}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

now() { date +%s.%N; }
# since T0: seconds since T0 (from `now`).
since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }
# line WHAT SECONDS [BYTES]: the seconds and the database's size over them (and BYTES, what
# a plain tool moved, over them).
line() { python3 -c '
import sys
what, secs, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
moved = f"  ({int(sys.argv[4]) / 1e6:.0f} MB moved: {int(sys.argv[4]) / 1e6 / secs:.1f} MB/s)" if len(sys.argv) > 4 else ""
print(f"{what:<58} {secs:7.2f} s {size / 1e6 / secs:7.1f} MB/s{moved}")' "$1" "$2" "$SIZE" "${@:3}"; }
# newest_op KIND: the newest operation of that kind, as JSON.
# took LOG COMMAND: the seconds pgBackRest's last COMMAND took, from its log ("… command
# end: completed successfully (1234ms)").
took() { grep -o "$2 command end: completed successfully ([0-9]*ms)" "$1" | tail -1 | grep -o '[0-9]*ms' | python3 -c 'import sys; print(int(sys.stdin.read()[:-3]) / 1000)'; }
newest_op() { "$BIN" op list -o json | python3 -c '
import json, sys; print(json.dumps(next(o for o in json.load(sys.stdin) if o["kind"] == sys.argv[1])))' "$1"; }
# span FIRST LAST: seconds from step FIRST's start to step LAST's end, of the operation
# on stdin.
span() { python3 -c '
import json, sys
from datetime import datetime as d
s = {x["name"]: x for x in json.load(sys.stdin)["steps"]}
print((d.fromisoformat(s[sys.argv[2]]["finished_at"]) - d.fromisoformat(s[sys.argv[1]]["started_at"])).total_seconds())' "$@"; }

start_server
"$BIN" repo create r1 --type posix --path "$WORK/backups" --default >/dev/null
"$BIN" cluster create bk --wait >/dev/null 2>&1
uri=$("$BIN" cluster connect bk)
t=$(now)
"$PGBENCH" -i -q -s "$SCALE" "$uri" >/dev/null 2>&1
echo "pgbench -i -s $SCALE: $(since "$t") s"
SIZE=$(psql "$uri" -XAtc "SELECT pg_database_size(current_database())")
member=$(member_dir bk "$(primary bk)")
data=$member/data
stanza=$("$BIN" cluster show bk -o json | field "['id']")
psql "$uri" -XAtc "SELECT 'database ' || pg_size_pretty(pg_database_size(current_database())) || ' ($SIZE bytes); data directory ' || '$(du -sh "$data" | cut -f1)'"

# newest_backup [NOTE]: the newest backup's label, size and size in the repository.
newest_backup() {
  "$BIN" backup list bk -o json | python3 -c '
import json, sys
b = json.load(sys.stdin)[-1]
label, size, stored = b["id"], b["size"] / 1e6, b["repo_size"] / 1e6
print(f"  {label}: {size:.0f} MB, {stored:.0f} MB in the repository", *sys.argv[1:])' "$@"
}

# The full backup: the CLI call with --wait, and pgBackRest's own start and stop.
t=$(now)
"$BIN" backup create bk --type full --wait >/dev/null 2>&1
line "full backup (backup create --type full --wait)" "$(since "$t")"
line "  pgBackRest's backup command alone (its log)" "$(took "$member/log/pgbackrest/$stanza-backup.log" backup)"
newest_backup

"$PGBENCH" -n -c 4 -j 2 -T "$RUN" "$uri" 2>/dev/null | grep -E '^(number of transactions actually processed|tps)' | sed 's/^/  pgbench: /'
t=$(now)
"$BIN" backup create bk --type incr --wait >/dev/null 2>&1
line "incremental backup after ${RUN} s of pgbench" "$(since "$t")"
line "  pgBackRest's backup command alone (its log)" "$(took "$member/log/pgbackrest/$stanza-backup.log" backup)"
newest_backup "(pgBackRest 2.45 copies whole changed files)"

t=$(now)
"$BIN" cluster restore bk --as bk-copy --latest --wait >/dev/null 2>&1
line "restore, whole operation (cluster restore --latest --wait)" "$(since "$t")"
op=$(newest_op cluster.restore)
line "  restore itself (start-members .. wait-primary)" "$(span start-members wait-primary <<<"$op")"
line "    pgBackRest's restore command alone (its log)" "$(took "$(member_dir bk-copy "$(primary bk-copy)")/log/pgbackrest/$stanza-restore.log" restore)"
line "  the copy's first full backup (first-backup)" "$(span first-backup first-backup <<<"$op")"
copy=$("$BIN" cluster connect bk-copy)
echo "  the copy has $(psql "$copy" -XAtc "SELECT count(*) FROM pgbench_accounts") accounts (the source $(psql "$uri" -XAtc "SELECT count(*) FROM pgbench_accounts"))"

# The same data directory copied by plain tools, while PostgreSQL runs: only timed (a
# file that goes away meanwhile, a WAL status file, is no error). It holds pg_wal too,
# which pgBackRest leaves out: what they moved is printed beside.
moved=$(du -sb "$data" | cut -f1)
t=$(now)
find "$data" -type f -exec cat {} + >/dev/null 2>&1 || true
line "read the data directory to /dev/null" "$(since "$t")" "$moved"
t=$(now)
cp -a "$data" "$WORK/cp-plain" 2>/dev/null || true
line "cp -a of the data directory (not synced)" "$(since "$t")" "$moved"
rm -rf "$WORK/cp-plain"
sync -f "$WORK"
t=$(now)
cp -a "$data" "$WORK/cp-synced" 2>/dev/null || true
find "$WORK/cp-synced" -type f -print0 | xargs -0 sync --
line "cp -a of the data directory, every file fsync'd" "$(since "$t")" "$moved"
rm -rf "$WORK/cp-synced"
