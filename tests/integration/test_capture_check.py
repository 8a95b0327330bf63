"""The SQLite check runs beside the seal: a damaged database never becomes an artifact."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite_db as sqlite_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import rolling_verify

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


# --------------------------------------------------------------------------
# the check policy (issue 14): integrity_check in parallel per table, recorded; restore proves by SHA-256
# --------------------------------------------------------------------------


def _index_damaged_db(path) -> None:
    """Two tables; the index t_v no longer matches its rows (its recorded definition names another column):
    quick_check passes, only the index-against-rows part of integrity_check finds it."""
    script = (
        "CREATE TABLE a(id INTEGER PRIMARY KEY, x TEXT); CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w TEXT);"
        "CREATE INDEX t_v ON t(v); INSERT INTO a(x) SELECT hex(randomblob(50)) FROM generate_series(1, 300);"
        "INSERT INTO t(v, w) SELECT 'v' || value, 'w' || value FROM generate_series(1, 300);"
        "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_v ON t(w)' WHERE name = 't_v';"
    )
    subprocess.run(["sqlite3", str(path), script], check=True, capture_output=True)
    quick = subprocess.run(["sqlite3", str(path), "PRAGMA quick_check;"], check=True, capture_output=True, text=True)
    assert quick.stdout.strip() == "ok"


@pytest.fixture
def two_cores(monkeypatch):
    """The parallel check whatever this host has (its result must not depend on the cores)."""
    monkeypatch.setattr(sqlite_utils, "_cores", lambda: 2)


def test_the_parallel_integrity_check_finds_what_quick_check_misses(tmp_path, node, two_cores):
    db = tmp_path / "index.db"
    _index_damaged_db(db)
    with pytest.raises(IntegrityError) as raised:
        node.backup([node.sqlite_asset(db, name="db")])
    assert "missing from index t_v" in raised.value.message, raised.value.message
    assert 'integrity_check("t")' in raised.value.message  # names the part that failed
    # The same database with check: quick is backed up, and says only what ran ...
    manifest = node.backup([node.sqlite_asset(db, name="db", check="quick")])
    source = manifest.artifact("db").source
    assert (source["check"], source["integrity"], source["check_how"]) == ("quick", "ok", "PRAGMA quick_check")
    # ... so its restore runs the full check, which fails: nothing is claimed that did not run.
    with pytest.raises(IntegrityError) as restored:
        node.restore(tmp_path / "restore", epoch=manifest.epoch)
    assert "missing from index t_v" in restored.value.message


def test_the_check_that_ran_is_recorded_and_the_restore_proves_it_by_sha256(
    tmp_path, node, live_db, two_cores, monkeypatch
):
    subprocess.run(["sqlite3", str(live_db.path), "CREATE TABLE other(x); INSERT INTO other VALUES (1);"], check=True)
    manifest = node.backup([node.sqlite_asset(live_db.path, name="db")])
    source = manifest.artifact("db").source
    assert source["check"] == "integrity" and source["integrity"] == "ok"
    assert source["check_how"].startswith("PRAGMA integrity_check in parallel on 2 read connections"), source
    assert "of each of its 2 tables" in source["check_how"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("the restore re-ran a check the capture proved")

    monkeypatch.setattr(sqlite_utils, "run_check", must_not_run)
    report = node.restore(tmp_path / "restore", epoch=manifest.epoch)
    checks = report["artifacts"][0]["checks"]
    assert checks["integrity"] == "ok"
    assert checks["integrity_proven"].startswith("at backup (PRAGMA integrity_check in parallel"), checks
    assert checks["page_count"] == source["page_count"]


# --------------------------------------------------------------------------
# the check policy's third leg (issue 14): capture with quick_check, deep verify proves the full check of the
# rebuilt image and records it signed; a restore of the same sealed bytes trusts that record
# --------------------------------------------------------------------------


def _no_check(*args, **kwargs):
    raise AssertionError("the restore re-ran a check a signed proof covers")


@pytest.mark.parametrize("incremental", [False, True], ids=["whole-file", "page-map"])
def test_a_deep_verify_records_a_proof_that_a_restore_of_a_quick_capture_trusts(
    tmp_path, node, live_db, two_cores, monkeypatch, incremental, dbtools
):
    subprocess.run(["sqlite3", str(live_db.path), "CREATE TABLE other(x); INSERT INTO other VALUES (1);"], check=True)
    options = {"check": "quick"}
    if incremental:
        options.update(incremental=True, state_dir=str(tmp_path / "state"))
    manifest = node.backup([node.sqlite_asset(live_db.path, name="db", **options)])
    assert manifest.artifact("db").source["check"] == "quick"
    # before any proof: the restore runs the full check itself and says what ran
    first = node.restore(tmp_path / "r1", epoch=manifest.epoch)["artifacts"][0]["checks"]
    assert "integrity_proven" not in first and first["check_how"].startswith("PRAGMA integrity_check in parallel")
    # a deep verify without the key records nothing; with it, one proof, kept once
    assert "proof" not in node.verify(manifest.epoch, deep=True)["artifacts"][0]
    assert not (node.epoch_dir(manifest.epoch) / "db.proof.json").exists()
    report = node.verify(manifest.epoch, deep=True, proof_key=node.signing_key.key)
    (entry,) = report["artifacts"]
    assert report["ok"] and entry["proof"] == {"file": "db.proof.json", "written": True}, report
    assert "unlisted_files" not in report
    again = node.verify(manifest.epoch, deep=True, proof_key=node.signing_key.key)
    assert again["artifacts"][0]["proof"]["written"] is False
    # the restore proves the same sealed bytes and trusts the signed proof: the check does not run again
    monkeypatch.setattr(sqlite_utils, "run_check", _no_check)
    monkeypatch.setattr(sqlite_utils, "check_database", _no_check)
    second = node.restore(tmp_path / "r2", epoch=manifest.epoch)["artifacts"][0]
    checks = second["checks"]
    assert checks["integrity"] == "ok" and checks["integrity_proven"].startswith("by deep verify at "), checks
    assert "db.proof.json" in checks["integrity_proven"] and "check_how" not in checks
    assert dbtools.rows(second["path"]) == dbtools.rows(live_db.path)


def test_a_proof_copied_from_another_epoch_is_not_trusted(tmp_path, node, live_db, two_cores):
    manifests = [node.backup([node.sqlite_asset(live_db.path, name="db", check="quick")]) for _number in range(2)]
    node.verify(manifests[0].epoch, deep=True, proof_key=node.signing_key.key)
    moved = node.epoch_dir(manifests[0].epoch) / "db.proof.json"
    (node.epoch_dir(manifests[1].epoch) / "db.proof.json").write_bytes(moved.read_bytes())
    checks = node.restore(tmp_path / "r", epoch=manifests[1].epoch)["artifacts"][0]["checks"]
    assert "integrity_proven" not in checks and checks["check_how"].startswith("PRAGMA integrity_check")
    assert "not trusted" in checks["proof_rejected"] and "epoch" in checks["proof_rejected"], checks


def test_a_deep_verify_of_a_damaged_quick_capture_records_no_proof(tmp_path, node, two_cores):
    db = tmp_path / "index.db"
    _index_damaged_db(db)
    manifest = node.backup([node.sqlite_asset(db, name="db", check="quick")])
    report = node.verify(manifest.epoch, deep=True, proof_key=node.signing_key.key)
    assert not report["ok"] and "missing from index t_v" in report["problems"][0], report
    assert "proof" not in report["artifacts"][0]
    assert not (node.epoch_dir(manifest.epoch) / "db.proof.json").exists()


def test_a_proof_key_that_is_not_the_nodes_is_refused_before_reading(node, live_db, other_signing_key):
    manifest = node.backup([node.sqlite_asset(live_db.path, name="db", check="quick")])
    with pytest.raises(IntegrityError) as raised:
        node.verify(manifest.epoch, deep=True, proof_key=other_signing_key.key)
    assert "not the node's key" in raised.value.message and raised.value.remedy
    with pytest.raises(IntegrityError) as shallow:
        node.verify(manifest.epoch, proof_key=node.signing_key.key)
    assert "deep" in shallow.value.message


def test_a_rolling_deep_verify_records_a_proof_for_each_epoch_it_checks(tmp_path, node, live_db):
    manifests = [node.backup([node.sqlite_asset(live_db.path, name="db", check="quick")]) for _number in range(2)]
    identities = seal.load_identities([node.age_key.identity])
    # one run of a cycle of one checks every epoch: each gets its proof
    report = rolling_verify(
        node.repository, "node1", node.public_line, 1, 1, deep=True, identities=identities, proof_key=node.signing_key.key
    )
    assert report["ok"], report
    written = [r["proof"] for e in report["epochs"] for r in e["results"]]
    assert written == [{"file": "db.proof.json", "written": True}] * 2, report
    assert all((node.epoch_dir(m.epoch) / "db.proof.json").exists() for m in manifests)
