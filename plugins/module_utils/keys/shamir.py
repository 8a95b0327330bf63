# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shamir secret sharing for key ceremonies: SLIP-39 word shares and the ``ssss`` format.

Two schemes, one interface (``split_secret`` / ``combine_shares``):

* ``slip39`` (the default): SLIP-39 mnemonic shares made by the
  ``shamir-mnemonic`` library (one group, M-of-N members, empty passphrase).
  Words with a Reed-Solomon checksum each, fit for paper or metal;
  ``shamir recover`` (the library's CLI) combines them without this collection.
* ``ssss``: the share format of B. Poettering's ``ssss`` 0.5 (Debian's
  ``ssss-split`` / ``ssss-combine``), implemented here in pure Python:
  GF(2^n) with ssss's irreducible polynomials, its monic polynomial (each share
  carries an extra ``x^t`` term), its XTEA-based diffusion layer for n >= 64,
  and its share lines ``[TOKEN-]INDEX-HEX``. Shares made here combine with
  ``ssss-combine`` and the other way round.

Neither ``ssss`` nor Shamir itself can tell a right secret from a wrong one:
``ssss-combine -t 2`` given two shares of a 3-of-N split prints garbage and
exits 0. So every split stores a *check value* (SHA-256 of a domain prefix and
the secret; the age public key when the secret is an age identity; the public
key of an OpenSSH private key) in every share file and in a public record, and
``combine_shares`` verifies it before returning anything. Too few shares, a
wrong share or a share of another split is an error naming the problem, never
a wrong secret.

Nothing here ever puts secret bytes (the secret, a share) into an exception
message or a returned dict.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.errors import NodekeepError, describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import fsync_dir

try:
    import shamir_mnemonic

    HAS_SHAMIR_MNEMONIC = True
    SHAMIR_MNEMONIC_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by the sanity import test
    HAS_SHAMIR_MNEMONIC = False
    SHAMIR_MNEMONIC_IMPORT_ERROR = _exc

SCHEMES = ("slip39", "ssss")
MIN_SECRET = 16
MAX_SECRET = 128
MAX_SHARES = {"slip39": 16, "ssss": 255}
CHECK_PREFIX = b"nodekeep-shamir-check-v1:"
RECORD_FORMAT = "nodekeep.shamir-record/v1"
SHARE_FORMAT = "nodekeep.shamir-share/v1"
BEGIN = "-----BEGIN NODEKEEP SHAMIR SHARE-----"
END = "-----END NODEKEEP SHAMIR SHARE-----"
RECORD_NAME = "record.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
SPLIT_ID_RE = re.compile(r"^[0-9a-f]{8}\Z")
#: at most this many subsets are tried to find which of more than M shares is wrong
MAX_SUBSETS = 256


class ShamirError(NodekeepError):
    kind = "shamir"


def require_library() -> None:
    if not HAS_SHAMIR_MNEMONIC:
        raise ShamirError(
            "the Python library shamir-mnemonic (SLIP-39) is missing on this host",
            "run the nodekeep.backup.agent role (it installs it into the node virtualenv) and use that "
            "interpreter, or use scheme ssss, which needs no library",
        )


# --------------------------------------------------------------------------
# GF(2^n) and the ssss format
# --------------------------------------------------------------------------

# Coefficients of irreducible polynomials x^n + x^a + x^b + x^c + 1 over GF(2),
# n = 8, 16, ..., 1024: the table of ssss.c 0.5 (from HP Labs report HPL-98-135).
_IRRED_COEFF = (
    4, 3, 1, 5, 3, 1, 4, 3, 1, 7, 3, 2, 5, 4, 3, 5, 3, 2, 7, 4, 2, 4, 3, 1, 10, 9, 3, 9, 4, 2, 7, 6, 2, 10, 9,
    6, 4, 3, 1, 5, 4, 3, 4, 3, 1, 7, 2, 1, 5, 3, 2, 7, 4, 2, 6, 3, 2, 5, 3, 2, 15, 3, 2, 11, 3, 2, 9, 8, 7, 7,
    2, 1, 5, 3, 2, 9, 3, 1, 7, 3, 1, 9, 8, 3, 9, 4, 2, 8, 5, 3, 15, 14, 10, 10, 5, 2, 9, 6, 2, 9, 3, 2, 9, 5,
    2, 11, 10, 1, 7, 3, 2, 11, 2, 1, 9, 7, 4, 4, 3, 1, 8, 3, 1, 7, 4, 1, 7, 2, 1, 13, 11, 6, 5, 3, 2, 7, 3, 2,
    8, 7, 5, 12, 3, 2, 13, 10, 6, 5, 3, 2, 5, 3, 2, 9, 5, 2, 9, 7, 2, 13, 4, 3, 4, 3, 1, 11, 6, 4, 18, 9, 6,
    19, 18, 13, 11, 3, 2, 15, 9, 6, 4, 3, 1, 16, 5, 2, 15, 14, 6, 8, 5, 2, 15, 11, 2, 11, 6, 2, 7, 5, 3, 8,
    3, 1, 19, 16, 9, 11, 9, 6, 15, 7, 6, 13, 4, 3, 14, 13, 3, 13, 6, 3, 9, 5, 2, 19, 13, 6, 19, 10, 3, 11,
    6, 5, 9, 2, 1, 14, 3, 2, 13, 3, 1, 7, 5, 4, 11, 9, 8, 11, 6, 5, 23, 16, 9, 19, 14, 6, 23, 10, 2, 8, 3,
    2, 5, 4, 3, 9, 6, 4, 4, 3, 2, 13, 8, 6, 13, 11, 1, 13, 10, 3, 11, 6, 5, 19, 17, 4, 15, 14, 7, 13, 9, 6,
    9, 7, 3, 9, 7, 1, 14, 3, 2, 11, 8, 2, 11, 6, 4, 13, 5, 2, 11, 5, 1, 11, 4, 1, 19, 10, 3, 21, 10, 6, 13,
    3, 1, 15, 7, 5, 19, 18, 10, 7, 5, 3, 12, 7, 2, 7, 5, 1, 14, 9, 6, 10, 3, 2, 15, 13, 12, 12, 11, 9, 16,
    9, 7, 12, 9, 3, 9, 5, 2, 17, 10, 6, 24, 9, 3, 17, 15, 13, 5, 4, 3, 19, 17, 8, 15, 6, 3, 19, 6, 1,
)  # fmt: skip


class GF2n:
    """The field GF(2^degree) as ssss builds it; elements are ints below 2^degree."""

    def __init__(self, degree: int) -> None:
        if degree < 8 or degree > 1024 or degree % 8:
            raise ValueError("ssss fields have 8 to 1024 bits in steps of 8, not %d" % degree)
        first = 3 * (degree // 8 - 1)
        a, b, c = _IRRED_COEFF[first : first + 3]
        self.degree = degree
        self.poly = (1 << degree) | (1 << a) | (1 << b) | (1 << c) | 1

    def mul(self, x: int, y: int) -> int:
        top = 1 << self.degree
        result = 0
        while y:
            if y & 1:
                result ^= x
            y >>= 1
            x <<= 1
            if x & top:
                x ^= self.poly
        return result

    def power(self, x: int, exponent: int) -> int:
        result = 1
        for _step in range(exponent):
            result = self.mul(result, x)
        return result

    def inverse(self, x: int) -> int:
        if not x:
            raise ZeroDivisionError("0 has no inverse")
        u, v, z, g = x, self.poly, 1, 0
        while u != 1:
            shift = u.bit_length() - v.bit_length()
            if shift < 0:
                u, v, z, g = v, u, g, z
                shift = -shift
            u ^= v << shift
            z ^= g << shift
        return z


_DELTA = 0x9E3779B9
_MASK = 0xFFFFFFFF


def _encipher(v0: int, v1: int) -> tuple[int, int]:
    total = 0
    for _round in range(32):
        v0 = (v0 + ((((v1 << 4) & _MASK ^ (v1 >> 5)) + v1 & _MASK) ^ total)) & _MASK
        total = (total + _DELTA) & _MASK
        v1 = (v1 + ((((v0 << 4) & _MASK ^ (v0 >> 5)) + v0 & _MASK) ^ total)) & _MASK
    return v0, v1


def _decipher(v0: int, v1: int) -> tuple[int, int]:
    total = 0xC6EF3720
    for _round in range(32):
        v1 = (v1 - ((((v0 << 4) & _MASK ^ (v0 >> 5)) + v0 & _MASK) ^ total)) & _MASK
        total = (total - _DELTA) & _MASK
        v0 = (v0 - ((((v1 << 4) & _MASK ^ (v1 >> 5)) + v1 & _MASK) ^ total)) & _MASK
    return v0, v1


def _slice(data: bytearray, index: int, length: int, block) -> None:
    positions = [(index + k) % length for k in range(8)]
    v0 = int.from_bytes(bytes(data[p] for p in positions[:4]), "big")
    v1 = int.from_bytes(bytes(data[p] for p in positions[4:]), "big")
    v0, v1 = block(v0, v1)
    for p, byte in zip(positions, v0.to_bytes(4, "big") + v1.to_bytes(4, "big")):
        data[p] = byte


def diffuse(value: int, degree: int, decode: bool = False) -> int:
    """ssss's diffusion layer (``encode_mpz``): a keyless XTEA-based permutation of the field element.

    Reproduces GMP's ``mpz_export(v, &t, -1, 2, 1, 0, x)`` byte order (16-bit
    words, least significant word first, each big-endian), including ssss's
    shuffle of the odd byte when ``degree % 16 == 8``.
    """
    words = (degree + 8) // 16
    length = degree // 8
    data = bytearray(2 * words)
    for k in range(words):
        word = (value >> (16 * k)) & 0xFFFF
        data[2 * k] = word >> 8
        data[2 * k + 1] = word & 0xFF
    odd = degree % 16 == 8
    if odd:
        data[length - 1] = data[length]
    if decode:
        for index in range(40 * length - 2, -1, -2):
            _slice(data, index, length, _decipher)
    else:
        for index in range(0, 40 * length, 2):
            _slice(data, index, length, _encipher)
    if odd:
        data[length] = data[length - 1]
        data[length - 1] = 0
    result = 0
    for k in range(words):
        result |= ((data[2 * k] << 8) | data[2 * k + 1]) << (16 * k)
    return result


def ssss_encoding(secret: bytes) -> str:
    """``ascii`` when ``ssss-split``/``ssss-combine`` can carry the secret as text (printable ASCII), else ``hex`` (-x)."""
    return "ascii" if secret and all(32 <= byte < 127 for byte in secret) else "hex"


def ssss_split(secret: bytes, threshold: int, count: int, token: str = "") -> list[str]:
    """Share lines exactly as ``ssss-split -t THRESHOLD -n COUNT [-w TOKEN] [-x]`` prints them."""
    degree = 8 * len(secret)
    field = GF2n(degree)
    coefficients = [int.from_bytes(secret, "big")]
    if degree >= 64:
        coefficients[0] = diffuse(coefficients[0], degree)
    coefficients.extend(secrets.randbits(degree) for _coefficient in range(threshold - 1))
    width = len(str(count))
    lines = []
    for x in range(1, count + 1):
        # ssss's horner() starts from x, not 0: every share carries an extra x^t term.
        y = x
        for coefficient in reversed(coefficients[1:]):
            y = field.mul(y ^ coefficient, x)
        y ^= coefficients[0]
        prefix = "%s-" % token if token else ""
        lines.append("%s%0*d-%0*x" % (prefix, width, x, degree // 4, y))
    return lines


_SSSS_LINE = re.compile(r"^(?:([^\s-]{1,128})-)?0*(\d{1,3})-([0-9a-fA-F]+)\Z")


def parse_ssss_line(text: str) -> tuple[str, int, int, int] | None:
    """``(token, index, value, degree)`` of one ``[TOKEN-]INDEX-HEX`` line, or None if it is not one."""
    match = _SSSS_LINE.match(text.strip())
    if not match:
        return None
    token, index, value = match.group(1) or "", int(match.group(2)), match.group(3)
    degree = 4 * len(value)
    if index < 1 or degree < 8 or degree > 1024 or degree % 8:
        return None
    return token, index, int(value, 16), degree


def _lagrange_at(field: GF2n, points: list[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _yj) in enumerate(points):
            if i != j:
                numerator = field.mul(numerator, at ^ xj)
                denominator = field.mul(denominator, xi ^ xj)
        total ^= field.mul(yi, field.mul(numerator, field.inverse(denominator)))
    return total


def _ssss_points(field: GF2n, shares: list[tuple[int, int]], threshold: int) -> list[tuple[int, int]]:
    """Remove each share's extra x^t term: then they lie on a plain polynomial of degree t-1."""
    return [(x, y ^ field.power(x, threshold)) for x, y in shares]


def ssss_combine(shares: list[tuple[int, int]], threshold: int, degree: int) -> bytes:
    """The secret from exactly ``threshold`` ``(index, value)`` pairs, as ``ssss-combine -t THRESHOLD`` computes it."""
    field = GF2n(degree)
    value = _lagrange_at(field, _ssss_points(field, shares, threshold), 0)
    if degree >= 64:
        value = diffuse(value, degree, decode=True)
    return value.to_bytes(degree // 8, "big")


def ssss_consistent(shares: list[tuple[int, int]], threshold: int, degree: int, other: tuple[int, int]) -> bool:
    """Whether ``other`` lies on the polynomial through ``shares`` (exactly ``threshold`` of them)."""
    field = GF2n(degree)
    x, y = other
    expected = _lagrange_at(field, _ssss_points(field, shares, threshold), x) ^ field.power(x, threshold)
    return expected == y


# --------------------------------------------------------------------------
# check values and key facts
# --------------------------------------------------------------------------


def check_sha256(secret: bytes) -> str:
    """The stored check value: SHA-256 of ``nodekeep-shamir-check-v1:`` followed by the secret.

    By hand: ``{ printf 'nodekeep-shamir-check-v1:'; cat SECRET; } | sha256sum``.
    """
    return hashlib.sha256(CHECK_PREFIX + secret).hexdigest()


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


def check_values(secret: bytes) -> dict[str, Any]:
    """Everything public that identifies ``secret``: stored with the shares, verified after every combine."""
    check: dict[str, Any] = {
        "algorithm": "sha256",
        "prefix": CHECK_PREFIX.decode("ascii"),
        "sha256": check_sha256(secret),
    }
    facts = key_facts(secret)
    if facts.get("kind") == "age-identity" and facts.get("public_key"):
        check["age_public_key"] = facts["public_key"]
    elif facts.get("kind") == "private-key" and facts.get("fingerprint"):
        check["public_key_fingerprint"] = facts["fingerprint"]
        if facts.get("public_key"):
            check["public_key"] = facts["public_key"]
    return check


def verify_check(secret: bytes, check: dict[str, Any]) -> list[str]:
    """Compare ``secret`` with every check value given; returns the names of the checks that passed.

    Raises ShamirError naming the first check that failed, or when no check value is known.
    """
    passed = []
    if check.get("sha256"):
        if not hmac.compare_digest(check_sha256(secret), str(check["sha256"]).lower()):
            raise _mismatch("the record's check value (SHA-256)")
        passed.append("sha256")
    if check.get("plain_sha256"):
        if not hmac.compare_digest(hashlib.sha256(secret).hexdigest(), str(check["plain_sha256"]).lower()):
            raise _mismatch("the given checksum (sha256sum of the secret)")
        passed.append("plain_sha256")
    facts = None
    if check.get("age_public_key"):
        facts = key_facts(secret)
        if str(check["age_public_key"]) not in facts.get("public_keys", []):
            raise _mismatch("the expected age public key")
        passed.append("age_public_key")
    if check.get("public_key_fingerprint"):
        facts = facts or key_facts(secret)
        if facts.get("fingerprint") != check["public_key_fingerprint"]:
            raise _mismatch("the expected public key fingerprint")
        passed.append("public_key_fingerprint")
    if not passed:
        raise ShamirError(
            "no check value is known for these shares, so a combined secret cannot be verified",
            "give the split's public record (record), or check_sha256 / age_public_key; share files made by "
            "shamir_split carry the check value themselves",
        )
    return passed


def _mismatch(what: str) -> ShamirError:
    return ShamirError(
        "the combined secret does not match %s" % what,
        "the shares are fewer than the split's threshold, one of them is wrong or damaged, or they come from "
        "different splits; nothing was written. Check the threshold and each share (their fingerprints are in "
        "the record)",
    )


# --------------------------------------------------------------------------
# shares and share files
# --------------------------------------------------------------------------


@dataclass
class Share:
    """One share as read from a file or a string: public headers plus the share text itself."""

    scheme: str
    index: int
    text: str = field(repr=False)
    source: str = ""
    split_id: str = ""
    threshold: int | None = None
    count: int | None = None
    custodian: str = ""
    check: dict[str, Any] = field(default_factory=dict)
    secret_size: int | None = None
    token: str = ""
    slip39_identifier: int | None = None

    @property
    def fingerprint(self) -> str:
        return share_fingerprint(self.text)

    def describe(self) -> str:
        who = " (%s)" % self.custodian if self.custodian else ""
        where = " from %s" % self.source if self.source else ""
        return "share %d%s%s" % (self.index, who, where)


def share_fingerprint(text: str) -> str:
    """A short hash of a share's value (an ssss line without its token and padding, or the words)."""
    parsed = parse_ssss_line(text)
    canonical = "%d-%0*x" % (parsed[1], parsed[3] // 4, parsed[2]) if parsed else " ".join(text.split()).lower()
    return "sha256:" + hashlib.sha256(canonical.encode("ascii", "replace")).hexdigest()[:16]


def _slip39_share(text: str, source: str):
    require_library()
    try:
        return shamir_mnemonic.Share.from_mnemonic(" ".join(text.split()).lower())
    except (shamir_mnemonic.MnemonicError, ValueError, KeyError):
        # The library's messages quote the first words of the share: never echoed.
        raise ShamirError(
            "%s is not a valid SLIP-39 share (a word is misspelled, missing or out of place: its checksum fails)"
            % (source or "a share"),
            "compare it word by word with the custodian's sheet; nothing was written",
        )


def _words_of(body: list[str]) -> list[str]:
    return [token for line in body for token in line.split() if not re.fullmatch(r"\d+[.:)]?", token)]


def parse_share(text: str, source: str = "") -> Share:
    """A share from a share file (sheet), a bare ``ssss`` line or a bare SLIP-39 mnemonic."""
    if BEGIN in text:
        return _parse_share_file(text, source)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) == 1:
        parsed = parse_ssss_line(lines[0])
        if parsed is not None:
            token, index, _value, _degree = parsed
            return Share("ssss", index, lines[0], source=source, token=token)
    words = _words_of(lines)
    if len(words) >= 20 and all(re.fullmatch(r"[A-Za-z]+", word) for word in words):
        mnemonic = " ".join(words).lower()
        share = _slip39_share(mnemonic, source)
        return Share(
            "slip39",
            share.index + 1,
            mnemonic,
            source=source,
            threshold=share.member_threshold,
            slip39_identifier=share.identifier,
        )
    raise ShamirError(
        "%s is neither a nodekeep share file, an ssss share line (INDEX-HEX) nor a SLIP-39 mnemonic"
        % (source or "a share"),
        "give the share file the custodian holds, or the share exactly as written on the sheet",
    )


def _parse_share_file(text: str, source: str) -> Share:
    block = text.split(BEGIN, 1)[1]
    if END not in block:
        raise ShamirError("%s is cut off: it has no end line" % (source or "a share file"), "use the complete file")
    block = block.split(END, 1)[0]
    headers: dict[str, str] = {}
    body: list[str] = []
    in_body = False
    for raw in block.splitlines():
        line = raw.strip()
        if not in_body:
            if not line:
                if headers:
                    in_body = True
                continue
            key, sep, value = line.partition(":")
            if not sep:
                in_body = True
                body.append(line)
                continue
            headers[key.strip().lower()] = value.strip()
        elif line:
            body.append(line)
    if headers.get("format") != SHARE_FORMAT:
        raise ShamirError(
            "%s is not a %s share file" % (source or "a share file", SHARE_FORMAT),
            "give a share file written by nodekeep.backup.shamir_split",
        )
    scheme = headers.get("scheme", "")
    if scheme not in SCHEMES:
        raise ShamirError("%s names an unknown scheme %r" % (source or "a share file", scheme))
    try:
        index = int(headers["share"].split()[0])
        threshold = int(headers["threshold"])
        count = int(headers["shares"])
        secret_size = int(headers["secret-size"]) if headers.get("secret-size") else None
    except (KeyError, ValueError, IndexError):
        raise ShamirError(
            "%s has damaged headers (Share, Threshold, Shares)" % (source or "a share file"),
            "use the custodian's original file or type the share itself",
        )
    check = {}
    for header, key in (
        ("check-sha256", "sha256"),
        ("check-age-public-key", "age_public_key"),
        ("check-public-key-fingerprint", "public_key_fingerprint"),
    ):
        if headers.get(header):
            check[key] = headers[header]
    if scheme == "ssss":
        lines = [line for line in body if parse_ssss_line(line) is not None]
        if len(lines) != 1:
            raise ShamirError(
                "%s holds no valid ssss share line" % (source or "a share file"),
                "use the custodian's original file, or give the share line (INDEX-HEX) as it is printed",
            )
        token, line_index, _value, _degree = parse_ssss_line(lines[0])  # type: ignore[misc]
        if line_index != index:
            raise ShamirError("%s says share %d but its line is share %d" % (source, index, line_index))
        share_text = lines[0]
        identifier = None
    else:
        share_text = " ".join(_words_of(body)).lower()
        decoded = _slip39_share(share_text, source or "share %d" % index)
        if decoded.index + 1 != index or decoded.member_threshold != threshold:
            raise ShamirError(
                "%s: its words do not match its headers (share %d, threshold %d)" % (source, index, threshold),
                "the file was edited; use the custodian's original sheet",
            )
        token, identifier = "", decoded.identifier
    return Share(
        scheme,
        index,
        share_text,
        source=source,
        split_id=headers.get("split", ""),
        threshold=threshold,
        count=count,
        custodian=headers.get("custodian", ""),
        check=check,
        secret_size=secret_size,
        token=token,
        slip39_identifier=identifier,
    )


def _wrap_words(words: list[str], per_line: int = 4) -> list[str]:
    lines = []
    for start in range(0, len(words), per_line):
        cells = ["%2d %-10s" % (start + k + 1, word) for k, word in enumerate(words[start : start + per_line])]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_share_file(share_text: str, meta: dict[str, Any], index: int, custodian: str) -> str:
    """A share file that is also a printable sheet: instructions, public headers, the share."""
    scheme = meta["scheme"]
    threshold, count = meta["threshold"], meta["count"]
    check = meta["check"]
    label = meta.get("label") or "a secret"
    lines = [
        "NODEKEEP KEY SHARE -- SECRET. Keep this sheet (or file) where only you can reach it.",
        "",
        "This is share %d of %d of %s (split %s, made %s)." % (index, count, label, meta["split_id"], meta["created"]),
        "Any %d different shares of this split recover the secret; fewer reveal nothing about it." % threshold,
        "Custodian: %s" % custodian,
        "",
        "To recover with nodekeep.backup: give this file to playbooks/keys_recover.yml (see docs/keys.md).",
    ]
    if scheme == "ssss":
        flag = "" if meta.get("encoding") == "ascii" else " -x"
        lines += [
            "To recover by hand (Debian package ssss): run  ssss-combine -t %d%s  and enter %d share lines"
            % (threshold, flag, threshold),
            "(the line between the markers below, without anything else). The secret is printed on stderr%s."
            % ("" if flag == "" else " in hex (xxd -r -p turns it back into bytes)"),
        ]
    else:
        lines += [
            "To recover by hand (pip install shamir-mnemonic): run  shamir recover  and type %d shares' words;"
            % (threshold),
            "it prints the secret in hex (xxd -r -p turns it back into bytes). There is no passphrase.",
        ]
    lines += [
        "Then verify:  { printf '%s'; %s; } | sha256sum  must print %s"
        % (
            CHECK_PREFIX.decode("ascii"),
            # ssss-combine ends the text it prints with a newline that is not part of the secret
            "tr -d '\\n' < SECRET" if scheme == "ssss" and meta.get("encoding") == "ascii" else "cat SECRET",
            check["sha256"],
        ),
    ]
    if check.get("age_public_key"):
        lines.append("and  age-keygen -y SECRET  must print %s" % check["age_public_key"])
    lines += ["A wrong or missing share gives a different value: then nothing recovered can be trusted.", ""]
    lines += [
        BEGIN,
        "Format: %s" % SHARE_FORMAT,
        "Scheme: %s" % scheme,
        "Split: %s" % meta["split_id"],
        "Label: %s" % " ".join(str(label).split()),
        "Created: %s" % meta["created"],
        "Share: %d of %d" % (index, count),
        "Threshold: %d" % threshold,
        "Shares: %d" % count,
        "Custodian: %s" % custodian,
        "Secret-Size: %d" % meta["secret_size"],
        "Check-SHA256: %s" % check["sha256"],
    ]
    if check.get("age_public_key"):
        lines.append("Check-Age-Public-Key: %s" % check["age_public_key"])
    if check.get("public_key_fingerprint"):
        lines.append("Check-Public-Key-Fingerprint: %s" % check["public_key_fingerprint"])
    if scheme == "ssss":
        lines.append("Ssss-Encoding: %s" % meta["encoding"])
        lines += ["", share_text]
    else:
        words = share_text.split()
        lines.append("Words: %d" % len(words))
        lines += [""] + _wrap_words(words)
    lines += [END, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_names(custodians: list[str]) -> None:
    seen = set()
    for name in custodians:
        if not NAME_RE.match(str(name)):
            raise ShamirError(
                "custodian name %r is not usable as a file name" % (name,),
                "use letters, digits, dot, dash and underscore (at most 64)",
            )
        if name in seen:
            raise ShamirError("custodian %r is listed twice" % name, "give each custodian one share")
        seen.add(name)


def validate_split(secret_size: int, scheme: str, threshold: int, count: int) -> None:
    """Everything ``split_secret`` refuses, checked before any secret is read or generated."""
    if scheme not in SCHEMES:
        raise ShamirError("unknown scheme %r" % (scheme,), "use slip39 or ssss")
    if not 2 <= threshold <= count:
        raise ShamirError(
            "a %d-of-%d split is not possible" % (threshold, count),
            "the threshold must be at least 2 and at most the number of shares",
        )
    if count > MAX_SHARES[scheme]:
        raise ShamirError(
            "%s makes at most %d shares, not %d" % (scheme, MAX_SHARES[scheme], count),
            "use fewer custodians" + (" or scheme ssss" if scheme == "slip39" else ""),
        )
    if not MIN_SECRET <= secret_size <= MAX_SECRET:
        raise ShamirError(
            "the secret has %d bytes; Shamir splitting here takes %d to %d bytes"
            % (secret_size, MIN_SECRET, MAX_SECRET),
            "split a key, not a file: seal the file to a generated master key (playbooks/keys_split.yml does) "
            "and split that key",
        )
    if scheme == "slip39" and secret_size % 2:
        raise ShamirError(
            "SLIP-39 needs a secret with an even number of bytes; this one has %d" % secret_size,
            "use scheme ssss for it, or split a generated key (generate: true) instead",
        )


def split_secret(
    secret: bytes,
    scheme: str,
    threshold: int,
    custodians: list[str],
    label: str = "",
) -> tuple[dict[str, Any], dict[str, str]]:
    """Split ``secret`` M-of-N. Returns the public record and ``{custodian: share file text}``."""
    count = len(custodians)
    validate_split(len(secret), scheme, threshold, count)
    check_names(custodians)
    split_id = secrets.token_hex(4)
    meta: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "split_id": split_id,
        "label": label,
        "created": utc_now(),
        "scheme": scheme,
        "threshold": threshold,
        "count": count,
        "secret_size": len(secret),
        "check": check_values(secret),
    }
    if scheme == "ssss":
        token = "nk" + split_id
        texts = ssss_split(secret, threshold, count, token=token)
        meta["encoding"] = ssss_encoding(secret)
        meta["ssss"] = {"token": token, "degree": 8 * len(secret), "diffusion": len(secret) >= 8}
    else:
        require_library()
        groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, count)], secret, b"", True, 1)
        texts = list(groups[0])
        identifier = shamir_mnemonic.Share.from_mnemonic(texts[0]).identifier
        meta["slip39"] = {"identifier": identifier, "groups": "1-of-1", "passphrase": False, "iteration_exponent": 1}
    files: dict[str, str] = {}
    shares = []
    for index, (custodian, text) in enumerate(zip(custodians, texts), 1):
        name = share_file_name(index, custodian)
        files[name] = render_share_file(text, meta, index, custodian)
        entry = {"index": index, "custodian": custodian, "file": name, "fingerprint": share_fingerprint(text)}
        if scheme == "ssss":
            entry["id"] = "%s-%0*d" % (meta["ssss"]["token"], len(str(count)), index)
        else:
            entry["id"] = " ".join(text.split()[:4])  # identifier and member index: metadata only
        shares.append(entry)
    meta["shares"] = shares
    return meta, files


def share_file_name(index: int, custodian: str) -> str:
    return "share-%d-%s.txt" % (index, custodian)


def generate_secret(kind: str, size: int) -> bytes:
    """A new random secret: ``size`` random bytes, or an age identity (its ``AGE-SECRET-KEY-1...`` line)."""
    if kind == "age_identity":
        try:
            from pyrage import x25519
        except ImportError:
            raise ShamirError(
                "generating an age identity needs the Python library pyrage, missing on this host",
                "run the nodekeep.backup.agent role and use its virtualenv",
            )
        return str(x25519.Identity.generate()).encode("ascii")
    if kind != "bytes":
        raise ShamirError("unknown secret kind %r" % (kind,), "use bytes or age_identity")
    return secrets.token_bytes(size)


# --------------------------------------------------------------------------
# combine
# --------------------------------------------------------------------------


@dataclass
class Combined:
    """A verified secret and how it was obtained (``report()`` has no secret in it)."""

    secret: bytes = field(repr=False)
    scheme: str
    split_id: str
    threshold: int
    used: list[Share]
    bad: list[dict[str, Any]]
    ignored: list[Share]
    checks: list[str]

    def report(self) -> dict[str, Any]:
        facts = key_facts(self.secret)
        report: dict[str, Any] = {
            "scheme": self.scheme,
            "split_id": self.split_id,
            "threshold": self.threshold,
            "used_shares": [share.index for share in self.used],
            "ignored_shares": [share.index for share in self.ignored],
            "bad_shares": self.bad,
            "verified": list(self.checks),
            "secret_size": len(self.secret),
            "secret_kind": facts.get("kind", "data"),
        }
        for key in ("public_key", "fingerprint", "key_type"):
            if facts.get(key):
                report[key] = facts[key]
        if facts.get("kind") == "age-identity" and facts.get("public_key"):
            report["age_public_key"] = facts["public_key"]
        return report


def load_record(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(1 << 20).decode("utf-8"))
    except FileNotFoundError:
        raise ShamirError("the record %s does not exist" % path, "give the record.json written by the split")
    except OSError as exc:
        raise describe_os_error(exc, "reading the split record", path)
    except ValueError:
        raise ShamirError("the record %s is not valid JSON" % path, "give the record.json written by the split")
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ShamirError("%s is not a %s record" % (path, RECORD_FORMAT), "give the record.json written by the split")
    return data


def read_share_files(paths: list[str]) -> list[Share]:
    shares = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(1 << 16)
        except FileNotFoundError:
            raise ShamirError("the share file %s does not exist" % path, "check the path; nothing was written")
        except IsADirectoryError:
            raise ShamirError("%s is a directory, not a share file" % path, "give the share files themselves")
        except OSError as exc:
            raise describe_os_error(exc, "reading a share file", path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ShamirError("%s is not a text share file" % path, "give the share file the custodian holds")
        shares.append(parse_share(text, path))
    return shares


def _reference(shares: list[Share], record: dict[str, Any] | None, threshold: int | None) -> dict[str, Any]:
    """The split the shares should belong to: scheme, split id, threshold, check values."""
    ref: dict[str, Any] = {"check": {}}
    if record:
        ref.update(
            scheme=record.get("scheme"),
            split_id=record.get("split_id", ""),
            threshold=record.get("threshold"),
            check=dict(record.get("check") or {}),
            fingerprints={int(s["index"]): s.get("fingerprint") for s in record.get("shares", []) if "index" in s},
            custodians={int(s["index"]): s.get("custodian", "") for s in record.get("shares", []) if "index" in s},
            token=(record.get("ssss") or {}).get("token", ""),
            identifier=(record.get("slip39") or {}).get("identifier"),
            secret_size=record.get("secret_size"),
        )
    schemes = {share.scheme for share in shares}
    if len(schemes) > 1:
        raise ShamirError(
            "the shares mix SLIP-39 word shares and ssss shares",
            "they cannot belong to one split: give the shares of one split only",
        )
    scheme = schemes.pop() if schemes else ref.get("scheme")
    if ref.get("scheme") and scheme != ref["scheme"]:
        raise ShamirError(
            "the shares are %s shares but the record is of a %s split" % (scheme, ref["scheme"]),
            "give the record of the split these shares come from",
        )
    ref["scheme"] = scheme
    _check_same_split(shares, ref)
    if not ref.get("split_id"):
        ref["split_id"] = next((share.split_id for share in shares if share.split_id), "")
    for share in shares:
        if share.custodian == "" and ref.get("custodians"):
            share.custodian = ref["custodians"].get(share.index, "")
        if share.threshold is not None:
            if ref.get("threshold") is None:
                ref["threshold"] = share.threshold
            elif share.threshold != ref["threshold"]:
                raise ShamirError(
                    "%s is of a %d-of-N split, the others (or the record) say %d"
                    % (share.describe(), share.threshold, ref["threshold"]),
                    "give shares of one split only",
                )
        for key, value in share.check.items():
            known = ref["check"].get(key)
            if known is None:
                ref["check"][key] = value
            elif str(known).lower() != str(value).lower():
                raise ShamirError(
                    "%s carries a different check value than the other shares or the record" % share.describe(),
                    "it belongs to another split: give shares of one split only",
                )
    if threshold:
        if ref.get("threshold") is not None and int(ref["threshold"]) != threshold:
            raise ShamirError(
                "threshold %d was given, but the %s %d"
                % (threshold, "record says" if record else "share files say", ref["threshold"]),
                "leave threshold unset: the split's own threshold is used",
            )
        ref["threshold"] = threshold
    if not ref.get("threshold"):
        raise ShamirError(
            "the threshold of this split is unknown (bare ssss share lines do not carry it)",
            "give the split's record, the share files, or threshold (the M of M-of-N)",
        )
    ref["threshold"] = int(ref["threshold"])
    return ref


def _check_same_split(shares: list[Share], ref: dict[str, Any]) -> None:
    def key(share: Share) -> str:
        if share.split_id:
            return "split " + share.split_id
        if share.token:
            return "token " + share.token
        if share.slip39_identifier is not None:
            return "SLIP-39 identifier %d" % share.slip39_identifier
        return ""

    expected = ""
    if ref.get("split_id"):
        expected = "split " + ref["split_id"]
    groups: dict[str, list[Share]] = {}
    for share in shares:
        groups.setdefault(key(share), []).append(share)
        # a share file's own split id must agree with its content's token / identifier
        if share.split_id and share.token and share.token != "nk" + share.split_id:
            raise ShamirError("%s: its line belongs to another split than its header says" % share.describe())
    for share in shares:
        if expected and share.split_id and "split " + share.split_id != expected:
            raise ShamirError(
                "%s belongs to split %s, not to split %s of the record"
                % (share.describe(), share.split_id, ref["split_id"]),
                "it is a share of another split: leave it out or give the matching record",
            )
        if ref.get("token") and share.token and share.token != ref["token"]:
            raise ShamirError(
                "%s carries token %s, the record's split uses %s" % (share.describe(), share.token, ref["token"]),
                "it is a share of another split: leave it out",
            )
        identifier = ref.get("identifier")
        if identifier is not None and share.slip39_identifier not in (None, identifier):
            raise ShamirError(
                "%s has SLIP-39 identifier %d, the record's split has %d"
                % (share.describe(), share.slip39_identifier, identifier),
                "it is a share of another split: leave it out",
            )
    ids = {share.slip39_identifier for share in shares if share.slip39_identifier is not None}
    tokens = {share.token for share in shares if share.token}
    split_ids = {share.split_id for share in shares if share.split_id}
    for values, what in ((ids, "SLIP-39 identifiers"), (tokens, "ssss tokens"), (split_ids, "split ids")):
        if len(values) > 1:
            listing = "; ".join(
                "%s: %s" % (name or "unmarked", ", ".join(s.describe() for s in members))
                for name, members in sorted(groups.items())
            )
            raise ShamirError(
                "the shares come from different splits (different %s): %s" % (what, listing),
                "give shares of one split only",
            )


def _dedupe(shares: list[Share], ref: dict[str, Any]) -> tuple[list[Share], list[Share], list[dict[str, Any]]]:
    """Distinct shares by index; a repeated index with the same text is dropped, a different one is an error."""
    by_index: dict[int, Share] = {}
    ignored = []
    bad = []
    for share in shares:
        known = ref.get("fingerprints", {}).get(share.index)
        if known and share.fingerprint != known:
            bad.append(
                {
                    "index": share.index,
                    "custodian": share.custodian,
                    "source": share.source,
                    "problem": "does not match the record's fingerprint (damaged, mistyped or another split)",
                }
            )
            continue
        if share.index in by_index:
            if " ".join(by_index[share.index].text.split()).lower() == " ".join(share.text.split()).lower():
                ignored.append(share)
                continue
            raise ShamirError(
                "share %d was given twice with different contents (%s and %s)"
                % (share.index, by_index[share.index].source or "one", share.source or "another"),
                "one of them is wrong or from another split: check both against the custodians' sheets",
            )
        by_index[share.index] = share
    return [by_index[index] for index in sorted(by_index)], ignored, bad


def _combine_subset(subset: list[Share], ref: dict[str, Any]) -> bytes:
    threshold = ref["threshold"]
    if ref["scheme"] == "ssss":
        parsed = [parse_ssss_line(share.text) for share in subset]
        degrees = {entry[3] for entry in parsed if entry}
        if len(degrees) != 1:
            raise ShamirError(
                "the ssss shares have different lengths (%s bits)" % ", ".join(str(d) for d in sorted(degrees)),
                "they belong to different splits: give shares of one split only",
            )
        degree = degrees.pop()
        if ref.get("secret_size") and 8 * int(ref["secret_size"]) != degree:
            raise ShamirError(
                "the ssss shares hold %d-bit values, the record's secret has %d bytes" % (degree, ref["secret_size"]),
                "they belong to another split",
            )
        return ssss_combine([(entry[1], entry[2]) for entry in parsed if entry], threshold, degree)
    require_library()
    try:
        return shamir_mnemonic.combine_mnemonics([share.text for share in subset])
    except (shamir_mnemonic.MnemonicError, ValueError):
        raise _mismatch("the SLIP-39 digest of the shared secret")


def combine_shares(
    shares: list[Share],
    record: dict[str, Any] | None = None,
    threshold: int | None = None,
    check: dict[str, Any] | None = None,
) -> Combined:
    """Combine shares of one split and verify the check value; never returns an unverified secret.

    With more than M distinct shares, the first M (by index) are combined; if the
    result fails the check, other M-subsets are tried, and a verified result
    names the shares that do not lie on it (``bad``).
    """
    if not shares:
        raise ShamirError("no share was given", "give the custodians' share files (share_files) or shares")
    ref = _reference(shares, record, threshold)
    for key, value in (check or {}).items():
        if value:
            ref["check"][key] = value
    distinct, ignored, bad = _dedupe(shares, ref)
    needed = ref["threshold"]
    if len(distinct) < needed:
        named = ", ".join(item["problem"] and "share %d" % item["index"] for item in bad)
        raise ShamirError(
            "%d usable share%s of this split %s given; it needs %d%s"
            % (
                len(distinct),
                "" if len(distinct) == 1 else "s",
                "was" if len(distinct) == 1 else "were",
                needed,
                " (left out: %s, which do not match the record)" % named if named else "",
            ),
            "bring %d more custodian share%s; nothing was written"
            % (needed - len(distinct), "" if needed - len(distinct) == 1 else "s"),
        )
    first_error: ShamirError | None = None
    for attempt, subset in enumerate(itertools.combinations(distinct, needed)):
        if attempt >= MAX_SUBSETS:
            break
        try:
            secret = _combine_subset(list(subset), ref)
            passed = verify_check(secret, ref["check"])
        except ShamirError as exc:
            if first_error is None:
                first_error = exc
            if "no check value" in exc.problem or len(distinct) == needed:
                raise
            continue
        chosen = list(subset)
        for share in distinct:
            if share in chosen:
                continue
            if not _lies_on(share, chosen, ref):
                bad.append(
                    {
                        "index": share.index,
                        "custodian": share.custodian,
                        "source": share.source,
                        "problem": "does not combine with the others to the verified secret (wrong or damaged)",
                    }
                )
            else:
                ignored.append(share)
        return Combined(secret, ref["scheme"], ref.get("split_id", ""), needed, chosen, bad, ignored, passed)
    raise first_error or _mismatch("the check value")


def _lies_on(share: Share, chosen: list[Share], ref: dict[str, Any]) -> bool:
    if ref["scheme"] == "ssss":
        parsed = [parse_ssss_line(s.text) for s in chosen]
        other = parse_ssss_line(share.text)
        if not other or other[3] != parsed[0][3]:  # type: ignore[index]
            return False
        points = [(entry[1], entry[2]) for entry in parsed if entry]
        return ssss_consistent(points, ref["threshold"], other[3], (other[1], other[2]))
    try:
        swapped = chosen[1:] + [share]
        return shamir_mnemonic.combine_mnemonics([s.text for s in swapped]) == shamir_mnemonic.combine_mnemonics(
            [s.text for s in chosen]
        )
    except (shamir_mnemonic.MnemonicError, ValueError):
        return False


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


def write_file(path: str, data: bytes, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` from the first byte (a temp file beside it)."""
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(path), secrets.token_hex(4)))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.rename(temp, path)
        else:
            os.link(temp, path)
        fsync_dir(directory)
    except FileExistsError:
        raise ShamirError("%s appeared while it was being written" % path, "nothing was overwritten; run again")
    except OSError as exc:
        raise describe_os_error(exc, "writing %s" % os.path.basename(path), path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def read_secret(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET + 1)
    except FileNotFoundError:
        raise ShamirError("the secret file %s does not exist" % path, "check src; nothing was written")
    except IsADirectoryError:
        raise ShamirError("%s is a directory" % path, "give the file holding the secret (a key)")
    except OSError as exc:
        raise describe_os_error(exc, "reading the secret", path)
    if len(data) > MAX_SECRET:
        raise ShamirError(
            "the secret file %s is larger than %d bytes" % (path, MAX_SECRET),
            "split a key, not a file: seal the file to a generated master key (playbooks/keys_split.yml does) "
            "and split that key",
        )
    return data


def prepare_dir(path: str, check_only: bool = False) -> bool:
    """The split's output directory, made 0700 if missing; True if it would be made."""
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ShamirError("cannot write to %s" % path, "choose a writable directory or use become: true")
        return False
    if os.path.lexists(path):
        raise ShamirError("%s exists and is not a directory" % path, "give a directory for the share files")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ShamirError("the directory %s does not exist" % parent, "create it first; nothing was written")
    if not check_only:
        try:
            os.mkdir(path, 0o700)
        except OSError as exc:
            raise describe_os_error(exc, "creating the share directory", path)
    return True


def write_split(dest: str, record_path: str, record: dict[str, Any], files: dict[str, str], force: bool) -> list[str]:
    """Write every share file (0600) into ``dest`` and the public record (0644); returns the share paths."""
    prepare_dir(dest)
    if force and os.path.exists(record_path):
        with contextlib.suppress(ShamirError, OSError, KeyError, TypeError):
            for entry in load_record(record_path).get("shares", []):
                old = os.path.join(dest, os.path.basename(str(entry["file"])))
                if os.path.basename(old) not in files:
                    os.unlink(old)
    written = []
    for name, text in files.items():
        path = os.path.join(dest, name)
        write_file(path, text.encode("utf-8"), 0o600, replace=force)
        written.append(path)
    public = json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    write_file(record_path, public, 0o644, replace=force)
    return written
