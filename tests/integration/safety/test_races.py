"""Races: runs of one node and of many nodes on one repository never fail each other, and a FIFO,
socket or device given as a SQLite path is refused at once, never waited on.

The interleavings that once failed (the scratch sweep of one run removing another run's directory
between its creation and its lock) are forced with real processes at the exact point, not hoped for
with sleeps.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from modrun import module

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch as epoch_mod

pytestmark = pytest.mark.timeout(300)

SWEEP = (
    "import sys\n"
    "from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import _sweep_stale_runs\n"
    "_sweep_stale_runs(sys.argv[1])\n"
)


def sweep_from_another_run(root: str) -> None:
    """What the start of another run does to ``root``, in its own process (its own locks)."""
    subprocess.run([sys.executable, "-c", SWEEP, root], check=True, timeout=60)


def run_dirs(root) -> list:
    return sorted(n for n in os.listdir(root) if n.startswith(epoch_mod.RUN_PREFIX))


class TestScratchSweepRace:
    def test_a_sweep_right_after_the_directory_is_made(self, node, live_db, tmp_path, monkeypatch):
        """Another run sweeps between mkdtemp and the lock file: the run still succeeds."""
        scratch = tmp_path / "scratch"
        real = tempfile.mkdtemp
        swept = []

        def mkdtemp_then_sweep(*args, **kwargs):
            path = real(*args, **kwargs)
            if not swept:
                swept.append(path)
                sweep_from_another_run(str(scratch))
            return path

        monkeypatch.setattr(epoch_mod.tempfile, "mkdtemp", mkdtemp_then_sweep)
        manifest = node.backup([node.sqlite_asset(live_db.path)], scratch_dir=str(scratch))
        assert swept and not os.path.exists(swept[0])  # the sweep did remove that directory
        assert node.verify(manifest.epoch)["ok"]
        assert run_dirs(scratch) == []

    def test_a_sweep_between_the_lock_file_and_the_lock(self, node, live_db, tmp_path, monkeypatch):
        """Another run sweeps after the lock file exists but before it is locked: the run still succeeds."""
        scratch = tmp_path / "scratch"
        real = epoch_mod.fcntl.flock
        swept = []

        def sweep_then_flock(fd, operation):
            if not swept and operation == epoch_mod.fcntl.LOCK_EX:
                swept.append(True)
                sweep_from_another_run(str(scratch))
            return real(fd, operation)

        monkeypatch.setattr(epoch_mod.fcntl, "flock", sweep_then_flock)
        manifest = node.backup([node.sqlite_asset(live_db.path)], scratch_dir=str(scratch))
        assert swept
        assert node.verify(manifest.epoch)["ok"]
        assert run_dirs(scratch) == []

    def test_a_killed_runs_directory_is_still_swept(self, node, live_db, tmp_path):
        scratch = tmp_path / "scratch"
        scratch.mkdir(mode=0o700)
        dead = scratch / (epoch_mod.RUN_PREFIX + "killed")
        dead.mkdir()
        (dead / ".lock").write_bytes(b"")
        (dead / "app-db.1234.sqlite").write_bytes(b"plaintext")
        node.backup([node.sqlite_asset(live_db.path)], scratch_dir=str(scratch))
        assert run_dirs(scratch) == []

    def test_parallel_runs_of_one_and_of_many_nodes_on_one_repository(self, make_node, repository, live_db, tmp_path):
        """A small sample of the 480-run campaign: 4 nodes (two runs each of one of them) at once, twice."""
        nodes = [make_node(repository, name) for name in ("n1", "n1", "n2", "n3", "n4")]

        def one(item):
            return item.backup([item.sqlite_asset(live_db.path)])

        for _round in range(2):
            with ThreadPoolExecutor(len(nodes)) as pool:
                manifests = list(pool.map(one, nodes))
            assert len({(m.node, m.epoch) for m in manifests}) == len(nodes)
        assert run_dirs(repository.scratch_dir()) == []


class TestSpecialFilesAsSqlitePath:
    @pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
    def test_refused_at_once_never_waited_on(self, kind, tmp_path, age_key, signing_key):
        path = tmp_path / ("db-" + kind)
        held = None
        if kind == "fifo":
            os.mkfifo(path, 0o600)  # no writer: opening it for reading would wait forever
        elif kind == "socket":
            held = socket.socket(socket.AF_UNIX)
            held.bind(str(path))
        else:
            path = tmp_path / "null"
            os.symlink("/dev/null", path)  # a symlink to a device: followed, then refused
        try:
            result = module(
                "epoch_backup",
                {
                    "repository": str(tmp_path / "repo"),
                    "node": "node1",
                    "assets": [{"name": "db", "type": "sqlite", "path": str(path)}],
                    "recipients": [age_key.recipient],
                    "signing_key": str(signing_key.path),
                },
                tmp_path / "args",
                timeout=30,
            )
        finally:
            if held is not None:
                held.close()
        assert not result.get("timeout"), "the backup waited on the %s" % kind
        assert result["failed"]
        expected = {"fifo": "FIFO", "socket": "socket", "device": "character device"}[kind]
        assert expected in result["msg"] and str(path) in result["msg"], result["msg"]
        assert "nodekeep_assets" in result["msg"]
        # nothing was written: no epoch, no scratch copy
        repo = tmp_path / "repo" / "node1"
        assert not repo.exists() or not [p for p in repo.iterdir() if p.name[0].isdigit()]

    @pytest.mark.timeout(30)  # the old code waited here forever for a writer
    def test_the_engine_refuses_a_fifo_swapped_in_for_the_file(self, tmp_path):
        """The type is checked on the open descriptor: a FIFO at the path is never read from."""
        from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import check_is_database

        path = tmp_path / "app.db"
        os.mkfifo(path, 0o600)
        with pytest.raises(CaptureError) as excinfo:
            check_is_database(str(path))
        assert "FIFO" in excinfo.value.message
        assert stat.S_ISFIFO(os.lstat(path).st_mode)  # left as it was
