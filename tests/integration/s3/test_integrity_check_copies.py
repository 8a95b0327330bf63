"""integrity_check across copies: the local repository and an S3 copy, per copy and rolling."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.modules import integrity_check

pytestmark = pytest.mark.timeout(120)

EPOCHS = ["20261119T023000Z", "20261120T023000Z"]


@pytest.fixture
def two_copies(repository, s3_server, make_epoch):
    bucket = s3_server.bucket(lock=False)
    offsite = s3_server.repository(bucket, "fleet")
    for epoch in EPOCHS:
        make_epoch(repository, "node1", epoch, names=("db", "keys"))
        make_epoch(offsite, "node1", epoch, names=("db", "keys"))
    return repository, offsite, s3_server.target(bucket, "fleet")


def _args(repository, signing_key, target, **extra):
    args = {"node": "node1", "repository": repository.root, "public_key": signing_key.public_line, "targets": [target]}
    args.update(extra)
    return args


def test_each_copy_is_reported(two_copies, signing_key, run_module):
    local, _offsite, target = two_copies
    failed, result = run_module(integrity_check, _args(local, signing_key, target))
    assert not failed, result
    assert [c["location"] for c in result["copies"]] == [local.location, "s3://%s/fleet" % target["bucket"]]
    assert all(c["ok"] and c["signature"] == "valid" for c in result["copies"])
    assert result["epoch"] == EPOCHS[-1]


def test_damage_in_the_offsite_copy_fails_and_names_that_copy(two_copies, signing_key, run_module, s3_server):
    local, offsite, target = two_copies
    key = "fleet/node1/%s/db.bin.zst.age" % EPOCHS[-1]
    s3_server.client().put_object(Bucket=offsite.bucket, Key=key, Body=b"not the artifact")
    failed, result = run_module(integrity_check, _args(local, signing_key, target))
    assert failed
    local_report, offsite_report = result["copies"]
    assert local_report["ok"] and not offsite_report["ok"]
    assert any(p.startswith("s3://%s/fleet: db:" % offsite.bucket) for p in result["problems"]), result["problems"]


def test_rolling_subset_covers_every_artifact_of_every_copy(two_copies, signing_key, run_module):
    local, _offsite, target = two_copies
    runs = 3
    seen = {local.location: [], "s3://%s/fleet" % target["bucket"]: []}
    for run in range(1, runs + 1):
        failed, result = run_module(integrity_check, _args(local, signing_key, target, subset="%d/%d" % (run, runs)))
        assert not failed, result
        assert result["subset"] == "%d/%d" % (run, runs)
        for copy in result["copies"]:
            seen[copy["location"]].extend((c["epoch"], c["artifact"]) for c in copy["checked"])
    expected = sorted((e, n) for e in EPOCHS for n in ("db", "keys"))
    assert {location: sorted(items) for location, items in seen.items()} == {location: expected for location in seen}


def test_a_bad_subset_is_a_clear_error(two_copies, signing_key, run_module):
    local, _offsite, target = two_copies
    failed, result = run_module(integrity_check, _args(local, signing_key, target, subset="4/3"))
    assert failed
    assert "is not N/T" in result["msg"]
