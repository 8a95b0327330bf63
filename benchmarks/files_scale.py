# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scale run of the ``files`` asset: many small files backed up, incremented and restored.

Usage (``make bench-files-scale`` runs it with FILES_SCALE_ARGS; not part of ``make test``):

    PYTHONPATH=build/collections .venv/bin/python benchmarks/files_scale.py \
        [--files 1000000] [--per-dir 1000] [--min-size 64] [--max-size 1024] [--change 0.01] [--json OUT]

Generates ``--files`` small random files (``--per-dir`` to a directory), then measures, each
step in a fresh process (benchmarks/files_incremental.py's engine child): a ``stat`` walk of
the tree (``os.walk`` + ``lstat``: the floor of any incremental run), the full backup, an
incremental backup with nothing changed, one with ``--change`` of the files rewritten, and the
restore of that epoch (checked equal by path, size and content hash). Prints time and peak
RSS per step, and microseconds and bytes of peak RSS per file.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import files_incremental as _fi


def make_tree(root: Path, count: int, per_dir: int, low: int, high: int, rng: random.Random) -> list[Path]:
    paths = []
    for number in range(count):
        directory = root / ("d%05d" % (number // per_dir))
        if number % per_dir == 0:
            directory.mkdir(parents=True)
        path = directory / ("f%07d" % number)
        with open(path, "wb") as handle:
            handle.write(rng.randbytes(rng.randint(low, high)))
        paths.append(path)
    return paths


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                data = handle.read()
            digest.update(b"%s %d\n" % (os.path.relpath(path, root).encode(), len(data)))
            digest.update(data)
    return digest.hexdigest()


def stat_walk(root: Path) -> dict:
    """The floor of an incremental run: list every directory and ``lstat`` every entry (a fresh process)."""
    code = (
        "import os,sys,time,resource\n"
        "t=time.monotonic();n=0\n"
        "for d,ds,fs in os.walk(sys.argv[1]):\n"
        "    for f in fs: os.lstat(os.path.join(d,f)); n+=1\n"
        "print(n, time.monotonic()-t)\n"
    )
    subprocess.run(["sync"], check=True)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    return {"seconds": time.monotonic() - began, "entries": int(done.stdout.split()[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000000)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--min-size", type=int, default=64)
    parser.add_argument("--max-size", type=int, default=1024)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--collections", default=str(_fi.ROOT / "build" / "collections"))
    args = parser.parse_args()

    from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing

    work = Path(tempfile.mkdtemp(prefix="nodekeep-files-scale-"))
    results: dict = {"files": args.files}
    try:
        keygen = subprocess.run(["age-keygen", "-o", str(work / "identity")], capture_output=True, text=True, check=True)
        recipient = keygen.stderr.split("Public key:", 1)[1].strip()
        pem = signing.generate_private_key_pem()
        (work / "signing_key").write_bytes(pem)
        os.chmod(work / "signing_key", 0o600)
        store = work / "tree"
        rng = random.Random(42)
        began = time.monotonic()
        paths = make_tree(store, args.files, args.per_dir, args.min_size, args.max_size, rng)
        results["generate_seconds"] = time.monotonic() - began
        print("generated %d files in %.1f s" % (args.files, results["generate_seconds"]), file=sys.stderr)
        spec = {
            "collections": os.path.abspath(args.collections),
            "recipient": recipient,
            "identity": str(work / "identity"),
            "signing_key": str(work / "signing_key"),
            "public": signing.public_key_line(pem, "bench"),
            "store": str(store),
            "repo": str(work / "repo"),
            "state": str(work / "state"),
        }
        results["stat_walk"] = stat_walk(store)
        results["full"] = _fi.run_engine(dict(spec, step="backup"))
        print("full backup done", file=sys.stderr)
        results["unchanged"] = _fi.run_engine(dict(spec, step="backup"))
        for path in rng.sample(paths, max(1, int(len(paths) * args.change))):
            path.write_bytes(rng.randbytes(rng.randint(args.min_size, args.max_size)))
        results["incremental"] = _fi.run_engine(dict(spec, step="backup"))
        print("incremental backups done", file=sys.stderr)
        digest = tree_digest(store)
        results["restore"] = _fi.run_engine(
            dict(spec, step="restore", epoch=results["incremental"]["epoch"], target=str(work / "restore"))
        )
        results["restore_equal"] = tree_digest(Path(results["restore"]["path"])) == digest
        report(args, results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0 if results["restore_equal"] else 1
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, results: dict) -> None:
    count = args.files
    print("files asset at scale: %d files of %d-%d bytes, %d per directory" % (count, args.min_size, args.max_size, args.per_dir))
    print("%-44s %9s %12s %10s %14s" % ("step", "seconds", "us per file", "peak RSS", "RSS per file"))
    walk = results["stat_walk"]
    print("%-44s %9.2f %12.1f %10s %14s" % ("stat walk (os.walk + lstat)", walk["seconds"], walk["seconds"] / count * 1e6, "-", "-"))
    for label, key in (
        ("full backup", "full"),
        ("incremental, nothing changed", "unchanged"),
        ("incremental, %.0f%% rewritten" % (args.change * 100), "incremental"),
        ("restore (equal: %s)" % results["restore_equal"], "restore"),
    ):
        step = results[key]
        print(
            "%-44s %9.2f %12.1f %9.0fM %12.0f B"
            % (label, step["seconds"], step["seconds"] / count * 1e6, step["rss_mib"], step["rss_mib"] * (1 << 20) / count)
        )
    print(
        "incremental / full: nothing changed %.2fx, %.0f%% changed %.2fx; nothing changed / stat walk %.1fx"
        % (
            results["unchanged"]["seconds"] / results["full"]["seconds"],
            args.change * 100,
            results["incremental"]["seconds"] / results["full"]["seconds"],
            results["unchanged"]["seconds"] / walk["seconds"],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
