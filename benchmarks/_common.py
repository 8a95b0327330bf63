# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by benchmarks/run.py and benchmarks/profile_engine.py.

Only the standard library: the engine itself is imported in child processes
(benchmarks/_engine.py) so that every measured run starts fresh and its peak
RSS is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MIB = 1 << 20

REQUIRED_TOOLS = ("sqlite3", "age", "age-keygen", "zstd", "sha256sum", "timeout")
GNU_TIME = "/usr/bin/time"


class BenchError(Exception):
    """A benchmark could not run or a procedure produced a wrong result."""


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that cleanup code (children, writer, work dir) runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


class Finished:
    """A child process that ran to its end: wall time and the kernel's rusage."""

    def __init__(self, argv: Sequence[str], returncode: int, wall: float, rusage, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.wall = wall
        self.maxrss_kib = rusage.ru_maxrss  # the child and every descendant it waited for: the largest one
        self.user = rusage.ru_utime
        self.system = rusage.ru_stime
        self.stdout = stdout
        self.stderr = stderr
        self.other_cpu = 0.0  # CPU seconds that other processes of the machine used meanwhile


def _busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return 0.0
    ticks = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Finished:
    """Run argv, timing it from spawn to exit and collecting its rusage with wait4().

    ``ru_maxrss`` of a reaped child is the peak RSS of the child or of any
    descendant it reaped itself (the kernel keeps the maximum), never a sum.
    """
    out_path = RESULTS_DIR / (".child-%d.out" % os.getpid())
    err_path = RESULTS_DIR / (".child-%d.err" % os.getpid())
    with open(out_path, "w+b") as out, open(err_path, "w+b") as err:
        busy_before = _busy_cpu_seconds()
        began = time.monotonic()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, start_new_session=True)
        deadline = None if timeout is None else began + timeout
        try:
            while True:
                pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    pid, status, rusage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.002)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): take the child's whole process group down with us.
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(process.pid, 0)
            raise
        wall = time.monotonic() - began
        busy = _busy_cpu_seconds() - busy_before
        process.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    out_path.unlink()
    err_path.unlink()
    finished = Finished(argv, process.returncode, wall, rusage, stdout, stderr)
    finished.other_cpu = max(0.0, busy - finished.user - finished.system)
    return finished


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError("no JSON result in the output:\n%s" % text[-2000:])


class Writer:
    """The concurrent writer (benchmarks/_writer.py), a separate process."""

    def __init__(self, python: str, database: Path, interval: float) -> None:
        self.process = subprocess.Popen(
            [python, str(BENCH_DIR / "_writer.py"), str(database), repr(interval)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            raise BenchError("the concurrent writer did not start: %s %s" % (line, self.process.stderr.read()))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=10)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0:
            raise BenchError("the concurrent writer failed: %s" % err.strip()[-2000:])
        return last_json_line(out)


# --------------------------------------------------------------------------
# page cache policy
# --------------------------------------------------------------------------


def settle_and_warm(*paths: Path) -> None:
    """The same page-cache policy before every timed run, whichever procedure runs.

    ``sync`` first, so the previous run's dirty pages are written back outside
    the timing (no run pays for another's writes), then read every input once,
    so each run starts with its inputs in the page cache (warm).
    """
    subprocess.run(["sync"], check=True)
    for path in paths:
        for candidate in (path, Path(str(path) + "-wal")):
            if candidate.exists():
                with open(candidate, "rb") as handle:
                    while handle.read(8 * MIB):
                        pass


def remove(*paths: Path) -> None:
    for path in paths:
        for candidate in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm"), Path(str(path) + "-journal")):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            elif candidate.exists() or candidate.is_symlink():
                candidate.unlink()


# --------------------------------------------------------------------------
# the generated database
# --------------------------------------------------------------------------

_SCHEMA = """
PRAGMA page_size=4096;
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-262144;
CREATE TABLE IF NOT EXISTS blocks(
  height INTEGER PRIMARY KEY, hash TEXT NOT NULL, parent TEXT NOT NULL, ts INTEGER NOT NULL,
  miner TEXT NOT NULL, tx_count INTEGER NOT NULL, header TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txs(
  id INTEGER PRIMARY KEY, height INTEGER NOT NULL, hash TEXT NOT NULL, sender TEXT NOT NULL,
  recipient TEXT NOT NULL, nonce INTEGER NOT NULL, amount INTEGER NOT NULL, fee INTEGER NOT NULL,
  status TEXT NOT NULL, payload TEXT NOT NULL, sig BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS txs_sender ON txs(sender, nonce);
CREATE INDEX IF NOT EXISTS txs_hash ON txs(hash);
"""

# One batch: blocks FIRST..LAST, 20 transactions each. Hex hashes, JSON text,
# addresses from small pools (repetitive, as real chains are), integers and a
# 64-byte binary signature: compresses to about 40% with zstd.
_BATCH = """
BEGIN;
WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})
INSERT INTO blocks SELECT i, lower(hex(randomblob(32))), lower(hex(randomblob(32))), 1700000000 + i * 12,
  printf('0x%040x', abs(random()) % 64), 20,
  json_object('version', 2, 'difficulty', abs(random()) % 1000000, 'gas_limit', 30000000,
              'gas_used', abs(random()) % 30000000, 'state_root', lower(hex(randomblob(32))),
              'extra', 'nodekeep-bench', 'uncles', json_array())
FROM n;
WITH RECURSIVE n(i) AS (SELECT {first} * 20 UNION ALL SELECT i + 1 FROM n WHERE i < {last} * 20 + 19)
INSERT INTO txs(height, hash, sender, recipient, nonce, amount, fee, status, payload, sig)
SELECT i / 20, lower(hex(randomblob(32))), printf('0x%040x', abs(random()) % 5000),
  printf('0x%040x', abs(random()) % 20000), i % 977, abs(random()) % 100000000000,
  21000 + abs(random()) % 50000, CASE abs(random()) % 10 WHEN 0 THEN 'failed' ELSE 'ok' END,
  json_object('method', CASE abs(random()) % 4 WHEN 0 THEN 'transfer' WHEN 1 THEN 'approve'
                        WHEN 2 THEN 'swapExactTokensForTokens' ELSE 'mint' END,
              'args', json_array(abs(random()) % 1000000, printf('0x%040x', abs(random()) % 20000),
                                 'memo ' || (abs(random()) % 1000)),
              'gas', 21000 + abs(random()) % 100000),
  randomblob(64)
FROM n;
COMMIT;
"""

_BLOCKS_PER_BATCH = 4000  # about 41 MiB with the indexes


def _sqlite3(database: Path, script: str) -> None:
    result = subprocess.run(["sqlite3", str(database)], check=False, input=script, text=True, capture_output=True)
    if result.returncode != 0:
        raise BenchError("sqlite3 failed while generating %s: %s" % (database, result.stderr.strip()))


def generated_database(size_mib: int, log=print) -> Path:
    """The cached pristine database of about size_mib MiB (WAL mode), generated on first use."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("db-%dmib.sqlite" % size_mib)
    if path.exists():
        return path
    target = size_mib * MIB
    temp = RESULTS_DIR / (".db-%dmib.%d.tmp" % (size_mib, os.getpid()))
    remove(temp)
    began = time.monotonic()
    log("generating a %d MiB SQLite database at %s (cached for later runs)..." % (size_mib, path))
    _sqlite3(temp, _SCHEMA)
    first = 1
    while True:
        size = temp.stat().st_size
        if size >= target:
            break
        if first == 1:
            blocks = min(_BLOCKS_PER_BATCH, max(50, _BLOCKS_PER_BATCH * target // (41 * MIB)))
        else:
            per_block = size / (first - 1)
            blocks = max(10, min(_BLOCKS_PER_BATCH, int((target - size) / per_block) + 1))
        _sqlite3(temp, _BATCH.format(first=first, last=first + blocks - 1))
        first += blocks
    _sqlite3(temp, "PRAGMA journal_mode=WAL;")
    os.replace(temp, path)
    log("generated %.0f MiB in %.1f s" % (path.stat().st_size / MIB, time.monotonic() - began))
    return path


# --------------------------------------------------------------------------
# keys and the engine's import path
# --------------------------------------------------------------------------


def collections_path() -> Path:
    """A directory that makes this checkout importable as ansible_collections.nodekeep.backup."""
    parts = REPO_ROOT.parts
    if len(parts) >= 3 and parts[-3:] == ("ansible_collections", "nodekeep", "backup"):
        return REPO_ROOT.parent.parent.parent
    base = RESULTS_DIR / "collections"
    link = base / "ansible_collections" / "nodekeep" / "backup"
    if not (link.is_symlink() and Path(os.readlink(link)) == REPO_ROOT):
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base


def make_keys(python: str, directory: Path) -> dict[str, str]:
    """An age identity (age-keygen) and an Ed25519 signing key (the engine's own generator)."""
    directory.mkdir(parents=True, exist_ok=True)
    identity = directory / "age-identity.txt"
    if not identity.exists():
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    signing_key = directory / "signing_key"
    public = directory / "signing_key.pub"
    if not signing_key.exists() or not public.exists():
        code = (
            "import os, sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing\n"
            "pem = signing.generate_private_key_pem()\n"
            "fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
            "os.write(fd, pem)\n"
            "os.close(fd)\n"
            "print(signing.public_key_line(pem))\n"
        )
        line = subprocess.run(
            [python, "-c", code, str(collections_path()), str(signing_key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        public.write_text(line + "\n")
    return {
        "identity_file": str(identity),
        "recipient": recipient,
        "signing_key": str(signing_key),
        "public_key": public.read_text().strip(),
    }


# --------------------------------------------------------------------------
# environment and reporting
# --------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unavailable (%s)" % exc
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def check_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not os.access(GNU_TIME, os.X_OK):
        missing.append(GNU_TIME + " (Debian package time)")
    if missing:
        raise BenchError(
            "missing tools: %s; install them (make setup installs sqlite3, age, zstd and time)" % ", ".join(missing)
        )


def environment(python: str) -> dict[str, object]:
    code = (
        "import json, sys\n"
        "from importlib import metadata\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for name in ('apsw', 'pyrage', 'zstandard', 'cryptography'):\n"
        "    try:\n"
        "        out[name] = metadata.version(name)\n"
        "    except Exception as exc:\n"
        "        out[name] = 'missing (%s)' % exc\n"
        "try:\n"
        "    import apsw\n"
        "    out['apsw_sqlite'] = apsw.sqlite_lib_version()\n"
        "except ImportError:\n"
        "    pass\n"
        "try:\n"
        "    import zstandard\n"
        "    out['libzstd'] = zstandard.ZSTD_VERSION and '.'.join(map(str, zstandard.ZSTD_VERSION))\n"
        "except ImportError:\n"
        "    pass\n"
        "print(json.dumps(out))\n"
    )
    python_side = json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            memory = int(handle.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        memory = 0
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "memory_mib": memory,
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "filesystem": _first_line(["sh", "-c", "df -T %s | tail -1 | awk '{print $1\" \"$2}'" % RESULTS_DIR]),
        "sqlite3_cli": _first_line(["sqlite3", "--version"]).split()[0],
        "age_cli": _first_line(["age", "--version"]),
        "zstd_cli": _first_line(["zstd", "--version"]),
        "coreutils": _first_line(["sha256sum", "--version"]).split()[-1],
        "engine_python": python,
        **{"py_" + k: v for k, v in python_side.items()},
    }


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages of the machine."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else "%.2f" % value


def fmt_mib(kib: float | None) -> str:
    return "-" if kib is None else "%.1f" % (kib / 1024.0)


def table(headers: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


def default_python() -> str:
    """The interpreter for engine children: this one (make bench runs .venv/bin/python)."""
    return sys.executable


def ratio(numerator: float | None, denominator: float | None) -> tuple[float | None, str]:
    if not numerator or not denominator:
        return None, "-"
    value = numerator / denominator
    return value, "%.2f" % value
