"""No lock-in: real epochs checked and restored with standard tools only (age, zstd, sqlite3, ssh-keygen, sha256sum)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest
from integration_helpers import plain_sha256

from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME

pytestmark = pytest.mark.timeout(120)


def _sh(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=str(cwd), capture_output=True, text=True, check=False)


def _dump(path) -> str:
    """All rows, as the sqlite3 CLI prints them."""
    proc = subprocess.run(
        ["sqlite3", "-readonly", str(path), "SELECT id, txn, hex(payload) FROM t ORDER BY id"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.fixture
def epoch(node, tmp_path, dbtools):
    # a few MB so that the artifact spans many age chunks and zstd blocks
    db = dbtools.make(tmp_path / "app.db", rows=3000, payload=1000, journal_mode="wal")
    manifest = node.backup([node.sqlite_asset(db.path)])
    return db, manifest, node.epoch_dir(manifest.epoch)


class TestRestoreWithStandardTools:
    def test_age_and_zstd_give_back_the_manifests_content_and_the_same_rows(self, node, epoch, tmp_path):
        db, manifest, directory = epoch
        (artifact,) = manifest.artifacts
        out = tmp_path / "by-hand.db"
        proc = _sh(
            "age -d -i %s %s | zstd -d > %s" % (node.age_key.identity_path, directory / artifact.file, out),
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        data = out.read_bytes()
        assert hashlib.sha256(data).hexdigest() == plain_sha256(directory / artifact.file, node.age_key.identity_path)
        assert len(data) == artifact.content_size
        check = subprocess.run(["sqlite3", str(out), "PRAGMA integrity_check"], capture_output=True, text=True, check=False)
        assert check.stdout.strip() == "ok"
        assert _dump(out) == _dump(db.path)

    def test_sha256sum_checks_the_stored_artifacts_against_the_manifest(self, epoch):
        _db, _manifest, directory = epoch
        doc = json.loads((directory / MANIFEST_NAME).read_bytes())
        lines = "".join("%s  %s\n" % (a["sha256"], a["file"]) for a in doc["artifacts"])
        proc = subprocess.run(["sha256sum", "-c", "-"], input=lines, cwd=str(directory), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ": OK" in proc.stdout

    def test_an_ssh_ed25519_recipient_restores_with_the_ssh_key_and_the_age_cli(self, node, tmp_path, dbtools):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        recipient = (tmp_path / "id_ed25519.pub").read_text().strip()
        db = dbtools.make(tmp_path / "app.db", rows=200)
        manifest = node.backup([node.sqlite_asset(db.path)], recipients=[recipient, node.age_key.recipient])
        artifact = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file
        for identity in (key, node.age_key.identity_path):
            out = tmp_path / ("restored-%s.db" % identity.name)
            proc = _sh("age -d -i %s %s | zstd -d > %s" % (identity, artifact, out), tmp_path)
            assert proc.returncode == 0, proc.stderr
            assert _dump(out) == _dump(db.path)

    def test_the_age_cli_refuses_a_tampered_artifact(self, node, epoch, tmp_path):
        _db, manifest, directory = epoch
        damaged = tmp_path / "damaged.age"
        data = bytearray((directory / manifest.artifacts[0].file).read_bytes())
        data[len(data) // 2] ^= 0x01
        damaged.write_bytes(bytes(data))
        proc = _sh("age -d -i %s %s | zstd -d > %s" % (node.age_key.identity_path, damaged, tmp_path / "x.db"), tmp_path)
        assert proc.returncode != 0


class TestSignatureWithSshKeygen:
    @staticmethod
    def _verify(directory, allowed_signers, principal: str = "node1") -> subprocess.CompletedProcess:
        # the command documented in docs/manifest.md and plugins/module_utils/core/signing.py
        return _sh(
            "ssh-keygen -Y verify -f %s -I %s -n nodekeep-manifest -s %s < %s"
            % (allowed_signers, principal, directory / SIGNATURE_NAME, directory / MANIFEST_NAME),
            directory,
        )

    def test_ssh_keygen_verifies_a_real_epochs_manifest(self, node, epoch, tmp_path):
        _db, _manifest, directory = epoch
        allowed = tmp_path / "allowed_signers"
        allowed.write_text("%s %s\n" % (node.name, node.public_line))
        proc = self._verify(directory, allowed, node.name)
        assert proc.returncode == 0, proc.stderr
        assert 'Good "nodekeep-manifest" signature for node1 with ED25519 key' in proc.stdout

    def test_ssh_keygen_refuses_a_tampered_manifest_and_another_nodes_key(self, node, epoch, tmp_path, other_signing_key):
        _db, _manifest, directory = epoch
        allowed = tmp_path / "allowed_signers"
        allowed.write_text("%s %s\n" % (node.name, node.public_line))

        copy = tmp_path / "copy"
        shutil.copytree(directory, copy)
        manifest = copy / MANIFEST_NAME
        os.chmod(manifest, 0o600)
        manifest.write_bytes(manifest.read_bytes().replace(b'"node": "node1"', b'"node": "node1" '))
        assert self._verify(copy, allowed, node.name).returncode != 0

        other = tmp_path / "other_allowed"
        other.write_text("%s %s\n" % (node.name, other_signing_key.public_line))
        assert self._verify(directory, other, node.name).returncode != 0
        # the principal must be the node the key belongs to
        assert self._verify(directory, allowed, "node2").returncode != 0
