"""The key ceremonies after side_effect: keys-node1's secrets sealed into a signed epoch of
keys-node1.keys (to custodians alice and bob and to the master key), the master key split 2-of-3
on keys-recovery, the node key recovered there from two shares, two recoveries refused.

Checked with standard tools only: the age CLI (with each custodian's identity, on the controller)
and zstd, ssh-keygen -Y verify, sha256sum, stat. Not checked here: that no secret byte appears in
Ansible's output. The scenarios keep no log of their side_effect (_resources/tasks/ansible-playbook.yml
registers each run's output and shows a few lines of it); tests/integration/test_keys_leak.py runs
the three ceremonies with -vvv and scans their output, log and files.
"""

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
import testinfra
from nodekeep_molecule import REPOSITORY, controller_public_key, ephemeral, epochs, manifest, run, ssh_keygen_verify

NODE = "keys-node1"
KEYS_NODE = NODE + ".keys"
SECRETS = {"node-key": "/var/lib/node/keys/node_key", "mnemonic": "/var/lib/node/mnemonic.txt"}
CUSTODIANS = ["alice", "bob"]  # their age identities are on the controller only
SHARE_HOLDERS = ["alice", "bob", "carol"]
CEREMONY = "/root/ceremony"
RECOVERED = "/srv/recovered/node_key"


def get(name: str):
    return testinfra.get_host("podman://%s" % name)


NODE_HOST = get(NODE)
RECOVERY = get("keys-recovery")


def identity(custodian: str) -> Path:
    return ephemeral() / "age" / ("custodian-%s" % custodian)


def recipient(custodian: str) -> str:
    return (ephemeral() / "age" / ("custodian-%s.pub" % custodian)).read_text().strip()


def master_public_key() -> str:
    return json.loads(RECOVERY.file("%s/checksums.json" % CEREMONY).content_string)["master"]["age_public_key"]


@pytest.fixture(scope="module")
def keys_epoch() -> str:
    (epoch,) = epochs(NODE_HOST, KEYS_NODE)  # keys_seal.yml ran once
    return epoch


@pytest.fixture(scope="module")
def original() -> dict[str, bytes]:
    """The node's secrets, as the node holds them."""
    return {name: NODE_HOST.file(path).content for name, path in SECRETS.items()}


def test_the_nodes_secrets_are_private(original):
    for path in SECRETS.values():
        assert NODE_HOST.file(path).mode == 0o600, path
    assert len(original["node-key"]) == 64
    assert len(original["mnemonic"].split()) == 24


def test_the_keys_epoch_is_complete_private_and_signed(keys_epoch):
    directory = "%s/%s/%s" % (REPOSITORY, KEYS_NODE, keys_epoch)
    assert NODE_HOST.file(directory).mode == 0o700
    names = sorted(run(NODE_HOST, "ls -1A %s" % directory).split())
    assert names == ["manifest.json", "manifest.json.sig", "mnemonic.zst.age", "node-key.zst.age"]
    for name in names:
        assert NODE_HOST.file("%s/%s" % (directory, name)).mode == 0o600, name
    out = ssh_keygen_verify(NODE_HOST, KEYS_NODE, keys_epoch, controller_public_key(NODE))
    assert 'Good "nodekeep-manifest" signature for %s' % KEYS_NODE in out, out


def test_sealed_to_the_two_custodians_and_the_master_key(keys_epoch, original):
    m = manifest(NODE_HOST, KEYS_NODE, keys_epoch)
    assert m["recipients"] == [recipient("alice"), recipient("bob"), master_public_key()]
    assert m["labels"]["kind"] == "keys" and m["labels"]["node"] == NODE
    record = json.loads(NODE_HOST.file("%s/%s/last-keys-seal.json" % (REPOSITORY, KEYS_NODE)).content_string)
    assert record["epoch"] == keys_epoch
    # No unkeyed hash of a secret's plaintext is recorded (a short secret would be recovered from it):
    # the record names each secret and nothing of its plaintext; the signed manifest covers the sealed bytes.
    recorded = {item["name"]: item["content_sha256"] for item in record["items"]}
    assert sorted(recorded) == sorted(original)
    text = NODE_HOST.file("%s/%s/last-keys-seal.json" % (REPOSITORY, KEYS_NODE)).content_string
    text += json.dumps(m)
    for data in original.values():
        assert hashlib.sha256(data).hexdigest() not in text


@pytest.mark.parametrize("custodian", CUSTODIANS)
@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_custodian_opens_the_sealed_secret_with_the_age_cli(keys_epoch, original, custodian, name):
    """`age -d -i CUSTODIAN ARTIFACT | zstd -d` on the controller: no nodekeep code involved."""
    sealed = NODE_HOST.file("%s/%s/%s/%s.zst.age" % (REPOSITORY, KEYS_NODE, keys_epoch, name)).content
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp, "%s.zst.age" % name)
        artifact.write_bytes(sealed)
        opened = subprocess.run(
            ["age", "-d", "-i", str(identity(custodian)), str(artifact)], capture_output=True, check=False
        )
    assert opened.returncode == 0, opened.stderr.decode()
    plain = subprocess.run(["zstd", "-d", "-q", "-c"], input=opened.stdout, capture_output=True, check=True).stdout
    assert plain == original[name]


def test_the_share_files_are_private(keys_epoch):
    assert RECOVERY.file(CEREMONY).mode == 0o700
    shares = sorted(run(RECOVERY, "ls -1A %s/shares" % CEREMONY).split())
    assert shares == ["share-%d-%s.txt" % (i, name) for i, name in enumerate(SHARE_HOLDERS, 1)]
    for name in shares:
        assert RECOVERY.file("%s/shares/%s" % (CEREMONY, name)).mode == 0o600, name
    record = json.loads(RECOVERY.file("%s/record.json" % CEREMONY).content_string)
    assert (record["threshold"], record["count"]) == (2, 3)
    # the master key exists only as its shares: nothing else in the ceremony directory
    assert sorted(run(RECOVERY, "ls -1A %s" % CEREMONY).split()) == ["checksums.json", "record.json", "shares"]


def test_the_recovered_key_is_the_node_key_byte_for_byte(original):
    recovered = RECOVERY.file(RECOVERED)
    assert recovered.content == original["node-key"]
    assert (recovered.mode, recovered.user) == (0o600, "root")
    assert RECOVERY.file("/srv/recovered").mode == 0o700


def test_the_refused_recoveries_placed_nothing_and_no_master_key_is_left():
    assert not RECOVERY.file("/srv/refused").exists
    assert run(RECOVERY, "find /tmp -maxdepth 1 -name 'nodekeep-recover-*'").strip() == ""
