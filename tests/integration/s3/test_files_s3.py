"""Files assets and S3: epoch_copy copies the objects an epoch needs (only those the bucket lacks), verify
and restore work from the bucket, Object Lock covers reused objects, and GC runs there too."""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils import files as files_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.replicate import copy_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.retention import RetentionPolicy, apply_retention

pytestmark = pytest.mark.timeout(300)


def make_tree(root: Path, count: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    for number in range(count):
        path = root / ("%02x" % (number % 16)) / ("blob-%04d" % number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(100, 3000)))
        os.chmod(path, 0o640)
    os.symlink("00/blob-0000", root / "latest")


def meta(root: Path) -> dict:
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            content = (
                os.readlink(path)
                if os.path.islink(path)
                else (Path(path).read_bytes() if os.path.isfile(path) else None)
            )
            result[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_mtime_ns, content)
    return result


def test_copy_files_epochs_to_s3_restore_and_collect(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)  # one file per pack: copies and GC counted per file
    store = tmp_path / "da"
    make_tree(store, 150)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    first = node.backup([asset])
    bucket = s3_server.bucket(lock=False)
    target = s3_server.repository(bucket, "fleet")

    copied = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    contents = copied["contents"]
    assert contents["objects"] == len(repository.object_names("node1")) == 150
    assert contents["files"] == 1 and set(target.object_names("node1")) == set(repository.object_names("node1"))

    (store / "00" / "blob-0000").write_bytes(b"new content")
    (store / "new-file").write_bytes(b"another")
    second = node.backup([asset])
    again = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    assert again["contents"]["objects"] == 2 and again["contents"]["present"] == 149

    s3 = s3_node(target, "node1")
    report = s3.verify()
    assert report["ok"], report["problems"]
    assert s3.verify(deep=True)["ok"]
    restored = s3.restore(tmp_path / "from-s3")
    (artifact,) = restored["artifacts"]
    assert meta(Path(artifact["path"])) == meta(store)

    later = datetime.now(timezone.utc) + timedelta(days=2)
    result = apply_retention(target, "node1", RetentionPolicy(keep_last=1), signing_key.public_line, now=later)
    assert result["removed"][0]["epoch"] == first.epoch
    assert result["objects"]["removed"] == 1  # the old content of blob-0000
    assert len(target.object_names("node1")) == 151
    assert s3.verify()["ok"]


def test_locked_target_extends_the_lock_of_reused_objects(s3_server, repository, s3_node, signing_key, tmp_path):
    store = tmp_path / "da"
    make_tree(store, 20)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    (store / "large").write_bytes(os.urandom(files_mod.PACK_MEMBER_MAX + 1))  # an object of its own
    first = node.backup([asset])
    assert first.artifacts[0].source["objects"]["new_packs"] == 1  # the 20 small files
    target = s3_server.repository(s3_server.bucket(lock=True), object_lock_mode="GOVERNANCE", retain_days=1)
    copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    assert len(target.object_names("node1")) == 2
    name = min(target.object_names("node1"))
    until_first = target.object_lock_info("node1", name)["retain_until"]
    assert until_first is not None

    # Epoch ids have one-second resolution and lock comparisons tolerate one second of
    # S3 rounding, so the second epoch must be at least two seconds later.
    time.sleep(2.2)
    second = node.backup([asset])
    result = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    assert result["contents"]["objects"] == 0 and result["contents"]["locks_extended"] == 2
    assert target.object_lock_info("node1", name)["retain_until"] > until_first
