"""No unkeyed hash of a secret's plaintext is stored or reported: age_seal (sealed, opened, epoch) and
shamir_split, run as modules on a 6-digit secret. Every candidate is tried against everything they print
and write, as an attacker reading the results (or -vvv logs) would; nothing matches. Opening still proves
integrity: the sealed SHA-256 is reported, age authenticates, and a known plain checksum is compared inside
the module (expected_content_sha256), a wrong one refused with nothing placed.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from modrun import module

pytestmark = pytest.mark.timeout(300)

PIN = b"482913"


def candidates_found(text: str) -> list[bytes]:
    """Every 6-digit candidate whose SHA-256 (plain, or with a trailing newline) appears in ``text``."""
    found = set(re.findall(r"[0-9a-f]{64}", text))
    hits = []
    for number in range(10**6):
        guess = b"%06d" % number
        if hashlib.sha256(guess).hexdigest() in found or hashlib.sha256(guess + b"\n").hexdigest() in found:
            hits.append(guess)
    return hits


def test_age_seal_never_reports_a_plain_hash_and_still_proves_integrity(age_key, node, tmp_path):
    secret = tmp_path / "pin.txt"
    secret.write_bytes(PIN)
    secret.chmod(0o600)
    sealed = module(
        "age_seal",
        {"state": "sealed", "src": str(secret), "dest": str(tmp_path / "pin.age"), "recipients": [age_key.recipient]},
        tmp_path / "args",
    )
    assert not sealed.get("failed"), sealed
    assert sealed["content_sha256"] is None and re.fullmatch(r"[0-9a-f]{64}", sealed["sha256"])
    opened = module(
        "age_seal",
        {
            "state": "opened",
            "src": str(tmp_path / "pin.age"),
            "dest": str(tmp_path / "out.txt"),
            "identity_files": [str(age_key.identity_path)],
            "expected_content_sha256": hashlib.sha256(PIN).hexdigest(),
        },
        tmp_path / "args",
    )
    assert not opened.get("failed"), opened
    assert (tmp_path / "out.txt").read_bytes() == PIN
    assert opened["content_verified"] is True and opened["content_sha256"] is None
    assert opened["sha256"] == sealed["sha256"]  # the sealed bytes, which age authenticated
    wrong = module(
        "age_seal",
        {
            "state": "opened",
            "src": str(tmp_path / "pin.age"),
            "dest": str(tmp_path / "wrong.txt"),
            "identity_files": [str(age_key.identity_path)],
            "expected_content_sha256": hashlib.sha256(b"000000").hexdigest(),
        },
        tmp_path / "args",
    )
    assert wrong.get("failed") and "expected SHA-256" in wrong["msg"], wrong
    assert not (tmp_path / "wrong.txt").exists()
    epoch = module(
        "age_seal",
        {
            "state": "epoch",
            "repository": node.repository.root,
            "node": "node1.keys",
            "assets": [{"name": "pin", "path": str(secret)}],
            "recipients": [age_key.recipient],
            "signing_key": str(node.signing_key.path),
        },
        tmp_path / "args",
    )
    assert not epoch.get("failed"), epoch
    # What the results say, invocation.module_args included (-vvv and AWX job events keep it: the operator's own
    # expected value is not echoed there either), and what is stored.
    given = hashlib.sha256(PIN).hexdigest()
    assert opened["invocation"]["module_args"]["expected_content_sha256"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    printed = json.dumps([sealed, opened, epoch, wrong])
    stored = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.json") if "args" not in p.parts)
    stored += "".join(p.read_text(errors="replace") for p in (tmp_path / "repo").rglob("manifest.json"))
    assert given not in printed
    assert candidates_found(printed + stored) == []


def test_shamir_split_stores_no_hash_a_6_digit_secret_falls_to(tmp_path):
    """A 16-byte secret that is a 6-digit PIN padded with a known prefix: the record and sheets give nothing."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"vault-pin:" + PIN)
    secret.chmod(0o600)
    result = module(
        "shamir_split",
        {
            "state": "split",
            "src": str(secret),
            "dest": str(tmp_path / "shares"),
            "threshold": 2,
            "custodians": ["alice", "bob", "carol"],
            "scheme": "ssss",
        },
        tmp_path / "args",
    )
    assert not result.get("failed"), result
    assert result["check"]["algorithm"] == "hmac-sha256" and "sha256" not in result["check"]
    published = json.dumps(result) + "".join(p.read_text() for p in (tmp_path / "shares").iterdir())
    found = set(re.findall(r"[0-9a-f]{64}", published))
    for number in range(10**6):
        guess = b"vault-pin:%06d" % number
        assert hashlib.sha256(b"nodekeep-shamir-check-v1:" + guess).hexdigest() not in found
        assert hashlib.sha256(guess).hexdigest() not in found
    combined = module(
        "shamir_split",
        {
            "state": "combine",
            "share_files": [str(p) for p in sorted((tmp_path / "shares").glob("share-*"))][:2],
            "dest": str(tmp_path / "back"),
        },
        tmp_path / "args",
    )
    assert not combined.get("failed"), combined
    assert combined["verified"] == ["hmac_sha256"]
    assert (tmp_path / "back").read_bytes() == secret.read_bytes()
