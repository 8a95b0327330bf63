"""The backup role's off-site step and retention, against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json

import pytest
from test_playbooks import NODE, Lab, _ansible_playbook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def offsite_lab(tmp_path_factory, age_key):
    playbook_bin = _ansible_playbook()
    if playbook_bin is None:
        pytest.skip("ansible-playbook is not installed (run `make setup`)")
    lab = Lab(tmp_path_factory.mktemp("offsite"), age_key, playbook_bin)
    lab.live_db.parent.mkdir(parents=True, exist_ok=True)
    import subprocess

    subprocess.run(
        ["sqlite3", str(lab.live_db), (
            "PRAGMA journal_mode=WAL; CREATE TABLE t(seq INTEGER PRIMARY KEY, v TEXT);"
            "INSERT INTO t(v) SELECT hex(randomblob(64)) FROM generate_series(1, 2000);"
        )],
        check=True, capture_output=True,
    )  # fmt: skip
    lab.run("agent.yml")
    return lab


def test_backup_copies_the_epoch_off_site_and_applies_retention(offsite_lab, s3_server, signing_key):
    lab = offsite_lab
    bucket = s3_server.bucket(lock=False)
    extra = lab.base / "offsite.json"
    target = s3_server.target(bucket, "fleet")
    extra.write_text(
        json.dumps(
            {
                "nodekeep_s3_targets": [target],
                "nodekeep_s3_pruner_targets": [target],
                "nodekeep_retention": {"keep_last": 2},
            }
        )
    )
    for _run in range(3):
        lab.run("backup.yml", "--skip-tags", "agent", "-e", "@%s" % extra)  # a clash takes the next second (new_epoch)
    local = lab.epochs()
    assert len(local) == 2, local  # keep_last: 2 pruned the first epoch locally

    offsite = s3_server.repository(bucket, "fleet")
    assert offsite.complete_epochs(NODE) == local  # every new epoch was copied, the pruned one removed there too

    result = json.loads((lab.results / NODE / ("backup-%s.json" % local[-1])).read_text())
    (copy,) = result["copies"]
    assert [c["epoch"] for c in copy["copied"]] == [local[-1]], copy
    assert {location: len(epochs) for location, epochs in result["pruned"].items()} == {
        str(lab.repository): 1,
        "s3://%s/fleet" % bucket: 1,
    }, result["pruned"]
