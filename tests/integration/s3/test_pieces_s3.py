"""Incremental SQLite epochs (pieces) and S3 (SeaweedFS, a real server): epoch_copy uploads only the pieces
the bucket lacks, a piece reused by a later epoch stays locked as long as that epoch (Object Lock extended,
on copies and on backups written straight to the bucket), what is uploaded per epoch is what is stored,
and verify, deep verify and restore work from the bucket."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import copy_epoch

pytestmark = pytest.mark.timeout(300)


def _asset(db, tmp_path) -> dict:
    return {
        "name": "app-db",
        "type": "sqlite",
        "path": str(db),
        "incremental": True,
        "state_dir": str(tmp_path / "state"),
    }


def _hot(db) -> None:
    subprocess.run(
        [
            "sqlite3",
            str(db),
            "UPDATE t SET payload = randomblob(length(payload)) WHERE id > (SELECT max(id) FROM t) - 30",
        ],
        check=True,
        capture_output=True,
    )


def _refs(repository, node, epoch) -> dict:
    data = repository.get_bytes(node, epoch, "app-db.refs.txt").decode().splitlines()[1:]
    return {line.split()[0]: int(line.split()[1]) for line in data}


def test_epoch_copy_uploads_only_missing_pieces_and_extends_locks(
    s3_server, repository, s3_node, signing_key, tmp_path, dbtools
):
    db = dbtools.make(tmp_path / "app.db", rows=6000, payload=1000).path
    node = s3_node(repository, "node1")
    first = node.backup([_asset(db, tmp_path)])
    target = s3_server.repository(s3_server.bucket(lock=True), object_lock_mode="GOVERNANCE", retain_days=1)
    copied = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    assert copied["contents"]["objects"] == len(_refs(repository, "node1", first.epoch))
    _hot(db)
    # A later epoch id (one-second resolution, one second of S3 rounding), so its lock ends later: the clock is
    # injected (the epoch is named three seconds after the first) instead of sleeping.
    second = node.backup([_asset(db, tmp_path)], now=epoch_time(first.epoch) + timedelta(seconds=3))
    new = set(_refs(repository, "node1", second.epoch)) - set(_refs(repository, "node1", first.epoch))
    reused = set(_refs(repository, "node1", second.epoch)) & set(_refs(repository, "node1", first.epoch))
    assert new and reused
    again = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    contents = again["contents"]
    assert contents["objects"] == len(new) and contents["present"] == len(reused)
    assert contents["bytes"] < copied["contents"]["bytes"] / 4  # only the changed pages' packs travel
    assert contents["locks_extended"] == len(reused)
    until = target.lock_for("node1", second.epoch)["until"]
    for name in reused:
        assert target.object_lock_info("node1", name)["retain_until"] >= until - timedelta(seconds=1)
    s3 = s3_node(target, "node1")
    assert s3.verify(second.epoch)["ok"]
    deep = s3.verify(second.epoch, deep=True)
    assert deep["ok"] and deep["artifacts"][0]["checks"]["integrity"] == "ok"
    restored = s3.restore(tmp_path / "from-s3", epoch=second.epoch)
    assert dbtools.rows(restored["artifacts"][0]["path"]) == dbtools.rows(db)


def test_backup_straight_to_a_locked_bucket_uploads_what_it_stores_and_extends_reused_locks(
    s3_server, s3_node, tmp_path, dbtools
):
    db = dbtools.make(tmp_path / "app.db", rows=6000, payload=1000).path
    bucket = s3_server.repository(s3_server.bucket(lock=True), object_lock_mode="GOVERNANCE", retain_days=1)
    node = s3_node(bucket, "node1")
    first = node.backup([_asset(db, tmp_path)])
    _hot(db)
    second = node.backup([_asset(db, tmp_path)], now=epoch_time(first.epoch) + timedelta(seconds=3))
    pieces = second.artifacts[0].source["pieces"]
    refs_first, refs_second = _refs(bucket, "node1", first.epoch), _refs(bucket, "node1", second.epoch)
    new = set(refs_second) - set(refs_first)
    # bytes uploaded for this epoch's pieces = bytes stored by it
    assert pieces["uploaded_bytes"] == sum(refs_second[name] for name in new)
    assert pieces["reused"] == len(set(refs_second) & set(refs_first)) == pieces["locks_extended"] > 0
    until = bucket.lock_for("node1", second.epoch)["until"]
    for name in set(refs_second) & set(refs_first):
        assert bucket.object_lock_info("node1", name)["retain_until"] >= until - timedelta(seconds=1)
    restored = node.restore(tmp_path / "r", epoch=second.epoch)
    assert dbtools.rows(restored["artifacts"][0]["path"]) == dbtools.rows(db)
