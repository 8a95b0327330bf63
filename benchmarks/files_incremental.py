# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Full and incremental backup, and restore, of a DA-store-like tree with the ``files`` asset type, beside runbook 000's shell way.

Usage (``make bench`` runs it with FILES_BENCH_ARGS):

    PYTHONPATH=build/collections .venv/bin/python benchmarks/files_incremental.py \
        [--files 20000] [--runs 3] [--change 0.01] [--min-size 512] [--max-size 16384] [--json OUT] [--keep]

It builds a content-addressed store (``blobs/<h[:2]>/<h[2:4]>/<sha256>``, random
incompressible sizes), then, ``--runs`` times on a fresh store and repository, measures:

1. ``files`` full backup (the engine's backup_epoch into a local repository),
2. runbook 000's shell backup of the whole store: ``tar -cf - | zstd -T0 | age -r R > FILE``,
3. ``files`` incremental backup after changing ``--change`` of the files and adding/deleting a few,
4. ``files`` restore of the incremental epoch (checked equal to the tree),
5. runbook 000's restore: ``age -d -i KEY FILE | zstd -d | tar -xf -`` (checked equal to the tree it saved).

Engine and runbook alternate (engine first on even runs, runbook first on odd runs);
``sync`` runs before every timed step so none pays for the previous one's writes. Each
engine step runs in a fresh child process; its time is the whole process (interpreter
start and imports included), its peak RSS is its own ``VmHWM`` (threads included; not
``ru_maxrss``, which inherits the benchmark's own peak across ``execve``). The runbook's
peak RSS is the sum of its pipe stages' (GNU ``time``).
The engine makes its writes durable (fsync, syncfs); the runbook does not, so the
runbook is also timed followed by ``sync -f`` on its output (``+ sync``). Ratios are
the median of the per-run ratios (engine / runbook of the same run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "collections"))

GNU_TIME = "/usr/bin/time"


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


def tree_digest(root: Path, mtime_unit: int = 1) -> str:
    """Paths, contents, modes and file mtimes (in ``mtime_unit`` nanoseconds) of a tree."""
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            info = path.lstat()
            digest.update(
                b"%s %o %d\n" % (str(path.relative_to(root)).encode(), info.st_mode, info.st_mtime_ns // mtime_unit)
            )
            digest.update(path.read_bytes())
    return digest.hexdigest()


def stat_walk(root: Path) -> dict:
    """What any incremental run pays at least: list every directory and ``lstat`` every entry (a fresh process)."""
    code = (
        "import os,sys\n"
        "for d,ds,fs in os.walk(sys.argv[1]):\n"
        "    for f in fs: os.lstat(os.path.join(d,f))\n"
    )
    subprocess.run(["sync"], check=True)
    cpu = children_cpu()
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", code, str(root)], check=True)
    return {"seconds": time.monotonic() - began, "cpu_seconds": children_cpu() - cpu}


def du(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _dirs, files in os.walk(path) for f in files)


def children_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as handle:
        values = [float(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------
# the engine, in a child process
# --------------------------------------------------------------------------


def engine_child(spec: dict) -> dict:
    """One engine step (backup or restore) in this fresh process: wall, call time, peak RSS."""
    sys.path.insert(0, spec["collections"])  # the engine under test (--collections) comes first
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch, restore_epoch
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

    repo = LocalRepository(spec["repo"])
    result: dict = {}
    began = time.monotonic()
    if spec["step"] == "backup":
        key = signing.load_private_key(spec["signing_key"])
        recipients = seal.load_recipients([spec["recipient"]])
        asset = {"name": "da", "type": "files", "path": spec["store"], "state_dir": spec["state"]}
        manifest = backup_epoch(repo, "bench", [asset], recipients, [spec["recipient"]], key)
        result["epoch"] = manifest.epoch
        result["objects"] = manifest.artifacts[0].source["objects"]
    else:
        identities = seal.load_identities([], [spec["identity"]])
        restored = restore_epoch(repo, "bench", spec["epoch"], spec["public"], identities, spec["target"])
        result["path"] = restored["artifacts"][0]["path"]
    result["call_seconds"] = time.monotonic() - began
    result["self_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["self_hwm_kib"] = vm_hwm_kib()
    result["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result


def vm_hwm_kib() -> int | None:
    """This process's own peak RSS (``VmHWM``: its memory since its ``execve``, threads included).

    ``ru_maxrss`` is not: Linux carries the peak of the image a process replaced across ``execve``,
    so a child forked from a benchmark holding 300,000 paths reports the benchmark's RSS as its own."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_engine(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=spec["collections"])
    subprocess.run(["sync"], check=True)
    cpu = children_cpu()
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--engine-child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - began
    cpu = children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit("engine %s failed:\n%s" % (spec["step"], done.stderr[-4000:]))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = seconds
    result["cpu_seconds"] = cpu  # the engine process, its threads and its children (age, zstd)
    # The engine process's own peak. Its children (the age CLI, a few MiB per pack) report the
    # engine's RSS at fork time as theirs, so their figure (in the JSON) is not added.
    result["rss_mib"] = (result.get("self_hwm_kib") or result["self_maxrss_kib"]) / 1024
    return result


# --------------------------------------------------------------------------
# the runbook, as shell pipelines
# --------------------------------------------------------------------------


def run_shell(stages: list[str], work: Path, durable: str) -> dict:
    """A pipeline of stages (each under GNU time for its peak RSS), then ``sync -f`` on its output."""
    timed = os.access(GNU_TIME, os.X_OK)
    files = [work / ("rss-%d" % number) for number in range(len(stages))]
    if timed:
        command = " | ".join("%s -f %%M -o %s %s" % (GNU_TIME, f, s) for f, s in zip(files, stages))
    else:
        command = " | ".join(stages)
    subprocess.run(["sync"], check=True)
    cpu = children_cpu()
    began = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    seconds = time.monotonic() - began
    cpu = children_cpu() - cpu
    subprocess.run(["sync", "-f", durable], check=True)
    synced = time.monotonic() - began
    rss = sum(int(f.read_text().split()[-1]) for f in files) / 1024 if timed else None
    return {"seconds": seconds, "synced_seconds": synced, "rss_mib": rss, "cpu_seconds": cpu}


# --------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------


def one_run(number: int, args, base: Path, keys: dict) -> dict:
    rng = random.Random(42)
    work = base / ("run-%d" % number)
    work.mkdir()
    store = work / "da"
    paths = make_store(store, args.files, args.min_size, args.max_size, rng)
    spec = dict(keys, store=str(store), repo=str(work / "repo"), state=str(work / "state"))
    archive = work / "runbook.tar.zst.age"
    engine_first = number % 2 == 0
    result: dict = {"engine_first": engine_first, "store_bytes": du(store)}
    saved_digest = tree_digest(store, 10**9)  # tar keeps whole seconds

    def engine_full() -> None:
        result["full"] = run_engine(dict(spec, step="backup"))
        result["full_bytes"] = du(work / "repo")

    def runbook_backup() -> None:
        result["runbook_backup"] = run_shell(
            ["tar -C %s -cf - ." % store, "zstd -q -T0", "age -r %s -o %s" % (keys["recipient"], archive)],
            work,
            str(archive),
        )
        result["runbook_bytes"] = archive.stat().st_size

    for step in (engine_full, runbook_backup) if engine_first else (runbook_backup, engine_full):
        step()

    # Nothing changed: the floor is a stat walk of the tree (listed beside it).
    result["stat_walk"] = stat_walk(store)
    before = du(work / "repo")
    result["unchanged"] = run_engine(dict(spec, step="backup"))
    result["unchanged_bytes"] = du(work / "repo") - before

    time.sleep(0.05)
    result["churn"] = churn(paths, args.change, args.min_size, args.max_size, rng)
    before = du(work / "repo")
    result["incremental"] = run_engine(dict(spec, step="backup"))
    result["incremental_bytes"] = du(work / "repo") - before
    live_digest = tree_digest(store)

    def engine_restore() -> None:
        result["restore"] = run_engine(
            dict(spec, step="restore", epoch=result["incremental"]["epoch"], target=str(work / "restore"))
        )
        result["restore_equal"] = tree_digest(Path(result["restore"]["path"])) == live_digest

    def runbook_restore() -> None:
        target = work / "runbook-restore"
        target.mkdir()
        result["runbook_restore"] = run_shell(
            ["age -d -i %s %s" % (keys["identity"], archive), "zstd -q -d", "tar -C %s -xf -" % target],
            work,
            str(target),
        )
        result["runbook_restore_equal"] = tree_digest(target, 10**9) == saved_digest

    for step in (engine_restore, runbook_restore) if engine_first else (runbook_restore, engine_restore):
        step()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--engine-child":
        print(json.dumps(engine_child(json.loads(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="runs on a fresh store; medians are reported")
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--min-size", type=int, default=512)
    parser.add_argument("--max-size", type=int, default=16384)
    parser.add_argument("--json", help="also write every measurement as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--collections",
        default=str(ROOT / "build" / "collections"),
        help="import the engine from PATH/ansible_collections/nodekeep/backup (e.g. a checkout of another version)",
    )
    args = parser.parse_args()
    for tool in ("age", "age-keygen", "zstd", "tar", "sync"):
        if shutil.which(tool) is None:
            print("missing tool: %s (apt-get install age zstd tar coreutils)" % tool, file=sys.stderr)
            return 2

    from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing

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
        keys = {
            "collections": os.path.abspath(args.collections),
            "recipient": recipient,
            "identity": str(work / "identity"),
            "signing_key": str(key_path),
            "public": signing.public_key_line(pem, "bench"),
        }
        load_before = os.getloadavg()
        busy_before = cpu_busy()
        runs = []
        for number in range(args.runs):
            runs.append(one_run(number, args, work, keys))
            print("run %d/%d done" % (number + 1, args.runs), file=sys.stderr)
        busy_after = cpu_busy()
        load_after = os.getloadavg()
        report(args, runs, load_before, load_after, busy_before, busy_after)
        ok = all(run["restore_equal"] and run["runbook_restore_equal"] for run in runs)
        if args.json:
            Path(args.json).write_text(
                json.dumps({"files": args.files, "change": args.change, "runs": runs}, indent=2) + "\n"
            )
        return 0 if ok else 1
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, runs: list[dict], load_before, load_after, busy_before, busy_after) -> None:
    def med(key: str, field: str = "seconds") -> float:
        return median([run[key][field] for run in runs if run[key].get(field) is not None])

    def ratio(key: str, versus: str, field: str = "seconds") -> float:
        return median([run[key]["seconds"] / run[versus][field] for run in runs])

    first = runs[0]
    print(
        "DA-like store: %d files, %.1f MiB; %d run(s), medians"
        % (args.files, first["store_bytes"] / (1 << 20), len(runs))
    )
    print("%-46s %9s %9s %14s %9s %9s" % ("step", "seconds", "+ sync", "bytes written", "peak RSS", "vs runbook"))
    rows = [
        ("files asset, full backup", "full", "full_bytes", "runbook_backup"),
        (
            "files asset, incremental (%(changed)d changed, %(added)d added)" % first["churn"],
            "incremental",
            "incremental_bytes",
            "runbook_backup",
        ),
        (
            "files asset, restore (equal: %s)" % all(run["restore_equal"] for run in runs),
            "restore",
            None,
            "runbook_restore",
        ),
    ]
    for label, key, bytes_key, versus in rows:
        written = "%14d" % median([run[bytes_key] for run in runs]) if bytes_key else "%14s" % "-"
        print(
            "%-46s %9.2f %9s %s %8.0fM %9.1fx"
            % (label, med(key), "(durable)", written, med(key, "rss_mib"), ratio(key, versus))
        )
    restored_equal = all(run["runbook_restore_equal"] for run in runs)
    for label, key, bytes_key in (
        ("runbook: tar | zstd -T0 | age (every run)", "runbook_backup", "runbook_bytes"),
        ("runbook: age -d | zstd -d | tar -x (equal: %s)" % restored_equal, "runbook_restore", None),
    ):
        written = "%14d" % median([run[bytes_key] for run in runs]) if bytes_key else "%14s" % "-"
        rss = med(key, "rss_mib")
        print("%-46s %9.2f %9.2f %s %8.0fM %10s" % (label, med(key), med(key, "synced_seconds"), written, rss, "1.0x"))
    print(
        "engine / (runbook + sync): full %.1fx, incremental %.1fx, restore %.1fx"
        % (
            ratio("full", "runbook_backup", "synced_seconds"),
            ratio("incremental", "runbook_backup", "synced_seconds"),
            ratio("restore", "runbook_restore", "synced_seconds"),
        )
    )
    print(
        "per run (engine/runbook): full %s; restore %s"
        % (
            ", ".join("%.1f" % (r["full"]["seconds"] / r["runbook_backup"]["seconds"]) for r in runs),
            ", ".join("%.1f" % (r["restore"]["seconds"] / r["runbook_restore"]["seconds"]) for r in runs),
        )
    )
    issue_table(runs)
    cores = (busy_after[0] - busy_before[0]) / max(1.0, busy_after[1] - busy_before[1]) * (os.cpu_count() or 1)
    print(
        "machine: %d cores, load average %.1f before / %.1f after, %.1f cores busy on average (all processes)"
        % (os.cpu_count() or 1, load_before[0], load_after[0], cores)
    )


def issue_table(runs: list[dict]) -> None:
    """Issue 19's table: each step beside the runbook's (made durable with ``sync -f``), ratios and goals."""

    def med(key: str, field: str = "seconds") -> float:
        return median([run[key][field] for run in runs])

    def per_run(numerator: str, denominator: str, field: str = "synced_seconds") -> float:
        return median([run[numerator]["seconds"] / run[denominator][field] for run in runs])

    def engine(key: str) -> str:
        return "%.2f s (%.2f s CPU), %.0f MiB" % (med(key), med(key, "cpu_seconds"), med(key, "rss_mib"))

    def cpu_ratio(numerator: str, denominator: str) -> float:
        return median([run[numerator]["cpu_seconds"] / max(1e-6, run[denominator]["cpu_seconds"]) for run in runs])

    rows = [
        (
            "full backup",
            engine("full"),
            "tar \\| zstd -T0 \\| age + sync: %.2f s (%.2f s CPU)"
            % (med("runbook_backup", "synced_seconds"), med("runbook_backup", "cpu_seconds")),
            "%.2fx (CPU %.2fx)" % (per_run("full", "runbook_backup"), cpu_ratio("full", "runbook_backup")),
            "<= 1.0x, RSS <= 128 MiB",
        ),
        (
            "incremental, %(changed)d changed + %(added)d added" % runs[0]["churn"],
            engine("incremental"),
            "(re-sends everything)",
            "%.2fx the full (CPU %.2fx)"
            % (
                median([run["incremental"]["seconds"] / run["full"]["seconds"] for run in runs]),
                cpu_ratio("incremental", "full"),
            ),
            "<= 0.1x the full",
        ),
        (
            "incremental, nothing changed",
            engine("unchanged"),
            "stat walk (os.walk + lstat): %.2f s (%.2f s CPU)" % (med("stat_walk"), med("stat_walk", "cpu_seconds")),
            "%.1fx the walk (CPU %.1fx)"
            % (
                median([run["unchanged"]["seconds"] / run["stat_walk"]["seconds"] for run in runs]),
                cpu_ratio("unchanged", "stat_walk"),
            ),
            "close to the walk",
        ),
        (
            "restore",
            engine("restore"),
            "age -d \\| zstd -d \\| tar -x + sync: %.2f s (%.2f s CPU)"
            % (med("runbook_restore", "synced_seconds"), med("runbook_restore", "cpu_seconds")),
            "%.2fx (CPU %.2fx)" % (per_run("restore", "runbook_restore"), cpu_ratio("restore", "runbook_restore")),
            "<= 1.0x",
        ),
    ]
    print()
    print("| step | engine | runbook | engine / runbook | goal |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| %s |" % " | ".join(row))
    print()


if __name__ == "__main__":
    sys.exit(main())
