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
4. restores: the last incremental epoch (captured with quick_check: the full check runs at restore),
   one more incremental epoch captured with ``incremental_check: integrity`` (its restore proves the
   check by the SHA-256 and does not re-run it), the full epoch, a full epoch with ``check: quick``,
   and runbook 000's backup and restore, of the same DB; each restore is compared with the source; the
   ``check: quick`` full epoch is then deep-verified with a signed integrity proof and restored (the proof
   trusted: no check at restore);
5. S3: a full and an append+hot epoch written straight to SeaweedFS (scripts/seaweedfs.sh): the
   bytes sent in PutObject/UploadPart requests against the bucket's growth (``--no-s3`` skips it);
6. peak RSS of a full epoch, an incremental epoch and its restore on a ``--rss-size-mib`` DB
   (default 2560; 0 skips; generated once and cached in benchmarks/results).

Printed as ratios (engine / peer of the same run), wall time and the CPU seconds of every process
(steadier on a shared machine); ``--json`` keeps every measurement.
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

    def engine(self, action: str, repository: Path, state: Path, options: dict | None = None, **extra) -> dict:
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
            "asset_options": dict({"incremental": True, "state_dir": str(state)}, **(options or {})),
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
        outcome["process_cpu"] = round(finished.user + finished.system, 3)
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
        backup_wall, backup_cpu = finished.wall, finished.user + finished.system
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
            "backup_cpu": round(backup_cpu, 3),
            "restore_wall": finished.wall,
            "restore_cpu": round(finished.user + finished.system, 3),
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
        self.log("restore of the last incremental epoch (quick_check at capture: the full check runs at restore)")
        self.results["restore_incremental_quick"] = self.restore(repo, last["epoch"], "incr-quick")
        self.log("one more append+hot epoch with incremental_check: integrity (a checked capture), and its restore")
        sqlite(self.db, APPEND_HOT)
        before = tree_bytes(repo)
        checked = self.engine("backup", repo, state, options={"incremental_check": "integrity"})
        checked["stored_bytes"] = tree_bytes(repo) - before
        self.results["checked_epoch"] = checked
        self.results["restore_incremental"] = self.restore(repo, checked["epoch"], "incr")
        self.log("full epoch of the same state (fresh repository), and its restore")
        fresh = self.work / "repo-full"
        full_same = self.engine("backup", fresh, self.work / "state-full")
        full_same["stored_bytes"] = tree_bytes(fresh)
        self.results["full_same_state"] = full_same
        self.results["restore_full"] = self.restore(fresh, full_same["epoch"], "full")
        self.log("full epoch of the same state with check: quick (the full check left to restore)")
        quick_repo = self.work / "repo-quick"
        self.results["full_quick"] = self.engine(
            "backup", quick_repo, self.work / "state-quick", options={"check": "quick"}
        )
        self.log("deep verify of that epoch (full check of the rebuilt image, a signed proof), then its restore")
        quick_epoch = self.results["full_quick"]["epoch"]
        self.results["verify_quick"] = self.engine(
            "verify", quick_repo, self.work / "unused", epoch=quick_epoch, proof=True
        )
        self.results["restore_quick_proven"] = self.restore(quick_repo, quick_epoch, "quick-proven")
        shutil.rmtree(quick_repo)
        self.results["runbook_same_state"] = self.runbook()
        self.log("1% random rows rewritten")
        sqlite(self.db, RANDOM_1PCT)
        before = tree_bytes(repo)
        random_epoch = self.engine("backup", repo, state)
        random_epoch["stored_bytes"] = tree_bytes(repo) - before
        random_epoch["restic_stored_bytes"], random_epoch["restic_seconds"] = self.restic_backup()
        self.results["random_1pct"] = random_epoch
        # The RSS leg runs before the S3 leg: the S3 leg runs in this process (boto3, the engine) and a child's
        # ru_maxrss includes this process's RSS at fork/exec (Linux keeps the pre-exec peak).
        if args.rss_size_mib:
            self.results["rss"] = self.rss_leg(args.rss_size_mib)
        if args.s3:
            self.results["s3"] = self.s3_leg()
        return self.results

    def rss_leg(self, size_mib: int) -> dict:
        """Peak RSS of a full epoch, an append+hot incremental epoch and the restores of both, on a DB of
        ``size_mib`` (wall and CPU seconds of each step beside it)."""
        work = self.work / "rss"
        work.mkdir()
        saved, self.db = self.db, work / "node.db"
        try:
            shutil.copyfile(generated_database(size_mib, log=self.log), self.db)
            self.log("peak RSS at %d MiB: full epoch" % size_mib)
            repo, state = work / "repo", work / "state"
            full = self.engine("backup", repo, state)
            sqlite(self.db, APPEND_HOT)
            self.log("peak RSS at %d MiB: incremental epoch and its restore" % size_mib)
            incremental = self.engine("backup", repo, state)
            restored = self.restore(repo, incremental["epoch"], "rss")
            self.log("peak RSS at %d MiB: restore of the full epoch" % size_mib)
            restored_full = self.engine(
                "restore", repo, work / "unused", epoch=full["epoch"], target_root=str(work / "restore-full")
            )
        finally:
            self.db = saved
            shutil.rmtree(work, ignore_errors=True)
        steps = [
            ("full epoch", full),
            ("incremental", incremental),
            ("restore incremental", restored),
            ("restore full", restored_full),
        ]
        return {
            "size_mib": size_mib,
            "matches_source": restored["matches_source"],
            "walls": [step["process_wall"] for _name, step in steps],
            "cpus": [step["process_cpu"] for _name, step in steps],
            "steps": [[name, step["process_maxrss_kib"]] for name, step in steps],
        }

    def s3_leg(self) -> dict:
        """A full and an append+hot epoch written straight to S3 (SeaweedFS on loopback, scripts/seaweedfs.sh):
        the bytes the client sent in PutObject/UploadPart requests against the bucket's growth."""
        from s3_throughput import LocalServer  # only for this leg: boto3, and the engine on sys.path

        from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
        from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import (
            S3Repository,
        )
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import (
            S3Settings,
        )

        work = self.work / "s3"
        (work / "scratch").mkdir(parents=True)
        db = work / "node.db"
        subprocess.run(["sqlite3", str(self.db), ".backup '%s'" % db], check=True, capture_output=True)
        self.log("S3 leg: starting SeaweedFS (scripts/seaweedfs.sh start)")
        server = LocalServer()
        try:
            env = server.settings
            settings = S3Settings(
                bucket="bench",
                prefix="incremental",
                endpoint_url=env["AWS_ENDPOINT_URL"],
                access_key=env["AWS_ACCESS_KEY_ID"],
                secret_key=env["AWS_SECRET_ACCESS_KEY"],
                path_style=True,
            )
            repository = S3Repository(settings)
            repository.client.create_bucket(Bucket="bench")
            sent = [0]

            def count(request, **_kwargs) -> None:
                sent[0] += int(request.headers.get("Content-Length") or 0)

            for operation in ("PutObject", "UploadPart"):
                repository.client.meta.events.register("before-send.s3.%s" % operation, count)

            def bucket_bytes() -> int:
                total = 0
                for page in repository.client.get_paginator("list_objects_v2").paginate(Bucket="bench"):
                    total += sum(item["Size"] for item in page.get("Contents", []))
                return total

            recipients = seal.load_recipients([self.keys["recipient"]])
            key = signing.load_private_key(self.keys["signing_key"])
            asset = {"name": "nodedb", "type": "sqlite", "path": str(db), "incremental": True}
            asset["state_dir"] = str(work / "state")
            steps = []
            for name, change in (("full epoch", None), ("append+hot epoch", APPEND_HOT)):
                if change:
                    sqlite(db, change)
                stored_before, sent_before = bucket_bytes(), sent[0]
                epoch.backup_epoch(
                    repository,
                    "node1",
                    [asset],
                    recipients,
                    [self.keys["recipient"]],
                    key,
                    scratch_dir=str(work / "scratch"),
                )
                steps.append(
                    {"name": name, "uploaded": sent[0] - sent_before, "stored": bucket_bytes() - stored_before}
                )
                self.log("S3 leg: %s uploaded %d bytes, stored %d" % (name, steps[-1]["uploaded"], steps[-1]["stored"]))
        finally:
            server.stop()
            shutil.rmtree(work, ignore_errors=True)
        return {"steps": steps}


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
    incr_cpu = [e["process_cpu"] for e in epochs]
    same = results["full_same_state"]
    full_wall, full_cpu = same["process_wall"], same["process_cpu"]
    median_incr, median_incr_cpu = sorted(incr)[len(incr) // 2], sorted(incr_cpu)[len(incr_cpu) // 2]
    runbook = results["runbook_same_state"]
    ri, rf, rq = results["restore_incremental"], results["restore_full"], results["restore_incremental_quick"]
    checked = results["checked_epoch"]

    def both(engine: dict, peer: dict, engine_key: str, peer_key: str) -> str:
        return "%.2f (CPU %.2f)" % (
            engine["process_wall"] / peer[peer_key + "_wall"],
            engine["process_cpu"] / max(0.001, peer[peer_key + "_cpu"]),
        )

    ratios = [
        [
            "incremental epoch / full epoch (same DB)",
            "%.2f (CPU %.2f)" % (median_incr / full_wall, median_incr_cpu / full_cpu),
            "<= 0.25",
        ],
        [
            "incremental epoch, incremental_check: integrity / full epoch",
            "%.2f (CPU %.2f)" % (checked["process_wall"] / full_wall, checked["process_cpu"] / full_cpu),
            "(the check policy's price)",
        ],
        ["full epoch / runbook 000 backup", both(same, runbook, "process", "backup"), "<= 0.5"],
        [
            "full epoch with check: quick (full check at restore) / runbook 000 backup",
            both(results["full_quick"], runbook, "process", "backup"),
            "",
        ],
        [
            "deep verify of that epoch (rebuild + full integrity_check, signed proof) / runbook 000 backup",
            both(results["verify_quick"], runbook, "process", "backup"),
            "(off the backup's path)",
        ],
        [
            "restore of that epoch, verified (signed proof trusted, no check) / runbook 000 restore",
            both(results["restore_quick_proven"], runbook, "process", "restore"),
            "<= 0.35",
        ],
        [
            "restore incremental (checked capture) / restore full",
            "%.2f (CPU %.2f)" % (ri["process_wall"] / rf["process_wall"], ri["process_cpu"] / rf["process_cpu"]),
            "<= 1.2",
        ],
        [
            "restore incremental (checked capture) / runbook 000 restore",
            both(ri, runbook, "process", "restore"),
            "<= 0.35",
        ],
        ["restore full / runbook 000 restore", both(rf, runbook, "process", "restore"), ""],
        [
            "restore incremental (quick_check capture, full check at restore) / runbook 000 restore",
            both(rq, runbook, "process", "restore"),
            "",
        ],
        [
            "append+hot stored per epoch (median)",
            "%.2f MB" % (sorted(e["stored_bytes"] for e in epochs)[len(epochs) // 2] / mb),
            "<= 1 MB",
        ],
        ["1% random rows stored", "%.2f MB" % (rnd["stored_bytes"] / mb), "<= 15 MB"],
        [
            "peak RSS, any engine step (%d MiB DB)" % results["size_mib"],
            fmt_mib(
                max(
                    e["process_maxrss_kib"]
                    for e in [
                        *epochs,
                        full,
                        rnd,
                        ri,
                        rf,
                        rq,
                        same,
                        checked,
                        results["full_quick"],
                        results["verify_quick"],
                        results["restore_quick_proven"],
                    ]
                )
            ),
            "<= 128 MiB at 2.5 GiB",
        ],
    ]
    big = results.get("rss")
    if big:
        ratios.append(
            [
                "peak RSS at %d MiB (%s)"
                % (big["size_mib"], ", ".join("%s %s" % (k, fmt_mib(v)) for k, v in big["steps"])),
                fmt_mib(max(v for _k, v in big["steps"])),
                "<= 128 MiB",
            ]
        )
    s3 = results.get("s3")
    if s3:
        for step in s3["steps"]:
            ratios.append(
                [
                    "S3 (SeaweedFS) %s: bytes uploaded / bytes stored" % step["name"],
                    "%d / %d = %.3f" % (step["uploaded"], step["stored"], step["uploaded"] / max(1, step["stored"])),
                    "= 1",
                ]
            )
    ratios.append(
        [
            "restored = source (logical fingerprint)",
            str(ri["matches_source"] and rf["matches_source"] and rq["matches_source"]),
            "True",
        ]
    )
    ratios.append(
        ["restore of the checked capture re-ran integrity_check", str("integrity_proven" not in ri["checks"]), "False"]
    )
    proven = results["restore_quick_proven"]
    ratios.append(
        [
            "restore of the verified quick epoch trusted the proof (restored = source)",
            "%s (%s)" % ("by deep verify" in str(proven["checks"].get("integrity_proven")), proven["matches_source"]),
            "True (True)",
        ]
    )
    lines.append(table(["measure", "value (wall; CPU of every process)", "target (issue 14)"], ratios))
    lines.append("")
    lines.append(
        "load average at the end: %s (a loaded machine makes the times noisy; the sizes are not; CPU seconds are "
        "steadier)" % (" ".join("%.1f" % x for x in os.getloadavg()))
    )
    lines.append(
        "full epoch %.2f s (CPU %.2f), runbook backup %.2f s (CPU %.2f), restore full %.2f s, restore incremental "
        "%.2f s (quick capture %.2f s), runbook restore %.2f s (CPU %.2f)"
        % (
            full_wall,
            full_cpu,
            runbook["backup_wall"],
            runbook["backup_cpu"],
            rf["process_wall"],
            ri["process_wall"],
            rq["process_wall"],
            runbook["restore_wall"],
            runbook["restore_cpu"],
        )
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 2 epochs, no RSS leg (a smoke test)")
    parser.add_argument(
        "--rss-size-mib",
        type=int,
        default=2560,
        help="peak RSS of a full and an incremental epoch and a restore (0: skip)",
    )
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the S3 (SeaweedFS) leg")
    parser.add_argument(
        "--rss-only", action="store_true", help="only the peak-RSS leg at --rss-size-mib (make bench-rss)"
    )
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.epochs, args.rss_size_mib = 64, 2, 0
    for tool in ("restic", "sqlite3", "age", "zstd"):
        if not shutil.which(tool):
            raise SystemExit("%s is missing: run make setup-all (requirements/apt-all.txt)" % tool)
    bench = Bench(args)
    if args.rss_only:
        try:
            big = bench.rss_leg(args.rss_size_mib or 2560)
        finally:
            if not args.keep:
                shutil.rmtree(bench.work, ignore_errors=True)
        rows = [
            [name, fmt_mib(rss), "%.1f s" % wall, "%.1f s" % cpu]
            for (name, rss), wall, cpu in zip(big["steps"], big["walls"], big["cpus"])
        ]
        print("peak RSS at %d MiB (target <= 128 MiB)" % big["size_mib"])
        print(table(["step", "peak RSS", "wall", "CPU (user+sys)"], rows))
        print("restored = source (logical fingerprint): %s" % big["matches_source"])
        if args.json:
            Path(args.json).write_text(json.dumps(big, indent=2, sort_keys=True) + "\n")
        return 0 if big["matches_source"] else 1
    try:
        results = bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    ok = all(
        results[key]["matches_source"]
        for key in ("restore_incremental", "restore_full", "restore_incremental_quick", "restore_quick_proven")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
