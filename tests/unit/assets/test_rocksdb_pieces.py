"""assets/_rocksdb_pieces: with ``incremental: true`` a RocksDB epoch is a files index on the node's piece
store: a later epoch reads and stores only the SST files that are new (and the small mutable files), and
every epoch restores to exactly its keys; without it the tar layout is unchanged. Bad options are named.

A real RocksDB (rocksdict), closed between epochs (method ``offline``); epochs made, verified and restored
by the epoch flow.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rocksdict import AccessType, Options, Rdict

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch as flow

NODE = "node1"  # the epochs fixture's


def write_keys(path: Path, start: int, count: int) -> None:
    """``count`` keys from ``start`` in one new SST file (written, flushed, closed)."""
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        for n in range(start, start + count):
            db[b"key-%08d" % n] = (b"%08d" % n) * 64
        db.flush()
    finally:
        db.close()


def read_keys(path) -> dict:
    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only(False))
    try:
        return dict(db.items())
    finally:
        db.close()


@pytest.fixture
def rocks(tmp_path, epochs):
    db = tmp_path / "db"
    write_keys(db, 0, 2000)
    write_keys(db, 2000, 2000)

    def backup(**options):
        asset = dict({"name": "chain", "type": "rocksdb", "path": str(db), "method": "offline", "incremental": True,
                      "state_dir": str(tmp_path / "state")}, **options)  # fmt: skip
        return epochs.backup([asset])

    def restore(manifest):
        return epochs.restored(epochs.restore(manifest), db)

    return db, backup, restore


def test_a_later_epoch_stores_only_the_new_sst_files_and_each_epoch_restores_its_keys(rocks, repository, signing_key):
    db, backup, restore = rocks
    first = backup()
    (artifact,) = first.artifacts
    assert artifact.file == "chain.index.jsonl.zst.age" and artifact.format == "rocksdb+files-index+zstd+age"
    assert artifact.source["layout"] == "pieces"
    old_ssts = {p.name: p.stat().st_size for p in db.iterdir() if p.suffix == ".sst"}
    assert len(old_ssts) >= 2
    write_keys(db, 4000, 500)
    new_ssts = {p.name: p.stat().st_size for p in db.iterdir() if p.suffix == ".sst" and p.name not in old_ssts}
    assert new_ssts
    second = backup()
    work = second.artifacts[0].source["objects"]
    assert work["unchanged"] >= len(old_ssts)  # known by name, size, mtime and inode: never read again
    mutable = sum(p.stat().st_size for p in db.iterdir() if p.is_file() and p.suffix != ".sst")
    assert work["read_bytes"] <= sum(new_ssts.values()) + mutable
    assert work["read_bytes"] < sum(old_ssts.values())  # the old SSTs' contents were not read
    assert read_keys(restore(first)) == {b"key-%08d" % n: (b"%08d" % n) * 64 for n in range(4000)}
    assert read_keys(restore(second)) == read_keys(db)
    report = flow.verify_epoch(repository, NODE, second.epoch, signing_key.public_line)
    assert report["ok"], report["problems"]


def test_without_incremental_the_tar_layout_is_unchanged(rocks):
    db, backup, restore = rocks
    manifest = backup(incremental=False)
    (artifact,) = manifest.artifacts
    assert artifact.file == "chain.tar.zst.age" and artifact.source.get("layout") != "pieces"
    assert read_keys(restore(manifest)) == read_keys(db)


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"incremental": "yes"}, "incremental must be true or false"),
        ({"incremental": True, "state_dir": "state"}, "state_dir 'state' is not absolute"),
    ],
)
def test_bad_options_are_named(options, needle):
    asset = dict({"name": "chain", "type": "rocksdb", "path": "/var/lib/chain", "method": "offline"}, **options)
    with pytest.raises(CaptureError, match=needle) as raised:
        asset_type("rocksdb").normalize(asset)
    assert "nodekeep_assets" in raised.value.remedy or "absolute directory" in raised.value.remedy
    assert os.path.isabs(asset_type("rocksdb").normalize(dict(asset, incremental=False, state_dir=None))["path"])
