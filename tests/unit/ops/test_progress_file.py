"""ops/progress_file.py: a module's live status file is private JSON replaced whole at each snapshot, a status
file that cannot be written never fails the run, and the result carries each phase's end."""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import progress_for, tracked

EVERY = {"progress_every_bytes": 100, "progress_every_seconds": None}


def test_no_progress_file_no_tracker():
    assert progress_for({"progress_file": None}, "backup") is None
    assert tracked({}, "backup", lambda: {"changed": True})() == {"changed": True}


def test_the_status_file_is_private_json_of_the_last_snapshot(tmp_path):
    status = tmp_path / "nodekeep-progress.json"
    seen = []

    def action():
        with progress.current().step("app-db", "seal", total=300, index=1):
            for _chunk in range(3):
                progress.advance(100)
                seen.append(json.loads(status.read_text()))  # whole JSON at every look, never half written
        return {"changed": True, "epoch": "20260101T000000Z"}

    result = tracked(dict(EVERY, progress_file=str(status), node="node1"), "backup", action)()
    assert stat.S_IMODE(os.stat(status).st_mode) == 0o600
    assert [snap["done_bytes"] for snap in seen] == [100, 200, 300]
    assert all(snap["node"] == "node1" and snap["operation"] == "backup" for snap in seen)
    last = json.loads(status.read_text())
    assert (last["state"], last["done_bytes"], last["total_bytes"]) == ("done", 300, 300)
    assert result["epoch"] == "20260101T000000Z"
    assert [(snap["asset"], snap["phase"], snap["state"]) for snap in result["progress"]] == [("app-db", "seal", "done")]
    assert os.listdir(tmp_path) == ["nodekeep-progress.json"]  # no temporary left


def test_a_status_file_that_cannot_be_written_never_fails_the_run(tmp_path):
    missing = tmp_path / "no-such-directory" / "status.json"

    def action():
        with progress.current().step("app-db", "capture", total=100):
            progress.advance(100)
        return {"changed": True}

    result = tracked(dict(EVERY, progress_file=str(missing)), "backup", action)()
    assert result["changed"] is True and result["progress"][0]["done_bytes"] == 100
    assert not missing.parent.exists()
