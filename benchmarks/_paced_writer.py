"""An application for the replication benchmark: commits numbered rows to a WAL-mode SQLite DB.

    python _paced_writer.py DB RATE SECONDS LOG     (RATE 0: as fast as it can)

Each transaction inserts one row n = 1, 2, ...; after each commit the wall time is kept, and at the end
LOG gets one line per commit, ``n time`` (so the age of any shipped commit can be computed). Starts
committing when the file DB.go exists (the benchmark creates it once the replicator is ready).
"""

import os
import sqlite3
import sys
import time

path, rate, seconds, log = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS c(n INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB)")
n = db.execute("SELECT coalesce(max(n), 0) FROM c").fetchone()[0]
go = path + ".go"
while not os.path.exists(go):
    time.sleep(0.01)
times = []
start = time.time()
end = start + seconds
step = 1.0 / rate if rate > 0 else 0.0
while True:
    now = time.time()
    if now >= end:
        break
    if step:
        due = start + len(times) * step
        if due > now:
            time.sleep(due - now)
    n += 1
    db.execute("INSERT INTO c(n, at, pad) VALUES (?, ?, randomblob(200))", (n, time.time()))
    times.append((n, time.time()))
db.close()
with open(log, "w") as handle:
    handle.write("".join("%d %.6f\n" % item for item in times))
