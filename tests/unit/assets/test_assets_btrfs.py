"""assets/btrfs.py on a real btrfs: only a subvolume is captured, snapshots go where ``snapshot_dir`` says, a
restore is received into btrfs beside its target and placed as a writable subvolume equal to the source,
and a restore never overwrites an existing target nor receives outside btrfs."""

from __future__ import annotations

import os

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import compare_trees
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs


def test_only_a_subvolume_is_captured(btrfs_volume):
    kind = asset_type("btrfs")
    with pytest.raises(CaptureError, match="is not a btrfs subvolume") as raised:
        kind.resolve(Btrfs(), {"name": "vol", "path": str(btrfs_volume / "sub")})
    assert "btrfs subvolume create" in raised.value.remedy and "files asset" in raised.value.remedy


def test_snapshots_go_to_the_snapshot_dir(btrfs_volume, epochs):
    elsewhere = btrfs_volume.parent / "snaps"
    asset = {"name": "vol", "type": "btrfs", "path": str(btrfs_volume), "snapshot_dir": str(elsewhere)}
    source = epochs.backup([asset]).artifact("vol").source
    assert source["snapshot_dir"] == str(elsewhere) and source["snapshot"]["path"].startswith(str(elsewhere) + "/")
    assert os.listdir(elsewhere) == [os.path.basename(source["snapshot"]["path"])]


def test_a_restore_is_a_writable_subvolume_equal_to_the_source(btrfs_volume, btrfs_fs, epochs):
    asset = {"name": "vol", "type": "btrfs", "path": str(btrfs_volume)}
    epochs.backup([asset])
    (btrfs_volume / "file00.bin").write_bytes(b"changed")
    manifest = epochs.backup([asset])
    root = btrfs_fs.mountpoint / ("restore-%d" % os.getpid())
    epochs.restore(manifest, root)
    restored = epochs.report["artifacts"][0]
    target = restored["path"]
    try:
        assert restored["checks"]["snapshot_id"] == "ok" and restored["checks"]["compared"].startswith("snapshot ")
        compare_trees(str(btrfs_volume), target)
        assert os.lstat(target).st_ino == 256  # a subvolume of its own
        with open(os.path.join(target, "writable"), "w") as handle:
            handle.write("yes")
        assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]  # nothing left beside it

        # the asset type itself never receives over an existing target (epoch_restore checks first too)
        context = RunContext(epochs.repository, "node1", manifest.epoch, None, artifact=manifest.artifact("vol"))
        refused = pytest.raises(RestoreError, match="the restore target %s already exists" % target)
        with refused, asset_type("btrfs").restore_into(target, context=context):
            pass
        assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]
    finally:
        sh("btrfs", "subvolume", "delete", target, check=False)


def test_a_btrfs_stream_is_received_only_into_btrfs(btrfs_volume, epochs, tmp_path):
    manifest = epochs.backup([{"name": "vol", "type": "btrfs", "path": str(btrfs_volume)}])
    with pytest.raises(RestoreError, match="is not on btrfs") as raised:
        epochs.restore(manifest, tmp_path / "restore")
    assert "staging root on a btrfs filesystem" in raised.value.remedy
    assert not any(files for _d, _s, files in os.walk(tmp_path / "restore"))
