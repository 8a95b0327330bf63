"""storage/epochs.py: which epoch a restore reads (latest complete, or a named complete one), rollback
noticed against the controller's record, and manifests trusted only with the controller's key."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    ManifestError,
    RepositoryError,
    SignatureError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import epochs
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

E1, E2, E3 = "20261120T010000Z", "20261121T010000Z", "20261122T010000Z"


def put_epoch(repository, epoch, key, complete=True):
    now = utc_now_iso()
    data = Manifest("node1", epoch, now, now, ["age1example"], []).to_bytes()
    repository.put_bytes("node1", epoch, MANIFEST_NAME, data)
    if complete:
        repository.put_bytes("node1", epoch, SIGNATURE_NAME, signing.sign(data, key).encode("ascii"))


@pytest.fixture
def repository(tmp_path, signing_key):
    repo = LocalRepository(str(tmp_path / "repo"))
    put_epoch(repo, E1, signing_key.key)
    put_epoch(repo, E2, signing_key.key)
    put_epoch(repo, E3, signing_key.key, complete=False)
    return repo


class TestResolve:
    def test_latest_is_the_newest_complete(self, repository):
        assert epochs.resolve_epoch(repository, "node1") == E2 == epochs.resolve_epoch(repository, "node1", "latest")
        assert epochs.resolve_epoch(repository, "node1", E1) == E1

    def test_an_incomplete_epoch_is_refused(self, repository):
        with pytest.raises(RepositoryError, match="is incomplete .* choose a complete epoch: %s, %s" % (E1, E2)):
            epochs.resolve_epoch(repository, "node1", E3)

    def test_an_unknown_epoch_or_node(self, repository):
        with pytest.raises(RepositoryError, match="has no epoch 20990101T000000Z"):
            epochs.resolve_epoch(repository, "node1", "20990101T000000Z")
        with pytest.raises(RepositoryError, match="node2 has no complete epoch"):
            epochs.resolve_epoch(repository, "node2")


class TestKnownLatest:
    def test_the_recorded_epoch_or_a_newer_one_is_fine(self, repository):
        assert epochs.check_known_latest(repository, "node1", E2) == []
        assert epochs.check_known_latest(repository, "node1", E1) == []
        assert epochs.check_known_latest(repository, "node1", None) == []

    def test_a_rolled_back_repository(self, repository):
        with pytest.raises(RepositoryError, match="rolled back"):
            epochs.check_known_latest(repository, "node1", E3)  # recorded, but only incomplete here now
        (warning,) = epochs.check_known_latest(repository, "node1", E3, on_missing="warn")
        assert warning.startswith("ROLLBACK: ") and "the newest there is %s" % E2 in warning


class TestLoadManifest:
    def test_signed_by_the_trusted_key(self, repository, signing_key):
        manifest = epochs.load_manifest(repository, "node1", E2, signing_key.public_line)
        assert (manifest.node, manifest.epoch) == ("node1", E2)

    def test_another_key_is_refused(self, repository, other_signing_key):
        with pytest.raises(SignatureError):
            epochs.load_manifest(repository, "node1", E2, other_signing_key.public_line)

    def test_no_key_is_refused(self, repository):
        with pytest.raises(ManifestError, match="no public key was given for node node1"):
            epochs.load_manifest(repository, "node1", E2, "")
