"""Backup, verify and restore of real SQLite databases, also under a concurrent writer process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from integration_helpers import plain_sha256

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import sha256_file
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import resolve_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(120)


def _staged(target_root, source_path) -> str:
    return os.path.join(str(target_root), str(source_path).lstrip("/"))


class TestUnderAConcurrentWriter:
    @pytest.mark.parametrize("live_db", ["wal", "delete"], indirect=True)
    def test_restored_db_is_a_transaction_consistent_state_of_the_source(self, node, live_db, writer, tmp_path, dbtools):
        committed_before = writer.wait_for(30)
        # small steps: in WAL mode the writer commits between the steps of the copy
        manifest = node.backup([node.sqlite_asset(live_db.path, pages_per_step=8)])
        committed_after = writer.commits
        print("commits during the backup (%s): %d" % (live_db.journal_mode, committed_after - committed_before))
        writer.wait_for(committed_after + 30)  # the writer goes on after the backup
        writer.stop()

        # the manifest describes what was captured
        (artifact,) = manifest.artifacts
        assert artifact.source["path"] == str(live_db.path)
        assert artifact.source["integrity"] == "ok"
        assert artifact.source["journal_mode"] == {"wal": "wal", "delete": "rollback"}[live_db.journal_mode]

        target_root = tmp_path / "staging"
        result = node.restore(target_root)
        (restored,) = result["artifacts"]
        assert result["epoch"] == manifest.epoch
        assert restored["path"] == _staged(target_root, live_db.path)
        # no unkeyed hash of the database is recorded or reported: the restored file is the sealed copy's plaintext
        assert restored["sha256"] is None and artifact.content_sha256 is None
        sealed = node.epoch_dir(manifest.epoch) / artifact.file
        assert sha256_file(restored["path"])[1] == plain_sha256(sealed, node.age_key.identity_path)
        assert restored["size"] == artifact.content_size == os.path.getsize(restored["path"])
        assert restored["checks"]["integrity"] == "ok"

        facts = dbtools.consistency(restored["path"])
        assert facts["integrity"] == ["ok"]
        assert facts["even"], facts
        assert facts["ids_contiguous"], facts
        assert facts["txns_complete"], facts
        assert restored["checks"]["page_count"] == artifact.source["page_count"]
        # a snapshot taken while the writer ran: after the commits seen before, before the later ones
        # (the writer's counter is bumped just after each COMMIT, so it may lag by one transaction)
        assert live_db.rows + 2 * committed_before <= facts["count"] <= live_db.rows + 2 * (committed_after + 1)

        # every row restored is the row the source holds under that id (the writer only inserts)
        source = dbtools.rows(live_db.path)
        copy = dbtools.rows(restored["path"])
        assert len(source) > len(copy)
        assert all(source[row_id] == row for row_id, row in copy.items())

        report = node.verify(manifest.epoch)
        assert report["ok"] and report["signature"] == "valid", report
        deep = node.verify(manifest.epoch, deep=True)
        assert deep["ok"], deep
        assert deep["artifacts"][0]["deep"] == "ok"
        assert deep["artifacts"][0]["content_sha256"] is None
        assert deep["artifacts"][0]["checks"]["integrity"] == "ok"


class TestEpochLayout:
    def test_an_epoch_holds_the_artifacts_and_the_signed_manifest_only(self, node, live_db, dbtools):
        manifest = node.backup([node.sqlite_asset(live_db.path)], labels={"groups": ["mainnet"]})
        directory = node.epoch_dir(manifest.epoch)
        assert sorted(os.listdir(directory)) == sorted(["app-db.sqlite.zst.age", MANIFEST_NAME, SIGNATURE_NAME])
        for name in os.listdir(directory):
            assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700

        stored = (directory / MANIFEST_NAME).read_bytes()
        assert stored == manifest.to_bytes()
        parsed = Manifest.from_bytes(stored, node=node.name, epoch=manifest.epoch)
        assert parsed.recipients == [node.age_key.recipient]
        assert parsed.labels == {"groups": ["mainnet"]}
        (artifact,) = parsed.artifacts
        assert artifact.format == "sqlite3+zstd+age"
        assert artifact.size == os.path.getsize(directory / artifact.file)
        assert artifact.content_size == os.path.getsize(live_db.path)  # nothing writes: same size as the file

    def test_no_plaintext_is_left_in_scratch_space(self, node, live_db):
        node.backup([node.sqlite_asset(live_db.path)])
        node.verify(deep=True)
        scratch = os.path.join(node.repository.root, ".scratch")
        assert os.listdir(scratch) == []

    def test_a_shared_scratch_directory_keeps_other_programs_files(self, node, live_db, tmp_path):
        scratch = tmp_path / "shared-tmp"
        for name in ("run-other-tool", "run-1234", "nodekeep-notes"):
            (scratch / name).mkdir(parents=True)
            (scratch / name / "data.txt").write_text("not ours")
        (scratch / "run-file").write_text("not ours")
        node.backup([node.sqlite_asset(live_db.path)], scratch_dir=str(scratch))
        node.verify(deep=True, scratch_dir=str(scratch))
        assert sorted(os.listdir(scratch)) == ["nodekeep-notes", "run-1234", "run-file", "run-other-tool"]
        for name in ("run-other-tool", "run-1234", "nodekeep-notes"):
            assert (scratch / name / "data.txt").read_text() == "not ours"

    def test_the_plaintext_never_appears_in_the_repository(self, node, tmp_path, dbtools):
        db = dbtools.make(tmp_path / "plain.db", rows=200, payload=50, journal_mode="delete")
        marker = b"NODEKEEP-PLAINTEXT-MARKER-0123456789"
        subprocess.run(
            ["sqlite3", str(db.path), "INSERT INTO t(txn, payload) VALUES (101, '%s'), (101, 'x')" % marker.decode()],
            check=True,
        )
        node.backup([node.sqlite_asset(db.path)])
        for directory, _dirs, files in os.walk(node.repository.root):
            for name in files:
                with open(os.path.join(directory, name), "rb") as handle:
                    assert marker not in handle.read(), name


class TestSeveralAssetsAndEpochs:
    def test_two_assets_in_one_epoch_and_a_subset_restore(self, node, tmp_path, dbtools):
        (tmp_path / "a").mkdir()
        first = dbtools.make(tmp_path / "a" / "first.db", rows=100, journal_mode="wal")
        second = dbtools.make(tmp_path / "second.db", rows=300, journal_mode="delete")
        manifest = node.backup([node.sqlite_asset(first.path, "first"), node.sqlite_asset(second.path, "second")])
        assert [a.name for a in manifest.artifacts] == ["first", "second"]
        assert node.verify()["ok"]

        only = node.restore(tmp_path / "only-second", artifacts=["second"])
        assert [a["name"] for a in only["artifacts"]] == ["second"]
        assert not os.path.exists(_staged(tmp_path / "only-second", first.path))
        assert dbtools.rows(only["artifacts"][0]["path"]) == dbtools.rows(second.path)

        both = node.restore(tmp_path / "both")
        assert dbtools.rows(both["artifacts"][0]["path"]) == dbtools.rows(first.path)
        assert dbtools.rows(both["artifacts"][1]["path"]) == dbtools.rows(second.path)

    def test_latest_is_the_newest_complete_epoch_and_older_ones_stay_restorable(self, node, tmp_path, dbtools):
        db = dbtools.make(tmp_path / "app.db", rows=100, journal_mode="wal")
        older = node.backup([node.sqlite_asset(db.path)])
        subprocess.run(["sqlite3", str(db.path), "DELETE FROM t WHERE id > 50"], check=True)
        newer = node.backup([node.sqlite_asset(db.path)])
        assert newer.epoch > older.epoch
        assert resolve_epoch(node.repository, node.name, "latest") == newer.epoch
        assert node.repository.complete_epochs(node.name) == [older.epoch, newer.epoch]

        latest = node.restore(tmp_path / "latest")
        assert len(dbtools.rows(latest["artifacts"][0]["path"])) == 50
        old = node.restore(tmp_path / "old", epoch=older.epoch)
        assert old["epoch"] == older.epoch
        assert len(dbtools.rows(old["artifacts"][0]["path"])) == 100

    def test_force_keeps_the_existing_target_beside_the_restored_one(self, node, tmp_path, dbtools):
        db = dbtools.make(tmp_path / "app.db", rows=100)
        node.backup([node.sqlite_asset(db.path)])
        target = _staged(tmp_path / "staging", db.path)
        os.makedirs(os.path.dirname(target))
        with open(target, "wb") as handle:
            handle.write(b"the data that was there")
        node.restore(tmp_path / "staging", force=True)
        assert dbtools.rows(target) == dbtools.rows(db.path)
        kept = [n for n in os.listdir(os.path.dirname(target)) if n.startswith("app.db.nodekeep-replaced-")]
        assert len(kept) == 1
        with open(os.path.join(os.path.dirname(target), kept[0]), "rb") as handle:
            assert handle.read() == b"the data that was there"


# --------------------------------------------------------------------------
# tampering: a flipped byte anywhere is detected; restore writes nothing
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, make_node, dbtools):
    """One real epoch (about 1 MB of random rows: many age chunks), copied per test."""
    root = tmp_path_factory.mktemp("pristine")
    db = dbtools.make(root / "app.db", rows=1000, payload=1000, journal_mode="wal")
    node = make_node(LocalRepository(str(root / "repo")))
    manifest = node.backup([node.sqlite_asset(db.path)])
    return root, manifest


@pytest.fixture
def tampered_node(pristine, tmp_path, make_node):
    root, manifest = pristine
    shutil.copytree(root / "repo", tmp_path / "repo")
    node = make_node(LocalRepository(str(tmp_path / "repo")))
    return node, manifest


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))


def _artifact_offset(path, where: str) -> int:
    data = path.read_bytes()
    header_end = data.index(b"\n", data.index(b"\n--- ") + 1) + 1
    return {
        "first-byte": 0,
        "header": header_end // 2,
        "nonce": header_end + 3,
        "first-chunk": header_end + 16 + 10,
        "middle": len(data) // 2,
        "last-byte": len(data) - 1,
    }[where]


def _sig_offset(path, where: str) -> int:
    text = path.read_text()
    body = text.index("\n") + 1
    return {"armor": 5, "body-start": body + 2, "body-middle": len(text) // 2, "armor-end": len(text) - 6}[where]


TAMPER_CASES = [("artifact", w) for w in ("first-byte", "header", "nonce", "first-chunk", "middle", "last-byte")]
TAMPER_CASES += [("manifest", w) for w in ("first-byte", "sha256", "middle", "last-byte")]
TAMPER_CASES += [("signature", w) for w in ("armor", "body-start", "body-middle", "armor-end")]


class TestTampering:
    @pytest.mark.parametrize("what, where", TAMPER_CASES, ids=["%s-%s" % c for c in TAMPER_CASES])
    def test_a_flipped_byte_fails_verify_and_restore_writes_nothing(self, tampered_node, tmp_path, what, where, files_under):
        node, manifest = tampered_node
        directory = node.epoch_dir(manifest.epoch)
        artifact = manifest.artifacts[0]
        if what == "artifact":
            path = directory / artifact.file
            _flip(path, _artifact_offset(path, where))
        elif what == "manifest":
            path = directory / MANIFEST_NAME
            text = path.read_bytes()
            offset = {
                "first-byte": 0,
                "sha256": text.index(artifact.sha256.encode()) + 7,
                "middle": len(text) // 2,
                "last-byte": len(text) - 1,
            }[where]
            _flip(path, offset)
        else:
            path = directory / SIGNATURE_NAME
            _flip(path, _sig_offset(path, where))

        report = node.verify(manifest.epoch)
        assert report["ok"] is False
        assert report["problems"]
        if what != "artifact":
            assert report["signature"] == "invalid"
        assert node.verify(manifest.epoch, deep=True)["ok"] is False

        target_root = tmp_path / "staging"
        with pytest.raises(NodekeepError):
            node.restore(target_root)
        assert files_under(target_root) == []

    def test_an_artifact_swapped_for_another_epochs_valid_artifact_is_refused(self, tampered_node, tmp_path, files_under):
        node, manifest = tampered_node
        # a second, genuine epoch of the same asset: its artifact decrypts fine but is not the one signed
        db_path = manifest.artifacts[0].source["path"]
        other = node.backup([node.sqlite_asset(db_path)])
        name = manifest.artifacts[0].file
        victim = node.epoch_dir(manifest.epoch) / name
        os.chmod(victim, 0o600)
        shutil.copyfile(node.epoch_dir(other.epoch) / name, victim)

        report = node.verify(manifest.epoch)
        assert report["ok"] is False
        assert "SHA-256" in report["problems"][0]
        with pytest.raises(NodekeepError):
            node.restore(tmp_path / "staging", epoch=manifest.epoch)
        assert files_under(tmp_path / "staging") == []
        assert node.verify(other.epoch)["ok"]

    def test_a_missing_artifact_fails_verify_and_restore(self, tampered_node, tmp_path, files_under):
        node, manifest = tampered_node
        os.unlink(node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file)
        report = node.verify(manifest.epoch)
        assert report["ok"] is False and "missing" in report["problems"][0]
        with pytest.raises(NodekeepError):
            node.restore(tmp_path / "staging")
        assert files_under(tmp_path / "staging") == []

    def test_a_manifest_signed_by_another_key_is_refused(self, tampered_node, tmp_path, other_signing_key, files_under):
        from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing

        node, manifest = tampered_node
        directory = node.epoch_dir(manifest.epoch)
        # an attacker rewrites the manifest and signs it with their own key
        doc = json.loads((directory / MANIFEST_NAME).read_bytes())
        doc["labels"] = {"forged": True}
        forged = Manifest.from_bytes(json.dumps(doc).encode()).to_bytes()
        for name, data in ((MANIFEST_NAME, forged), (SIGNATURE_NAME, signing.sign(forged, other_signing_key.key).encode())):
            os.unlink(directory / name)
            (directory / name).write_bytes(data)
        report = node.verify(manifest.epoch)
        assert report["ok"] is False and report["signature"] == "invalid"
        assert "different key" in report["problems"][0]
        with pytest.raises(NodekeepError, match="different key"):
            node.restore(tmp_path / "staging")
        assert files_under(tmp_path / "staging") == []
