# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the engine's backup and restore time goes, and what proposed changes would gain.

    python benchmarks/profile_engine.py [--size-mib 500] [--runs 3] [--json out.json] [--only stages|backup|restore]

Three parts, every measurement in a fresh Python process (so each peak RSS is
its own), on the same generated database as benchmarks/run.py, warm page cache:

1. stages: each piece of the backup path alone: the SQLite online-backup copy
   (pages_per_step, destination journal/fsync settings), the integrity check
   (integrity vs quick, page cache size), SHA-256, zstd (level, threads),
   pyrage encryption, and seal() as a whole (level, pipe and read sizes).
2. backup: epoch.backup_epoch end to end, as the engine is, and with the
   scratch prototypes of benchmarks/_variants.py, alternating, median of --runs.
3. restore: epoch.restore_epoch end to end, as is and with the restore variant.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    MIB,
    RESULTS_DIR,
    BenchError,
    collections_path,
    environment,
    exit_on_sigterm,
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

# --------------------------------------------------------------------------
# part 1: one stage in this (child) process
# --------------------------------------------------------------------------


class _CountingSink:
    """A sink that only counts: isolates a stage from disk writes."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _stage_copy(params: dict[str, Any]) -> dict[str, Any]:
    import apsw

    dest = params["dest"]
    remove(Path(dest))
    began = time.monotonic()
    source = apsw.Connection(params["db"], flags=apsw.SQLITE_OPEN_READONLY)
    source.execute("BEGIN")
    source.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    destination = apsw.Connection(dest)
    if params.get("fast"):
        destination.execute("PRAGMA journal_mode=OFF").fetchall()
        destination.execute("PRAGMA synchronous=OFF")
    with destination.backup("main", source, "main") as backup:
        while not backup.done:
            backup.step(int(params["pages_per_step"]))
    destination.close()
    source.execute("ROLLBACK")
    source.close()
    copied = time.monotonic()
    if params.get("fsync"):
        with open(dest, "rb+") as handle:
            os.fsync(handle.fileno())
    done = time.monotonic()
    return {"seconds": done - began, "copy_seconds": copied - began, "fsync_seconds": done - copied}


def _stage_check(params: dict[str, Any]) -> dict[str, Any]:
    import apsw

    connection = apsw.Connection(
        "file:%s?immutable=1" % params["copy"], flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    connection.execute("PRAGMA cache_size=-%d" % int(params.get("cache_kib", 2000)))
    began = time.monotonic()
    rows = [r[0] for r in connection.execute("PRAGMA %s" % params["pragma"])]
    seconds = time.monotonic() - began
    if rows != ["ok"]:
        raise BenchError("check failed: %s" % rows[:3])
    return {"seconds": seconds}


def _stage_sha256(params: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    digest = hashlib.sha256()
    began = time.monotonic()
    with open(params["copy"], "rb") as source:
        for chunk in seal._read_chunks(source):
            digest.update(chunk)
    return {"seconds": time.monotonic() - began}


def _stage_zstd(params: dict[str, Any]) -> dict[str, Any]:
    import zstandard

    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    sink = _CountingSink()
    began = time.monotonic()
    compressor = zstandard.ZstdCompressor(
        level=int(params["level"]), threads=int(params["threads"]), write_checksum=True
    )
    writer = compressor.stream_writer(sink, closefd=False)
    with open(params["copy"], "rb") as source:
        for chunk in seal._read_chunks(source, int(params.get("chunk", seal.CHUNK_SIZE))):
            writer.write(chunk)
    writer.flush(zstandard.FLUSH_FRAME)
    seconds = time.monotonic() - began
    if params.get("keep"):
        with open(params["copy"], "rb") as source, open(params["keep"], "wb") as out:
            compressor.copy_stream(source, out, read_size=seal.CHUNK_SIZE)
    return {"seconds": seconds, "out_bytes": sink.size}


def _stage_pyrage(params: dict[str, Any]) -> dict[str, Any]:
    import pyrage

    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    recipients = seal.load_recipients([params["recipient"]])
    sink = _CountingSink()
    began = time.monotonic()
    with open(params["compressed"], "rb") as source:
        pyrage.encrypt_io(source, sink, recipients)
    return {"seconds": time.monotonic() - began, "out_bytes": sink.size}


def _stage_seal(params: dict[str, Any]) -> dict[str, Any]:
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    if params.get("pipe_size"):
        seal.PIPE_SIZE = int(params["pipe_size"])
    if params.get("chunk"):
        seal.CHUNK_SIZE = int(params["chunk"])
        seal._read_chunks.__defaults__ = (int(params["chunk"]),)
    recipients = seal.load_recipients([params["recipient"]])
    began = time.monotonic()
    fsync_seconds = 0.0
    with open(params["copy"], "rb") as source:
        if params.get("to_file"):
            with open(params["to_file"], "wb", buffering=1 << 20) as sink:
                result = seal.seal(source, sink, recipients, level=int(params["level"]), threads=int(params["threads"]))
                sink.flush()
                synced = time.monotonic()
                os.fsync(sink.fileno())
                fsync_seconds = time.monotonic() - synced
            os.unlink(params["to_file"])
        else:
            result = seal.seal(
                source, _CountingSink(), recipients, level=int(params["level"]), threads=int(params["threads"])
            )
    return {"seconds": time.monotonic() - began, "fsync_seconds": fsync_seconds, "out_bytes": result.sealed.size}


STAGES = {
    "copy": _stage_copy,
    "check": _stage_check,
    "sha256": _stage_sha256,
    "zstd": _stage_zstd,
    "pyrage": _stage_pyrage,
    "seal": _stage_seal,
}


def child(stage: str, params: dict[str, Any]) -> int:
    sys.path.insert(0, params["collections"])
    outcome = STAGES[stage](params)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome.update({"maxrss_kib": usage.ru_maxrss, "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime})
    print(json.dumps(outcome), flush=True)
    return 0


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------


class Profiler:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = args.python
        self.work = RESULTS_DIR / ("profile-%d" % os.getpid())
        self.collections = str(collections_path())
        self.restore_source = self.work / "restore-source"

    def stage(self, stage: str, params: dict[str, Any], warm: list[Path]) -> dict[str, Any]:
        runs = []
        params = dict(params, collections=self.collections)

        def once() -> dict[str, Any]:
            settle_and_warm(*warm)
            finished = run_measured([self.python, __file__, "--child", stage, json.dumps(params)])
            if finished.returncode != 0:
                raise BenchError("stage %s failed: %s" % (stage, finished.stderr[-2000:]))
            data = last_json_line(finished.stdout)
            data["other_cores"] = finished.other_cpu / finished.wall
            return data

        for _run in range(self.args.stage_runs):
            runs.append(self.least_disturbed(once))
        best = {key: median([r[key] for r in runs]) for key in runs[0]}
        best["maxrss_kib"] = max(r["maxrss_kib"] for r in runs)
        return best

    def stages(self, database: Path, keys: dict[str, str]) -> list[dict[str, Any]]:
        copy = self.work / "copy.sqlite"
        compressed = self.work / "copy.zst"
        rows: list[dict[str, Any]] = []

        def record(name: str, stage: str, params: dict[str, Any], warm: list[Path]) -> dict[str, Any]:
            outcome = self.stage(stage, params, warm)
            outcome["name"] = name
            rows.append(outcome)
            print(
                "  %-66s %6.2f s  cpu %5.2f+%5.2f s  rss %5.1f MiB  other load %.2f%s"
                % (
                    name,
                    outcome["seconds"],
                    outcome["user_seconds"],
                    outcome["system_seconds"],
                    outcome["maxrss_kib"] / 1024.0,
                    outcome["other_cores"],
                    "  out %.0f MiB" % (outcome["out_bytes"] / MIB) if outcome.get("out_bytes") else "",
                ),
                flush=True,
            )
            return outcome

        for pages in (100, 1024, 4096, -1):
            record(
                "copy: backup API, %s pages/step, default dest (journal, sync=FULL)" % pages,
                "copy",
                {"db": str(database), "dest": str(copy), "pages_per_step": pages, "fsync": True},
                [database],
            )
        for pages in (1024, -1):
            record(
                "copy: %s pages/step, dest journal_mode=OFF synchronous=OFF, fsync" % pages,
                "copy",
                {"db": str(database), "dest": str(copy), "pages_per_step": pages, "fast": True, "fsync": True},
                [database],
            )
            record(
                "copy: %s pages/step, dest journal_mode=OFF synchronous=OFF, no fsync" % pages,
                "copy",
                {"db": str(database), "dest": str(copy), "pages_per_step": pages, "fast": True},
                [database],
            )
        for pragma, cache in (
            ("integrity_check", 2000),
            ("integrity_check", 16384),
            ("integrity_check", 65536),
            ("quick_check", 2000),
        ):
            record(
                "check: PRAGMA %s, cache %d KiB" % (pragma, cache),
                "check",
                {"copy": str(copy), "pragma": pragma, "cache_kib": cache},
                [copy],
            )
        record("sha256: hashlib, 4 MiB reads", "sha256", {"copy": str(copy)}, [copy])
        for level in (1, 3):
            for threads in (0, 1, -1):
                record(
                    "zstd: level %d, threads %d, 4 MiB writes" % (level, threads),
                    "zstd",
                    {
                        "copy": str(copy),
                        "level": level,
                        "threads": threads,
                        "keep": str(compressed) if level == 3 and threads == -1 else "",
                    },
                    [copy],
                )
        record(
            "pyrage: encrypt_io of the zstd -3 stream",
            "pyrage",
            {"compressed": str(compressed), "recipient": keys["recipient"]},
            [compressed],
        )
        for level in (1, 3):
            for threads in (-1, 0):
                record(
                    "seal(): level %d, threads %d, to a counting sink" % (level, threads),
                    "seal",
                    {"copy": str(copy), "recipient": keys["recipient"], "level": level, "threads": threads},
                    [copy],
                )
        for level in (1, 3):
            record(
                "seal(): level %d, threads -1, to a file + fsync" % level,
                "seal",
                {
                    "copy": str(copy),
                    "recipient": keys["recipient"],
                    "level": level,
                    "threads": -1,
                    "to_file": str(self.work / "sealed.age"),
                },
                [copy],
            )
        for pipe, chunk in ((64 << 10, 4 << 20), (4 << 20, 4 << 20), (1 << 20, 1 << 20), (4 << 20, 16 << 20)):
            record(
                "seal(): level 1, threads -1, pipe %d KiB, reads %d MiB" % (pipe >> 10, chunk >> 20),
                "seal",
                {
                    "copy": str(copy),
                    "recipient": keys["recipient"],
                    "level": 1,
                    "threads": -1,
                    "pipe_size": pipe,
                    "chunk": chunk,
                },
                [copy],
            )
        remove(copy, compressed)
        return rows

    def least_disturbed(self, once) -> dict[str, Any]:
        """Run ``once`` again (up to --retries times) while other processes disturbed it; keep the calmest."""
        best: dict[str, Any] | None = None
        for number in range(1 + max(0, self.args.retries)):
            data = once()
            if best is None or data["other_cores"] < best["other_cores"]:
                best = data
            if data["other_cores"] <= self.args.max_interference or number >= self.args.retries:
                break
            print("  (disturbed: other processes used %.2f cores; repeating)" % data["other_cores"], flush=True)
        return best

    def variant_once(self, action: str, variant: dict[str, Any], database: Path, keys: dict[str, str]):
        if action == "backup":
            target = self.work / "repo"
            remove(target)
            settle_and_warm(database)
            data = self.engine(
                "backup",
                {
                    "recipient": keys["recipient"],
                    "signing_key": keys["signing_key"],
                    "repository": str(target),
                    "database": str(database),
                    "level": variant.get("level", 3),
                    "asset_options": variant.get("asset_options", {}),
                    "variant": variant.get("variant"),
                },
            )
        else:
            target = self.work / "restored"
            remove(target)
            settle_and_warm(*(self.restore_source / "bench").glob("*/*.age"))
            data = self.engine(
                "restore",
                {
                    "identity_file": keys["identity_file"],
                    "public_key": keys["public_key"],
                    "repository": str(self.restore_source),
                    "target_root": str(target),
                    "variant": variant.get("variant"),
                },
            )
        remove(target)
        return data

    def engine(self, action: str, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config, collections=self.collections, bench_dir=str(BENCH_DIR), node="bench")
        finished = run_measured([self.python, str(BENCH_DIR / "_engine.py"), action, json.dumps(config)])
        if finished.returncode != 0:
            raise BenchError("engine %s failed: %s" % (action, finished.stderr[-3000:]))
        data = last_json_line(finished.stdout)
        data["process_wall"] = finished.wall
        data["other_cores"] = finished.other_cpu / finished.wall
        return data

    def variants(
        self, action: str, variants: list[dict[str, Any]], database: Path, keys: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Each variant --runs times, interleaved (v1 v2 ... vN, then again), medians."""
        results: dict[str, list[dict[str, Any]]] = {v["name"]: [] for v in variants}
        repository = self.restore_source
        if action == "restore":
            remove(repository)
            self.engine(
                "backup",
                {
                    "recipient": keys["recipient"],
                    "signing_key": keys["signing_key"],
                    "repository": str(repository),
                    "database": str(database),
                    "level": 3,
                },
            )
        for run in range(self.args.runs):
            order = variants if run % 2 == 0 else list(reversed(variants))
            for variant in order:
                data = self.least_disturbed(functools.partial(self.variant_once, action, variant, database, keys))
                results[variant["name"]].append(data)
                print(
                    "  %s %-62s %6.2f s (call %.2f s) rss %5.1f MiB other load %.2f"
                    % (
                        action,
                        variant["name"],
                        data["process_wall"],
                        data["wall"],
                        data["maxrss_kib"] / 1024.0,
                        data["other_cores"],
                    ),
                    flush=True,
                )
        rows = []
        for variant in variants:
            runs = results[variant["name"]]
            row = {"name": variant["name"], "variant": variant, "runs": runs}
            for key in (
                "process_wall",
                "wall",
                "copy_seconds",
                "check_seconds",
                "user_seconds",
                "system_seconds",
                "size",
                "other_cores",
            ):
                values = [r[key] for r in runs if r.get(key) is not None]
                if values:
                    row[key] = median(values)
            row["maxrss_kib"] = max(r["maxrss_kib"] for r in runs)
            rows.append(row)
        if action == "restore":
            remove(repository)
        return rows


BACKUP_VARIANTS: list[dict[str, Any]] = [
    {"name": "engine as is (level 3)"},
    {"name": "level 1", "level": 1},
    {"name": "fast copy (no dest journal/fsync, no scratch fsync)", "variant": {"fast_copy": True}},
    {"name": "check concurrent with seal", "variant": {"concurrent_check": True}},
    {"name": "fast copy + concurrent check", "variant": {"fast_copy": True, "concurrent_check": True}},
    {
        "name": "fast copy + concurrent check + level 1",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True},
    },
    {
        "name": "fast copy + concurrent check + level 1, commit gated by the check",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True, "gate_commit": True},
    },
    {
        "name": "fast copy + concurrent check + level 1 + zstd threads 1",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True, "threads": 1},
    },
    {
        "name": "fast copy + concurrent check + niced seal (19)",
        "variant": {"fast_copy": True, "concurrent_check": True, "nice_seal": 19},
    },
    {
        "name": "fast copy + concurrent check + level 1 + niced seal (19)",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True, "nice_seal": 19},
    },
    {
        "name": "fast copy + concurrent check + level 1 + check cache 16 MiB",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True, "check_cache_kib": 16384},
    },
    {
        "name": "fast copy + concurrent check + level 1, pages_per_step -1",
        "level": 1,
        "asset_options": {"pages_per_step": -1},
        "variant": {"fast_copy": True, "concurrent_check": True},
    },
    {
        "name": "fast copy + concurrent check + level 1 + check via mmap (RSS!)",
        "level": 1,
        "variant": {"fast_copy": True, "concurrent_check": True, "check_mmap_mib": 65536},
    },
    {"name": "(weaker check) engine as is, check quick", "asset_options": {"check": "quick"}},
    {
        "name": "(weaker check) fast copy + concurrent quick check + level 1",
        "level": 1,
        "asset_options": {"check": "quick"},
        "variant": {"fast_copy": True, "concurrent_check": True},
    },
]

RESTORE_VARIANTS: list[dict[str, Any]] = [
    {"name": "engine as is"},
    {"name": "fsync of the staged file concurrent with the check", "variant": {"restore_fsync_concurrent": True}},
    {
        "name": "concurrent fsync + check via mmap (RSS!)",
        "variant": {"restore_fsync_concurrent": True, "check_mmap_mib": 65536},
    },
]


def _variant_table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["process_wall"]
    return table(
        [
            "variant",
            "wall s",
            "vs as is",
            "call s",
            "copy s",
            "check s",
            "CPU user+sys s",
            "peak RSS MiB",
            "sealed MiB",
            "other load",
        ],
        [
            [
                r["name"],
                fmt_seconds(r["process_wall"]),
                "%+.0f%%" % (100.0 * (r["process_wall"] - base) / base),
                fmt_seconds(r["wall"]),
                fmt_seconds(r.get("copy_seconds")),
                fmt_seconds(r.get("check_seconds")),
                fmt_seconds((r.get("user_seconds") or 0) + (r.get("system_seconds") or 0)),
                "%.1f" % (r["maxrss_kib"] / 1024.0),
                "%.0f" % (r["size"] / MIB) if r.get("size") else "-",
                "%.2f" % r.get("other_cores", 0.0),
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="end-to-end runs per variant (default 3)")
    parser.add_argument("--stage-runs", type=int, default=1, help="runs per isolated stage (default 1)")
    parser.add_argument("--only", choices=("stages", "backup", "restore"), action="append")
    parser.add_argument("--max-interference", type=float, default=0.25, help="repeat runs disturbed above this")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2)")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], json.loads(args.child[1]))
    exit_on_sigterm()
    parts = args.only or ["stages", "backup", "restore"]
    profiler = Profiler(args)
    result: dict[str, Any] = {"environment": environment(args.python), "config": vars(args).copy()}
    result["loadavg_start"] = loadavg().split()
    profiler.work.mkdir(parents=True, exist_ok=True)
    try:
        pristine = generated_database(args.size_mib, log=print)
        database = profiler.work / "node.db"
        shutil.copyfile(pristine, database)
        keys = make_keys(args.python, RESULTS_DIR / "keys")
        print(
            "database %.0f MiB; %s cores; load average %s"
            % (database.stat().st_size / MIB, result["environment"]["usable_cores"], " ".join(result["loadavg_start"]))
        )
        if "stages" in parts:
            print("\n== 1. stages alone (fresh process each, warm cache) ==")
            result["stages"] = profiler.stages(database, keys)
        if "backup" in parts:
            print("\n== 2. backup_epoch end to end (median of %d, interleaved) ==" % args.runs)
            result["backup"] = profiler.variants("backup", BACKUP_VARIANTS, database, keys)
            print(_variant_table(result["backup"]))
        if "restore" in parts:
            print("\n== 3. restore_epoch end to end (median of %d, interleaved) ==" % args.runs)
            result["restore"] = profiler.variants("restore", RESTORE_VARIANTS, database, keys)
            print(_variant_table(result["restore"]))
    finally:
        shutil.rmtree(profiler.work, ignore_errors=True)
    result["loadavg_end"] = loadavg().split()
    print("load average at the end: %s" % " ".join(result["loadavg_end"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print("profile failed: %s" % exc, file=sys.stderr)
        sys.exit(1)
