"""ops/epoch.py: one epoch backed up, verified (shallow and deep) and restored on a local repository;
the restored database equals the original, a tampered byte or a forged signature is caught, and a
restore never writes over an existing target."""

from __future__ import annotations

import os
import sqlite3

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch as flow
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository


def rows(path):
    db = sqlite3.connect("file:%s?immutable=1" % path, uri=True)
    try:
        return db.execute("SELECT id, body FROM t ORDER BY id").fetchall()
    finally:
        db.close()


@pytest.fixture
def backed_up(tmp_path, age_key, signing_key):
    source = tmp_path / "live" / "app.db"
    source.parent.mkdir()
    db = sqlite3.connect(str(source))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    db.executemany("INSERT INTO t VALUES (?, ?)", ((i, os.urandom(200)) for i in range(500)))
    db.commit()
    db.close()
    repository = LocalRepository(str(tmp_path / "repo"))
    manifest = flow.backup_epoch(
        repository,
        "node1",
        [{"name": "app-db", "type": "sqlite", "path": str(source)}],
        seal.load_recipients([age_key.recipient]),
        [age_key.recipient],
        signing_key.key,
    )
    return repository, manifest, source


def test_backup_verify_restore(backed_up, tmp_path, age_key, signing_key):
    repository, manifest, source = backed_up
    assert [a.name for a in manifest.artifacts] == ["app-db"]
    assert repository.complete_epochs("node1") == [manifest.epoch]
    identities = seal.load_identities([age_key.identity])
    for deep in (False, True):
        report = flow.verify_epoch(
            repository, "node1", "latest", signing_key.public_line, deep=deep, identities=identities
        )
        assert report["ok"] and report["signature"] == "valid" and report["problems"] == []
    staging = tmp_path / "staging"
    flow.restore_epoch(repository, "node1", "latest", signing_key.public_line, identities, str(staging))
    restored = staging / str(source).lstrip("/")
    assert rows(restored) == rows(source)
    with pytest.raises(NodekeepError):  # the target exists now: refused, nothing overwritten
        flow.restore_epoch(repository, "node1", "latest", signing_key.public_line, identities, str(staging))
    assert rows(restored) == rows(source)


def test_a_tampered_byte_is_caught(backed_up, signing_key):
    repository, manifest, _source = backed_up
    path = os.path.join(repository.root, "node1", manifest.epoch, manifest.artifacts[0].file)
    os.chmod(path, 0o600)
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 1]))
    report = flow.verify_epoch(repository, "node1", manifest.epoch, signing_key.public_line)
    assert not report["ok"] and report["problems"] and report["problems"][0].startswith("app-db: ")


def test_another_key_does_not_verify(backed_up, other_signing_key):
    repository, manifest, _source = backed_up
    report = flow.verify_epoch(repository, "node1", manifest.epoch, other_signing_key.public_line)
    assert not report["ok"] and report["signature"] == "invalid"


def test_a_relative_staging_root_is_refused(backed_up, age_key, signing_key):
    repository, _manifest, _source = backed_up
    with pytest.raises(NodekeepError, match="is not an absolute path"):
        flow.restore_epoch(
            repository, "node1", "latest", signing_key.public_line, seal.load_identities([age_key.identity]), "staging"
        )
