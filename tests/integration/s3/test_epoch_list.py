"""The epoch list (epoch_info's listing and lines; playbooks/epochs.yml prints them per node) on a real
repository with a copy in SeaweedFS under Object Lock: where each epoch's copies exist, until when the
copy is locked, its plain and stored sizes in IEC units, and when it was last verified.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/integration: module_driver

from module_driver import run_module, succeeded

pytestmark = pytest.mark.timeout(180)


def test_the_list_names_copies_locks_sizes_and_checks(node, dbtools, tmp_path, s3_server, locked_bucket):
    db = dbtools.make(tmp_path / "app.db", rows=600, payload=1000)
    first = node.backup([node.sqlite_asset(db.path)]).epoch
    second = node.backup([node.sqlite_asset(db.path)]).epoch
    target = dict(
        s3_server.target(locked_bucket, "fleet", object_lock_mode="GOVERNANCE", retain_days=3), name="offsite"
    )
    common = {"repository": node.repository.root, "node": node.name, "public_key": node.public_line}
    succeeded(run_module("epoch_copy", dict(common, epochs=[first], targets=[target])))

    result = succeeded(
        run_module("epoch_info", dict(common, targets=[target], verified={first: "2026-12-07T14:00:00Z (deep)"}))
    )
    rows = {row["epoch"]: row for row in result["listing"]}
    assert list(rows) == [first, second]
    assert rows[first]["copies"] == ["local", "offsite"] and rows[second]["copies"] == ["local"]
    until = datetime.fromisoformat(rows[first]["locked_until"].replace("Z", "+00:00"))
    assert 2 < (until - datetime.now(timezone.utc)).days + 1 <= 3  # the 3-day GOVERNANCE retention
    assert rows[second]["locked_until"] is None
    assert rows[first]["last_verified"] == "2026-12-07T14:00:00Z (deep)" and rows[second]["last_verified"] is None
    assert rows[first]["assets"] == ["app-db"]
    assert rows[first]["plain_bytes"] == os.path.getsize(db.path)
    assert 0 < rows[first]["stored_bytes"] <= rows[first]["plain_bytes"] + 4096  # random data: no compression
    lines = result["lines"]
    assert lines[0].split()[:3] == ["epoch", "time", "(UTC)"]
    assert lines[2].startswith(first) and "local, offsite" in lines[2] and "(deep)" in lines[2]
    assert lines[3].startswith(second) and "never" in lines[3]
    assert "KiB" in lines[2] and " MB" not in "\n".join(lines)
    assert lines[-1].startswith("2 epoch(s), ")


def test_without_a_public_key_there_is_no_table(node, dbtools, tmp_path):
    db = dbtools.make(tmp_path / "app.db", rows=20, payload=10)
    node.backup([node.sqlite_asset(db.path)])
    result = succeeded(run_module("epoch_info", {"repository": node.repository.root, "node": node.name}))
    assert "listing" not in result and "lines" not in result
