"""storage/proofs.py: a deep verify's signed integrity proof is trusted only for exactly the artifact it names,
signed by the node's key in its own namespace; anything else is reported, never trusted."""

from __future__ import annotations

import json

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import proofs
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

E1, E2 = "20261120T010000Z", "20261121T010000Z"
HOW = "PRAGMA integrity_check in parallel on 2 read connections"


def artifact(sha: str = "a" * 64) -> Artifact:
    return Artifact("db", "sqlite", "db.pages.jsonl.zst.age", "sqlite-pages", 1234, sha, 99, "c" * 64)


@pytest.fixture
def repository(tmp_path):
    return LocalRepository(str(tmp_path / "repo"))


def test_a_written_proof_is_trusted_for_its_artifact_and_kept_once(repository, signing_key):
    written = proofs.write_proof(repository, "node1", E1, artifact(), HOW, signing_key.key)
    assert written == {"file": "db.proof.json", "written": True}
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line)
    assert problem == "" and proof.startswith("by deep verify at ") and HOW in proof, proof
    # write-once: a second verify keeps the first proof
    again = proofs.write_proof(repository, "node1", E1, artifact(), "other", signing_key.key)
    assert again == {"file": "db.proof.json", "written": False}
    assert HOW in proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line)[0]


def test_no_proof_is_neither_trusted_nor_a_problem(repository, signing_key):
    repository.put_bytes("node1", E1, "other", b"x")
    assert proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line) == ("", "")


def test_a_proof_for_other_bytes_another_epoch_or_another_key_is_not_trusted(repository, signing_key, other_signing_key):
    proofs.write_proof(repository, "node1", E1, artifact(), HOW, signing_key.key)
    # the same artifact name with other sealed bytes
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact("b" * 64), signing_key.public_line)
    assert proof == "" and "sha256" in problem and "not trusted" in problem, problem
    # copied into another epoch
    repository.put_bytes("node1", E2, "db.proof.json", repository.get_bytes("node1", E1, "db.proof.json"))
    proof, problem = proofs.load_proof(repository, "node1", E2, artifact(), signing_key.public_line)
    assert proof == "" and "epoch" in problem, problem
    # signed by another key
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact(), other_signing_key.public_line)
    assert proof == "" and "different key" in problem, problem


def test_a_tampered_or_manifest_namespace_proof_is_not_trusted(tmp_path, signing_key):
    repository = LocalRepository(str(tmp_path / "tampered"))
    proofs.write_proof(repository, "node1", E1, artifact(), HOW, signing_key.key)
    path = tmp_path / "tampered" / "node1" / E1 / "db.proof.json"
    body = json.loads(path.read_text())
    path.unlink()
    body["record"] = body["record"].replace('"result":"ok"', '"result":"ok" ')
    path.write_text(json.dumps(body))
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line)
    assert proof == "" and "not trusted" in problem, problem
    # a record signed in the manifests' namespace is not a proof
    record = json.loads(body["record"])
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.unlink()
    path.write_text(json.dumps({"record": text, "signature": signing.sign(text.encode(), signing_key.key)}))
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line)
    assert proof == "" and "namespace" in problem, problem
    # not JSON at all
    path.unlink()
    path.write_text("garbage")
    proof, problem = proofs.load_proof(repository, "node1", E1, artifact(), signing_key.public_line)
    assert proof == "" and "not a proof record" in problem, problem


def test_a_proof_of_a_failed_or_quick_check_is_not_trusted(tmp_path, signing_key):
    repository = LocalRepository(str(tmp_path / "r"))
    for epoch, changed in ((E1, {"check": "quick"}), (E2, {"result": "failed"})):
        record = dict(proofs._bound("node1", epoch, artifact()), check="integrity", result="ok", check_how=HOW)
        record.update(changed, proven_at="2026-11-20T01:00:00Z")
        text = json.dumps(record, sort_keys=True, separators=(",", ":"))
        armored = signing.sign(text.encode(), signing_key.key, namespace=proofs.NAMESPACE)
        repository.put_bytes("node1", epoch, "db.proof.json", json.dumps({"record": text, "signature": armored}).encode())
        proof, problem = proofs.load_proof(repository, "node1", epoch, artifact(), signing_key.public_line)
        assert proof == "" and "not trusted" in problem and next(iter(changed)) in problem, (changed, problem)
