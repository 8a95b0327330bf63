"""assets/sqlite.py, the ``sqlite`` asset type, on real databases: the captured stream is one committed state
of the live database, its check runs on the private copy and a damaged database is refused before anything
is committed, the scratch copy is removed, and a restored file is checked against the signed manifest."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite, sqlite_db
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact

pytestmark = pytest.mark.timeout(60)

SQLITE = sqlite.SqliteAssetType()


@pytest.fixture
def small_db(tmp_path, dbtools):
    (tmp_path / "live").mkdir()
    return dbtools.make(tmp_path / "live" / "app.db", rows=400, payload=200, journal_mode="wal")


def capture_to(asset: dict, scratch, out) -> dict:
    """Capture ``asset`` into the file ``out``; the facts merged with what ``finish()`` adds."""
    with SQLITE.capture(SQLITE.normalize(asset), str(scratch)) as captured:
        with open(out, "wb") as sink:
            shutil.copyfileobj(captured.stream, sink)
        return {**captured.facts, **captured.finish()}


def artifact_for(path, **source) -> Artifact:
    return Artifact("app-db", "sqlite", "app-db.sqlite.age", "sqlite3", 0, "0" * 64, 0, "0" * 64, source=source)


def damage_an_index(path) -> None:
    """Make the index t_txn declare a column its entries were not built from: every page still reads, but
    ``PRAGMA integrity_check`` finds rows missing from the index (a real, deterministic corruption)."""
    script = (
        "PRAGMA writable_schema=ON;"
        "UPDATE sqlite_schema SET sql='CREATE INDEX t_txn ON t(payload)' WHERE name='t_txn';"
    )
    subprocess.run(["sqlite3", "-bail", str(path)], input=script, text=True, capture_output=True, check=True)


def test_the_captured_stream_is_the_live_database(small_db, tmp_path, dbtools):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "captured.sqlite"
    facts = capture_to({"name": "app-db", "type": "sqlite", "path": str(small_db.path)}, scratch, out)
    assert dbtools.rows(out) == dbtools.rows(small_db.path)
    assert facts["integrity"] == "ok" and facts["check"] == "integrity" and facts["page_count"] > 1
    assert facts["owner"]["uid"] == os.stat(small_db.path).st_uid
    assert os.listdir(scratch) == [], "the private copy is removed after sealing"


def test_a_damaged_database_fails_its_capture_check(small_db, tmp_path):
    damage_an_index(small_db.path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(IntegrityError, match="integrity_check of the snapshot of %s" % small_db.path):
        capture_to({"name": "app-db", "type": "sqlite", "path": str(small_db.path)}, scratch, tmp_path / "out")
    assert os.listdir(scratch) == []


def test_check_none_captures_without_checking(small_db, tmp_path):
    damage_an_index(small_db.path)
    facts = capture_to(
        {"name": "app-db", "type": "sqlite", "path": str(small_db.path), "check": "none"}, tmp_path, tmp_path / "o"
    )
    assert facts["integrity"] == "skipped"


def test_a_bad_check_option_names_the_asset():
    with pytest.raises(CaptureError, match="asset app-db: check must be one of integrity, quick, none"):
        SQLITE.normalize({"name": "app-db", "type": "sqlite", "path": "/srv/app.db", "check": "full"})


def test_deep_check_of_a_restored_copy(small_db, tmp_path):
    restored = tmp_path / "restored.sqlite"
    capture_to({"name": "app-db", "type": "sqlite", "path": str(small_db.path)}, tmp_path, restored)
    pages = sqlite_db.database_facts(str(restored))["page_count"]
    checks = SQLITE.deep_check(str(restored), artifact_for(restored, page_count=pages))
    assert checks == {"integrity": "ok", "page_count": pages, "check_how": "PRAGMA integrity_check"}
    with pytest.raises(RestoreError, match="has %d pages, the manifest says %d" % (pages, pages + 1)):
        SQLITE.deep_check(str(restored), artifact_for(restored, page_count=pages + 1))


def test_deep_check_finds_a_damaged_restore(small_db, tmp_path):
    restored = tmp_path / "restored.sqlite"
    capture_to({"name": "app-db", "type": "sqlite", "path": str(small_db.path)}, tmp_path, restored)
    damage_an_index(restored)
    with pytest.raises(IntegrityError):
        SQLITE.deep_check(str(restored), artifact_for(restored))


def test_a_check_proven_at_backup_is_not_run_again(small_db, tmp_path):
    """The signed manifest says the captured copy passed integrity_check: the same bytes are not checked again
    (the engine proved them equal first), and the result says where the check ran."""
    restored = tmp_path / "restored.sqlite"
    capture_to({"name": "app-db", "type": "sqlite", "path": str(small_db.path)}, tmp_path, restored)
    damage_an_index(restored)  # would fail a check that ran
    checks = SQLITE.deep_check(str(restored), artifact_for(restored, check="integrity", integrity="ok"))
    assert checks["integrity"] == "ok" and "at backup (PRAGMA integrity_check)" in checks["integrity_proven"]
    assert sqlite.checked_at_capture(artifact_for(restored, check="quick", integrity="ok")) == ""


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    bogus = tmp_path / "restored.sqlite"
    bogus.write_bytes(b"not a database" * 100)
    with pytest.raises(NodekeepError, match="is not an SQLite database"):
        SQLITE.deep_check(str(bogus), artifact_for(bogus))
