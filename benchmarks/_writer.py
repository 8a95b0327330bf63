# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The concurrent writer of the benchmark: a separate process committing small transactions.

Usage: python _writer.py DB INTERVAL_SECONDS

Prints "ready" once its first transaction committed, then commits one small
transaction (update a block header, insert a transaction row) every
INTERVAL_SECONDS until it receives SIGTERM or SIGINT, and prints one JSON line
with what it did: commits, busy errors, the slowest commit. A negative
INTERVAL_SECONDS makes an idle writer: it commits once, then keeps its
connection open without writing until it is stopped. It uses the stdlib
sqlite3 module and is its own process, so its locks are real POSIX locks seen by
the backup (never mix two SQLite libraries on one file in one process).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import sys
import time

_stop = False


def _on_signal(signum, frame) -> None:
    global _stop
    _stop = True


def main(argv) -> int:
    path, interval = argv[0], float(argv[1])
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout=30000")
    top = connection.execute("SELECT max(height) FROM blocks").fetchone()[0] or 1
    rng = random.Random(os.getpid())
    commits = busy = 0
    slowest = 0.0
    announced = False
    started = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_start = usage.ru_utime + usage.ru_stime
    while not _stop:
        began = time.monotonic()
        try:
            connection.execute("BEGIN IMMEDIATE")
            height = rng.randint(1, top)
            connection.execute(
                "UPDATE blocks SET header = json_set(header, '$.gas_used', ?) WHERE height = ?",
                (rng.randint(0, 30_000_000), height),
            )
            connection.execute(
                "INSERT INTO txs(height, hash, sender, recipient, nonce, amount, fee, status, payload, sig) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    height,
                    os.urandom(32).hex(),
                    "0x%040x" % rng.randrange(5000),
                    "0x%040x" % rng.randrange(20000),
                    commits,
                    rng.randrange(10**11),
                    21000,
                    json.dumps({"method": "transfer", "args": [commits], "gas": 21000}),
                    os.urandom(64),
                ),
            )
            connection.execute("COMMIT")
            commits += 1
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            busy += 1
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        slowest = max(slowest, time.monotonic() - began)
        if commits and not announced:
            print("ready", flush=True)
            announced = True
        if interval < 0:
            while not _stop:
                time.sleep(0.05)
        elif interval > 0:
            time.sleep(interval)
    connection.close()
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome = {
        "commits": commits,
        "busy": busy,
        "slowest_commit": round(slowest, 4),
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_at_start, 3),
    }
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
