# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Full vs incremental backup of a DA-store-like tree with the ``files`` asset type, beside runbook 000's shell way.

Usage (run by hand; ``make bench`` may wire it in):

    PYTHONPATH=build/collections .venv/bin/python benchmarks/files_incremental.py \
        [--files 20000] [--change 0.01] [--min-size 512] [--max-size 16384] [--json OUT] [--keep]

It builds a content-addressed store (``blobs/<h[:2]>/<h[2:4]>/<sha256>``, random sizes),
then measures in one run:

1. ``files`` full backup (engine: backup_epoch into a local repository),
2. ``files`` incremental backup after changing ``--change`` of the files and adding/deleting a few,
3. restore of the incremental epoch (rebuild from index + objects) and a check that it equals the tree,
4. runbook 000's shell approach for the whole store: ``tar -cf - | zstd -T0 | age -r R > FILE``
   (what every hourly run costs without an incremental engine).

Times are wall-clock seconds; bytes are bytes written to the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "collections"))

from ansible_collections.nodekeep.backup.plugins.module_utils import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.epoch import backup_epoch, restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import LocalRepository


def make_store(root: Path, count: int, low: int, high: int, rng: random.Random) -> list[Path]:
    paths = []
    for _number in range(count):
        data = rng.randbytes(rng.randint(low, high))
        digest = hashlib.sha256(data).hexdigest()
        path = root / "blobs" / digest[:2] / digest[2:4] / digest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    (root / "index").mkdir()
    (root / "index" / "head.json").write_text('{"height": 1}\n')
    return paths


def churn(paths: list[Path], fraction: float, low: int, high: int, rng: random.Random) -> dict[str, int]:
    pool = list(paths)
    rng.shuffle(pool)
    changed = pool[: max(1, int(len(pool) * fraction))]
    for path in changed:
        path.write_bytes(rng.randbytes(rng.randint(low, high)))
    extra = max(1, len(changed) // 3)
    for path in pool[len(changed) : len(changed) + extra]:
        path.unlink()
    for number in range(extra):
        (paths[0].parent / ("added-%d" % number)).write_bytes(rng.randbytes(rng.randint(low, high)))
    return {"changed": len(changed), "added": extra, "deleted": extra}


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def du(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _dirs, files in os.walk(path) for f in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--min-size", type=int, default=512)
    parser.add_argument("--max-size", type=int, default=16384)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    for tool in ("age", "age-keygen", "zstd", "tar"):
        if shutil.which(tool) is None:
            print("missing tool: %s (apt-get install age zstd tar)" % tool, file=sys.stderr)
            return 2
    rng = random.Random(42)
    work = Path(tempfile.mkdtemp(prefix="nodekeep-files-bench-"))
    try:
        keygen = subprocess.run(
            ["age-keygen", "-o", str(work / "identity")], capture_output=True, text=True, check=True
        )
        recipient = keygen.stderr.split("Public key:", 1)[1].strip()
        pem = signing.generate_private_key_pem()
        key_path = work / "signing_key"
        key_path.write_bytes(pem)
        os.chmod(key_path, 0o600)
        key = signing.load_private_key(str(key_path))
        public = signing.public_key_line(pem, "bench")
        recipients = seal.load_recipients([recipient])
        identities = seal.load_identities([], [str(work / "identity")])

        store = work / "da"
        paths = make_store(store, args.files, args.min_size, args.max_size, rng)
        store_bytes = du(store)
        repo_path = work / "repo"
        repo = LocalRepository(str(repo_path))
        asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(work / "state")}
        results: dict[str, object] = {"files": args.files, "store_bytes": store_bytes, "change": args.change}

        began = time.monotonic()
        full = backup_epoch(repo, "bench", [asset], recipients, [recipient], key)
        results["full_seconds"] = round(time.monotonic() - began, 3)
        results["full_bytes"] = du(repo_path)
        time.sleep(0.05)
        results["churn"] = churn(paths, args.change, args.min_size, args.max_size, rng)
        before = du(repo_path)
        began = time.monotonic()
        incremental = backup_epoch(repo, "bench", [asset], recipients, [recipient], key)
        results["incremental_seconds"] = round(time.monotonic() - began, 3)
        results["incremental_bytes"] = du(repo_path) - before
        results["incremental_objects"] = incremental.artifacts[0].source["objects"]
        results["full_objects"] = full.artifacts[0].source["objects"]

        began = time.monotonic()
        restored = restore_epoch(repo, "bench", incremental.epoch, public, identities, str(work / "restore"))
        results["restore_seconds"] = round(time.monotonic() - began, 3)
        restored_root = Path(restored["artifacts"][0]["path"])
        results["restore_equal"] = tree_digest(restored_root) == tree_digest(store)

        out = work / "runbook.tar.zst.age"
        began = time.monotonic()
        subprocess.run(
            "tar -C %s -cf - . | zstd -q -T0 | age -r %s > %s" % (store, recipient, out), shell=True, check=True
        )
        results["runbook_seconds"] = round(time.monotonic() - began, 3)
        results["runbook_bytes"] = out.stat().st_size

        print("DA-like store: %d files, %.1f MiB" % (args.files, store_bytes / (1 << 20)))
        print("%-44s %10s %14s" % ("run", "seconds", "bytes written"))
        print("%-44s %10.2f %14d" % ("files asset, full", results["full_seconds"], results["full_bytes"]))
        label = "files asset, incremental (%(changed)d changed, %(added)d added)" % results["churn"]
        print("%-44s %10.2f %14d" % (label, results["incremental_seconds"], results["incremental_bytes"]))
        print(
            "%-44s %10.2f %14s"
            % ("files asset, restore (equal: %s)" % results["restore_equal"], results["restore_seconds"], "-")
        )
        print(
            "%-44s %10.2f %14d"
            % ("runbook: tar | zstd -T0 | age (every run)", results["runbook_seconds"], results["runbook_bytes"])
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0 if results["restore_equal"] else 1
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
