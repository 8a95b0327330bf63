# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ed25519 manifest signatures in the OpenSSH ``SSHSIG`` format.

A node signs its manifests with its own Ed25519 key. The signature file is a
standard ``-----BEGIN SSH SIGNATURE-----`` block, so anyone can check it
without this collection::

    echo "node1 ssh-ed25519 AAAA..." > allowed_signers
    ssh-keygen -Y verify -f allowed_signers -I node1 -n nodekeep-manifest \\
        -s manifest.json.sig < manifest.json

The wire format is OpenSSH's PROTOCOL.sshsig.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
import os
import stat
import struct

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SignatureError

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc


NAMESPACE = "nodekeep-manifest"


MAGIC = b"SSHSIG"


VERSION = 1


KEY_TYPE = b"ssh-ed25519"


HASH_ALGORITHM = b"sha512"


ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"


ARMOR_END = "-----END SSH SIGNATURE-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise SignatureError("the signature is truncated", "re-create the epoch; do not trust it")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise SignatureError("the signature is truncated", "re-create the epoch; do not trust it")
    return blob[offset + 4 : end], end


def _require() -> None:
    if not HAS_CRYPTOGRAPHY:
        raise SignatureError(
            "the Python library cryptography is missing on this host",
            "run the nodekeep.backup.agent role, which installs it into the node virtualenv",
        )


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def generate_private_key_pem(comment: str = "") -> bytes:
    """A new Ed25519 key in OpenSSH private key format (unencrypted)."""
    _require()
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def public_key_line(private_pem: bytes, comment: str = "") -> str:
    key = load_private_key_bytes(private_pem)
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = raw.decode("ascii")
    return "%s %s" % (line, comment) if comment else line


def public_line_of(private_key) -> str:
    """``ssh-ed25519 AAAA...`` of a loaded private key (to read back what this node signed)."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode("ascii")


def load_private_key_bytes(data: bytes):
    _require()
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError(
            "the signing key is not an unencrypted OpenSSH Ed25519 private key",
            "let the nodekeep.backup.signing_key module create it",
        )
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the signing key is not Ed25519", "let the nodekeep.backup.signing_key module create it")
    return key


def load_private_key(path: str):
    """Load the node's signing key, refusing one that others can read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SignatureError(
            "cannot read the signing key %s (%s)" % (path, exc.strerror),
            "run the nodekeep.backup.agent role to create it, or set nodekeep_signing_key_path",
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignatureError(
            "the signing key %s is accessible to group or others (mode %o)" % (path, stat.S_IMODE(info.st_mode)),
            "chmod 0600 it; a manifest signed with an exposed key proves nothing",
        )
    with open(path, "rb") as handle:
        return load_private_key_bytes(handle.read())


def parse_public_key(line: str) -> Ed25519PublicKey:
    """Parse ``ssh-ed25519 AAAA... [comment]``."""
    _require()
    parts = (line or "").strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise SignatureError(
            "the node public key is not an ssh-ed25519 public key",
            "give the key the agent role fetched to the controller (keys/<node>.pub) in nodekeep_signing_public_key",
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        key_type, offset = _read_string(blob, 0)
        raw, offset = _read_string(blob, offset)
        if key_type != KEY_TYPE or len(raw) != 32:
            raise ValueError("not ed25519")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, SignatureError):
        raise SignatureError("the node public key is malformed", "copy it again from the controller's keys/<node>.pub")


def public_key_blob(key) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(KEY_TYPE) + _string(raw)


def fingerprint(public_line: str) -> str:
    """The SHA256 fingerprint ssh-keygen -l prints."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


# --------------------------------------------------------------------------
# signatures
# --------------------------------------------------------------------------


def _signed_data(message: bytes, namespace: str) -> bytes:
    digest = hashlib.sha512(message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(HASH_ALGORITHM) + _string(digest)


def sign(message: bytes, private_key, namespace: str = NAMESPACE) -> str:
    """Sign ``message``; returns an armored SSH signature."""
    signature = private_key.sign(_signed_data(message, namespace))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_key_blob(private_key.public_key()))
        + _string(namespace.encode())
        + _string(b"")
        + _string(HASH_ALGORITHM)
        + _string(_string(KEY_TYPE) + _string(signature))
    )
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([ARMOR_BEGIN] + lines + [ARMOR_END]) + "\n"


def verify(message: bytes, armored: str, public_line: str, namespace: str = NAMESPACE) -> None:
    """Check ``armored`` over ``message`` against the expected public key. Raises on any doubt."""
    expected = parse_public_key(public_line)
    text = (armored or "").strip()
    if not text.startswith(ARMOR_BEGIN) or not text.endswith(ARMOR_END):
        raise SignatureError("the manifest signature is not an SSH signature block", "the epoch cannot be trusted")
    body = "".join(text[len(ARMOR_BEGIN) : -len(ARMOR_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except ValueError:
        raise SignatureError("the manifest signature is not valid base64", "the epoch cannot be trusted")
    if not blob.startswith(MAGIC) or len(blob) < 10:
        raise SignatureError("the manifest signature has no SSHSIG preamble", "the epoch cannot be trusted")
    (version,) = struct.unpack(">I", blob[6:10])
    if version != VERSION:
        raise SignatureError("unsupported SSHSIG version %d" % version)
    offset = 10
    key_blob, offset = _read_string(blob, offset)
    sig_namespace, offset = _read_string(blob, offset)
    _reserved, offset = _read_string(blob, offset)
    hash_algorithm, offset = _read_string(blob, offset)
    sig_blob, offset = _read_string(blob, offset)
    if not hmac.compare_digest(key_blob, public_key_blob(expected)):
        raise SignatureError(
            "the manifest was signed by a different key than the node's public key on the controller",
            "if the node's key was rotated, update keys/<node>.pub; otherwise treat the epoch as forged",
        )
    if sig_namespace != namespace.encode():
        raise SignatureError(
            "the signature is for namespace %r, not %r" % (sig_namespace.decode(errors="replace"), namespace)
        )
    if hash_algorithm not in (b"sha512", b"sha256"):
        raise SignatureError("unsupported signature hash %r" % hash_algorithm.decode(errors="replace"))
    sig_type, inner = _read_string(sig_blob, 0)
    raw_signature = _read_string(sig_blob, inner)[0]
    if sig_type != KEY_TYPE:
        raise SignatureError("the signature is not an Ed25519 signature")
    hasher = hashlib.sha512 if hash_algorithm == b"sha512" else hashlib.sha256
    signed = (
        MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm) + _string(hasher(message).digest())
    )
    try:
        expected.verify(raw_signature, signed)
    except InvalidSignature:
        raise SignatureError(
            "the manifest signature does not match its content: the manifest was modified after signing",
            "do not trust this epoch; restore from another epoch or copy",
        )
