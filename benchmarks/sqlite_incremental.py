# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental SQLite epochs (the piece store) beside restic and runbook 000, in one run, on one database.

Usage (``make bench`` runs it with SQLITE_BENCH_ARGS):

    .venv/bin/python benchmarks/sqlite_incremental.py [--size-mib 300] [--epochs 4] [--quick] [--json OUT] [--keep]

On a copy of the generated chain-like database (benchmarks/_common.py: blocks, txs, two indexes,
WAL, 4 KiB pages) it measures, each engine step in a fresh child process (wall time and peak RSS
of the whole process, the age CLI included):

1. a full epoch (first epoch of a fresh repository and node state) and runbook 000's backup
   (``.backup``, ``integrity_check``, ``zstd | age``, ``sha256sum``) of the same database;
2. ``--epochs`` incremental epochs of the *append+hot* workload: each appends 1000 blocks and
   rewrites the status of the 1000 most recent transactions; bytes stored per epoch = growth of
   the repository (pieces, page map, piece list, manifest, signature); restic (Debian's) backs up a
   ``.backup`` copy of the same state after each epoch, its bytes stored = growth of its repository;
3. one incremental epoch after 1% of the transactions are rewritten at random (and restic beside it);
4. restores: the last incremental epoch, the full epoch, and runbook 000's restore, of the same DB;
   each restored file's SHA-256 is compared with the source state's.

Printed as ratios (engine / peer of the same run); ``--json`` keeps every measurement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from _common import (
    MIB,
    RESULTS_DIR,
    collections_path,
    default_python,
    fmt_mib,
    generated_database,
    last_json_line,
    make_keys,
    run_measured,
    table,
)

APPEND_HOT = """
BEGIN;
WITH RECURSIVE n(i) AS (SELECT (SELECT max(height) FROM blocks) + 1 UNION ALL SELECT i + 1 FROM n
  WHERE i < (SELECT max(height) FROM blocks) + 1000)
INSERT INTO blocks SELECT i, lower(hex(randomblob(32))), lower(hex(randomblob(32))), 1700000000 + i * 12,
  printf('0x%040x', abs(random()) % 64), 20, json_object('version', 2, 'extra', 'nodekeep-bench') FROM n;
UPDATE txs SET status = CASE status WHEN 'ok' THEN 'final' ELSE 'ok' END
  WHERE id > (SELECT max(id) FROM txs) - 1000;
COMMIT;
"""
RANDOM_1PCT = "UPDATE txs SET fee = fee + 1 WHERE abs(random()) % 100 = 0;"


def tree_bytes(root: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_size
    return total


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(4 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


FINGERPRINT = (
    "SELECT (SELECT count(*) || ':' || sum(fee) || ':' || sum(length(status)) FROM txs) || '/' || "
    "(SELECT count(*) || ':' || max(height) FROM blocks)"
)


def fingerprint(database: Path) -> str:
    """A logical fingerprint of the chain DB (every row's fee and status, every block)."""
    return subprocess.run(
        ["sqlite3", "file:%s?mode=ro" % database, FINGERPRINT], check=True, capture_output=True, text=True
    ).stdout.strip()


def sqlite(database: Path, script: str) -> None:
    subprocess.run(["sqlite3", str(database)], input=script, text=True, check=True, capture_output=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = default_python()
        self.work = RESULTS_DIR / ("sqlite-incr-%d" % os.getpid())
        self.work.mkdir(parents=True)
        self.keys = make_keys(self.python, RESULTS_DIR / "keys")
        self.db = self.work / "node.db"
        shutil.copyfile(generated_database(args.size_mib, log=self.log), self.db)
        self.restic_repo = self.work / "restic"
        self.restic_env = dict(os.environ, RESTIC_PASSWORD="nodekeep-bench", RESTIC_REPOSITORY=str(self.restic_repo))
        self.results: dict = {"size_mib": args.size_mib, "epochs": []}

    @staticmethod
    def log(message: str) -> None:
        print("[%s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)

    def engine(self, action: str, repository: Path, state: Path, **extra) -> dict:
        config = {
            "collections": str(collections_path()),
            "bench_dir": str(BENCH_DIR),
            "repository": str(repository),
            "node": "node1",
            "database": str(self.db),
            "recipient": self.keys["recipient"],
            "signing_key": self.keys["signing_key"],
            "identity_file": self.keys["identity_file"],
            "public_key": self.keys["public_key"],
            "asset_options": {"incremental": True, "state_dir": str(state)},
            "scratch_dir": str(self.work / "scratch"),
        }
        config.update(extra)
        subprocess.run(["sync"], check=False)
        finished = run_measured([self.python, str(BENCH_DIR / "_engine.py"), action, json.dumps(config)])
        if finished.returncode != 0:
            raise SystemExit("engine %s failed: %s" % (action, finished.stderr[-2000:]))
        outcome = last_json_line(finished.stdout)
        outcome["process_wall"] = round(finished.wall, 3)
        outcome["process_maxrss_kib"] = finished.maxrss_kib
        return outcome

    def restic_backup(self) -> tuple[int, float]:
        """restic backup of a .backup copy of the current state: (bytes its repository grew, seconds)."""
        snapshot = self.work / "restic-src" / "node.db"
        snapshot.parent.mkdir(exist_ok=True)
        if snapshot.exists():
            snapshot.unlink()
        before = tree_bytes(self.restic_repo)
        began = time.monotonic()
        subprocess.run(["sqlite3", str(self.db), ".backup '%s'" % snapshot], check=True, capture_output=True)
        subprocess.run(["restic", "backup", "-q", str(snapshot)], env=self.restic_env, check=True, capture_output=True)
        return tree_bytes(self.restic_repo) - before, time.monotonic() - began

    def runbook(self) -> dict:
        out = self.work / "runbook" / "node.db"
        if out.parent.exists():
            shutil.rmtree(out.parent)
        out.parent.mkdir()
        timing = out.parent / "timing"
        subprocess.run(["sync"], check=False)
        finished = run_measured(
            [
                "bash",
                str(BENCH_DIR / "runbook_backup.sh"),
                str(self.db),
                str(out),
                self.keys["recipient"],
                str(timing),
                "0",
            ]
        )
        if finished.returncode != 0:
            raise SystemExit("runbook backup failed: %s" % finished.stderr[-2000:])
        backup_wall = finished.wall
        restored = out.parent / "restored.db"
        expected = sha256_of(out)
        subprocess.run(["sync"], check=False)
        finished = run_measured(
            [
                "bash",
                str(BENCH_DIR / "runbook_restore.sh"),
                str(out) + ".zst.age",
                self.keys["identity_file"],
                str(restored),
                expected,
                str(timing),
            ]
        )
        if finished.returncode != 0:
            raise SystemExit("runbook restore failed: %s" % finished.stderr[-2000:])
        return {
            "backup_wall": backup_wall,
            "restore_wall": finished.wall,
            "sealed": os.path.getsize(str(out) + ".zst.age"),
        }

    def restore(self, repository: Path, epoch: str, tag: str) -> dict:
        target = self.work / ("restore-" + tag)
        outcome = self.engine("restore", repository, self.work / "unused", epoch=epoch, target_root=str(target))
        outcome["matches_source"] = fingerprint(Path(outcome["path"])) == fingerprint(self.db)
        shutil.rmtree(target)
        return outcome

    def run(self) -> dict:
        args = self.args
        subprocess.run(["restic", "init", "-q"], env=self.restic_env, check=True, capture_output=True)
        repo, state = self.work / "repo", self.work / "state"
        self.log("full epoch (fresh repository) of %d MiB" % (self.db.stat().st_size // MIB))
        first = self.engine("backup", repo, state)
        first["stored_bytes"] = tree_bytes(repo)
        restic_first, restic_first_seconds = self.restic_backup()
        self.results["full"] = first
        self.results["restic_first"] = {"stored_bytes": restic_first, "seconds": restic_first_seconds}
        self.log("runbook 000 backup and restore of the same database")
        self.results["runbook"] = self.runbook()
        last = first
        for number in range(args.epochs):
            sqlite(self.db, APPEND_HOT)
            before = tree_bytes(repo)
            outcome = self.engine("backup", repo, state)
            outcome["stored_bytes"] = tree_bytes(repo) - before
            outcome["restic_stored_bytes"], outcome["restic_seconds"] = self.restic_backup()
            self.log(
                "epoch %d (append+hot): %s stored, restic %s, %.2f s"
                % (
                    number + 1,
                    fmt_mib(outcome["stored_bytes"] / 1024),
                    fmt_mib(outcome["restic_stored_bytes"] / 1024),
                    outcome["process_wall"],
                )
            )
            self.results["epochs"].append(outcome)
            last = outcome
        self.log("restore of the last incremental epoch")
        self.results["restore_incremental"] = self.restore(repo, last["epoch"], "incr")
        self.log("full epoch of the same state (fresh repository), and its restore")
        fresh = self.work / "repo-full"
        full_same = self.engine("backup", fresh, self.work / "state-full")
        full_same["stored_bytes"] = tree_bytes(fresh)
        self.results["full_same_state"] = full_same
        self.results["restore_full"] = self.restore(fresh, full_same["epoch"], "full")
        self.results["runbook_same_state"] = self.runbook()
        self.log("1%% random rows rewritten")
        sqlite(self.db, RANDOM_1PCT)
        before = tree_bytes(repo)
        random_epoch = self.engine("backup", repo, state)
        random_epoch["stored_bytes"] = tree_bytes(repo) - before
        random_epoch["restic_stored_bytes"], random_epoch["restic_seconds"] = self.restic_backup()
        self.results["random_1pct"] = random_epoch
        return self.results


def report(results: dict) -> str:
    epochs = results["epochs"]
    mb = 1e6
    rows = []
    for number, epoch in enumerate(epochs, 1):
        rows.append(
            [
                "append+hot #%d" % number,
                "%.2f MB" % (epoch["stored_bytes"] / mb),
                "%.2f MB" % (epoch["restic_stored_bytes"] / mb),
                "%.2f" % (epoch["stored_bytes"] / max(1, epoch["restic_stored_bytes"])),
                "%d / %d" % (epoch["pages"]["changed"], epoch["pages"]["total"]),
                "%.2f s" % epoch["process_wall"],
                fmt_mib(epoch["process_maxrss_kib"]),
            ]
        )
    rnd = results["random_1pct"]
    rows.append(
        [
            "1% random rows",
            "%.2f MB" % (rnd["stored_bytes"] / mb),
            "%.2f MB" % (rnd["restic_stored_bytes"] / mb),
            "%.2f" % (rnd["stored_bytes"] / max(1, rnd["restic_stored_bytes"])),
            "%d / %d" % (rnd["pages"]["changed"], rnd["pages"]["total"]),
            "%.2f s" % rnd["process_wall"],
            fmt_mib(rnd["process_maxrss_kib"]),
        ]
    )
    full = results["full"]
    rows.insert(
        0,
        [
            "full (first)",
            "%.2f MB" % (full["stored_bytes"] / mb),
            "%.2f MB" % (results["restic_first"]["stored_bytes"] / mb),
            "%.2f" % (full["stored_bytes"] / max(1, results["restic_first"]["stored_bytes"])),
            "%d / %d" % (full["pages"]["stored"], full["pages"]["total"]),
            "%.2f s" % full["process_wall"],
            fmt_mib(full["process_maxrss_kib"]),
        ],
    )
    lines = [
        "SQLite incremental epochs, %d MiB chain-like DB, engine beside Debian's restic (same states, same run)"
        % results["size_mib"],
        "",
        table(
            ["epoch", "nodekeep stored", "restic stored", "ratio", "pages changed", "engine wall", "peak RSS MiB"], rows
        ),
        "",
    ]
    incr = [e["process_wall"] for e in epochs]
    full_wall = results["full_same_state"]["process_wall"]
    median_incr = sorted(incr)[len(incr) // 2]
    runbook = results["runbook_same_state"]
    ri, rf = results["restore_incremental"], results["restore_full"]
    ratios = [
        ["incremental epoch / full epoch (same DB, wall)", "%.2f" % (median_incr / full_wall), "<= 0.25"],
        ["full epoch / runbook 000 backup (wall)", "%.2f" % (full_wall / runbook["backup_wall"]), "<= 0.5"],
        ["restore incremental / restore full (wall)", "%.2f" % (ri["process_wall"] / rf["process_wall"]), "<= 1.2"],
        [
            "restore incremental / runbook 000 restore (wall)",
            "%.2f" % (ri["process_wall"] / runbook["restore_wall"]),
            "<= 0.35",
        ],
        [
            "append+hot stored per epoch (median)",
            "%.2f MB" % (sorted(e["stored_bytes"] for e in epochs)[len(epochs) // 2] / mb),
            "<= 1 MB",
        ],
        ["1% random rows stored", "%.2f MB" % (rnd["stored_bytes"] / mb), "<= 15 MB"],
        [
            "peak RSS, any engine step",
            fmt_mib(max([e["process_maxrss_kib"] for e in epochs + [full, rnd, ri, rf, results["full_same_state"]]])),
            "<= 128 MiB at 2.5 GiB",
        ],
        ["restored = source (logical fingerprint)", str(ri["matches_source"] and rf["matches_source"]), "True"],
    ]
    lines.append(table(["measure", "value", "target (issue 14)"], ratios))
    lines.append("")
    lines.append(
        "load average at the end: %s (a loaded machine makes the times noisy; the sizes are not)"
        % (" ".join("%.1f" % x for x in os.getloadavg()))
    )
    lines.append(
        "full epoch %.2f s, runbook backup %.2f s, restore full %.2f s, restore incremental %.2f s, runbook restore %.2f s"
        % (full_wall, runbook["backup_wall"], rf["process_wall"], ri["process_wall"], runbook["restore_wall"])
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 2 epochs (a smoke test)")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.epochs = 64, 2
    for tool in ("restic", "sqlite3", "age", "zstd"):
        if not shutil.which(tool):
            raise SystemExit("%s is missing: run make setup-all (requirements/apt-all.txt)" % tool)
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    ok = results["restore_incremental"]["matches_source"] and results["restore_full"]["matches_source"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
