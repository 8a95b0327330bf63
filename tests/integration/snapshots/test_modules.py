"""The zfs_snapshot and btrfs_snapshot modules: states, check mode and diff mode."""

from __future__ import annotations

import base64
import json
import os

from integration_helpers import needles, scan
from module_driver import run_module, succeeded
from snaphelpers import sh
from test_zfs import snapshot_names, userrefs


def test_zfs_snapshot_states_check_and_diff(zfs_dataset, age_key, tmp_path):
    dataset, _mountpoint = zfs_dataset
    base = {"dataset": dataset, "_ansible_diff": True}
    planned = succeeded(run_module("zfs_snapshot", dict(base, name="one"), check_mode=True))
    assert planned["changed"] and snapshot_names(dataset) == []
    assert planned["diff"]["after"] == "%s@one\n" % dataset and planned["diff"]["before"] == ""
    made = succeeded(run_module("zfs_snapshot", dict(base, name="one")))
    assert made["changed"] and made["snapshot"]["guid"] and snapshot_names(dataset) == ["one"]
    assert made["features"]["implementation"] == "zfs-fuse"
    assert not succeeded(run_module("zfs_snapshot", dict(base, name="one")))["changed"]

    held = succeeded(run_module("zfs_snapshot", dict(base, name="one", state="held")))
    assert held["changed"] and held["userrefs"] == 1
    assert not succeeded(run_module("zfs_snapshot", dict(base, name="one", state="held")))["changed"]
    refused = run_module("zfs_snapshot", dict(base, name="one", state="absent"))
    assert refused["failed"] and "held" in refused["msg"] and snapshot_names(dataset) == ["one"]
    assert succeeded(run_module("zfs_snapshot", dict(base, name="one", state="released")))["changed"]
    assert userrefs(dataset)["%s@one" % dataset] == 0

    # sent sealed, received into a staging dataset: the same snapshot guid
    dest = tmp_path / "one.zfs.zst.age"
    sent = succeeded(
        run_module("zfs_snapshot", dict(base, name="one", state="sent", dest=str(dest), recipients=[age_key.recipient]))
    )
    assert sent["changed"] and dest.stat().st_mode & 0o777 == 0o600 and sent["size"] == dest.stat().st_size
    assert not any(userrefs(dataset).values())
    plain = sh("sh", "-c", "age -d -i %s %s | zstd -d | wc -c" % (age_key.identity_path, dest)).stdout.strip()
    assert int(plain) == sent["content_size"]
    # no unkeyed digest of the plain send stream (the files' data) in the result; the sealed file's SHA-256 only
    stream = sh("sh", "-c", "age -d -i %s %s | zstd -d | base64 -w0" % (age_key.identity_path, dest)).stdout
    found = needles([base64.b64decode(stream)])
    assert sent["content_sha256"] is None and scan(json.dumps(sent).encode(), found) == [], sent
    pool = dataset.split("/")[0]
    target = "%s/nodekeep-restore/modtest" % pool
    sh("zfs", "create", "-o", "mountpoint=none", "%s/nodekeep-restore" % pool, check=False)
    received = succeeded(
        run_module(
            "zfs_snapshot",
            {
                "dataset": target,
                "state": "received",
                "src": str(dest),
                "target": target,
                "identity_files": [str(age_key.identity_path)],
            },
        )
    )
    assert received["changed"]
    guid = sh("zfs", "get", "-Hp", "-o", "value", "guid", "%s@one" % target).stdout.strip()
    assert guid == made["snapshot"]["guid"]

    planned = succeeded(run_module("zfs_snapshot", dict(base, name="one", state="absent"), check_mode=True))
    assert planned["changed"] and planned["diff"]["after"] == "" and snapshot_names(dataset) == ["one"]
    assert succeeded(run_module("zfs_snapshot", dict(base, name="one", state="absent")))["changed"]
    assert snapshot_names(dataset) == []


def test_zfs_snapshot_pruned_in_check_mode_changes_nothing(zfs_dataset):
    dataset, _mountpoint = zfs_dataset
    names = ["nodekeep-2026110%dT010000Z" % day for day in range(1, 6)]
    for name in names:
        sh("zfs", "snapshot", "%s@%s" % (dataset, name))
    args = {"dataset": dataset, "state": "pruned", "keep_last": 2, "_ansible_diff": True}
    planned = succeeded(run_module("zfs_snapshot", args, check_mode=True))
    assert planned["changed"] and [e["name"] for e in planned["destroyed"]] == names[:3]
    assert "%s@%s" % (dataset, names[0]) in planned["diff"]["before"]
    assert "%s@%s" % (dataset, names[0]) not in planned["diff"]["after"]
    assert snapshot_names(dataset) == names
    done = succeeded(run_module("zfs_snapshot", args))
    assert done["changed"] and snapshot_names(dataset) == names[3:]
    assert not succeeded(run_module("zfs_snapshot", args))["changed"]


def test_btrfs_snapshot_states(btrfs_volume, age_key, tmp_path):
    base = {"subvolume": str(btrfs_volume), "_ansible_diff": True}
    planned = succeeded(run_module("btrfs_snapshot", dict(base, name="nodekeep-20261101T010000Z"), check_mode=True))
    assert planned["changed"] and planned["snapshots"] == ["nodekeep-20261101T010000Z"]
    snapdir = btrfs_volume.parent / ".nodekeep-snapshots"
    assert not snapdir.exists() or not os.listdir(snapdir)
    for name in ("nodekeep-20261101T010000Z", "nodekeep-20261102T010000Z", "nodekeep-20261103T010000Z"):
        made = succeeded(run_module("btrfs_snapshot", dict(base, name=name)))
        assert made["changed"] and made["snapshot"]["uuid"]
    dest = tmp_path / "s.btrfs.zst.age"
    sent = succeeded(
        run_module(
            "btrfs_snapshot",
            dict(base, name="nodekeep-20261103T010000Z", state="sent", dest=str(dest), recipients=[age_key.recipient]),
        )
    )
    assert sent["changed"] and dest.exists()
    target = btrfs_volume.parent / "received"
    succeeded(
        run_module(
            "btrfs_snapshot",
            dict(
                base, state="received", src=str(dest), target=str(target), identity_files=[str(age_key.identity_path)]
            ),
        )
    )
    assert (target / "data@nodekeep-20261103T010000Z" / "sub" / "notes.txt").read_text() == "seed 0\n"
    pruned = succeeded(run_module("btrfs_snapshot", dict(base, state="pruned", keep_last=1), check_mode=True))
    assert len(pruned["destroyed"]) == 2 and len(os.listdir(snapdir)) == 3
    pruned = succeeded(run_module("btrfs_snapshot", dict(base, state="pruned", keep_last=1)))
    assert pruned["changed"] and sorted(os.listdir(snapdir)) == ["data@nodekeep-20261103T010000Z"]
