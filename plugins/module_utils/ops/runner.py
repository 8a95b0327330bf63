# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled-job runner: the systemd timers' entry point on the node.

It runs the collection's own modules - the same files the playbooks run - each as
AnsiballZ does, without the wrapper: ``PYTHON -m ansible_collections.nodekeep.backup.
plugins.modules.NAME ARGS.json``, where the args file holds ``{"ANSIBLE_MODULE_ARGS":
{...}}`` (written 0600 by the schedule role; it names key files, it never holds a
secret). On the node, PYTHONPATH is the schedule role's bundle (Ansible's module_utils
and this collection's plugins, see roles/schedule/files/nodekeep_bundle.py). Around the
modules it adds what a timer needs::

    python -m ansible_collections.nodekeep.backup.plugins.module_utils.runner \\
        --job backup --node NODE --step epoch_backup=/etc/nodekeep/schedule/backup.json \\
        [--step epoch_copy=/etc/nodekeep/schedule/backup-copy.json] \\
        [--lock /var/lib/nodekeep/schedule/backup.lock] \\
        [--repository-lock /var/lib/nodekeep/schedule/repository.lock --repository-lock-mode shared] \\
        [--lock-wait 60] [--metrics-dir DIR] [--state-dir DIR] [--ping-url-file FILE]

- locking: ``--lock`` is exclusive (two runs of a job never overlap); the repository
  lock is shared by backup and verify and exclusive for retention, so a prune never
  runs beside a backup or a verify. A run that cannot get its locks within
  ``--lock-wait`` seconds exits 0 without running anything (it only writes
  ``nodekeep_JOB_skipped.prom``: the running job owns the state and ``nodekeep_JOB.prom``);
- metrics: Prometheus textfile ``nodekeep_JOB.prom`` for node_exporter, written
  atomically (temporary file + rename, 0644); "last success" times survive failed
  runs (``--state-dir``). Labels are node, asset, copy and job names only, never
  paths or secrets (an S3 copy is labelled with its target's name);
- pings: healthchecks-style ``URL/start``, ``URL`` (success) and ``URL/fail``; the URL
  is read from a 0600 file (a ping URL is a capability), the body says only the job,
  node, status, epoch and duration, and a failed ping never fails the job.

Exit status: 0 success or skipped, 1 a step failed, 2 bad usage.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import argparse
import calendar
import errno
import fcntl
import importlib.util
import json
import os
import re
import sys
import time
import urllib.error
from typing import Any

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import output_text, run_command
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.metrics import Metrics, write_textfile

#: the PYTHONPATH entry holding ``ansible_collections`` (a directory, or the schedule role's zip bundle)
COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 6))


MODULES_PACKAGE = "ansible_collections.nodekeep.backup.plugins.modules"


JOBS = ("backup", "verify", "prune")


PING_TIMEOUT = 10.0


def log(message: str) -> None:
    sys.stderr.write("nodekeep-runner: %s\n" % message)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# locks
# --------------------------------------------------------------------------


class Locks:
    """flock()-based locks, taken in order, released when the process exits (or on release())."""

    def __init__(self) -> None:
        self.handles: list[int] = []

    def take(self, path: str, shared: bool, deadline: float) -> bool:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        while True:
            try:
                fcntl.flock(fd, operation)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
                continue
            self.handles.append(fd)
            return True

    def release(self) -> None:
        while self.handles:
            os.close(self.handles.pop())


# --------------------------------------------------------------------------
# pings (healthchecks.io style)
# --------------------------------------------------------------------------


def read_ping_url(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            url = handle.read().strip()
    except OSError as exc:
        log("ping URL file %s unreadable (%s): no pings" % (path, exc.strerror))
        return ""
    if not url.startswith(("https://", "http://")):
        log("the ping URL file %s does not hold an http(s) URL: no pings" % path)
        return ""
    return url.rstrip("/")


def ping(url: str, kind: str, body: str = "") -> bool:
    """``kind`` start, success or fail. Never raises; the URL is never logged (it is a capability)."""
    if not url:
        return False
    target = url + {"start": "/start", "success": "", "fail": "/fail"}[kind]
    data = body.encode("utf-8")[:10000] if body else None
    for attempt in range(2):
        try:
            response = open_url(target, data=data, method="POST" if data else "GET", timeout=PING_TIMEOUT,
                                http_agent="nodekeep-runner", follow_redirects="safe")  # fmt: skip
            response.read(1024)
            response.close()
            return True
        except (urllib.error.URLError, OSError, ValueError, UrlsConnectionError) as exc:
            if attempt:
                log("the %s ping failed (%s); the job's result is unaffected" % (kind, type(exc).__name__))
            else:
                time.sleep(1)
    return False


# --------------------------------------------------------------------------
# running a module
# --------------------------------------------------------------------------


def last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec("%s.%s" % (MODULES_PACKAGE, module)) is not None
    except ImportError:
        return False


def run_module(module: str, args_file: str, python: str | None = None) -> dict[str, Any]:
    """``PYTHON -m MODULES_PACKAGE.MODULE ARGS_FILE`` with the collection importable; its JSON result."""
    if not module_exists(module):
        return {
            "failed": True,
            "msg": "module nodekeep.backup.%s not found (PYTHONPATH %s)" % (module, COLLECTIONS_ROOT),
        }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (COLLECTIONS_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("LANG", "C.UTF-8")
    try:
        proc = run_command(
            [python or sys.executable, "-m", "%s.%s" % (MODULES_PACKAGE, module), args_file],
            "module nodekeep.backup.%s" % module,
            timeout=None,
            check=False,
            env=env,
            new_session=False,  # a signal to the runner's process group (a Ctrl-C, a stopped service) reaches it
        )
    except NodekeepError as exc:
        return {"failed": True, "msg": "module %s could not start: %s" % (module, exc.message)}
    stdout, stderr = output_text(proc.stdout), output_text(proc.stderr)
    result = last_json_object(stdout)
    if result is None:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        result = {
            "failed": True,
            "msg": "module %s gave no result (exit %d): %s" % (module, proc.returncode, " | ".join(tail)),
        }
    if proc.returncode != 0 and not result.get("failed"):
        result["failed"] = True
    return result


def unsafe_args_file(path: str) -> str:
    """Why an args file must not be used (it steers what the job reads and writes), or ""."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return "the args file %s is unreadable (%s): run ansible-playbook nodekeep.backup.schedule again" % (path, exc.strerror)
    if info.st_mode & 0o022 or info.st_uid not in (0, os.getuid()):
        return (
            "the args file %s is writable by others or not owned by this user: chmod 0600 it (or run ansible-playbook nodekeep.backup.schedule)"
            % path
        )
    return ""


def target_names(args_file: str) -> list[str]:
    """The names of the S3 targets in a step's args file, in order (labels of the copies after the local one)."""
    try:
        with open(args_file, encoding="utf-8") as handle:
            args = json.load(handle).get("ANSIBLE_MODULE_ARGS") or {}
    except (OSError, ValueError, AttributeError):
        return []
    names = []
    for index, target in enumerate(args.get("targets") or []):
        name = target.get("name") if isinstance(target, dict) else None
        names.append(str(name or "s3-%d" % (index + 1)))
    return names


# --------------------------------------------------------------------------
# state and metrics
# --------------------------------------------------------------------------


def load_state(state_dir: str | None, job: str) -> dict[str, Any]:
    if not state_dir:
        return {}
    try:
        with open(os.path.join(state_dir, "%s.json" % job), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(state_dir: str | None, job: str, state: dict[str, Any]) -> None:
    """Only the run holding the job's lock calls this."""
    if not state_dir:
        return
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    atomic_write(os.path.join(state_dir, "%s.json" % job), json.dumps(state, sort_keys=True), 0o600, "job state")


def label(text: Any) -> str:
    """A metric label value from a name: characters other than letters, digits and ``._@+=,-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._@+=,-]", "_", str(text))[:200] or "_"


def copy_label(report: dict[str, Any], index: int, names: list[str]) -> str:
    """``local`` for the node's own repository (always first), else the S3 target's name."""
    if index == 0 and not str(report.get("location", "")).startswith("s3://"):
        return "local"
    position = index - 1 if index > 0 else 0
    if position < len(names):
        return names[position]
    return "s3-%d" % (position + 1)


def collect(results: dict[str, dict[str, Any]], names: dict[str, list[str]], ok: bool, now: float,
            state: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Per-asset and per-copy facts of this run, folded into the persistent state (last successes)."""
    facts: dict[str, Any] = {"assets": {}, "copies": {}, "verified": {}}
    success = state.setdefault("last_success", {})
    backup = results.get("epoch_backup") or {}
    if backup and not backup.get("failed"):
        facts["epoch"] = backup.get("epoch")
        for artifact in backup.get("artifacts") or []:
            name = label(artifact.get("name"))
            facts["assets"][name] = {
                "size": artifact.get("size") or 0,
                "content_size": artifact.get("content_size") or 0,
            }
            success["asset:" + name] = now
        if backup.get("epoch"):
            state["epoch"] = backup["epoch"]
            state["epoch_started"] = (backup.get("manifest") or {}).get("started")
    copy = results.get("epoch_copy") or {}
    for index, target in enumerate(copy.get("targets") or []):
        # the args file's target name or s3-N, as verify and prune label it (never the s3:// location)
        name = label(copy_label(target, index + 1, names.get("epoch_copy", [])))
        copied = target.get("copied") or []
        facts["copies"][name] = {
            "ok": bool(target.get("ok")),
            "bytes": sum(int(c.get("bytes") or 0) for c in copied),
            "seconds": round(sum(float(c.get("seconds") or 0) for c in copied), 3),
        }
        if target.get("ok"):
            success["copy:" + name] = now
    verify = results.get("integrity_check") or {}
    reports = verify.get("copies") or ([verify] if verify.get("artifacts") is not None else [])
    for index, report in enumerate(reports):
        name = label(copy_label(report, index, names.get("integrity_check", [])))
        checked = report.get("checked", report.get("artifacts")) or []
        facts["copies"][name] = {"ok": bool(report.get("ok")), "checked": len(checked),
                                 "problems": len(report.get("problems") or [])}  # fmt: skip
        if report.get("ok"):
            success["copy:" + name] = now
        assets: dict[str, bool] = {}
        for entry in report.get("epochs") or [{"results": report.get("artifacts") or []}]:
            for result in entry.get("results") or []:
                asset = label(result.get("name"))
                assets[asset] = assets.get(asset, True) and bool(result.get("ok"))
        for asset, good in assets.items():
            facts["verified"][(name, asset)] = good
            if good:
                success["verified:%s:%s" % (name, asset)] = now
    prune = results.get("epoch_prune") or {}
    for index, report in enumerate(prune.get("copies") or []):
        name = label(copy_label(report, index, names.get("epoch_prune", [])))
        facts["copies"][name] = {
            "ok": not report.get("errors"),
            "removed": len(report.get("removed") or []),
            "kept": len(report.get("kept") or []),
        }
        if not report.get("errors"):
            success["copy:" + name] = now
    if ok:
        success["job"] = now
    return facts


FAMILIES = {"backup": "nodekeep_backup_copy", "verify": "nodekeep_verify", "prune": "nodekeep_prune"}


COPY_FACTS = {
    "bytes": "Bytes copied to this copy in the last run.",
    "seconds": "Seconds spent copying to this copy in the last run.",
    "checked": "Artifacts checked in this copy in the last run (a rolling sample).",
    "problems": "Problems found in this copy in the last run.",
    "removed": "Epochs removed from this copy in the last run.",
    "kept": "Epochs kept in this copy after the last run.",
}


def build_metrics(job: str, node: str, ok: bool, now: float, seconds: float, facts: dict[str, Any],
                  state: dict[str, Any]) -> Metrics:  # fmt: skip
    metrics = Metrics()
    base = {"node": node, "job": job}
    success = state.get("last_success") or {}
    metrics.add("nodekeep_job_last_run_timestamp_seconds", now, "When the scheduled job last ran.", **base)
    metrics.add("nodekeep_job_success", ok, "1 if the job's last run succeeded.", **base)
    metrics.add("nodekeep_job_duration_seconds", seconds, "How long the job's last run took.", **base)
    if success.get("job"):
        metrics.add("nodekeep_job_last_success_timestamp_seconds", success["job"], "When the job last succeeded.",
                    **base)  # fmt: skip
    if job == "backup":
        add_backup_metrics(metrics, node, facts, state)
    family = FAMILIES[job]
    for name, item in sorted(facts["copies"].items()):
        labels = {"node": node, "copy": name}
        metrics.add(
            family + "_success", item["ok"], "1 if this copy's part of the last %s run succeeded." % job, **labels
        )
        for key, help_text in COPY_FACTS.items():
            if key in item:
                metrics.add("%s_%s" % (family, key), item[key], help_text, **labels)
    for key, value in sorted(success.items()):
        if key.startswith("copy:"):
            metrics.add(family + "_last_success_timestamp_seconds", value,
                        "When this copy's part of the %s job last succeeded." % job, node=node, copy=key[5:])  # fmt: skip
    if job == "verify":
        for (copy, asset), good in sorted(facts["verified"].items()):
            metrics.add("nodekeep_verify_asset_success", good,
                        "1 if the asset's artifacts checked in the last run verified.", node=node, copy=copy, asset=asset)  # fmt: skip
        for key, value in sorted(success.items()):
            if key.startswith("verified:"):
                copy, asset = key[9:].split(":", 1)
                metrics.add("nodekeep_verify_asset_last_success_timestamp_seconds", value,
                            "When an artifact of the asset last verified in this copy.", node=node, copy=copy, asset=asset)  # fmt: skip
    return metrics


def add_backup_metrics(metrics: Metrics, node: str, facts: dict[str, Any], state: dict[str, Any]) -> None:
    success = state.get("last_success") or {}
    for key, value in sorted(success.items()):
        if key.startswith("asset:"):
            metrics.add("nodekeep_backup_last_success_timestamp_seconds", value,
                        "When the asset was last backed up successfully.", node=node, asset=key[6:])  # fmt: skip
    for name, item in sorted(facts["assets"].items()):
        metrics.add("nodekeep_backup_size_bytes", item["size"], "Sealed size of the asset's last artifact.",
                    node=node, asset=name)  # fmt: skip
        metrics.add("nodekeep_backup_content_bytes", item["content_size"], "Plain size of the asset's last artifact.",
                    node=node, asset=name)  # fmt: skip
    started = timestamp(state.get("epoch_started"))
    if started is not None:
        metrics.add("nodekeep_backup_epoch_timestamp_seconds", started, "Start of the newest epoch (the recovery point).",
                    node=node)  # fmt: skip


def skipped_metrics(job: str, node: str, now: float) -> Metrics:
    metrics = Metrics()
    metrics.add("nodekeep_job_last_skipped_timestamp_seconds", now,
                "When a run was last skipped because another run held a lock.", node=node, job=job)  # fmt: skip
    return metrics


def timestamp(text: Any) -> float | None:
    if not text:
        return None
    try:
        return float(
            calendar.timegm(time.strptime(str(text).rstrip("Z").split(".", maxsplit=1)[0], "%Y-%m-%dT%H:%M:%S"))
        )
    except ValueError:
        return None


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nodekeep-runner", description="Run a scheduled nodekeep.backup job.")
    parser.add_argument("--job", required=True, choices=JOBS)
    parser.add_argument("--node", required=True)
    parser.add_argument(
        "--step",
        action="append",
        required=True,
        metavar="MODULE=ARGS_FILE",
        help="a collection module and its args file; several run in order, stopping at a failure",
    )
    parser.add_argument("--lock", help="exclusive lock file of this job")
    parser.add_argument("--repository-lock", help="lock file of the repository")
    parser.add_argument("--repository-lock-mode", choices=("shared", "exclusive"), default="shared")
    parser.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for the locks, then skip")
    parser.add_argument("--metrics-dir", help="node_exporter textfile collector directory")
    parser.add_argument("--state-dir", help="where last-success times are kept between runs")
    parser.add_argument("--ping-url-file", help="file (0600) holding a healthchecks-style ping URL")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the modules (the agent venv's)")
    args = parser.parse_args(argv)
    steps = []
    for item in args.step:
        module, sep, path = item.partition("=")
        if not sep or not module or not path or not module.replace("_", "").isalnum():
            parser.error("--step %r: use MODULE=ARGS_FILE" % item)
        steps.append((module, path))
    args.steps = steps
    return args


def take_locks(args: argparse.Namespace, locks: Locks) -> str | None:
    """None when every lock is held, else the base name of the lock another run holds."""
    deadline = time.monotonic() + max(0.0, args.lock_wait)
    wanted = []
    if args.lock:
        wanted.append((args.lock, False))
    if args.repository_lock:
        wanted.append((args.repository_lock, args.repository_lock_mode == "shared"))
    for path, shared in wanted:
        if not locks.take(path, shared, deadline):
            locks.release()
            return os.path.basename(path)
    return None


def run_steps(args: argparse.Namespace) -> tuple[bool, str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, Any]] = {}
    for module, args_file in args.steps:
        problem = unsafe_args_file(args_file)
        result = {"failed": True, "msg": problem} if problem else run_module(module, args_file, python=args.python)
        results[module] = result
        if result.get("failed") or result.get("ok") is False:
            log("%s: %s" % (module, str(result.get("msg") or "; ".join(result.get("problems") or []))[:2000]))
            return False, "%s failed" % module, results
    return True, "", results


def record(args: argparse.Namespace, ok: bool, now: float, seconds: float, facts: dict[str, Any],
           state: dict[str, Any]) -> None:  # fmt: skip
    """State and metrics of a run; a failure here is logged, never hides the run's result or its ping."""
    try:
        save_state(args.state_dir, args.job, state)
        if args.metrics_dir:
            metrics = build_metrics(args.job, label(args.node), ok, now, seconds, facts, state)
            write_textfile(args.metrics_dir, "nodekeep_%s.prom" % args.job, metrics.render())
    except (OSError, NodekeepError) as exc:
        log("the state or metrics were not written: %s" % getattr(exc, "message", exc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    url = read_ping_url(args.ping_url_file)
    locks = Locks()
    busy = take_locks(args, locks)
    if busy:
        log("%s of %s skipped: another run holds %s" % (args.job, args.node, busy))
        if args.metrics_dir:
            text = skipped_metrics(args.job, label(args.node), time.time()).render()
            try:
                write_textfile(args.metrics_dir, "nodekeep_%s_skipped.prom" % args.job, text)
            except NodekeepError as exc:
                log("the metrics were not written: %s" % exc.message)
        return 0
    try:
        state = load_state(args.state_dir, args.job)
        ping(url, "start")
        ok, failure, results = run_steps(args)
        now = time.time()
        seconds = round(time.monotonic() - began, 3)
        names = {module: target_names(path) for module, path in args.steps}
        facts = collect(results, names, ok, now, state)
        record(args, ok, now, seconds, facts, state)
        summary = "nodekeep %s of %s: %s%s in %.1f s" % (
            args.job, args.node, "ok" if ok else "FAILED (%s)" % failure,
            ", epoch %s" % facts["epoch"] if facts.get("epoch") else "", seconds,
        )  # fmt: skip
        sys.stdout.write(summary + "\n")
        sys.stdout.flush()
        ping(url, "success" if ok else "fail", summary)
        return 0 if ok else 1
    finally:
        locks.release()


if __name__ == "__main__":
    raise SystemExit(main())
