"""snapshot/state.py: the states of the btrfs_snapshot and zfs_snapshot modules (``run_state``) on real btrfs
and zfs-fuse: honest check mode, idempotent runs, a held snapshot never destroyed, a rollback that would
destroy newer snapshots refused unless asked, a missing option named, and a diff of the listing."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import SnapshotError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.state import run_state
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs

E1, E2, E3 = "nodekeep-20261120T000000Z", "nodekeep-20261121T000000Z", "nodekeep-20261122T000000Z"


def names(fs, volume: str) -> list[str]:
    return [s.name for s in fs.snapshots(volume)]


def test_present_is_honest_in_check_mode_and_idempotent(btrfs_volume):
    fs, volume = Btrfs(), str(btrfs_volume)
    checked = run_state(fs, volume, {"state": "present", "name": E1}, check_mode=True)
    assert checked["changed"] and checked["snapshots"] == [E1] and names(fs, volume) == []
    assert checked["diff"]["before"] == "" and checked["diff"]["after"] == "%s@%s\n" % (volume, E1)
    made = run_state(fs, volume, {"state": "present", "name": E1}, check_mode=False)
    assert made["changed"] and made["snapshot"]["name"] == E1 and names(fs, volume) == [E1]
    again = run_state(fs, volume, {"state": "present", "name": E1}, check_mode=False)
    assert not again["changed"] and again["snapshots"] == [E1]
    # without a name: the prefix and the current epoch
    named = run_state(fs, volume, {"state": "present", "prefix": "app"}, check_mode=False)
    assert named["snapshot"]["name"].startswith("app-2") and len(names(fs, volume)) == 2


def test_absent_destroys_only_what_is_named(btrfs_volume):
    fs, volume = Btrfs(), str(btrfs_volume)
    for name in (E1, E2):
        fs.create(volume, name)
    with pytest.raises(SnapshotError, match="state absent needs name") as raised:
        run_state(fs, volume, {"state": "absent"}, check_mode=False)
    assert raised.value.remedy == "set name"
    assert run_state(fs, volume, {"state": "absent", "name": E1}, check_mode=True)["snapshots"] == [E2]
    assert names(fs, volume) == [E1, E2]
    assert run_state(fs, volume, {"state": "absent", "name": E1}, check_mode=False)["changed"]
    assert names(fs, volume) == [E2]
    assert not run_state(fs, volume, {"state": "absent", "name": E1}, check_mode=False)["changed"]


def test_btrfs_has_no_holds_and_a_bad_prefix_or_state_is_refused(btrfs_volume):
    fs, volume = Btrfs(), str(btrfs_volume)
    with pytest.raises(SnapshotError, match="btrfs has no snapshot holds"):
        run_state(fs, volume, {"state": "held", "name": E1}, check_mode=False)
    with pytest.raises(SnapshotError, match="snapshot prefix"):
        run_state(fs, volume, {"state": "present", "prefix": "../x"}, check_mode=False)
    with pytest.raises(SnapshotError, match="unknown state 'gone'"):
        run_state(fs, volume, {"state": "gone"}, check_mode=False)


def test_pruned_applies_the_policy_to_our_names_only(btrfs_volume):
    fs, volume = Btrfs(), str(btrfs_volume)
    for name in (E1, E2, E3, "by-hand"):
        fs.create(volume, name)
    preview = run_state(fs, volume, {"state": "pruned", "keep_last": 1}, check_mode=True)
    assert [e["name"] for e in preview["destroyed"]] == [E1, E2] and names(fs, volume) == [E1, E2, E3, "by-hand"]
    done = run_state(fs, volume, {"state": "pruned", "keep_last": 1, "protect": [E1]}, check_mode=False)
    assert done["changed"] and [e["name"] for e in done["destroyed"]] == [E2]
    assert names(fs, volume) == [E1, E3, "by-hand"] and sorted(done["snapshots"]) == sorted(names(fs, volume))


def test_a_held_snapshot_is_never_destroyed(zfs_dataset):
    name, _mountpoint = zfs_dataset
    fs = Zfs()
    fs.create(name, E1)
    held = run_state(fs, name, {"state": "held", "name": E1, "tag": "keep"}, check_mode=False)
    assert held["changed"] and held["userrefs"] == 1
    assert not run_state(fs, name, {"state": "held", "name": E1, "tag": "keep"}, check_mode=False)["changed"]
    with pytest.raises(SnapshotError, match="is held .* never destroyed") as raised:
        run_state(fs, name, {"state": "absent", "name": E1}, check_mode=False)
    assert "state: released" in raised.value.remedy and names(fs, name) == [E1]
    released = run_state(fs, name, {"state": "released", "name": E1, "tag": "keep"}, check_mode=False)
    assert released["changed"] and released["userrefs"] == 0
    assert run_state(fs, name, {"state": "absent", "name": E1}, check_mode=False)["changed"]


def test_a_rollback_over_newer_snapshots_needs_discard_newer(zfs_dataset):
    name, mountpoint = zfs_dataset
    fs = Zfs()
    original = (mountpoint / "file00.bin").read_bytes()
    fs.create(name, E1)
    (mountpoint / "file00.bin").write_bytes(b"later")
    fs.create(name, E2)
    with pytest.raises(SnapshotError, match="has newer snapshots than %s \\(%s\\)" % (E1, E2)) as raised:
        run_state(fs, name, {"state": "rolled_back", "name": E1}, check_mode=False)
    assert "discard_newer: true" in raised.value.remedy and names(fs, name) == [E1, E2]
    with pytest.raises(SnapshotError, match="has no snapshot nope") as raised:
        run_state(fs, name, {"state": "rolled_back", "name": "nope"}, check_mode=False)
    assert E2 in raised.value.remedy
    done = run_state(fs, name, {"state": "rolled_back", "name": E1, "discard_newer": True}, check_mode=False)
    assert done["snapshots"] == [E1] and names(fs, name) == [E1]
    assert (mountpoint / "file00.bin").read_bytes() == original
