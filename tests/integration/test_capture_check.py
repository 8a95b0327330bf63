"""The SQLite check runs beside the seal: a damaged database never becomes an artifact."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch

pytestmark = pytest.mark.timeout(120)


def _damaged_db(path) -> None:
    """A database that opens but fails integrity_check and quick_check: a b-tree page header is overwritten."""
    subprocess.run(
        [
            "sqlite3",
            str(path),
            (
                "PRAGMA journal_mode=DELETE; PRAGMA page_size=4096;"
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                "INSERT INTO t(v) SELECT hex(randomblob(200)) FROM generate_series(1, 20000);"
            ),
        ],
        check=True,
        capture_output=True,
    )
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as handle:  # the header of a leaf page in the middle of the table
        handle.seek((pages // 2) * 4096)
        handle.write(b"\xff" * 12)
    verdict = subprocess.run(["sqlite3", str(path), "PRAGMA quick_check;"], check=False, capture_output=True, text=True)
    assert verdict.stdout.strip() != "ok", "the database was not damaged"


@pytest.mark.parametrize("check", ["integrity", "quick"])
def test_a_damaged_database_fails_the_backup_and_leaves_no_artifact(tmp_path, repository, age_key, signing_key, check):
    db = tmp_path / "damaged.db"
    _damaged_db(db)
    with pytest.raises(IntegrityError) as raised:
        backup_epoch(
            repository,
            "node1",
            [{"name": "db", "type": "sqlite", "path": str(db), "check": check}],
            seal.load_recipients([age_key.recipient]),
            [age_key.recipient],
            signing_key.key,
        )
    message = raised.value.message
    assert "of the snapshot of %s" % db in message, message  # names the live database, not a scratch copy
    assert "nothing was backed up" in message, message
    assert repository.complete_epochs("node1") == []
    assert repository.incomplete_epochs("node1") == []  # the failed epoch was removed whole
    leftovers = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.suffix == ".age" or ".sqlite" in p.name], leftovers  # nor a plaintext copy


def test_a_sound_database_records_the_check_that_ran_beside_the_seal(live_db, repository, age_key, signing_key):
    manifest = backup_epoch(
        repository,
        "node1",
        [{"name": "db", "type": "sqlite", "path": str(live_db.path)}],
        seal.load_recipients([age_key.recipient]),
        [age_key.recipient],
        signing_key.key,
    )
    (artifact,) = manifest.artifacts
    assert artifact.source["integrity"] == "ok"
    assert artifact.source["check_seconds"] > 0
