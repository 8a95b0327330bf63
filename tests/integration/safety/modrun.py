"""Run a collection module in its own process, as Ansible and the scheduled runner do (args file as argv[1]).

A module that blocks (waiting on a FIFO) is killed after ``timeout`` seconds and reported as such,
so a test fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from ansible_collections.nodekeep.backup.plugins.module_utils.ops.runner import COLLECTIONS_ROOT, last_json_object


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    return apply


def module(
    name: str,
    args: dict,
    workdir: Path,
    timeout: float = 120.0,
    check_mode: bool = False,
    max_file_size: int | None = None,
) -> dict:
    """The module's JSON result; ``max_file_size`` caps every file it writes (RLIMIT_FSIZE)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ("args-%s-%d.json" % (name, len(list(workdir.iterdir()))))
    payload = dict(args, _ansible_check_mode=check_mode)
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    path.chmod(0o600)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (COLLECTIONS_ROOT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ansible_collections.nodekeep.backup.plugins.modules.%s" % name, str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            preexec_fn=_limit_file_size(max_file_size) if max_file_size else None,
        )
    except subprocess.TimeoutExpired:
        return {"failed": True, "msg": "TIMEOUT: %s still running after %ss" % (name, timeout), "timeout": True}
    result = last_json_object(proc.stdout) or {"failed": True, "msg": "no result: %s" % proc.stderr[-2000:]}
    result["_rc"] = proc.returncode
    return result
