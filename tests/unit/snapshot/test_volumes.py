"""snapshot/volumes.py on real btrfs and zfs-fuse: which backend holds a path (and a clear error when none
does), pruning that touches only our names and never a held snapshot, one consistency snapshot per volume
that is gone after the capture, a send stream sealed to a 0600 file and received back equal (a tampered
byte refused), and a cutover that keeps the live dataset aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import volumes
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import SnapshotError, compare_trees
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs

E1, E2, E3 = "nodekeep-20261120T000000Z", "nodekeep-20261121T000000Z", "nodekeep-20261122T000000Z"
EPOCH = "20261123T000000Z"


def test_the_backend_of_a_path(btrfs_volume, zfs_dataset, tmp_path):
    fs, volume = volumes.detect_volume(str(btrfs_volume))
    assert fs.kind == "btrfs" and volume == str(btrfs_volume)
    fs, volume = volumes.detect_volume(str(zfs_dataset[1]))
    assert fs.kind == "zfs" and volume == zfs_dataset[0]
    with pytest.raises(SnapshotError, match="is on btrfs but is not a subvolume") as raised:
        volumes.detect_volume(str(btrfs_volume / "sub"))
    assert "give snapshot:" in raised.value.remedy
    with pytest.raises(SnapshotError, match="neither a ZFS dataset's mountpoint nor a btrfs subvolume"):
        volumes.detect_volume(str(tmp_path))
    with pytest.raises(SnapshotError, match="unknown snapshot backend 'lvm'"):
        volumes.backend("lvm")


def test_pruning_keeps_held_and_protected_snapshots_and_other_names(zfs_dataset):
    name, _mountpoint = zfs_dataset
    fs = Zfs()
    snaps = {n: fs.create(name, n) for n in (E1, E2, E3, "by-hand")}
    fs.hold(snaps[E1], "keep")
    report = volumes.prune_snapshots(fs, name, RetentionPolicy.from_options({"keep_last": 1}), protect={E2})
    assert [e["name"] for e in report["held"]] == [E1] and report["destroyed"] == []
    assert {e["name"] for e in report["kept"]} == {E2, E3} and report["changed"] is False
    assert [s.name for s in fs.snapshots(name)] == [E1, E2, E3, "by-hand"]
    fs.release(snaps[E1], "keep")
    report = volumes.prune_snapshots(fs, name, RetentionPolicy.from_options({"keep_last": 1}))
    assert [e["name"] for e in report["destroyed"]] == [E1, E2] and report["changed"]
    assert [s.name for s in fs.snapshots(name)] == [E3, "by-hand"]


def test_a_consistency_snapshot_copies_a_database_with_its_wal_and_goes_away(btrfs_volume, dbtools, tmp_path):
    db = dbtools.make(btrfs_volume / "app.db", rows=200, journal_mode="wal").path
    expected = dbtools.rows(db)
    assets = [
        {"name": "db", "type": "sqlite", "path": str(db), "snapshot": str(btrfs_volume)},
        {"name": "tree", "type": "files", "path": str(btrfs_volume / "sub"), "snapshot": str(btrfs_volume)},
        {"name": "plain", "type": "files", "path": str(tmp_path)},
    ]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with volumes.consistency_snapshots(assets, EPOCH, str(scratch)) as mapped:
        assert set(mapped) == {"db", "tree"}  # one snapshot of the volume for both
        copy = mapped["db"]["path"]
        assert copy.startswith(str(scratch)) and os.stat(copy).st_mode & 0o777 == 0o600
        (btrfs_volume / "sub" / "notes.txt").write_text("changed during the capture")
        assert Path(mapped["tree"]["path"], "notes.txt").read_text() == "seed 0\n"
        assert dbtools.rows(copy) == expected
        assert mapped["db"]["snapshot"]["name"] == mapped["tree"]["snapshot"]["name"]
        assert len(Btrfs().snapshots(str(btrfs_volume))) == 1
    assert Btrfs().snapshots(str(btrfs_volume)) == [] and os.listdir(scratch) == []


def test_an_asset_outside_its_snapshot_is_refused(btrfs_volume, tmp_path):
    assets = [{"name": "db", "type": "files", "path": str(tmp_path), "snapshot": str(btrfs_volume)}]
    refused = pytest.raises(CaptureError, match="asset db: its path .* is not inside its snapshot")
    with refused as raised, volumes.consistency_snapshots(assets, EPOCH, str(tmp_path)):
        pass
    assert "set snapshot:" in raised.value.remedy and Btrfs().snapshots(str(btrfs_volume)) == []


def test_a_sealed_send_file_is_received_back_equal_and_a_tampered_one_refused(btrfs_volume, age_key, tmp_path):
    fs, volume = Btrfs(), str(btrfs_volume)
    snap = fs.create(volume, E1)
    dest = str(tmp_path / "stream.age")
    sent = volumes.send_to_file(fs, snap, None, dest, seal.load_recipients([age_key.recipient]))
    assert os.stat(dest).st_mode & 0o777 == 0o600 and sent["size"] == os.path.getsize(dest)
    assert sent["content_sha256"] is None  # no unkeyed hash of the files' data
    assert os.listdir(tmp_path) == ["stream.age"]
    identities = seal.load_identities([], [str(age_key.identity_path)])
    target = btrfs_volume.parent / "received"
    target.mkdir()
    got = volumes.receive_from_file(["btrfs", "receive", "-e", str(target)], dest, identities, "receive")
    assert got["sha256"] == sent["sha256"] and got["content_size"] == sent["content_size"]
    assert compare_trees(snap.ident, str(target / os.path.basename(snap.ident)))["files"] >= 5

    tampered = tmp_path / "tampered.age"
    data = bytearray(Path(dest).read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    other = btrfs_volume.parent / "other"
    other.mkdir()
    with pytest.raises(NodekeepError):
        volumes.receive_from_file(["btrfs", "receive", "-e", str(other)], str(tampered), identities, "receive")
    for entry in os.listdir(other):  # btrfs receive may have made the subvolume before the stream failed
        sh("btrfs", "subvolume", "delete", str(other / entry), check=False)
    for entry in os.listdir(target):
        sh("btrfs", "subvolume", "delete", str(target / entry), check=False)


def test_a_cutover_keeps_the_live_dataset_aside(zfs_dataset):
    name, mountpoint = zfs_dataset
    fs = Zfs()
    staging = name + "-staging"
    sh("zfs", "create", staging)
    staging_mount = sh("zfs", "get", "-H", "-o", "value", "mountpoint", staging).stdout.strip()
    with open(os.path.join(staging_mount, "restored"), "w") as handle:
        handle.write("restored")
    try:
        with pytest.raises(SnapshotError, match="cutover mode 'swap' is not valid"):
            volumes.zfs_cutover(staging, name, mode="swap", fs=fs)
        result = volumes.zfs_cutover(staging, name, fs=fs)  # auto: zfs-fuse cannot rename filesystems
        assert result["mode"] == "mountpoint" and result["mountpoint"] == str(mountpoint)
        assert (mountpoint / "restored").read_text() == "restored"
        aside = result["previous_mountpoint"]
        assert aside.startswith("%s.pre-restore-" % mountpoint) and os.path.exists(os.path.join(aside, "file00.bin"))
    finally:
        sh("zfs", "destroy", "-r", staging, check=False)
        sh("zfs", "set", "mountpoint=%s" % mountpoint, name, check=False)
