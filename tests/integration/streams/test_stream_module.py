"""epoch_restore with point_in_time: the module path of a point-in-time restore (file and staging)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from module_driver import failed, run_module, succeeded


def test_epoch_restore_point_in_time_to_a_file_and_to_staging(stream_lab, tmp_path):
    from streamhelpers import restored_numbers

    writer = stream_lab.writer()
    writer.commit(4)
    service = stream_lab.service()
    stream_lab.wait_chain(service)
    writer.commit(21)
    stream_lab.wait_caught_up(service)
    stream_lab.stop(service)
    common = {
        "node": "node1",
        "repository": str(stream_lab.repository.root),
        "public_key": stream_lab.signing_key.public_line,
        "identity_files": [str(stream_lab.age_key.identity_path)],
        "artifacts": ["app-db"],
        "point_in_time": "latest",
    }
    plan = succeeded(run_module("epoch_restore", dict(common, output=str(tmp_path / "out" / "x.db")), check_mode=True))
    assert plan["source"] == "chain" and not (tmp_path / "out").exists()
    result = succeeded(run_module("epoch_restore", dict(common, output=str(tmp_path / "out" / "x.db"))))
    assert result["integrity"] == "ok" and result["restored_commit_time"].endswith("Z")
    assert restored_numbers(tmp_path / "out" / "x.db") == 25
    staged = succeeded(run_module("epoch_restore", dict(common, dest=str(tmp_path / "staging"))))
    assert staged["path"] == str(tmp_path / "staging") + str(stream_lab.db)
    assert restored_numbers(Path(staged["path"])) == 25
    again = failed(run_module("epoch_restore", dict(common, dest=str(tmp_path / "staging"))), "already exists")
    assert again
    two = dict(common, artifacts=[], dest=str(tmp_path / "s2"))
    failed(run_module("epoch_restore", two), "one SQLite asset", "artifacts")
    failed(run_module("epoch_restore", dict(common, point_in_time="yesterday-ish", dest=str(tmp_path / "s3"))),
           "is not a time", "ISO 8601")  # fmt: skip
