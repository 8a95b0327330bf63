"""A numbered writer for the replication tests: an application committing to a WAL-mode SQLite DB.

Each transaction inserts one row ``n`` (1, 2, 3, ...), so any consistent state holds exactly the rows
1..k. Commands on stdin, one per line, each answered on stdout with ``ok COUNT`` once done:

    commit N          commit N more transactions
    checkpoint MODE   PRAGMA wal_checkpoint(MODE) (PASSIVE, FULL, RESTART, TRUNCATE)
    run               commit as fast as possible until SIGTERM/SIGKILL (answers ``ok started`` first)
    quit              close the database and exit

Runs with the stdlib sqlite3 (never in the test process, which uses apsw).
"""

import signal
import sqlite3
import sys
import time

path = sys.argv[1]
autocheckpoint = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
db = sqlite3.connect(path, isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("PRAGMA wal_autocheckpoint=%d" % autocheckpoint)
db.execute("CREATE TABLE IF NOT EXISTS c(n INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB)")
count = db.execute("SELECT coalesce(max(n), 0) FROM c").fetchone()[0]
stopping = False


def _stop(*_args):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, _stop)


def commit_one():
    global count
    count += 1
    db.execute("INSERT INTO c(n, at, pad) VALUES (?, ?, randomblob(200))", (count, time.time()))


def answer(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


answer("ok %d" % count)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "commit":
        for _ in range(int(words[1])):
            commit_one()
        answer("ok %d" % count)
    elif words[0] == "checkpoint":
        row = db.execute("PRAGMA wal_checkpoint(%s)" % words[1]).fetchone()
        answer("ok %d %s" % (count, ",".join(str(v) for v in row)))
    elif words[0] == "run":
        answer("ok started")
        while not stopping:
            commit_one()
        answer("ok %d" % count)
    elif words[0] == "quit":
        break
db.close()
answer("ok %d" % count)
