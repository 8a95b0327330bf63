"""The ``rocksdb`` asset type through the engine's backup, verify and staged restore, under live writes.

The DB is owned by a separate service process (``rdbapp.py``) that keeps committing one counter per
WriteBatch across four column families. Every restored copy is compared key by key with the state
the service had committed when the copy was taken.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid

import pytest
from integration_helpers import read_rocksdb
from rdbhelpers import APP, assert_consistent

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _rocksdb_db as rocksdb
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
)

pytestmark = pytest.mark.timeout(300)


def asset(app, **options) -> dict:
    return dict({"name": "chain", "type": "rocksdb", "path": str(app.db)}, **options)


def stop_asset(app, **options) -> dict:
    """The asset with ``method: stop`` and the service's own stop and start commands (``options`` override)."""
    stop = {"method": "stop", "stop_command": app.stop_command, "start_command": app.start_command}
    return asset(app, **dict(stop, **options))


def restore(node, tmp_path, app, manifest) -> str:
    target = tmp_path / ("restore-" + uuid.uuid4().hex[:6])
    result = node.restore(target, epoch=manifest.epoch)
    (entry,) = result["artifacts"]
    assert entry["path"] == str(target) + str(app.db)
    return entry["path"]


def leftovers(*directories) -> list:
    found = []
    for directory in directories:
        for root, dirs, files in os.walk(directory):
            found.extend(os.path.join(root, name) for name in dirs + files if name != ".lock")
    return found


# --------------------------------------------------------------------------
# the four methods under live writes
# --------------------------------------------------------------------------


def test_checkpoint_command_under_live_writes(node, rocks_app, tmp_path):
    app = rocks_app
    start = app.wait_for(3100)
    manifest = node.backup(
        [asset(app, method="checkpoint_command", checkpoint_command=app.checkpoint_command, count_keys=True)]
    )
    at_checkpoint = app.last_checkpoint()
    assert at_checkpoint > start
    facts = manifest.artifacts[0].source
    assert facts["method"] == "checkpoint_command"
    assert sorted(facts["column_families"]) == ["accounts", "blocks", "default", "meta"]
    assert facts["checkpoint_seconds"] > 0
    assert facts["rocksdb_version"] and facts["verified_with"].startswith("rocksdict")
    assert manifest.artifacts[0].format == "rocksdb+tar+zstd+age"

    restored = restore(node, tmp_path, app, manifest)
    contents = read_rocksdb(restored)
    assert assert_consistent(contents) == at_checkpoint
    assert facts["keys"] == {family: len(data) for family, data in contents.items()}
    # the service kept running and writing
    assert app.running()
    app.wait_for(at_checkpoint + 50)
    report = node.verify(deep=True)
    assert report["ok"], report["problems"]
    assert report["artifacts"][0]["checks"]["keys"] == facts["keys"]


def test_checkpoint_dir_on_the_db_filesystem(node, rocks_app, tmp_path):
    app = rocks_app
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    manifest = node.backup(
        [
            asset(
                app,
                checkpoint_command=" ".join([sys.executable, APP, "checkpoint", str(app.state), "{dest}"]),
                checkpoint_dir=str(checkpoints),
            )
        ]
    )
    assert manifest.artifacts[0].source["method"] == "checkpoint_command"  # inferred from checkpoint_command
    assert list(checkpoints.iterdir()) == []  # the checkpoint was removed after archiving
    assert assert_consistent(read_rocksdb(restore(node, tmp_path, app, manifest))) == app.last_checkpoint()


def test_stop_method_reports_its_window_and_restarts(node, rocks_app, tmp_path):
    app = rocks_app
    app.wait_for(3050)
    first_pid = app.pid
    manifest = node.backup([stop_asset(app, count_keys=True)])
    facts = manifest.artifacts[0].source
    at_stop = int((app.state / "final.json").read_text())
    assert facts["method"] == "stop"
    assert 0 < facts["stop_seconds"] < 60
    assert facts["copy"]["linked"] > 0  # SST files hard-linked: the scratch is on the DB's filesystem
    assert facts["copy_seconds"] <= facts["stop_seconds"]
    # running again, as a new process, and writing from where it stopped
    assert app.running() and app.pid != first_pid
    app.wait_for(at_stop + 20)
    contents = read_rocksdb(restore(node, tmp_path, app, manifest))
    assert assert_consistent(contents) == at_stop
    assert facts["keys"] == {family: len(data) for family, data in contents.items()}


def _mount_tmpfs(path, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", str(path)], capture_output=True, check=False
    )
    return out.returncode == 0


def test_stop_method_restarts_the_service_when_the_copy_fails(node, rocks_app, tmp_path, clear_error):
    app = rocks_app
    tiny = tmp_path / "tiny"
    if not _mount_tmpfs(tiny, "256k"):
        pytest.skip("needs root to mount a tiny tmpfs")
    try:
        with pytest.raises(NodekeepError) as caught:
            node.backup([stop_asset(app, copy_dir=str(tiny))])
        clear_error(caught.value, "no space", "started again", "stop window")
        assert app.running()
        app.wait_for(app.committed() + 20)
        assert leftovers(tiny) == []
        assert node.repository.complete_epochs(node.name) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


def test_stop_method_without_a_working_start_says_so(node, rocks_app, tmp_path, clear_error):
    app = rocks_app
    failing_start = [sys.executable, "-c", "import sys; sys.exit('unit failed to start')"]
    with pytest.raises(NodekeepError) as caught:
        node.backup([stop_asset(app, start_command=failing_start)])
    clear_error(caught.value, "did NOT start again", "unit failed to start")
    assert "start it by hand" in caught.value.remedy
    assert not app.running()
    app.start()  # what the operator does
    assert app.running()


def _frozen_copy(app, dest) -> int:
    """A crash-consistent copy of the live DB, as a filesystem snapshot makes one: the writer is frozen
    (SIGSTOP) for the copy; what it committed is in the WAL (page cache), nothing was flushed for us."""
    os.kill(app.pid, signal.SIGSTOP)
    try:
        committed = app.committed()
        subprocess.run(["cp", "-a", str(app.db), str(dest)], check=True)
    finally:
        os.kill(app.pid, signal.SIGCONT)
    return committed


def test_snapshot_method_reads_a_crash_consistent_view(node, rocks_app, tmp_path):
    app = rocks_app
    app.wait_for(3100)
    snapshot = tmp_path / "snapshot"
    committed = _frozen_copy(app, snapshot)
    manifest = node.backup([dict(asset(app, method="snapshot", count_keys=True), path=str(snapshot))])
    facts = manifest.artifacts[0].source
    assert facts["method"] == "snapshot" and facts["path"] == str(snapshot)
    target = tmp_path / "restore"
    (entry,) = node.restore(target)["artifacts"]
    n = assert_consistent(read_rocksdb(entry["path"]))
    # the status file is written just after each commit: the snapshot may hold one more
    assert committed <= n <= committed + 1


def test_snapshot_method_refuses_the_live_db(node, rocks_app, clear_error):
    app = rocks_app
    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="snapshot")])
    clear_error(caught.value, "not a filesystem snapshot", str(app.pid))


def test_offline_refuses_a_held_lock_and_copies_a_closed_db(node, rocks_app, tmp_path, clear_error, tree):
    app = rocks_app
    scratch = tmp_path / "scratch"
    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="offline")], scratch_dir=str(scratch))
    clear_error(caught.value, "holds its LOCK", "process %d" % app.pid, "offline")
    assert "stop the application" in caught.value.remedy
    assert leftovers(scratch) == []
    assert app.running()

    final = app.stop()
    before = tree(app.db)
    manifest = node.backup([asset(app, method="offline", count_keys=True)])
    assert tree(app.db) == before  # the node's DB directory was not touched
    facts = manifest.artifacts[0].source
    restored = restore(node, tmp_path, app, manifest)
    # byte for byte the closed DB: nothing added or rewritten by the verification
    assert tree(restored) == before
    contents = read_rocksdb(restored)
    assert assert_consistent(contents) == final
    assert facts["keys"] == {family: len(data) for family, data in contents.items()}


def test_read_only_verification_changes_nothing(rocks_app, tmp_path, tree):
    app = rocks_app
    app.stop()
    copy = tmp_path / "copy"
    shutil.copytree(app.db, copy)
    os.unlink(copy / "rocksdict-config.json")  # as a DB written by another RocksDB program has none
    before = tree(copy)
    facts = rocksdb.verify_copy(str(copy), count_keys=True)
    assert tree(copy) == before
    assert sorted(os.listdir(tmp_path)) == ["copy", "node"]  # the view beside it was removed
    assert facts["keys"]["default"] > 3000


# --------------------------------------------------------------------------
# damage and bad inputs
# --------------------------------------------------------------------------


def _largest_sst(path) -> str:
    ssts = [os.path.join(path, name) for name in os.listdir(path) if name.endswith(".sst")]
    return max(ssts, key=os.path.getsize)


def test_deep_check_detects_a_damaged_restored_copy(node, rocks_app, tmp_path):
    app = rocks_app
    manifest = node.backup(
        [asset(app, method="checkpoint_command", checkpoint_command=app.checkpoint_command, count_keys=True)]
    )
    artifact = manifest.artifacts[0]
    kind = asset_type("rocksdb")

    flipped = restore(node, tmp_path, app, manifest)
    assert kind.deep_check(flipped, artifact)["keys"] == artifact.source["keys"]
    sst = _largest_sst(flipped)
    with open(sst, "r+b") as handle:
        handle.seek(os.path.getsize(sst) // 3)
        handle.write(b"\xde\xad\xbe\xef" * 64)
    with pytest.raises(RestoreError, match="damaged|Corruption|checksum"):
        kind.deep_check(flipped, artifact)

    missing = restore(node, tmp_path, app, manifest)
    os.unlink(_largest_sst(missing))
    with pytest.raises(RestoreError, match="cannot be opened"):
        kind.deep_check(missing, artifact, check="quick")

    fewer = restore(node, tmp_path, app, manifest)
    other = dict(artifact.source, keys=dict(artifact.source["keys"], blocks=artifact.source["keys"]["blocks"] + 1))
    artifact.source = other
    with pytest.raises(RestoreError, match="column family blocks has"):
        kind.deep_check(fewer, artifact)


def test_bad_inputs_are_clear_and_leave_nothing(node, rocks_app, tmp_path, clear_error):
    app = rocks_app
    scratch = tmp_path / "scratch"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "data.txt").write_text("not a database")

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="offline", path=str(plain))], scratch_dir=str(scratch))
    clear_error(caught.value, "not a RocksDB directory", str(plain))

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="offline", path=str(tmp_path / "nowhere"))], scratch_dir=str(scratch))
    clear_error(caught.value, "does not exist")

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    with pytest.raises(CaptureError) as caught:
        node.backup(
            [asset(app, checkpoint_command=[sys.executable, APP, "fail", "{dest}"], checkpoint_dir=str(checkpoints))],
            scratch_dir=str(scratch),
        )
    clear_error(caught.value, "exit code 3", "disk on fire")
    assert leftovers(checkpoints) == []

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, checkpoint_command="myapp checkpoint /tmp/x")])
    clear_error(caught.value, "{dest}")

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app)])
    clear_error(caught.value, "no RocksDB method")
    assert "checkpoint_command" in caught.value.remedy

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="stop", service="chain", copy_dir=str(app.db / "x"))])
    clear_error(caught.value, "inside the database")

    with pytest.raises(CaptureError) as caught:
        node.backup([asset(app, method="stop", stop_command=["/nonexistent/stopper"], start_command=["true"])])
    clear_error(caught.value, "/nonexistent/stopper", "not found")
    assert app.running()

    assert leftovers(scratch) == []
    assert node.repository.complete_epochs(node.name) == []
    assert app.running()
