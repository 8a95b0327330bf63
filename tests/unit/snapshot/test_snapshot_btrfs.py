"""snapshot/btrfs.py on a real btrfs (loop device): what counts as a subvolume, read-only snapshots kept in the
snapshot directory and listed oldest first (by generation, not by name), the facts read back from
``btrfs subvolume show``, and a snapshot directory on another filesystem named in the error."""

from __future__ import annotations

import os
import time

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import SNAPSHOT_DIR, SnapshotError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs, detect_btrfs_features


def test_only_a_subvolume_is_a_volume(btrfs_volume, tmp_path):
    fs = Btrfs()
    assert fs.volume_for(str(btrfs_volume)) == str(btrfs_volume)
    assert fs.volume_for(str(btrfs_volume / "sub")) is None  # a plain directory inside it
    assert fs.volume_for(str(tmp_path)) is None  # not btrfs at all


def test_snapshots_are_read_only_beside_the_volume_and_listed_oldest_first(btrfs_volume):
    fs, volume = Btrfs(), str(btrfs_volume)
    before = int(time.time())
    first = fs.create(volume, "nodekeep-20261120T000000Z")
    second = fs.create(volume, "a-later-one")  # sorts first by name, made second
    assert os.path.dirname(first.ident) == os.path.join(os.path.dirname(volume), SNAPSHOT_DIR)
    assert [s.name for s in fs.snapshots(volume)] == ["nodekeep-20261120T000000Z", "a-later-one"]
    # the facts come from `btrfs subvolume show`
    shown = sh("btrfs", "subvolume", "show", first.ident).stdout
    assert first.guid and first.guid in shown and first.createtxg < second.createtxg
    assert before - 2 <= first.created <= int(time.time()) + 2
    with pytest.raises(OSError):
        (btrfs_volume.parent / SNAPSHOT_DIR / first.ident.rsplit("/", 1)[1] / "new").write_bytes(b"x")
    with pytest.raises(SnapshotError, match="already exists"):
        fs.create(volume, "a-later-one")
    assert fs.snapshot(volume, "missing") is None
    fs.destroy(first)
    assert [s.name for s in fs.snapshots(volume)] == ["a-later-one"]


def test_a_snapshot_dir_on_another_filesystem_is_named(btrfs_volume, tmp_path):
    with pytest.raises(SnapshotError) as raised:
        Btrfs().create(str(btrfs_volume), "x", snapshot_dir=str(tmp_path / "elsewhere"))
    assert "snapshot_dir (%s) must be a directory on the same btrfs filesystem" % (tmp_path / "elsewhere") in (
        raised.value.remedy
    )


def test_a_configured_snapshot_dir_is_used():
    assert Btrfs.snapshot_dir("/srv/data", {"snapshot_dir": "/srv/snaps/"}) == "/srv/snaps"
    assert Btrfs.snapshot_dir("/srv/data") == "/srv/" + SNAPSHOT_DIR


def test_the_features_are_those_of_the_installed_btrfs_progs():
    features = detect_btrfs_features()
    assert features["version"] and features["version"] in sh("btrfs", "--version").stdout
    assert features["send_proto2"] == ("--proto" in sh("btrfs", "send", "--help", check=False).stdout)
