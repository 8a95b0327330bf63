"""assets/secret.py with real age and ssh keys: the manifest records a key's public facts and never the key, a
restored key must derive the recorded public key, a secret file comes back 0600, a directory of secrets is a
tree, and xattrs of a secret are listed as not kept."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.secret import SecretAssetType, source_kind
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError, SealError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact

SECRET = SecretAssetType()


def capture(path) -> tuple[bytes, dict, dict]:
    asset = SECRET.normalize({"name": "node-key", "path": str(path)})
    with SECRET.capture(asset, "/nonexistent-scratch") as captured:
        data = captured.stream.read()
        return data, {**captured.facts, **captured.finish()}, asset


def artifact(facts: dict) -> Artifact:
    return Artifact("node-key", "secret", "node-key.zst.age", "secret+zstd+age", 0, "0", 0, None, source=facts)


def test_an_age_identity_records_its_recipient_never_the_key(tmp_path, age_key, other_age_key):
    data, facts, asset = capture(age_key.identity_path)
    assert asset["content"] == "file" and SECRET.artifact_file(asset) == "node-key.zst.age"
    assert data == age_key.identity_path.read_bytes()
    assert facts["public_key"] == age_key.recipient and facts["mode"] == "0600"
    assert "AGE-SECRET-KEY" not in json.dumps(facts)
    restored = tmp_path / "restored" / "key.txt"
    with SECRET.restore_into(str(restored)) as staged:
        staged.stream.write(data)
    assert stat.S_IMODE(os.stat(restored).st_mode) == 0o600
    assert SECRET.deep_check(str(restored), artifact(facts)) == {"public_key": age_key.recipient}
    # another key in its place does not derive the recorded recipient
    restored.write_bytes(other_age_key.identity_path.read_bytes())
    with pytest.raises(RestoreError, match="does not derive the public key recorded in the manifest"):
        SECRET.deep_check(str(restored), artifact(facts))


def test_an_ssh_key_records_its_public_key_and_fingerprint(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "n1", "-f", str(key)], check=True)
    _data, facts, _asset = capture(key)
    public = (tmp_path / "id_ed25519.pub").read_text().split()
    assert facts["public_key"].split()[:2] == public[:2]
    assert facts["fingerprint"].startswith("SHA256:")
    assert "PRIVATE KEY" not in json.dumps(facts)


def test_a_directory_of_secrets_is_a_tree_and_xattrs_are_listed_as_not_kept(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "a.env").write_text("TOKEN=x\n")
    (keys / "b.key").write_text("y")
    data, facts, asset = capture(keys)
    assert asset["content"] == "tar" and SECRET.artifact_file(asset) == "node-key.tar.zst.age"
    assert facts["entries"]["files"] == 2
    context = type("Context", (), {"artifact": artifact(facts)})()
    with SECRET.restore_into(str(tmp_path / "back"), context=context) as staged:
        staged.stream.write(data)
        staged.complete()
    assert (tmp_path / "back" / "a.env").read_text() == "TOKEN=x\n"
    assert SECRET.deep_check(str(tmp_path / "back"), artifact(facts))["entries"]["files"] == 2
    single = tmp_path / "single.key"
    single.write_text("z")
    os.setxattr(single, "user.label", b"prod")
    _data, facts, _asset = capture(single)
    assert facts["not_kept"] == [
        {"path": ".", "what": "1 extended attribute(s) or ACL(s)", "reason": "a secret file is restored 0600 without them"}
    ]


def test_source_kind_refuses_what_it_cannot_seal(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SealError, match="is neither a regular file nor a directory"):
        source_kind(str(tmp_path / "fifo"))
    with pytest.raises(SealError, match="does not exist"):
        source_kind(str(tmp_path / "missing"))
