"""Live progress of real runs: a SQLite backup, a deep verify and a restore write status snapshots.

The interval is in bytes (``every_bytes``), never in time: what is emitted depends on the data
alone. The status file is the one the modules write (``common.progress_for``): JSON, mode 0600.
"""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress
from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import progress_line
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import progress_for

EVERY = 256 << 10


def _tracked(path, operation):
    """The module's tracker (status file) with every snapshot also kept in a list."""
    tracker = progress_for(
        {"progress_file": str(path), "progress_every_bytes": EVERY, "progress_every_seconds": None}, operation, "node1"
    )
    seen = []
    write = tracker._emit

    def emit(snapshot):
        seen.append(snapshot)
        write(snapshot)

    tracker._emit = emit
    return tracker, seen


def _check_running(seen, phase, total):
    running = [s for s in seen if s["phase"] == phase and s["state"] == "running" and s["done_bytes"]]
    assert len(running) >= 3, [(s["phase"], s["done_bytes"]) for s in seen]
    for snap in running:
        assert snap["total_bytes"] == total
        assert 0 < snap["done_bytes"] <= total
        assert snap["rate_bytes_per_second"] > 0
        assert snap["eta_seconds"] is not None and snap["eta_seconds"] >= 0
        assert snap["asset"] == "app-db" and snap["assets"] == 1 and snap["asset_index"] == 1
        line = progress_line(snap)
        assert " app-db %s: " % phase in line and " of " in line and "/s" in line and "ETA " in line
    done = [s for s in seen if s["phase"] == phase and s["state"] == "done"]
    assert done and done[-1]["done_bytes"] == total


def test_backup_verify_restore_report_progress_in_a_private_status_file(node, dbtools, tmp_path):
    db = dbtools.make(tmp_path / "app.db", rows=14000, payload=1000)  # about 14 MiB, incompressible
    size = os.path.getsize(db.path)
    status = tmp_path / "status" / "progress.json"
    status.parent.mkdir(mode=0o700)

    tracker, seen = _tracked(status, "backup")
    with progress.reporting(tracker):
        manifest = node.backup([node.sqlite_asset(db.path)])
    (artifact,) = manifest.artifacts
    assert artifact.content_size == size
    _check_running(seen, "capture", size)  # the SQLite copy, page by page
    _check_running(seen, "seal", size)
    assert [s["phase"] for s in seen if s["state"] == "done"] == ["capture", "seal"]
    assert all(s["operation"] == "backup" and s["node"] == "node1" for s in seen)
    # the file holds the last snapshot, private and whole (replaced atomically, never appended)
    assert stat.S_IMODE(os.stat(status).st_mode) == 0o600
    last = json.loads(status.read_text())
    assert last == seen[-1] and last["format"] == "nodekeep.progress/v1"
    assert not [p for p in os.listdir(status.parent) if p != "progress.json"]  # no temporary left

    tracker, seen = _tracked(status, "verify")
    with progress.reporting(tracker):
        assert node.verify(manifest.epoch, deep=True)["ok"]
    _check_running(seen, "deep verify", size)

    tracker, seen = _tracked(status, "restore")
    with progress.reporting(tracker):
        node.restore(tmp_path / "staging", manifest.epoch)
    _check_running(seen, "restore", size)
    assert progress.current() is progress.NULL  # the run's tracker is gone after it


def test_an_unwritable_status_file_never_fails_the_backup(node, dbtools, tmp_path):
    db = dbtools.make(tmp_path / "app.db", rows=200, payload=100)
    tracker = progress_for({"progress_file": str(tmp_path / "missing" / "p.json")}, "backup", "node1")
    with progress.reporting(tracker):
        manifest = node.backup([node.sqlite_asset(db.path)])
    assert manifest.artifacts and tracker.emitted >= 2
