# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: runbook 000's shell procedure against the collection's engine.

    python benchmarks/run.py [--size-mib 500] [--runs 3] [--quick] [--json out.json]

Backs up one generated SQLite database (WAL mode, about --size-mib MiB) while
a separate process writes to it, once with the runbook's commands
(benchmarks/runbook_backup.sh: sqlite3 .backup, PRAGMA integrity_check,
zstd | age, sha256sum) and once with the engine (epoch.backup_epoch in a fresh
Python process), alternating, --runs times each; then restores both results
(benchmarks/runbook_restore.sh: age -d | zstd -d, sha256sum, integrity_check;
engine: epoch.restore_epoch). Prints wall times, their ratio and peak RSS, and
writes everything measured to --json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    MIB,
    RESULTS_DIR,
    BenchError,
    Writer,
    check_tools,
    collections_path,
    environment,
    exit_on_sigterm,
    fmt_mib,
    fmt_seconds,
    generated_database,
    last_json_line,
    loadavg,
    make_keys,
    median,
    remove,
    run_measured,
    settle_and_warm,
    table,
)

NODE = "bench"
BUSY_RUN = 100  # run numbers from here on are the busy-writer runs
TARGET_RATIO = 0.5
TARGET_RSS_MIB = 128
# Stages that run at the same time (a shell pipe): their peaks add up.
CONCURRENT = ({"zstd", "age"}, {"age_decrypt", "zstd_decompress"})


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the runbook procedure
# --------------------------------------------------------------------------


def parse_timing(path: Path) -> dict[str, dict[str, float]]:
    """Lines "STAGE SECONDS PEAK_RSS_KIB EXIT" appended by GNU time (other lines are its notices)."""
    stages: dict[str, dict[str, float]] = {}
    if not path.exists():
        return stages
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        try:
            stages[parts[0]] = {"seconds": float(parts[1]), "rss_kib": int(parts[2]), "exit": int(parts[3])}
        except ValueError:
            continue
    return stages


def rss_summary(stages: dict[str, dict[str, float]]) -> dict[str, int]:
    """Peak RSS of the procedure: of its largest process, and of the processes that ran together."""
    single = max((s["rss_kib"] for s in stages.values()), default=0)
    concurrent = single
    for group in CONCURRENT:
        present = [stages[name]["rss_kib"] for name in group if name in stages]
        if present:
            concurrent = max(concurrent, sum(present))
    return {"rss_max_stage_kib": single, "rss_concurrent_kib": concurrent}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = args.python
        self.work = RESULTS_DIR / ("work-%d" % os.getpid())
        self.keys: dict[str, str] = {}
        self.database = self.work / "node.db"
        self.collections = args.collections or str(collections_path())
        self.runbook_sealed: Path | None = None
        self.runbook_sha256 = ""
        self.engine_repository: Path | None = None
        self.engine_artifact: Path | None = None

    # -- set-up ---------------------------------------------------------

    def prepare(self, size_mib: int) -> dict[str, Any]:
        pristine = generated_database(size_mib, log=log)
        self.work.mkdir(parents=True, exist_ok=True)
        # A fresh copy of the cached database for this invocation: the writer changes it.
        shutil.copyfile(pristine, self.database)
        self.keys = make_keys(self.python, RESULTS_DIR / "keys")
        pages = subprocess.run(
            ["sqlite3", str(self.database), "PRAGMA page_count;", "PRAGMA page_size;", "PRAGMA journal_mode;"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return {
            "path": str(pristine),
            "size": self.database.stat().st_size,
            "page_count": int(pages[0]),
            "page_size": int(pages[1]),
            "journal_mode": pages[2],
        }

    def cleanup(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- one run of each procedure -----------------------------------------

    def runbook_backup(self, index: int, limit: float) -> dict[str, Any]:
        out = self.work / ("runbook-%d.sqlite" % index)
        sealed = Path(str(out) + ".zst.age")
        timing = self.work / ("runbook-backup-%d.timing" % index)
        remove(out, sealed, timing, Path(str(out) + ".check"), Path(str(out) + ".sha256"))
        finished = run_measured(
            [
                "bash",
                str(BENCH_DIR / "runbook_backup.sh"),
                str(self.database),
                str(out),
                self.keys["recipient"],
                str(timing),
                "%g" % limit,
            ]
        )
        stages = parse_timing(timing)
        result: dict[str, Any] = {"wall": finished.wall, "stages": stages, "wait4_maxrss_kib": finished.maxrss_kib}
        result.update(rss_summary(stages))
        result["other_cores"] = finished.other_cpu / finished.wall
        result["cpu_seconds"] = finished.user + finished.system
        backup = stages.get("backup", {})
        if finished.returncode != 0 and backup.get("exit") == 124:
            result["dnf"] = True
            result["partial_copy_bytes"] = out.stat().st_size if out.exists() else 0
            remove(out, sealed, timing)
            return result
        if finished.returncode != 0:
            raise BenchError("the runbook backup failed (exit %d): %s" % (finished.returncode, finished.stderr[-2000:]))
        sums = dict(reversed(line.split()) for line in Path(str(out) + ".sha256").read_text().splitlines())
        result["copy_size"] = out.stat().st_size
        result["sealed_size"] = sealed.stat().st_size
        result["copy_sha256"] = sums[str(out)]
        result["sealed_sha256"] = sums[str(sealed)]
        remove(out, timing, Path(str(out) + ".check"), Path(str(out) + ".sha256"))
        # The newest sealed file of an idle-writer run (and its recorded hash) is the restore benchmark's input.
        if index >= BUSY_RUN:
            remove(sealed)
        else:
            if self.runbook_sealed is not None and self.runbook_sealed != sealed:
                remove(self.runbook_sealed)
            self.runbook_sealed, self.runbook_sha256 = sealed, result["copy_sha256"]
        return result

    def engine(self, action: str, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config, collections=self.collections, bench_dir=str(BENCH_DIR), node=NODE)
        if self.args.engine_variant:
            config["variant"] = json.loads(self.args.engine_variant)
        finished = run_measured([self.python, str(BENCH_DIR / "_engine.py"), action, json.dumps(config)])
        if finished.returncode != 0:
            raise BenchError(
                "the engine %s failed (exit %d): %s" % (action, finished.returncode, finished.stderr[-3000:])
            )
        data = last_json_line(finished.stdout)
        data["process_wall"] = finished.wall
        data["wait4_maxrss_kib"] = finished.maxrss_kib
        data["other_cores"] = finished.other_cpu / finished.wall
        data["cpu_seconds"] = finished.user + finished.system
        return data

    def engine_backup(self, index: int) -> dict[str, Any]:
        repository = self.work / ("engine-repo-%d" % index)
        remove(repository)
        options: dict[str, Any] = {}
        if self.args.check:
            options["check"] = self.args.check
        data = self.engine(
            "backup",
            {
                "recipient": self.keys["recipient"],
                "signing_key": self.keys["signing_key"],
                "repository": str(repository),
                "database": str(self.database),
                "level": self.args.level,
                "asset_options": options,
            },
        )
        # The newest epoch of an idle-writer run is the restore benchmark's input.
        if index >= BUSY_RUN:
            remove(repository)
        else:
            if self.engine_repository is not None and self.engine_repository != repository:
                remove(self.engine_repository)
            self.engine_repository = repository
            self.engine_artifact = repository / NODE / data["epoch"] / data["artifact"]
        data["wall"], data["call_wall"] = data["process_wall"], data["wall"]
        return data

    def runbook_restore(self, index: int) -> dict[str, Any]:
        dest = self.work / ("runbook-restored-%d.sqlite" % index)
        timing = self.work / ("runbook-restore-%d.timing" % index)
        remove(dest, timing)
        finished = run_measured(
            [
                "bash",
                str(BENCH_DIR / "runbook_restore.sh"),
                str(self.runbook_sealed),
                self.keys["identity_file"],
                str(dest),
                self.runbook_sha256,
                str(timing),
            ]
        )
        if finished.returncode != 0:
            raise BenchError(
                "the runbook restore failed (exit %d): %s" % (finished.returncode, finished.stderr[-2000:])
            )
        stages = parse_timing(timing)
        result: dict[str, Any] = {"wall": finished.wall, "stages": stages, "wait4_maxrss_kib": finished.maxrss_kib}
        result.update(rss_summary(stages))
        result["other_cores"] = finished.other_cpu / finished.wall
        result["cpu_seconds"] = finished.user + finished.system
        result["size"] = dest.stat().st_size
        remove(dest, timing, Path(str(dest) + ".sha256"), Path(str(dest) + ".check"))
        return result

    def engine_restore(self, index: int) -> dict[str, Any]:
        target = self.work / ("engine-restored-%d" % index)
        remove(target)
        data = self.engine(
            "restore",
            {
                "identity_file": self.keys["identity_file"],
                "public_key": self.keys["public_key"],
                "repository": str(self.engine_repository),
                "target_root": str(target),
                "check": self.args.check or "integrity",
            },
        )
        remove(target)
        data["wall"], data["call_wall"] = data["process_wall"], data["wall"]
        return data

    # -- comparisons ---------------------------------------------------------

    def attempt(
        self,
        procedure: Callable[[int], dict[str, Any]],
        index: int,
        warm: Callable[[], list[Path]],
        writer_interval: float | None,
    ) -> dict[str, Any]:
        """One timed run; repeated (up to --retries times) while other processes disturbed it.

        The least disturbed attempt is kept. The same rule applies to both procedures.
        """
        best: dict[str, Any] | None = None
        for number in range(1 + max(0, self.args.retries)):
            writer = Writer(self.python, self.database, writer_interval) if writer_interval is not None else None
            try:
                settle_and_warm(*warm())
                result = procedure(index)
            except BaseException:
                if writer is not None:
                    writer.kill()
                raise
            activity = writer.stop() if writer is not None else None
            if activity is not None:
                result["writer"] = activity
                # The writer is part of the benchmark, not interference.
                writer_cpu = activity.get("cpu_seconds", 0.0)
                result["other_cores"] = max(0.0, result["other_cores"] - writer_cpu / max(result["wall"], 1e-6))
            result["attempt"] = number + 1
            if best is None or result["other_cores"] < best["other_cores"]:
                best = result
            if result.get("dnf") or result["other_cores"] <= self.args.max_interference:
                break
            if number < self.args.retries:
                log("  (run disturbed: other processes used %.2f cores; repeating it)" % result["other_cores"])
        return best

    def compare(
        self,
        runbook: Callable[[int], dict[str, Any]],
        engine: Callable[[int], dict[str, Any]],
        warm: Callable[[], list[Path]],
        writer_interval: float | None,
        runs: int,
        label: str,
    ) -> dict[str, Any]:
        """Alternate the two procedures (runbook first on even runs), same cache policy, optional writer."""
        outcome: dict[str, list[dict[str, Any]]] = {"runbook": [], "engine": []}
        runbook_gave_up = False
        for index in range(runs):
            order = [("runbook", runbook), ("engine", engine)]
            if index % 2:
                order.reverse()
            for name, procedure in order:
                if name == "runbook" and runbook_gave_up:
                    continue
                result = self.attempt(procedure, index, warm, writer_interval)
                outcome[name].append(result)
                log(
                    "  %s run %d/%d %-7s %s  peak RSS %s MiB"
                    % (
                        label,
                        index + 1,
                        runs,
                        name,
                        "did not finish (%.0f s limit)" % result["wall"]
                        if result.get("dnf")
                        else "%.2f s" % result["wall"],
                        fmt_mib(result.get("rss_concurrent_kib", result.get("maxrss_kib"))),
                    )
                )
                if result.get("dnf"):
                    runbook_gave_up = True  # it will not finish the next time either
        return summarize(outcome)


def summarize(outcome: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"runs": outcome}
    runbook = [r for r in outcome["runbook"] if not r.get("dnf")]
    engine = outcome["engine"]
    summary["runbook_dnf"] = any(r.get("dnf") for r in outcome["runbook"])
    summary["runbook_limit"] = max((r["wall"] for r in outcome["runbook"] if r.get("dnf")), default=None)
    summary["runbook_wall"] = median([r["wall"] for r in runbook]) if runbook else None
    summary["runbook_rss_max_stage_kib"] = max((r["rss_max_stage_kib"] for r in runbook), default=None)
    summary["runbook_rss_concurrent_kib"] = max((r["rss_concurrent_kib"] for r in runbook), default=None)
    stages: dict[str, dict[str, float]] = {}
    for name in runbook[0]["stages"] if runbook else {}:
        stages[name] = {
            "seconds": median([r["stages"][name]["seconds"] for r in runbook if name in r["stages"]]),
            "rss_kib": max(r["stages"][name]["rss_kib"] for r in runbook if name in r["stages"]),
        }
    summary["runbook_stages"] = stages
    summary["runbook_cpu"] = median([r["cpu_seconds"] for r in runbook]) if runbook else None
    summary["engine_cpu"] = median([r["cpu_seconds"] for r in engine])
    summary["engine_wall"] = median([r["wall"] for r in engine])
    summary["engine_call_wall"] = median([r["call_wall"] for r in engine])
    summary["engine_rss_kib"] = max(r["maxrss_kib"] for r in engine)
    for key in ("copy_seconds", "check_seconds", "import_seconds", "user_seconds", "system_seconds"):
        values = [r[key] for r in engine if r.get(key) is not None]
        if values:
            summary["engine_" + key] = median(values)
    # Each run index pairs one runbook run with the engine run next to it (same conditions, alternating
    # order): the ratio is the median of those paired ratios, not a ratio of medians taken apart.
    pairs = [
        (e["wall"] / r["wall"], e["cpu_seconds"] / r["cpu_seconds"])
        for r, e in zip(outcome["runbook"], engine)
        if not r.get("dnf") and r["wall"] and r["cpu_seconds"]
    ]
    summary["paired_ratios"] = [round(p[0], 3) for p in pairs]
    summary["paired_cpu_ratios"] = [round(p[1], 3) for p in pairs]
    if summary["runbook_wall"]:
        summary["ratio_of_medians"] = summary["engine_wall"] / summary["runbook_wall"]
        summary["ratio"] = median([p[0] for p in pairs])
        summary["cpu_ratio"] = median([p[1] for p in pairs])
    elif summary["runbook_limit"]:
        summary["ratio_below"] = summary["engine_wall"] / summary["runbook_limit"]
    others = [r["other_cores"] for name in outcome for r in outcome[name] if "other_cores" in r]
    summary["other_cores_median"] = median(others) if others else 0.0
    summary["other_cores_max"] = max(others, default=0.0)
    writers = {name: [r["writer"] for r in outcome[name] if r.get("writer")] for name in outcome}
    for name, activity in writers.items():
        if activity:
            seconds = sum(a["seconds"] for a in activity) or 1.0
            summary["writer_" + name] = {
                "commits_per_second": round(sum(a["commits"] for a in activity) / seconds, 1),
                "slowest_commit": max(a["slowest_commit"] for a in activity),
                "busy": sum(a["busy"] for a in activity),
            }
    return summary


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def _runbook_cell(summary: dict[str, Any]) -> str:
    if summary["runbook_wall"] is not None:
        return fmt_seconds(summary["runbook_wall"])
    return "DNF >%.0f" % summary["runbook_limit"]


def _ratio_cells(summary: dict[str, Any]):
    if summary.get("ratio") is not None:
        return "%.2f" % summary["ratio"], "%.1fx" % (1 / summary["ratio"])
    if summary.get("ratio_below") is not None:
        return "<%.2f" % summary["ratio_below"], ">%.1fx" % (1 / summary["ratio_below"])
    return "-", "-"


def report(result: dict[str, Any]) -> str:
    env = result["environment"]
    db = result["database"]
    conf = result["config"]
    lines = [
        "",
        "nodekeep.backup benchmark: runbook 000 shell procedure vs the engine (median of %d runs)" % conf["runs"],
        "",
        "environment: %s cores (%s), %s MiB RAM, %s, kernel %s, %s; load average %s at start, %s at end"
        % (
            env["usable_cores"],
            env["cpu"],
            env["memory_mib"],
            env["os"],
            env["kernel"],
            env["filesystem"],
            result["loadavg_start"],
            result["loadavg_end"],
        ),
        "versions: sqlite3 CLI %s, %s, %s, coreutils %s; Python %s: apsw %s (SQLite %s), pyrage %s, zstandard %s "
        "(libzstd %s), cryptography %s"
        % (
            env["sqlite3_cli"],
            env["age_cli"] if env["age_cli"].startswith("age") else "age " + env["age_cli"],
            env["zstd_cli"].replace("*** ", "").split(", by", 1)[0],
            env["coreutils"],
            env["py_python"],
            env["py_apsw"],
            env.get("py_apsw_sqlite"),
            env["py_pyrage"],
            env["py_zstandard"],
            env.get("py_libzstd"),
            env["py_cryptography"],
        ),
        "database: %.0f MiB, %d pages of %d bytes, journal_mode %s (generated, cached in %s)"
        % (db["size"] / MIB, db["page_count"], db["page_size"], db["journal_mode"], db["path"]),
        "policy: sync, then inputs read once (warm page cache) before every timed run; runbook and engine "
        "alternate; engine level %d, check %s%s"
        % (conf["level"], conf["check"], (", variant %s" % conf["engine_variant"]) if conf["engine_variant"] else ""),
        "",
    ]
    rows = []
    names = {
        "backup_idle": "backup, writer connected (idle)",
        "backup_busy": "backup, writer %.0f commits/s" % (1 / conf["writer_interval"]),
        "restore": "restore",
    }
    for key, label in names.items():
        summary = result.get(key)
        if not summary:
            continue
        ratio_text, speedup = _ratio_cells(summary)
        rows.append(
            [
                label,
                _runbook_cell(summary),
                fmt_seconds(summary["engine_wall"]),
                ratio_text,
                speedup,
                "%s / %s"
                % (fmt_mib(summary["runbook_rss_max_stage_kib"]), fmt_mib(summary["runbook_rss_concurrent_kib"])),
                fmt_mib(summary["engine_rss_kib"]),
                "%s / %s" % (fmt_seconds(summary["runbook_cpu"]), fmt_seconds(summary["engine_cpu"])),
            ]
        )
    lines.append(
        table(
            [
                "stage",
                "runbook s",
                "engine s",
                "engine/runbook",
                "speed-up",
                "runbook peak RSS MiB (largest process / concurrent sum)",
                "engine peak RSS MiB",
                "CPU s runbook / engine",
            ],
            rows,
        )
    )
    lines.append("")
    lines.append(
        "engine/runbook: median of the per-run ratios (each engine run against the runbook run beside it, "
        "alternating order); per run: %s"
        % "; ".join(
            "%s %s (CPU %s)"
            % (
                key,
                " ".join("%.2f" % v for v in result[key].get("paired_ratios", [])) or "-",
                " ".join("%.2f" % v for v in result[key].get("paired_cpu_ratios", [])) or "-",
            )
            for key in names
            if result.get(key)
        )
    )
    lines.append(
        "engine s: the whole engine process, from spawn to exit (interpreter start and imports included); "
        "engine peak RSS: ru_maxrss of that process (all its threads) plus the peak of its one subprocess "
        "(the age CLI, when it encrypts), which runs at the same time."
    )
    lines.append(
        "runbook s: the whole bash procedure; its peak RSS: GNU time per command; the concurrent sum adds the "
        "stages of a pipe (zstd | age, age -d | zstd -d), which run at the same time."
    )
    busy = result.get("backup_busy")
    if busy and busy["runbook_dnf"]:
        lines.append(
            "DNF: under the busy writer the runbook's `sqlite3 .backup` restarts its copy at every commit of "
            "another process and did not finish within %.0f s (it reached %.0f MiB of %.0f); the engine pins one "
            "read snapshot and is not restarted."
            % (
                busy["runbook_limit"],
                max(r.get("partial_copy_bytes", 0) for r in busy["runs"]["runbook"]) / MIB,
                db["size"] / MIB,
            )
        )
    lines.append("")
    for key, label in names.items():
        summary = result.get(key)
        if not summary:
            continue
        if summary["runbook_stages"]:
            stage_text = ", ".join(
                "%s %s s/%s MiB" % (name, fmt_seconds(s["seconds"]), fmt_mib(s["rss_kib"]))
                for name, s in summary["runbook_stages"].items()
            )
            lines.append("runbook %s: %s" % (label, stage_text))
        engine_text = "engine %s: call %s s + interpreter start and imports; " % (
            label,
            fmt_seconds(summary["engine_call_wall"]),
        )
        if "engine_copy_seconds" in summary:
            engine_text += "copy %s s, check %s s (as the engine reports them); " % (
                fmt_seconds(summary["engine_copy_seconds"]),
                fmt_seconds(summary.get("engine_check_seconds")),
            )
        engine_text += "CPU user %s s, system %s s" % (
            fmt_seconds(summary.get("engine_user_seconds")),
            fmt_seconds(summary.get("engine_system_seconds")),
        )
        lines.append(engine_text)
        for name in ("runbook", "engine"):
            activity = summary.get("writer_" + name)
            if activity:
                lines.append(
                    "  writer during %s runs: %.1f commits/s, slowest commit %.0f ms, %d busy errors"
                    % (name, activity["commits_per_second"], activity["slowest_commit"] * 1000, activity["busy"])
                )
    others = [result[k]["other_cores_max"] for k in names if result.get(k)]
    medians = [result[k]["other_cores_median"] for k in names if result.get(k)]
    lines.append("")
    lines.append(
        "interference: other processes on this machine used %.2f cores on average during the kept runs "
        "(worst %.2f; runs above %.2f were repeated up to %d times, the least disturbed attempt kept)"
        % (median(medians), max(others, default=0.0), conf["max_interference"], conf["retries"])
    )
    if median(medians) > 0.25:
        lines.append(
            "WARNING: the machine was busy with other work; wall times (and their ratio) are unreliable. "
            "Run again when it is idle."
        )
    targets = result["targets"]
    lines.append(
        "target: sealed backup in <= %.1f x the runbook's wall time (writer idle, the runbook's best case): %s"
        % (TARGET_RATIO, targets["ratio"])
    )
    lines.append("target: engine peak RSS <= %d MiB: %s" % (TARGET_RSS_MIB, targets["rss"]))
    return "\n".join(lines)


def evaluate_targets(result: dict[str, Any]) -> dict[str, Any]:
    idle = result.get("backup_idle") or {}
    value = idle.get("ratio")
    rss = max(
        (result[k]["engine_rss_kib"] for k in ("backup_idle", "backup_busy", "restore") if result.get(k)), default=0
    )
    return {
        "ratio_value": value,
        "ratio_met": value is not None and value <= TARGET_RATIO,
        "ratio": ("MET (%.2f)" if value is not None and value <= TARGET_RATIO else "NOT MET (%.2f)") % (value or 0),
        "rss_mib": rss / 1024.0,
        "rss_met": rss / 1024.0 <= TARGET_RSS_MIB,
        "rss": ("MET (%.1f MiB)" if rss / 1024.0 <= TARGET_RSS_MIB else "NOT MET (%.1f MiB)") % (rss / 1024.0),
    }


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=500, help="size of the generated database (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each procedure per comparison (default 3)")
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 run (the smoke test)")
    parser.add_argument("--json", metavar="OUT", help="write every measurement to this JSON file")
    parser.add_argument(
        "--writer-interval",
        type=float,
        default=0.05,
        help="seconds between the busy writer's commits (default 0.05: 20 commits/s)",
    )
    parser.add_argument("--no-busy", action="store_true", help="skip the comparison under the busy writer")
    parser.add_argument(
        "--max-interference",
        type=float,
        default=0.25,
        help="repeat a run while other processes used more than this many cores during it (default 0.25)",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2; 0: never)")
    parser.add_argument(
        "--runbook-timeout",
        type=float,
        default=None,
        help="limit of the runbook's .backup under the busy writer (default: 10 x its idle time, at least 5 s)",
    )
    parser.add_argument("--level", type=int, default=3, help="engine zstd level (default 3, the module's default)")
    parser.add_argument(
        "--check", choices=("integrity", "quick"), default="integrity", help="engine check (default integrity)"
    )
    parser.add_argument(
        "--engine-variant",
        metavar="JSON",
        help="run the engine with a scratch prototype of proposed changes (see benchmarks/_variants.py), "
        'e.g. \'{"fast_copy": true, "concurrent_check": true}\'',
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for engine runs (default: this one)")
    parser.add_argument(
        "--collections",
        metavar="PATH",
        help="import the engine from PATH/ansible_collections/nodekeep/backup instead of this checkout "
        "(to measure another version of the engine, e.g. the committed one, under the same conditions)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory under benchmarks/results")
    parser.add_argument(
        "--files-args",
        default="",
        help="arguments for the files asset's comparison (benchmarks/files_incremental.py), run after the SQLite one "
        "in the same invocation: its table (issue 19) with ratios against tar | zstd | age",
    )
    parser.add_argument("--no-files", action="store_true", help="skip the files asset's comparison")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.runs = 64, 1
    if args.runs < 1 or args.size_mib < 1:
        parser.error("--runs and --size-mib must be positive")
    return args


def files_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """The files asset against runbook 000's ``tar | zstd | age`` (benchmarks/files_incremental.py), in this run."""
    log("files asset: full, incremental, restore against tar | zstd | age")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ("files-%d.json" % os.getpid())
    collections = args.collections or str(Path(__file__).resolve().parent.parent / "build" / "collections")
    command = [args.python, str(Path(__file__).resolve().parent / "files_incremental.py")]
    command += [*args.files_args.split(), "--json", str(out), "--collections", collections]
    done = subprocess.run(command, env=dict(os.environ, PYTHONPATH=collections), check=False)
    try:
        measured = json.loads(out.read_text()) if out.exists() else {}
    finally:
        remove(out)
    if done.returncode != 0:
        raise BenchError("the files comparison failed (exit status %d)" % done.returncode)
    return measured


def check_engine_python(python: str) -> None:
    code = "import apsw, pyrage, zstandard, cryptography"
    result = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(
            "%s cannot import the engine's libraries (%s); run with a Python that has requirements/node.txt, "
            "e.g. .venv/bin/python benchmarks/run.py" % (python, result.stderr.strip().splitlines()[-1])
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    check_tools()
    check_engine_python(args.python)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    result: dict[str, Any] = {
        "config": {
            "size_mib": args.size_mib,
            "runs": args.runs,
            "writer_interval": args.writer_interval,
            "level": args.level,
            "check": args.check,
            "engine_variant": args.engine_variant,
            "quick": args.quick,
            "max_interference": args.max_interference,
            "retries": args.retries,
            "collections": args.collections,
        },
        "environment": environment(args.python),
        "loadavg_start": loadavg(),
    }
    began = time.monotonic()
    try:
        result["database"] = bench.prepare(args.size_mib)
        database = bench.database
        log("backup, writer connected but idle (%d runs each)" % args.runs)
        result["backup_idle"] = bench.compare(
            lambda i: bench.runbook_backup(i, 0),
            bench.engine_backup,
            lambda: [database],
            -1.0,
            args.runs,
            "backup/idle",
        )
        if not args.no_busy:
            idle_copy = result["backup_idle"]["runbook_stages"].get("backup", {}).get("seconds", 1.0)
            limit = args.runbook_timeout or max(5.0, 10 * idle_copy)
            log(
                "backup, writer committing every %g s (runbook .backup limited to %.0f s)"
                % (args.writer_interval, limit)
            )
            result["backup_busy"] = bench.compare(
                lambda i: bench.runbook_backup(BUSY_RUN + i, limit),
                lambda i: bench.engine_backup(BUSY_RUN + i),
                lambda: [database],
                args.writer_interval,
                args.runs,
                "backup/busy",
            )
        log("restore (%d runs each)" % args.runs)
        result["restore"] = bench.compare(
            bench.runbook_restore,
            bench.engine_restore,
            lambda: [p for p in (bench.runbook_sealed, bench.engine_artifact) if p is not None],
            None,
            args.runs,
            "restore",
        )
    finally:
        bench.cleanup()
    result["seconds"] = round(time.monotonic() - began, 1)
    result["loadavg_end"] = loadavg()
    result["targets"] = evaluate_targets(result)
    print(report(result), flush=True)
    if not args.no_files:
        result["files"] = files_comparison(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2, sort_keys=True)
            handle.write("\n")
        log("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print("benchmark failed: %s" % exc, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
