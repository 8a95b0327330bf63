# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo node's live writer: an Animica-like chain database that never stops changing.

Writes ``chain`` rows to a SQLite database in WAL mode, the way a node appends
blocks: each transaction inserts two rows for one height (the block ``header`` and
its ``receipt``), numbered by a contiguous ``seq``. A consistent copy therefore
always holds both rows of every height and a gap-free ``seq``; rows are never
updated, so every row of an older copy equals the same row of the live database.

    demo_writer.py --db PATH [--pidfile FILE] [--initial-mb 4] [--rate 20] [--seconds 0]

First fills the database to about ``--initial-mb`` MiB (skipped when it is
already that big), then writes the pidfile (so a caller knows it is ready) and
appends ``--rate`` transactions per second until SIGTERM/SIGINT or ``--seconds``.
Uses only the standard library (stdlib ``sqlite3``); run it as its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sqlite3
import sys
import time
from datetime import datetime, timezone

SCHEMA = """
CREATE TABLE IF NOT EXISTS chain (
    seq        INTEGER PRIMARY KEY,
    height     INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('header', 'receipt')),
    hash       TEXT    NOT NULL,
    parent     TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    tx_count   INTEGER NOT NULL,
    body       BLOB    NOT NULL,
    UNIQUE (height, kind)
);
CREATE INDEX IF NOT EXISTS chain_created_at ON chain (created_at);
"""

ROW_BODY = 480  # bytes of payload per row: ~1 KiB per height with overhead
ADDRESSES = ["anim1%s" % hashlib.sha256(b"account-%d" % i).hexdigest()[:38] for i in range(64)]


class Chain:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        row = self.db.execute(
            "SELECT max(seq), max(height), (SELECT hash FROM chain ORDER BY seq DESC LIMIT 1) FROM chain"
        ).fetchone()
        self.seq = (row[0] if row[0] is not None else -1) + 1
        self.height = (row[1] if row[1] is not None else -1) + 1
        self.parent = row[2] or "0" * 64
        self.rng = random.Random(self.height)

    def size(self) -> int:
        page_count = self.db.execute("PRAGMA page_count").fetchone()[0]
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return page_count * page_size

    def body(self, kind: str, tx_count: int) -> bytes:
        """A receipt-like JSON payload: addresses reused from a small pool, like a real chain."""
        rng = self.rng
        txs = []
        size = 0
        while size < ROW_BODY:
            tx = '{"from":"%s","to":"%s","amount":%d,"fee":%d,"nonce":%d}' % (
                rng.choice(ADDRESSES),
                rng.choice(ADDRESSES),
                rng.randint(1, 10**9),
                rng.randint(10, 5000),
                rng.randint(0, 9999),
            )
            txs.append(tx)
            size += len(tx) + 1
        text = '{"kind":"%s","txs":%d,"sample":[%s]}' % (kind, tx_count, ",".join(txs))
        return text.encode()[:ROW_BODY]

    def append(self, count: int = 1) -> None:
        """Append ``count`` heights, each in its own transaction of two rows."""
        for _height in range(count):
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            tx_count = self.rng.randint(0, 250)
            header = hashlib.sha256(("%s:%d:%s" % (self.parent, self.height, now)).encode()).hexdigest()
            receipt = hashlib.sha256(("receipt:" + header).encode()).hexdigest()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute(
                    "INSERT INTO chain VALUES (?, ?, 'header', ?, ?, ?, ?, ?)",
                    (self.seq, self.height, header, self.parent, now, tx_count, self.body("header", tx_count)),
                )
                self.db.execute(
                    "INSERT INTO chain VALUES (?, ?, 'receipt', ?, ?, ?, ?, ?)",
                    (self.seq + 1, self.height, receipt, header, now, tx_count, self.body("receipt", tx_count)),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.seq += 2
            self.height += 1
            self.parent = header

    def fill(self, target_bytes: int, batch: int = 200) -> None:
        while self.size() < target_bytes:
            self.append(batch)

    def close(self) -> None:
        self.db.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--db", required=True, help="the database file (made if missing)")
    parser.add_argument("--pidfile", help="written once the initial fill is done; removed at exit")
    parser.add_argument("--initial-mb", type=float, default=4.0, help="fill the database to about this size first")
    parser.add_argument("--rate", type=float, default=20.0, help="transactions (heights) per second afterwards")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until signalled)")
    args = parser.parse_args(argv)

    stop = {"now": False}

    def on_signal(_signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    chain = Chain(args.db)
    try:
        chain.fill(int(args.initial_mb * (1 << 20)))
        chain.append(1)
        if args.pidfile:
            tmp = args.pidfile + ".tmp"
            with open(tmp, "w") as handle:
                handle.write("%d\n" % os.getpid())
            os.replace(tmp, args.pidfile)
        print(
            "demo_writer: %s ready (%.1f MiB, height %d); appending %.0f heights/s"
            % (args.db, chain.size() / (1 << 20), chain.height - 1, args.rate),
            file=sys.stderr,
            flush=True,
        )
        interval = 1.0 / args.rate if args.rate > 0 else 1.0
        deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
        next_at = time.monotonic()
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            if args.rate > 0:
                chain.append(1)
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()
    finally:
        chain.close()
        if args.pidfile:
            try:
                with open(args.pidfile) as handle:
                    if handle.read().strip() == str(os.getpid()):
                        os.unlink(args.pidfile)
            except OSError:
                pass
    print("demo_writer: stopped at height %d" % (chain.height - 1), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
