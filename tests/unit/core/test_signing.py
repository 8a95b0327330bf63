"""Manifest signatures: SSHSIG Ed25519, checked against the real ssh-keygen in both directions."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SignatureError

pytestmark = pytest.mark.timeout(60)

MESSAGE = b'{"format": "nodekeep.manifest/v1", "node": "node1"}\n'


def _ssh_keygen_verify(tmp_path, message: bytes, signature: str, public_line: str, principal: str = "node1"):
    (tmp_path / "allowed_signers").write_text("%s %s\n" % (principal, public_line))
    (tmp_path / "message").write_bytes(message)
    (tmp_path / "message.sig").write_text(signature)
    with open(tmp_path / "message", "rb") as stdin:
        return subprocess.run(
            [
                "ssh-keygen", "-Y", "verify",
                "-f", str(tmp_path / "allowed_signers"),
                "-I", principal,
                "-n", signing.NAMESPACE,
                "-s", str(tmp_path / "message.sig"),
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
            check=False,
        )


def _rearmor(blob: bytes) -> str:
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([signing.ARMOR_BEGIN] + lines + [signing.ARMOR_END]) + "\n"


def _blob(armored: str) -> bytes:
    lines = armored.strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


@pytest.fixture(scope="module")
def signature(signing_key) -> str:
    return signing.sign(MESSAGE, signing_key.key)


class TestRoundTrip:
    def test_sign_then_verify(self, signing_key, signature):
        assert signature.startswith(signing.ARMOR_BEGIN + "\n")
        assert signature.endswith(signing.ARMOR_END + "\n")
        signing.verify(MESSAGE, signature, signing_key.public_line)

    def test_verify_accepts_the_public_line_with_or_without_comment(self, signing_key, signature):
        bare = " ".join(signing_key.public_line.split()[:2])
        signing.verify(MESSAGE, signature, bare)
        signing.verify(MESSAGE, signature, bare + " some comment with spaces")

    def test_empty_and_large_messages(self, signing_key):
        for message in (b"", os.urandom(3 << 20)):
            signing.verify(message, signing.sign(message, signing_key.key), signing_key.public_line)

    def test_generated_keys_are_distinct_ed25519_keys(self):
        first = signing.public_key_line(signing.generate_private_key_pem())
        second = signing.public_key_line(signing.generate_private_key_pem())
        assert first.startswith("ssh-ed25519 ") and second.startswith("ssh-ed25519 ")
        assert first != second


class TestInteropWithSshKeygen:
    def test_ssh_keygen_accepts_our_signature(self, tmp_path, signing_key, signature):
        proc = _ssh_keygen_verify(tmp_path, MESSAGE, signature, signing_key.public_line)
        assert proc.returncode == 0, proc.stderr
        assert 'Good "nodekeep-manifest" signature for node1' in proc.stdout

    def test_ssh_keygen_rejects_our_signature_over_other_bytes(self, tmp_path, signing_key, signature):
        proc = _ssh_keygen_verify(tmp_path, MESSAGE + b" ", signature, signing_key.public_line)
        assert proc.returncode != 0

    def test_we_accept_ssh_keygen_signatures(self, tmp_path):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "node1", "-f", str(key)], check=True)
        (tmp_path / "manifest.json").write_bytes(MESSAGE)
        subprocess.run(
            ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", signing.NAMESPACE, str(tmp_path / "manifest.json")],
            check=True,
            capture_output=True,
        )
        armored = (tmp_path / "manifest.json.sig").read_text()
        public_line = (tmp_path / "id_ed25519.pub").read_text().strip()
        signing.verify(MESSAGE, armored, public_line)
        with pytest.raises(SignatureError):
            signing.verify(MESSAGE + b"x", armored, public_line)
        # an ssh-keygen signature in another namespace is not a manifest signature
        (tmp_path / "manifest.json.sig").unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "file", str(tmp_path / "manifest.json")],
            check=True,
            capture_output=True,
        )
        other = (tmp_path / "manifest.json.sig").read_text()
        with pytest.raises(SignatureError, match="namespace"):
            signing.verify(MESSAGE, other, public_line)

    def test_a_key_made_by_ssh_keygen_loads_and_signs(self, tmp_path):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public_line = (tmp_path / "id_ed25519.pub").read_text().strip()
        armored = signing.sign(MESSAGE, signing.load_private_key(str(key)))
        proc = _ssh_keygen_verify(tmp_path, MESSAGE, armored, public_line)
        assert proc.returncode == 0, proc.stderr

    def test_fingerprint_matches_ssh_keygen(self, tmp_path, signing_key):
        (tmp_path / "key.pub").write_text(signing_key.public_line + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "key.pub")], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[1] == signing.fingerprint(signing_key.public_line)

    def test_our_private_key_file_is_usable_by_ssh_keygen(self, tmp_path, signing_key):
        out = subprocess.run(["ssh-keygen", "-y", "-f", str(signing_key.path)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[:2] == signing_key.public_line.split()[:2]


class TestTampering:
    def test_a_flipped_byte_in_the_message_is_refused(self, signing_key, signature):
        for offset in (0, len(MESSAGE) // 2, len(MESSAGE) - 1):
            damaged = bytearray(MESSAGE)
            damaged[offset] ^= 0x01
            with pytest.raises(SignatureError, match="modified"):
                signing.verify(bytes(damaged), signature, signing_key.public_line)

    def test_every_flipped_byte_of_the_signature_blob_is_refused(self, signing_key, signature):
        blob = _blob(signature)
        accepted = []
        for offset in range(len(blob)):
            damaged = bytearray(blob)
            damaged[offset] ^= 0x01
            try:
                signing.verify(MESSAGE, _rearmor(bytes(damaged)), signing_key.public_line)
            except SignatureError:
                continue
            accepted.append(offset)
        assert accepted == []

    def test_every_flipped_character_of_the_armored_signature_is_refused(self, signing_key, signature):
        # A newline flipped to a vertical tab is still whitespace between base64 lines: the same
        # signature (ssh-keygen accepts it too). Every other byte must be refused with SignatureError.
        accepted = []
        for offset, char in enumerate(signature):
            if char == "\n":
                continue
            damaged = bytearray(signature.encode("ascii"))
            damaged[offset] ^= 0x01
            try:
                signing.verify(MESSAGE, damaged.decode("latin-1"), signing_key.public_line)
            except SignatureError:
                continue
            accepted.append(offset)
        assert accepted == []

    @pytest.mark.parametrize("cut", [0, 1, 40, -40, -2])
    def test_a_truncated_signature_is_refused(self, signing_key, signature, cut):
        blob = _blob(signature)
        damaged = blob[:cut] if cut > 0 else blob[:cut] if cut < 0 else b""
        with pytest.raises(SignatureError):
            signing.verify(MESSAGE, _rearmor(damaged), signing_key.public_line)

    @pytest.mark.parametrize("text", ["", "not a signature", signing.ARMOR_BEGIN + "\n!!!!\n" + signing.ARMOR_END])
    def test_garbage_is_refused(self, signing_key, text):
        with pytest.raises(SignatureError):
            signing.verify(MESSAGE, text, signing_key.public_line)

    def test_a_signature_by_a_different_key_is_refused(self, signing_key, other_signing_key):
        forged = signing.sign(MESSAGE, other_signing_key.key)
        with pytest.raises(SignatureError, match="different key"):
            signing.verify(MESSAGE, forged, signing_key.public_line)

    def test_a_different_key_is_refused_even_with_the_signers_blob_swapped_in(self, signing_key, other_signing_key):
        # forge: sign with another key but claim the node's public key in the blob
        forged = bytearray(_blob(signing.sign(MESSAGE, other_signing_key.key)))
        ours = signing.public_key_blob(signing_key.key.public_key())
        theirs = signing.public_key_blob(other_signing_key.key.public_key())
        start = bytes(forged).index(theirs)
        forged[start : start + len(theirs)] = ours
        with pytest.raises(SignatureError, match="modified"):
            signing.verify(MESSAGE, _rearmor(bytes(forged)), signing_key.public_line)

    def test_a_signature_for_another_namespace_is_refused(self, signing_key):
        other = signing.sign(MESSAGE, signing_key.key, namespace="file")
        with pytest.raises(SignatureError, match="namespace"):
            signing.verify(MESSAGE, other, signing_key.public_line)


class TestKeys:
    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
    def test_a_key_file_others_can_access_is_refused(self, tmp_path, signing_key, mode):
        path = tmp_path / "signing_key"
        path.write_bytes(signing_key.pem)
        os.chmod(path, mode)
        with pytest.raises(SignatureError) as excinfo:
            signing.load_private_key(str(path))
        assert str(path) in str(excinfo.value)
        assert "chmod 0600" in excinfo.value.remedy

    @pytest.mark.parametrize("mode", [0o600, 0o400])
    def test_a_private_key_file_loads(self, tmp_path, signing_key, mode):
        path = tmp_path / "signing_key"
        path.write_bytes(signing_key.pem)
        os.chmod(path, mode)
        key = signing.load_private_key(str(path))
        signing.verify(MESSAGE, signing.sign(MESSAGE, key), signing_key.public_line)

    def test_a_missing_key_file_is_named(self, tmp_path):
        with pytest.raises(SignatureError, match="cannot read the signing key"):
            signing.load_private_key(str(tmp_path / "nope"))

    def test_a_key_file_that_is_not_an_ed25519_key_is_refused(self, tmp_path):
        rsa = tmp_path / "id_rsa"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
        with pytest.raises(SignatureError, match="not Ed25519"):
            signing.load_private_key(str(rsa))
        junk = tmp_path / "junk"
        junk.write_text("not a key")
        os.chmod(junk, 0o600)
        with pytest.raises(SignatureError):
            signing.load_private_key(str(junk))

    def test_a_passphrase_protected_key_is_refused(self, tmp_path):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)], check=True)
        with pytest.raises(SignatureError, match="unencrypted"):
            signing.load_private_key(str(key))

    @pytest.mark.parametrize(
        "line",
        [
            "",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
            "ssh-ed25519",
            "ssh-ed25519 not-base64!",
            "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x05short").decode(),
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        ],
    )
    def test_bad_public_keys_are_refused(self, line, signature):
        with pytest.raises(SignatureError):
            signing.verify(MESSAGE, signature, line)
