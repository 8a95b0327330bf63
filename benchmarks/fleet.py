"""Controller CPU per node of ``playbooks/backup.yml`` on a fleet of N local hosts.

Each host (``ansible_connection: local``) has its own small live SQLite database, its own
repository and signing key; the project's ``.venv`` is every node's virtualenv (no install).
A first run prepares the fleet (signing keys made and recorded on the controller); the
measured runs are ordinary nightly backups of a prepared fleet.

What is measured: the CPU (user + system) of ``ansible-playbook`` and of every process it
started (``getrusage(RUSAGE_CHILDREN)``), minus the CPU that on a real fleet is spent on the nodes:

* every module run: modules run under a node interpreter wrapper that records its own CPU with
  GNU time, each ``async_status`` of the progress action plugins included (printed on its own:
  ``polls``, ``poll CPU``);
* the async jobs: the progress action plugins run their module in the background with ansible's
  async wrapper, which detaches it (setsid, double fork) from ``ansible-playbook``. This script is
  the child subreaper of everything it starts, so those jobs are reaped here: their CPU (the
  wrapper's daemon and the module it ran; ``async jobs``) is counted as node CPU once, and the
  module lines GNU time wrote from inside them (another session) are not counted again.

The difference is the controller's share: templating, task dispatch, forks, building and
sending each module's payload (async_status's too), the plugins' looks at the status.

    make bench-fleet                             # N=30, 2 measured runs
    .venv/bin/python benchmarks/fleet.py --nodes 10 --runs 1 --json out.json

Prints one line per measured run and the median; exit status 1 when a run failed, or when the
median is above ``--goal`` seconds per node (1.0) and ``--enforce`` is given.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
GNU_TIME = "/usr/bin/time"
PR_SET_CHILD_SUBREAPER = 36


def make_db(path: Path, rows: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path))
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB, body BLOB)")
        db.executemany(
            "INSERT INTO blocks VALUES (?, ?, ?)", ((h, os.urandom(32), os.urandom(256)) for h in range(rows))
        )
        db.commit()
    finally:
        db.close()


def age_key(work: Path) -> str:
    identity = work / "age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    os.chmod(identity, 0o600)
    return subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()


def node_python(work: Path) -> tuple[Path, Path]:
    """A node virtualenv whose interpreter records each module's CPU (user system, one line per module).

    Roles run some modules with ``nodekeep_venv``'s interpreter: this one is the nodes' ``nodekeep_venv``
    too, so every module run on a node is counted as node CPU, never as controller CPU.
    """
    log = work / "node-cpu.log"
    (work / "venv" / "bin").mkdir(parents=True)
    wrapper = work / "venv" / "bin" / "python"
    # bash reads its own session id from /proc (no extra process): a module that ran inside a detached async
    # job (the job's own session) is already in the CPU of that job, counted once when it is reaped.
    wrapper.write_text(
        "#!/bin/bash\nread -r -a stat < /proc/$$/stat\nexec %s -a -o %s -f \"%%U %%S ${stat[5]} %%C\" %s \"$@\"\n"
        % (GNU_TIME, log, VENV / "bin" / "python")
    )
    wrapper.chmod(0o755)
    return wrapper, log


def write_inventory(work: Path, nodes: int, recipient: str, interpreter: Path, pipelining: bool) -> Path:
    hosts = {}
    for index in range(1, nodes + 1):
        name = "node%02d" % index
        base = work / "nodes" / name
        db = base / "chain.db"
        make_db(db)
        hosts[name] = {
            "ansible_connection": "local",
            # as inventories/example sets it: each module goes to the node on stdin (benchmarks/README.md)
            "ansible_pipelining": pipelining,
            "ansible_python_interpreter": str(interpreter),
            "nodekeep_agent_install": False,
            "nodekeep_venv": str(interpreter.parent.parent),
            "nodekeep_repository_path": str(base / "repository"),
            "nodekeep_signing_key_path": str(base / "signing" / "signing_key"),
            "nodekeep_age_recipients": [recipient],
            "nodekeep_service_manager": "none",
            "nodekeep_assets": [{"name": "chain-db", "type": "sqlite", "path": str(db)}],
        }
    inventory_dir = work / "inventory"
    inventory_dir.mkdir()
    inventory = {"all": {"children": {"nodekeep_nodes": {"children": {"fleet": {"hosts": hosts}}}}}}
    path = inventory_dir / "hosts.yml"
    path.write_text(json.dumps(inventory, indent=1))  # JSON is YAML
    return path


def module_runs(path: Path) -> list[tuple[float, int, str]]:
    """Each module run GNU time recorded: (user + system CPU, session id, command line); 'Command exited' notes skipped."""
    runs = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(maxsplit=3)
            try:
                cpu, session = float(parts[0]) + float(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                continue
            runs.append((cpu, session, parts[3] if len(parts) > 3 else ""))
    return runs


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_orphans() -> tuple[float, set[int]]:
    """Wait for every process reparented to this subreaper (the detached async jobs): their CPU (with what
    they ran) and their pids; the first of a job's processes calls setsid, so its pid is the job's session."""
    cpu, pids = 0.0, set()
    while True:
        try:
            pid, _status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return cpu, pids
        cpu += usage.ru_utime + usage.ru_stime
        pids.add(pid)


def run_backup(inventory: Path, work: Path, node_log: Path, forks: int, label: str, extra: list[str]) -> dict:
    if node_log.exists():
        node_log.unlink()
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
        ANSIBLE_FORKS=str(forks),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        PATH="%s:%s" % (VENV / "bin", os.environ.get("PATH", "")),
    )
    cmd = [str(VENV / "bin" / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "backup.yml")]
    for value in extra:
        cmd += ["-e", value]
    reap_orphans()
    before = children_cpu()
    began = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - began
    jobs, sessions = reap_orphans()
    total = children_cpu() - before
    runs = [run for run in module_runs(node_log) if run[1] not in sessions]  # the async jobs' are in ``jobs``
    modules = sum(cpu for cpu, _session, _command in runs) + jobs
    polls = [cpu for cpu, _session, command in runs if "async_status" in command]
    tasks = sum(1 for line in proc.stdout.splitlines() if line.startswith("TASK ["))
    return {
        "label": label,
        "rc": proc.returncode,
        "wall_seconds": round(wall, 1),
        "total_cpu": round(total, 2),
        "module_cpu": round(modules, 2),
        "controller_cpu": round(total - modules, 2),
        "module_runs": len(runs),
        "async_job_cpu": round(jobs, 2),
        "polls": len(polls),
        "poll_cpu": round(sum(polls), 2),
        "tasks": tasks,
        "tail": proc.stdout[-3000:] if proc.returncode else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--runs", type=int, default=2, help="measured runs after the preparing one")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--goal", type=float, default=1.0, help="controller CPU seconds per node")
    parser.add_argument("--enforce", action="store_true", help="exit 1 when the median misses --goal")
    parser.add_argument("--json", help="write every run as JSON")
    parser.add_argument("-e", "--extra-vars", action="append", default=[], help="passed to ansible-playbook -e")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-pipelining", dest="pipelining", action="store_false",
                        help="ansible_pipelining false (Ansible's default) instead of the example inventory's true")
    args = parser.parse_args()
    for tool in (GNU_TIME, shutil.which("age-keygen")):
        if not tool or not os.path.exists(tool):
            print("fleet.py needs GNU time (/usr/bin/time) and age-keygen (make setup)", file=sys.stderr)
            return 1
    # The background modules' async wrapper detaches them (setsid, double fork): as the subreaper of
    # every process ansible-playbook starts, this script reaps them and so counts their CPU.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("fleet.py: prctl(PR_SET_CHILD_SUBREAPER) failed (Linux only)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="nodekeep-fleet-"))
    try:
        recipient = age_key(work)
        interpreter, node_log = node_python(work)
        inventory = write_inventory(work, args.nodes, recipient, interpreter, args.pipelining)
        runs = [run_backup(inventory, work, node_log, args.forks, "prepare", args.extra_vars)]
        for number in range(args.runs):
            runs.append(run_backup(inventory, work, node_log, args.forks, "run%d" % (number + 1), args.extra_vars))
        print("fleet: %d local nodes, forks %d, pipelining %s, backup.yml"
              % (args.nodes, args.forks, "on" if args.pipelining else "off"))
        header = ("run", "rc", "wall s", "total CPU", "node CPU", "async jobs", "controller", "per node", "tasks",
                  "polls", "poll CPU")  # fmt: skip
        print("%-8s %4s %8s %10s %10s %10s %12s %10s %6s %6s %9s" % header)
        for run in runs:
            run["controller_cpu_per_node"] = round(run["controller_cpu"] / args.nodes, 3)
            print("%-8s %4d %8.1f %10.2f %10.2f %10.2f %12.2f %10.3f %6d %6d %9.2f" % (
                run["label"], run["rc"], run["wall_seconds"], run["total_cpu"], run["module_cpu"],
                run["async_job_cpu"], run["controller_cpu"], run["controller_cpu_per_node"], run["tasks"], run["polls"],
                run["poll_cpu"]))  # fmt: skip
        measured = [run["controller_cpu_per_node"] for run in runs[1:]] or [runs[0]["controller_cpu_per_node"]]
        median = statistics.median(measured)
        print("controller CPU per node (median of the measured runs): %.3f s (goal <= %.1f s)" % (median, args.goal))
        failed = [run for run in runs if run["rc"] != 0]
        for run in failed:
            print("run %s failed:\n%s" % (run["label"], run["tail"]), file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps({"nodes": args.nodes, "forks": args.forks, "pipelining": args.pipelining, "runs": runs,
                                                   "median_per_node": median}, indent=1))  # fmt: skip
        return 1 if failed or (args.enforce and median > args.goal) else 0
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
