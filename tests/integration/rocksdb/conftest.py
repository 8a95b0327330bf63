"""RocksDB fixtures: a live RocksDB owned by a separate service process that keeps writing.

``rocks_app``
    an ``App`` (see ``rdbapp.py``): a service process owning ``app.db`` with four column families,
    prefilled and then committing one counter per WriteBatch across all families.
    ``app.committed()``, ``app.wait_for(n)``, ``app.pid``, ``app.running()``,
    ``app.stop()`` (returns the final counter), ``app.start()``, ``app.last_checkpoint()``;
    ``app.checkpoint_command`` / ``stop_command`` / ``start_command`` are argv lists for the asset.
``read_rocksdb(path)``
    every key and value of every column family of a DB directory (read-only, from a private copy).
``assert_consistent(contents, value_size)``
    the contents are exactly one committed state of the service; returns its counter.
``ldb``
    path of Debian's ``ldb`` (rocksdb-tools 7.8.3); the test is skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import rdbapp

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.committed()
            if current >= count:
                return current
            time.sleep(0.01)
        raise AssertionError("the service committed only %d of %d" % (self.committed(), count))

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


@pytest.fixture
def rocks_app(tmp_path):
    app = App(tmp_path / "node")
    app.start()
    try:
        yield app
    finally:
        app.kill()


@pytest.fixture
def make_app(tmp_path):
    """``make_app(name, start=True, **args)``: more services (or a closed DB) for one test."""
    apps = []

    def make(name: str = "node", start: bool = True, **kwargs) -> App:
        app = App(tmp_path / name, **kwargs)
        apps.append(app)
        if start:
            app.start()
        return app

    yield make
    for app in apps:
        app.kill()


def read_rocksdb(path) -> dict:
    """{family: {key: value}} of the DB at ``path``, opened read-only from a private copy."""
    from rocksdict import AccessType, Options, Rdict

    with tempfile.TemporaryDirectory(prefix="read-rocksdb-") as scratch:
        copy = os.path.join(scratch, "db")
        shutil.copytree(str(path), copy, symlinks=True)
        names = Rdict.list_cf(copy, Options(raw_mode=True))
        db = Rdict(
            copy,
            Options(raw_mode=True),
            column_families={name: Options(raw_mode=True) for name in names if name != "default"} or None,
            access_type=AccessType.read_only(False),
        )
        try:
            return {name: dict(db.get_column_family(name).items()) for name in names}
        finally:
            db.close()


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


@pytest.fixture(scope="session")
def ldb():
    path = shutil.which("ldb")
    if not path:
        pytest.skip("Debian's rocksdb-tools (ldb) is not installed (requirements/apt-core.txt)")
    return path
