"""core/armor.py: age's ASCII armor read strictly (as age reads it) and passphrase mode, against the age CLI."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import armor
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SealError, UnsealError


@pytest.mark.parametrize("size", [1, 47, 48, 49, 95, 96, 97, 3000])
def test_armor_round_trip_at_line_boundaries(size):
    data = os.urandom(size)
    armored = armor.armor_bytes(data)
    lines = armored.split(b"\n")
    assert lines[0] == armor.AGE_ARMOR_MAGIC and lines[-2] == armor.AGE_ARMOR_END and lines[-1] == b""
    assert all(len(line) == 64 for line in lines[1:-3]) and 0 < len(lines[-3]) <= 64
    assert armor.dearmor_bytes(armored) == data


def test_the_reader_streams_and_hashes_the_armored_bytes():
    data = os.urandom(200_000)
    armored = b"\n \r\n" + armor.armor_bytes(data) + b"\n\n"  # whitespace around the armor is allowed
    reader = armor.ArmorReader(io.BytesIO(armored))
    parts = []
    while True:
        part = reader.read(4097)
        if not part:
            break
        parts.append(part)
    assert b"".join(parts) == data
    assert reader.size == len(armored) and reader.hexdigest() == hashlib.sha256(armored).hexdigest()


def _damaged(data: bytes, how: str) -> bytes:
    text = armor.armor_bytes(data)
    lines = text.split(b"\n")
    if how == "long line":
        lines[1] = lines[1] + b"AAAA"
    elif how == "short line in the middle":
        lines[1] = lines[1][:60]
    elif how == "not base64":
        lines[1] = b"*" * 64
    elif how == "truncated":
        lines = lines[:-2]
    elif how == "trailing data":
        lines.append(b"garbage")
    elif how == "no header":
        lines = lines[1:]
    elif how == "empty line":
        lines.insert(2, b"")
    return b"\n".join(lines)


@pytest.mark.parametrize(
    "how",
    ["long line", "short line in the middle", "not base64", "truncated", "trailing data", "no header", "empty line"],
)
def test_damage_is_refused(how):
    with pytest.raises(UnsealError):
        armor.dearmor_bytes(_damaged(os.urandom(500), how))


def test_non_canonical_padding_is_refused():
    data = b"\x00" * 101  # 101 bytes: the last line ends with one '=': its last data char carries unused bits
    text = armor.armor_bytes(data)
    assert text.split(b"\n")[-3].endswith(b"A=")
    with pytest.raises(UnsealError, match="non-canonical"):
        armor.dearmor_bytes(text.replace(b"A=\n-----END", b"B=\n-----END"))


def test_the_age_cli_reads_our_armor_and_we_read_its(tmp_path):
    identity = tmp_path / "key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    plain = os.urandom(5000)
    binary = subprocess.run(["age", "-r", recipient], input=plain, check=True, capture_output=True).stdout
    armored = subprocess.run(["age", "-a", "-r", recipient], input=plain, check=True, capture_output=True).stdout
    assert armor.is_armored(armored) and not armor.is_armored(binary)
    assert armor.stanza_types(armor.dearmor_bytes(armored)) == ["X25519"]
    ours = armor.armor_bytes(binary)
    out = subprocess.run(["age", "-d", "-i", str(identity)], input=ours, check=True, capture_output=True).stdout
    assert out == plain


def test_stanza_types_of_a_non_age_head():
    assert armor.stanza_types(b"SQLite format 3\x00") == []


class TestPassphrase:
    def test_round_trip_compressed_and_armored(self):
        # one open only: scrypt makes each one take seconds (a wrong passphrase: tests/integration/test_age_seal_secrets.py)
        data = b"mnemonic words " * 100
        sealed = armor.passphrase_seal(data, "correct horse", compress=True, armor=True)
        assert armor.is_armored(sealed) and data not in sealed
        assert armor.passphrase_open(sealed, "correct horse") == (data, True)

    def test_a_passphrase_file_says_scrypt(self):
        assert armor.stanza_types(armor.passphrase_seal(b"secret", "pw-123")[:200]) == ["scrypt"]

    def test_empty_passphrase_and_size_limit(self):
        with pytest.raises(SealError, match="passphrase is empty"):
            armor.passphrase_seal(b"x", "")
        with pytest.raises(SealError, match="larger than 1024 KiB"):
            armor.passphrase_seal(b"x" * (armor.MAX_PASSPHRASE_PAYLOAD + 1), "pw")
        with pytest.raises(UnsealError, match="larger than"):
            armor.passphrase_open(b"x" * (armor.MAX_PASSPHRASE_SEALED + 1), "pw")

    def test_a_file_sealed_to_recipients_is_not_opened_with_a_passphrase(self, tmp_path):
        identity = tmp_path / "key"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        sealed = subprocess.run(["age", "-r", recipient], input=b"x", check=True, capture_output=True).stdout
        with pytest.raises(UnsealError, match="sealed to age recipients"):
            armor.passphrase_open(sealed, "pw")
