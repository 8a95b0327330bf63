"""nodekeep.backup.run_record: a run's record written atomically; a full disk fails clearly and leaves no stale record."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from module_driver import run_module


def test_writes_0600_json_idempotent_and_honest_in_check_mode(tmp_path):
    path = tmp_path / "last-backup.json"
    record = {"format": "nodekeep.last-backup/v1", "status": "ok", "epoch": "20261122T023000Z"}
    planned = run_module("run_record", {"path": str(path), "record": record}, check_mode=True)
    assert planned["changed"] is True and not path.exists()
    assert run_module("run_record", {"path": str(path), "record": record})["changed"] is True
    assert json.loads(path.read_text()) == record and path.stat().st_mode & 0o777 == 0o600
    assert run_module("run_record", {"path": str(path), "record": record})["changed"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["last-backup.json"], "a temporary file was left"


def test_a_full_disk_fails_naming_the_path_and_removes_the_stale_record(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(full)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs: %s" % mounted.stderr.decode().strip())
    try:
        path = full / "last-backup.json"
        path.write_text(json.dumps({"status": "failed", "error": "an earlier run"}))
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        result = run_module("run_record", {"path": str(path), "record": {"status": "ok", "epoch": "E"}})
        assert result["failed"] is True and result["removed_stale"] is True
        assert "no space left on the device holding %s" % path in result["msg"]
        assert "the old record was removed" in result["msg"] and "Traceback" not in result["_stdout"]
        assert not path.exists()
        assert sorted(p.name for p in full.iterdir()) == ["filler"], "a temporary file was left"
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_diff_shows_the_record_before_and_after(tmp_path):
    """--diff (issue 16): the record's text before and after, in check mode too; no diff when nothing changes."""
    path = tmp_path / "last-backup.json"
    old = {"status": "ok", "epoch": "20261122T023000Z"}
    new = {"status": "ok", "epoch": "20261123T023000Z"}
    first = run_module("run_record", {"path": str(path), "record": old, "_ansible_diff": True})
    assert first["diff"]["before"] == "" and json.loads(first["diff"]["after"]) == old
    planned = run_module("run_record", {"path": str(path), "record": new, "_ansible_diff": True}, check_mode=True)
    assert json.loads(planned["diff"]["before"]) == old and json.loads(planned["diff"]["after"]) == new
    assert json.loads(path.read_text()) == old  # check mode wrote nothing
    assert planned["diff"]["before_header"] == str(path)
    assert run_module("run_record", {"path": str(path), "record": new, "_ansible_diff": True})["diff"] == planned["diff"]
    assert "diff" not in run_module("run_record", {"path": str(path), "record": new, "_ansible_diff": True})
