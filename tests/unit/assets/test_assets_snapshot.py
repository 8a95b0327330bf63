"""assets/_snapshot.py (the base of the zfs and btrfs asset types), on a real btrfs: the chain of sends (full
first, then incremental on the last snapshot shipped, full again after ``full_every`` links or when the base
is gone locally), local retention that keeps the next base, options refused with the name to fix, and a
restore refused before anything is written when a link of its chain is gone from the repository."""

from __future__ import annotations

import os

import pytest
from snapshot_pools import sh

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import compare_trees
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs


def volume_asset(volume, **options) -> dict:
    return dict({"name": "vol", "type": "btrfs", "path": str(volume)}, **options)


def local_names(volume) -> list[str]:
    return [s.name for s in Btrfs().snapshots(str(volume))]


@pytest.mark.parametrize(
    ("options", "problem", "remedy"),
    [
        ({"snapshot": "/srv"}, "a btrfs asset snapshots itself", "remove snapshot:"),
        ({"full_every": -1}, "asset vol: full_every -1 is out of range", "0 to 10000"),
        ({"local_retention": {"keep_lots": 1}}, "local_retention is not a valid policy", "keep_last"),
        ({"prefix": "a b"}, "snapshot prefix", ""),
    ],
)
def test_bad_options_are_refused_with_what_to_set(options, problem, remedy):
    with pytest.raises(Exception, match=problem) as raised:
        asset_type("btrfs").normalize(volume_asset("/srv/data", **options))
    assert remedy in raised.value.remedy
    if "snapshot" in options:
        assert isinstance(raised.value, CaptureError)


def test_the_chain_full_then_incremental_then_full_again(btrfs_volume, epochs):
    asset = volume_asset(btrfs_volume, full_every=2, local_retention={})
    sources = []
    for step in range(3):
        (btrfs_volume / ("step%d" % step)).write_bytes(os.urandom(2000))
        sources.append(epochs.backup([asset]).artifact("vol").source)
    assert [s["send"] for s in sources] == ["full", "incremental", "full"]
    assert sources[0]["send_reason"] == "no earlier epoch holds this asset"
    assert sources[2]["send_reason"] == "full_every 2: the chain has 2 links"
    (link,) = sources[1]["chain"]
    first = epochs.repository.complete_epochs("node1")[0]
    assert link["epoch"] == first and link["guid"] == sources[0]["snapshot"]["uuid"]
    assert sources[1]["base"] == {"name": sources[0]["snapshot"]["name"], "guid": link["guid"], "epoch": first}
    assert "chain" not in sources[2]


def test_a_base_gone_locally_means_a_full_send(btrfs_volume, epochs):
    asset = volume_asset(btrfs_volume, local_retention={})
    shipped = epochs.backup([asset]).artifact("vol").source["snapshot"]
    sh("btrfs", "subvolume", "delete", shipped["path"])
    source = epochs.backup([asset]).artifact("vol").source
    assert source["send"] == "full" and "is gone locally" in source["send_reason"]


def test_local_retention_keeps_the_snapshots_the_chain_needs(btrfs_volume, epochs):
    """keep_last 1 keeps the new snapshot (the next base) and the one it was just sent from; older ones go."""
    asset = volume_asset(btrfs_volume, local_retention={"keep_last": 1})
    names = [epochs.backup([asset]).artifact("vol").source["snapshot"]["name"] for _step in range(3)]
    assert local_names(btrfs_volume) == names[-2:]
    assert epochs.backup([asset]).artifact("vol").source["send"] == "incremental"


def test_a_chain_with_a_missing_link_is_refused_before_anything_is_written(btrfs_volume, btrfs_fs, epochs):
    asset = volume_asset(btrfs_volume, local_retention={})
    full = epochs.backup([asset])
    (btrfs_volume / "later").write_text("later")
    incremental = epochs.backup([asset])
    root = btrfs_fs.mountpoint / ("restore-%s" % os.getpid())
    epochs.restore(incremental, root)
    restored = epochs.report["artifacts"][0]
    compare_trees(str(btrfs_volume), restored["path"])
    sh("btrfs", "subvolume", "delete", restored["path"])

    os.unlink(os.path.join(epochs.repository.root, "node1", full.epoch, full.artifact("vol").file))
    again = btrfs_fs.mountpoint / ("again-%s" % os.getpid())
    with pytest.raises(RestoreError, match="needs .* of epoch %s, which is gone" % full.epoch) as raised:
        epochs.restore(incremental, again)
    assert "restore an epoch whose chain is complete" in raised.value.remedy
    assert not again.exists() or not any(files for _d, _s, files in os.walk(again))
