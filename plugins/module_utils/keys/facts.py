# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Public facts of a key file (its kind, the public key it derives, a fingerprint); never secret bytes.

Used by the secret asset type and age_seal (what a sealed or opened key file is) and by Shamir
splitting (what the combined secret is).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import hashlib
from typing import Any


def _ssh_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def key_facts(data: bytes) -> dict[str, Any]:
    """Public facts of a key file's content: what it is and the public key it derives. Never secret bytes.

    Knows age identity files (``AGE-SECRET-KEY-1...`` lines: their ``age1...``
    recipients) and OpenSSH / PEM private keys (public key line and the
    ``ssh-keygen -l`` style SHA256 fingerprint). Anything else: ``{"kind": "data"}``.
    """
    if len(data) > 64 << 10:
        return {"kind": "data"}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return {"kind": "data"}
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if lines and all(line.upper().startswith("AGE-SECRET-KEY-1") for line in lines):
        public = []
        try:
            from pyrage import x25519

            for line in lines:
                public.append(str(x25519.Identity.from_str(line).to_public()))
        except Exception:  # noqa: BLE001 - a malformed or unsupported identity: no public key, no echo
            return {"kind": "age-identity", "public_keys": []}
        return {"kind": "age-identity", "public_key": public[0], "public_keys": public}
    if "PRIVATE KEY-----" in text:
        return _private_key_facts(data)
    return {"kind": "data"}


def _private_key_facts(data: bytes) -> dict[str, Any]:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # pragma: no cover
        return {"kind": "private-key"}
    key = None
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, serialization.UnsupportedAlgorithm):
        return {"kind": "private-key", "encrypted_or_unknown": True}
    public = key.public_key()
    facts: dict[str, Any] = {"kind": "private-key"}
    try:
        line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        facts["public_key"] = line
        facts["fingerprint"] = _ssh_fingerprint(base64.b64decode(line.split()[1]))
        facts["key_type"] = line.split()[0]
    except (ValueError, TypeError):
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        facts["fingerprint"] = "SHA256:" + hashlib.sha256(der).hexdigest()
        facts["key_type"] = type(public).__name__
    return facts
