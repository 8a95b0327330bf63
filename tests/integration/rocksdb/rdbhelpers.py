"""Helpers of the RocksDB tests (imported by conftest.py and the tests: never ``from conftest import``,
which is ambiguous when several suites are collected in one pytest run).

``App(root, prefill=3000, value_size=VALUE_SIZE, pause=0.002)``
    a service process (``rdbapp.py``) owning ``ROOT/var/lib/chain/rocksdb`` with four column families,
    prefilled and then committing one counter per WriteBatch across all families.
    ``app.committed()``, ``app.wait_for(n)``, ``app.pid``, ``app.running()``,
    ``app.stop()`` (returns the final counter), ``app.start()``, ``app.last_checkpoint()``, ``app.kill()``;
    ``app.checkpoint_command`` / ``stop_command`` / ``start_command`` are argv lists for the asset.
``APP``
    the path of ``rdbapp.py`` (for commands such as ``[sys.executable, APP, "fail", "{dest}"]``).
``assert_consistent(contents, value_size)``
    the contents are exactly one committed state of the service; returns its counter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rdbapp
from integration_helpers import wait_for_count

APP = str(Path(__file__).with_name("rdbapp.py"))
VALUE_SIZE = 120


class App:
    def __init__(self, root: Path, prefill: int = 3000, value_size: int = VALUE_SIZE, pause: float = 0.002) -> None:
        self.root = root
        self.db = root / "var" / "lib" / "chain" / "rocksdb"
        self.state = root / "state"
        self.db.parent.mkdir(parents=True)
        self.state.mkdir()
        self.value_size = value_size
        (self.state / "args.json").write_text(
            json.dumps({"db": str(self.db), "value_size": value_size, "prefill": prefill, "pause": pause})
        )
        self.checkpoint_command = [sys.executable, APP, "checkpoint", str(self.state), "{dest}"]
        self.stop_command = [sys.executable, APP, "stop", str(self.state)]
        self.start_command = [sys.executable, APP, "start", str(self.state)]

    def _run(self, argv) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr

    def start(self) -> None:
        self._run(self.start_command)

    def stop(self) -> int:
        self._run(self.stop_command)
        return json.loads((self.state / "final.json").read_text())

    @property
    def pid(self) -> int | None:
        return rdbapp._pid(str(self.state))

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and rdbapp._alive(pid)

    def committed(self) -> int:
        try:
            return int((self.state / "status").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def wait_for(self, count: int, timeout: float = 30.0) -> int:
        return wait_for_count(self.committed, count, timeout, 0.01, "the service")

    def last_checkpoint(self) -> int:
        return json.loads((self.state / "last-checkpoint.json").read_text())

    def kill(self) -> None:
        pid = self.pid
        if pid is not None and rdbapp._alive(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while rdbapp._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)


def assert_consistent(contents: dict, value_size: int = VALUE_SIZE) -> int:
    assert sorted(contents) == sorted(rdbapp.FAMILIES), sorted(contents)
    counters = {family: int.from_bytes(data[b"counter"], "big") for family, data in contents.items()}
    assert len(set(counters.values())) == 1, "column families disagree: %s" % counters
    n = counters["default"]
    for family, data in contents.items():
        wanted = rdbapp.expected(family, n, value_size)
        if data != wanted:
            missing = sorted(set(wanted) - set(data))[:5]
            extra = sorted(set(data) - set(wanted))[:5]
            wrong = sorted(k for k in set(data) & set(wanted) if data[k] != wanted[k])[:5]
            raise AssertionError(
                "family %s is not the state at counter %d: missing %s, extra %s, wrong %s"
                % (family, n, missing, extra, wrong)
            )
    return n
