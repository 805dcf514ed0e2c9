#!/usr/bin/python3
"""Writes a numbered row every ~10 ms through a libpq URI until STOP_FILE exists, then
prints one JSON line: rows acknowledged, the longest gap between two acknowledged writes,
and how many acknowledged rows are missing afterwards. Used by failover.sh.
Usage: writeloop.py URI STOP_FILE"""
import json, os, sys, time
import psycopg2

uri, stop = sys.argv[1], sys.argv[2]
conn = psycopg2.connect(uri)
conn.autocommit = True
conn.cursor().execute("CREATE TABLE IF NOT EXISTS bench_w (v bigint PRIMARY KEY)")
conn.cursor().execute("TRUNCATE bench_w")
acked, i, last, gap, errors = [], 0, time.monotonic(), 0.0, 0
while not os.path.exists(stop):
    i += 1
    try:
        if conn is None or conn.closed:
            conn = psycopg2.connect(uri)
            conn.autocommit = True
        conn.cursor().execute("INSERT INTO bench_w VALUES (%s)", (i,))
        acked.append(i)
        now = time.monotonic()
        gap = max(gap, now - last)
        last = now
    except Exception:
        # A dead server, a refused connection or SQLSTATE 25006 right after promotion:
        # drop the connection and retry, as the docs tell clients to.
        errors += 1
        try:
            conn.close()
        except Exception:
            pass
        conn = None
    time.sleep(0.01)
for _ in range(100):
    try:
        conn = psycopg2.connect(uri)
        break
    except Exception:
        time.sleep(0.2)
cur = conn.cursor()
cur.execute("SELECT v FROM bench_w")
have = {r[0] for r in cur.fetchall()}
print(json.dumps({"acked": len(acked), "gap_s": round(gap, 2), "missing": sum(1 for a in acked if a not in have), "errors": errors}))
