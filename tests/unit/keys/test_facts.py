"""keys/facts.py: what a key file is, from its content, never echoing secret bytes."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.keys.facts import key_facts


def test_an_age_identity_is_known_by_its_public_key(age_key):
    facts = key_facts(age_key.identity_path.read_bytes())
    assert facts["kind"] == "age-identity"
    assert facts["public_key"] == age_key.recipient
    assert "AGE-SECRET-KEY" not in repr(facts)


def test_an_openssh_private_key_is_known_by_its_fingerprint(tmp_path):
    key = tmp_path / "id_ed25519"
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, capture_output=True)
    except FileNotFoundError:
        pytest.skip("ssh-keygen is not installed")
    facts = key_facts(key.read_bytes())
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], check=True, capture_output=True, text=True)
    assert facts["kind"] == "private-key"
    assert facts["fingerprint"] == expected.stdout.split()[1]
    assert facts["public_key"].split()[:2] == (tmp_path / "id_ed25519.pub").read_text().split()[:2]
    assert "PRIVATE KEY" not in repr(facts)


@pytest.mark.parametrize("data", [b"just some data\n", bytes(range(256)), b"x" * (65 << 10)])
def test_anything_else_is_data(data):
    assert key_facts(data) == {"kind": "data"}


def test_a_malformed_identity_gives_no_public_key_and_no_echo():
    secret = b"AGE-SECRET-KEY-1NOTAREALKEYATALL\n"
    facts = key_facts(secret)
    assert facts == {"kind": "age-identity", "public_keys": []}
