"""The ``btrfs`` asset type, and consistency groups (one snapshot under SQLite + files + RocksDB)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from snaphelpers import sh, write_files
from test_zfs import FailingRepository, change

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import base as snapshot
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import btrfs as _btrfs_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import volumes


def snapdir_names(volume: Path) -> list[str]:
    directory = volume.parent / snapshot.SNAPSHOT_DIR
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def test_chain_of_five_sends_restores_the_same_content(node, btrfs_volume, btrfs_fs):
    asset = {"name": "vol", "type": "btrfs", "path": str(btrfs_volume), "full_every": 0, "local_retention": {}}
    manifests = []
    for step in range(5):
        if step:
            change(btrfs_volume, step)
        manifests.append(node.backup([asset]))
    sources = [m.artifact("vol").source for m in manifests]
    assert [s["send"] for s in sources] == ["full"] + ["incremental"] * 4
    assert [len(s.get("chain") or []) for s in sources] == [0, 1, 2, 3, 4]
    assert sources[-1]["base"]["guid"] == sources[-2]["snapshot"]["uuid"]
    assert sources[-1]["snapshot"]["backend"] == "btrfs"
    staging_root = btrfs_fs.mountpoint / "restore-chain"
    restored = node.restore(staging_root)["artifacts"][0]
    target = Path(restored["path"])
    assert target == staging_root / str(btrfs_volume).lstrip("/")
    assert restored["checks"]["snapshot_id"] == "ok"
    assert restored["checks"]["compared"].startswith("snapshot ")
    snapshot.compare_trees(str(btrfs_volume), str(target))
    assert os.lstat(target).st_ino == 256  # a writable subvolume
    (target / "writable").write_text("yes")
    # nothing left over beside it: the received read-only snapshots are gone
    assert sorted(os.listdir(target.parent)) == ["data"]
    verified = node.verify(deep=True)
    assert verified["ok"], verified["problems"]
    sh("btrfs", "subvolume", "delete", str(target))


def test_interrupted_send_leaves_nothing_and_next_run_succeeds(node, btrfs_volume, make_node):
    (btrfs_volume / "big.bin").write_bytes(os.urandom(8 << 20))
    asset = {"name": "vol", "type": "btrfs", "path": str(btrfs_volume)}
    node.backup([asset])
    (btrfs_volume / "big.bin").write_bytes(os.urandom(8 << 20))
    before = snapdir_names(btrfs_volume)
    with pytest.raises(NodekeepError):
        make_node(FailingRepository(node.repository, fail_after=64 << 10)).backup([asset])
    assert snapdir_names(btrfs_volume) == before
    assert node.backup([asset]).artifact("vol").source["send"] == "incremental"


def test_retention_keeps_what_the_policy_says(btrfs_volume):
    fs = _btrfs_mod.Btrfs()
    start = datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)
    names = [snapshot.snapshot_name("nodekeep", epoch_name(start + timedelta(hours=h))) for h in range(0, 96, 12)]
    for name in names:
        fs.create(str(btrfs_volume), name)
    fs.create(str(btrfs_volume), "manual")
    policy = RetentionPolicy(keep_daily=2)
    dry = volumes.prune_snapshots(fs, str(btrfs_volume), policy, dry_run=True)
    assert len(snapdir_names(btrfs_volume)) == len(names) + 1
    expected = {names[-4], names[-2], names[-1]}  # first of each of the 2 newest days, and the newest
    assert {e["name"] for e in dry["kept"]} == expected
    result = volumes.prune_snapshots(fs, str(btrfs_volume), policy, protect={names[0]})
    assert {s.split("@", 1)[1] for s in snapdir_names(btrfs_volume)} == expected | {names[0], "manual"}
    assert len(result["destroyed"]) == len(names) - 4


def _rocksdb_available() -> bool:
    try:
        asset_type("rocksdb")
        import rocksdict  # noqa: F401
    except (NodekeepError, ImportError):
        return False
    return True


def _files_type() -> str | None:
    for name in ("files", "config"):
        try:
            asset_type(name)
            return name
        except (NodekeepError, ImportError):
            continue
    return None


def test_consistency_group_one_snapshot_for_sqlite_files_and_rocksdb(
    node, btrfs_volume, live_db, writer, dbtools, tmp_path
):
    """SQLite (with a live writer), a files tree and a RocksDB on one subvolume, captured by ONE snapshot."""
    tree = btrfs_volume / "blobs"
    write_files(tree, seed=7)
    writer.wait_for(20)
    volume = str(btrfs_volume)
    assets = [
        {"name": "app-db", "type": "sqlite", "path": str(live_db.path), "snapshot": volume},
    ]
    files_type = _files_type()
    if files_type:
        assets.append({"name": "blobs", "type": files_type, "path": str(tree), "snapshot": volume})
    if _rocksdb_available():
        import rocksdict

        db = rocksdict.Rdict(str(btrfs_volume / "rocks"))
        for index in range(200):
            db[b"key%04d" % index] = b"value%04d" % index
        db.flush()
        db.close()
        assets.append({"name": "chain-db", "type": "rocksdb", "path": str(btrfs_volume / "rocks"), "snapshot": volume})
    manifest = node.backup(assets)
    commits = writer.stop()
    snaps = {a.name: a.source["snapshot"] for a in manifest.artifacts}
    assert len({(s["volume"], s["name"], s["uuid"]) for s in snaps.values()}) == 1, snaps
    facts = next(iter(snaps.values()))
    assert facts["backend"] == "btrfs" and facts["volume"] == volume
    assert facts["name"] == "nodekeep-cg-%s" % manifest.epoch and facts["created"]
    for artifact in manifest.artifacts:
        assert artifact.source["path"] in {a["path"] for a in assets}  # the original path, not the snapshot's
    # the group snapshot is gone after the run
    assert not [n for n in snapdir_names(btrfs_volume) if "-cg-" in n]

    restored = node.restore(tmp_path / "staging")
    by_name = {a["name"]: a for a in restored["artifacts"]}
    db_copy = Path(by_name["app-db"]["path"])
    assert db_copy == tmp_path / "staging" / str(live_db.path).lstrip("/")
    state = dbtools.consistency(db_copy)
    assert state["integrity"] == ["ok"] and state["even"] and state["txns_complete"]
    assert 0 < state["count"] <= live_db.rows + 2 * commits
    if files_type:
        snapshot.compare_trees(str(tree), by_name["blobs"]["path"])
    if "chain-db" in by_name:
        import rocksdict

        opened = rocksdict.Rdict(by_name["chain-db"]["path"], access_type=rocksdict.AccessType.read_only())
        try:
            assert opened[b"key0199"] == b"value0199"
        finally:
            opened.close()


def test_consistency_group_on_zfs_records_the_snapshot(node, zfs_dataset, tmp_path, dbtools):
    dataset, mountpoint = zfs_dataset
    db = dbtools.make(Path(mountpoint) / "app.db", rows=200, journal_mode="wal")
    manifest = node.backup([{"name": "app-db", "type": "sqlite", "path": str(db.path), "snapshot": str(mountpoint)}])
    facts = manifest.artifact("app-db").source["snapshot"]
    assert facts["backend"] == "zfs" and facts["volume"] == dataset and facts["guid"]
    assert facts["name"] == "nodekeep-cg-%s" % manifest.epoch
    listed = sh("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset).stdout
    assert "-cg-" not in listed  # removed after the run
    assert "nodekeep-view-" not in sh("zfs", "list", "-H", "-o", "name").stdout
    restored = node.restore(tmp_path / "staging")["artifacts"][0]
    assert dbtools.consistency(restored["path"])["count"] == 200


def test_a_path_outside_its_snapshot_is_refused(node, btrfs_volume, tmp_path, clear_error):
    outside = tmp_path / "x.db"
    outside.write_bytes(b"")
    with pytest.raises(NodekeepError) as caught:
        node.backup([{"name": "db", "type": "sqlite", "path": str(outside), "snapshot": str(btrfs_volume)}])
    clear_error(caught.value, "not inside its snapshot")


def test_epoch_retention_keeps_the_chain_a_kept_incremental_needs(node, btrfs_volume, btrfs_fs):
    """keep_last 1 keeps the newest epoch and, because it is an incremental send, every epoch of its chain."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention

    asset = {"name": "vol", "type": "btrfs", "path": str(btrfs_volume), "full_every": 3, "local_retention": {}}
    epochs = []
    for step in range(4):  # full, incremental, incremental, full (full_every 3)
        if step:
            change(btrfs_volume, step)
        epochs.append(node.backup([asset]))
    sends = [m.artifact("vol").source["send"] for m in epochs]
    assert sends == ["full", "incremental", "incremental", "full"]
    policy = RetentionPolicy(keep_last=2)
    result = apply_retention(node.repository, node.name, policy, node.public_line)
    removed = [entry["epoch"] for entry in result["removed"]]
    kept = {entry["epoch"]: entry["reasons"] for entry in result["kept"]}
    # epoch 3 (incremental, kept by keep_last) needs epochs 1 and 2; epoch 4 is a new full
    assert removed == []
    assert set(kept) == {m.epoch for m in epochs}
    assert "chain" in " ".join(kept[epochs[0].epoch])
    # with only the newest (a full send) kept, the whole old chain goes
    result = apply_retention(node.repository, node.name, RetentionPolicy(keep_last=1), node.public_line)
    assert [entry["epoch"] for entry in result["removed"]] == [m.epoch for m in epochs[:3]]
    staging = btrfs_fs.mountpoint / "restore-after-prune"
    restored = node.restore(staging)["artifacts"][0]
    snapshot.compare_trees(str(btrfs_volume), restored["path"])
    sh("btrfs", "subvolume", "delete", restored["path"])
