"""assets/zfs.py on a real zfs-fuse pool: a dataset named by ``dataset:`` stands for its mountpoint (an absent or
unmounted one refused with what to do), a path that is no dataset's mountpoint refused, restores received into
a staging dataset of their own (one per target) mounted at the target and equal to the source, and an earlier
staging dataset never received over without force."""

from __future__ import annotations

import os

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import RESTORE_PARENT, compare_trees
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs


def test_a_dataset_stands_for_its_mountpoint(zfs_dataset):
    name, mountpoint = zfs_dataset
    kind = asset_type("zfs")
    normalized = kind.normalize({"name": "vol", "type": "zfs", "dataset": name})
    assert normalized["path"] == str(mountpoint) and kind.resolve(Zfs(), normalized) == name
    with pytest.raises(CaptureError, match="the ZFS dataset %s/nope does not exist" % name) as raised:
        kind.normalize({"name": "vol", "type": "zfs", "dataset": name + "/nope"})
    assert "zfs list" in raised.value.remedy
    sh("zfs", "create", "-o", "mountpoint=none", name + "/unmounted")
    with pytest.raises(CaptureError, match="is not mounted") as raised:
        kind.normalize({"name": "vol", "type": "zfs", "dataset": name + "/unmounted"})
    assert "zfs mount %s/unmounted" % name in raised.value.remedy
    with pytest.raises(CaptureError, match="no ZFS dataset is mounted at") as raised:
        kind.resolve(Zfs(), {"name": "vol", "path": str(mountpoint / "sub")})
    assert "set dataset: pool/name" in raised.value.remedy


def test_one_staging_dataset_per_target(zfs_dataset, epochs):
    name, mountpoint = zfs_dataset
    manifest = epochs.backup([{"name": "vol", "type": "zfs", "path": str(mountpoint)}])
    artifact = manifest.artifact("vol")
    kind, fs, pool = asset_type("zfs"), Zfs(), name.split("/", 1)[0]
    first = kind._staging_dataset(fs, "/restore/a" + str(mountpoint), artifact)
    assert first.startswith("%s/%s/%s-" % (pool, RESTORE_PARENT, name.rsplit("/", 1)[1]))
    assert first == kind._staging_dataset(fs, "/restore/a" + str(mountpoint), artifact)
    assert first != kind._staging_dataset(fs, "/restore/b" + str(mountpoint), artifact)


def test_a_restore_is_a_dataset_mounted_at_the_target_equal_to_the_source(zfs_dataset, epochs, tmp_path):
    _name, mountpoint = zfs_dataset
    asset = {"name": "vol", "type": "zfs", "path": str(mountpoint)}
    epochs.backup([asset])
    (mountpoint / "file00.bin").write_bytes(b"changed")
    manifest = epochs.backup([asset])
    assert manifest.artifact("vol").source["send"] == "incremental"
    root = tmp_path / "restore"
    epochs.restore(manifest, root)
    restored = epochs.report["artifacts"][0]
    target = restored["path"]
    staging = asset_type("zfs")._staging_dataset(Zfs(), target, manifest.artifact("vol"))
    assert sh("zfs", "get", "-H", "-o", "value", "mountpoint", staging).stdout.strip() == target
    compare_trees(str(mountpoint), target)
    assert restored["checks"]["snapshot_id"] == "ok"

    # an earlier restore's staging dataset is never received over without force
    sh("zfs", "umount", staging)
    os.rmdir(target)
    context = RunContext(epochs.repository, "node1", manifest.epoch, None, artifact=manifest.artifact("vol"))
    refused = pytest.raises(RestoreError, match="the staging dataset %s already exists" % staging)
    with refused as raised, asset_type("zfs").restore_into(target, context=context):
        pass
    assert (
        "nodekeep_restore_force: true" in raised.value.remedy and "zfs destroy -r %s" % staging in raised.value.remedy
    )
    sh("zfs", "destroy", "-r", staging)
