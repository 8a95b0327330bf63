"""ops/replicate.py between two real local repositories: a copy is byte-identical and its signature verifies,
it is idempotent, a tampered source artifact never commits at the target, an interrupted copy keeps what is
already there and checked, and a rolling verification reads every artifact exactly once per cycle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import replicate
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch, verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(120)
NODE = "node1"


@pytest.fixture
def source(tmp_path, dbtools, age_key, signing_key):
    """A repository with one epoch of three assets (a live SQLite database and two config files)."""
    dbtools.make(tmp_path / "app.db", rows=200, payload=200)
    for name in ("a.conf", "b.conf"):
        (tmp_path / name).write_text("setting = %s\n" % name)
    repository = LocalRepository(str(tmp_path / "source"))
    assets = [
        {"name": "app-db", "type": "sqlite", "path": str(tmp_path / "app.db")},
        {"name": "a-conf", "type": "config", "path": str(tmp_path / "a.conf")},
        {"name": "b-conf", "type": "config", "path": str(tmp_path / "b.conf")},
    ]
    recipients = [age_key.recipient]
    manifest = backup_epoch(repository, NODE, assets, seal.load_recipients(recipients), recipients, signing_key.key)
    return repository, manifest.epoch


def files_of(repository: LocalRepository, epoch: str) -> dict[str, bytes]:
    root = Path(repository.root) / NODE / epoch
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


def test_a_copy_is_byte_identical_verifies_and_is_idempotent(source, tmp_path, signing_key):
    repository, epoch = source
    target = LocalRepository(str(tmp_path / "target"))
    report = replicate.replicate(repository, target, NODE, [epoch], signing_key.public_line, name="usb")
    assert report["ok"] and [entry["epoch"] for entry in report["copied"]] == [epoch] and report["name"] == "usb"
    assert files_of(target, epoch) == files_of(repository, epoch)
    assert verify_epoch(target, NODE, epoch, signing_key.public_line)["ok"]
    again = replicate.replicate(repository, target, NODE, [epoch], signing_key.public_line)
    assert again["ok"] and again["copied"] == [] and again["skipped"] == [epoch]
    both = replicate.verify_copies([repository, target], NODE, epoch, signing_key.public_line)
    assert both["ok"] and [copy["location"] for copy in both["copies"]] == [repository.location, target.location]


def test_a_tampered_artifact_never_commits_at_the_target(source, tmp_path, signing_key):
    repository, epoch = source
    artifact = Path(repository.root) / NODE / epoch / "a-conf.zst.age"
    os.chmod(artifact, 0o600)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    target = LocalRepository(str(tmp_path / "target"))
    report = replicate.replicate(repository, target, NODE, [epoch], signing_key.public_line)
    assert not report["ok"] and report["failed"]["epoch"] == epoch
    assert "a-conf.zst.age" in report["failed"]["error"]
    assert not target.is_complete(NODE, epoch)
    assert SIGNATURE_NAME not in target.files(NODE, epoch)


def test_an_interrupted_copy_keeps_what_is_already_there(source, tmp_path, signing_key):
    repository, epoch = source
    target_root = tmp_path / "target"
    target = LocalRepository(str(target_root))
    (target_root / NODE / epoch).mkdir(parents=True)
    done = Path(repository.root) / NODE / epoch / "app-db.sqlite.zst.age"
    (target_root / NODE / epoch / done.name).write_bytes(done.read_bytes())  # copied before the interruption
    result = replicate.copy_epoch(repository, target, NODE, epoch, signing_key.public_line)
    assert result["status"] == "copied"
    kept = {entry["file"]: entry for entry in result["objects"]}
    assert kept[done.name]["kept"].startswith("already there")
    assert files_of(target, epoch) == files_of(repository, epoch)


def test_select_epochs(source, tmp_path):
    repository, epoch = source
    assert replicate.select_epochs(repository, NODE, ["latest"]) == [epoch]
    assert replicate.select_epochs(repository, NODE, []) == [epoch]
    with pytest.raises(RepositoryError, match="epoch 20000101T000000Z of node1 is not a complete epoch"):
        replicate.select_epochs(repository, NODE, ["20000101T000000Z"])
    with pytest.raises(RepositoryError, match="node node2 has no complete epoch"):
        replicate.select_epochs(repository, "node2", ["latest"])


def test_a_rolling_cycle_reads_every_artifact_exactly_once(source, signing_key):
    repository, _epoch = source
    runs = 4
    checked = []
    for run in range(1, runs + 1):
        report = replicate.rolling_verify(repository, NODE, signing_key.public_line, run, runs)
        assert report["ok"] and report["epochs"][0]["signature"] == "valid"
        checked += [entry["artifact"] for entry in report["checked"]]
    assert sorted(checked) == ["a-conf", "app-db", "b-conf"]
    with pytest.raises(NodekeepError, match="run 5 is not within 1..4"):
        replicate.rolling_verify(repository, NODE, signing_key.public_line, 5, runs)


def test_parse_subset():
    assert replicate.parse_subset("3/7") == (3, 7)
    assert replicate.parse_subset("daily/7", now=86400 * 10) == (10 % 7 + 1, 7)
    for bad in ("8/7", "0/7", "x/7", "1/0"):
        with pytest.raises(NodekeepError, match="subset"):
            replicate.parse_subset(bad)
