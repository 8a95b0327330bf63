"""snapshot/zfs.py on a real zfs-fuse pool: features detected from the installed ZFS (never assumed), snapshots
listed oldest first with their guid and holds, children only when recursive, holds left by a killed send
released (never those of a running one), a snapshot's files read through a view that leaves nothing behind,
and the dataset holding a path found at a path boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    HOLD_TAG,
    SENDING_PROPERTY,
    VIEW_PREFIX,
    SnapshotError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs, detect_zfs_features


def dead_pid() -> int:
    """The PID of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_zfs_fuse_features_are_detected_not_assumed(zfs_pool):
    features = detect_zfs_features(refresh=True)
    assert features["implementation"] == "zfs-fuse"
    # zfs-fuse 0.7 lacks all of these (docs/environment): the engine must not use them
    for missing in ("list_parsable", "send_raw", "bookmarks", "resume_tokens", "receive_unmounted", "holds_list"):
        assert features[missing] is False, missing
    fs = Zfs(features)
    snap = fs.create(zfs_pool.name, "probe")
    try:
        assert fs.send_argv(snap, None, recursive=False, raw=True) == ["zfs", "send", snap.ident]  # no -w
        assert fs.receive_argv("p/t", force=True, recursive=False) == ["zfs", "receive", "-F", "p/t"]  # no -u
        assert fs.holds(snap) is None and fs.bookmark(snap) is None
    finally:
        fs.destroy(snap)


def test_snapshots_oldest_first_with_guid_and_holds(zfs_dataset):
    name, _mountpoint = zfs_dataset
    fs = Zfs()
    sh("zfs", "create", name + "/child")
    newer_name_first = ["nodekeep-20261121T000000Z", "nodekeep-20261120T000000Z"]
    made = [fs.create(name, n, recursive=True) for n in newer_name_first]
    listed = fs.snapshots(name)
    assert [s.name for s in listed] == newer_name_first  # by creation (createtxg), not by name
    guid = sh("zfs", "get", "-Hp", "-o", "value", "guid", made[0].ident).stdout.strip()
    assert listed[0].guid == guid and listed[0].createtxg < listed[1].createtxg
    assert {s.volume for s in fs.snapshots(name, recursive=True)} == {name, name + "/child"}
    fs.hold(made[0], "test")
    assert fs.snapshot(name, made[0].name).userrefs == 1 and fs.snapshot(name, made[0].name).held
    assert fs.release(made[0], "test") and not fs.snapshot(name, made[0].name).held
    assert not fs.release(made[0], "test", check=False)  # nothing left to release
    with pytest.raises(SnapshotError, match="already exists"):
        fs.create(name, made[1].name)


def test_the_holds_of_a_killed_send_are_released_a_running_ones_are_not(zfs_dataset):
    name, _mountpoint = zfs_dataset
    fs = Zfs()
    killed, running = fs.create(name, "killed"), fs.create(name, "running")
    for snap, owner in ((killed, dead_pid()), (running, os.getpid())):
        fs.hold(snap, HOLD_TAG)
        sh("zfs", "set", "%s=%d:%d:0" % (SENDING_PROPERTY, owner, dead_pid()), snap.ident)
    assert fs.clean_stale_sends(name) == ["%s:%s" % (killed.ident, HOLD_TAG)]
    assert not fs.snapshot(name, "killed").held and fs.snapshot(name, "running").held
    assert sh("zfs", "get", "-H", "-o", "source", SENDING_PROPERTY, killed.ident).stdout.strip() != "local"
    fs.release(running, HOLD_TAG)


def test_a_view_shows_the_snapshot_and_leaves_nothing_behind(zfs_dataset, tmp_path):
    name, mountpoint = zfs_dataset
    fs = Zfs()
    before = (mountpoint / "file00.bin").read_bytes()
    snap = fs.create(name, "view")
    (mountpoint / "file00.bin").write_bytes(b"changed after the snapshot")
    with fs.view(snap, str(tmp_path)) as view:
        assert Path(view, "file00.bin").read_bytes() == before
        with pytest.raises(OSError):
            Path(view, "new").write_bytes(b"x")  # read-only
    pool = name.split("/", 1)[0]
    assert not [d for d, _m in fs.datasets(pool) if VIEW_PREFIX in d]
    assert os.listdir(tmp_path) == []


def test_the_dataset_holding_a_path_ends_at_a_path_boundary(zfs_dataset):
    name, mountpoint = zfs_dataset
    fs = Zfs()
    assert fs.volume_for(str(mountpoint)) == name and fs.volume_for(str(mountpoint / "sub")) is None
    datasets = [("tank", "/tank"), ("tank/a", "/tank/a"), ("tank/ab", "/tank/ab"), ("tank/legacy", "legacy")]
    assert fs.dataset_holding("/tank/ab/x", datasets) == ("tank/ab", "/tank/ab")
    assert fs.dataset_holding("/tank/a", datasets) == ("tank/a", "/tank/a")
    assert fs.dataset_holding("/tank/abc", datasets) == ("tank", "/tank")
    assert fs.dataset_holding("/elsewhere", datasets) is None
