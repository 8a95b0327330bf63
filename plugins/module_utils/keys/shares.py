# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Share files: parse and render one custodian's share (SLIP-39 words or ssss lines)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.keys._ssss import parse_ssss_line

try:
    import shamir_mnemonic

    HAS_SHAMIR_MNEMONIC = True
    SHAMIR_MNEMONIC_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by the sanity import test
    shamir_mnemonic = None
    HAS_SHAMIR_MNEMONIC = False
    SHAMIR_MNEMONIC_IMPORT_ERROR = _exc

SHARE_FORMAT = "nodekeep.shamir-share/v1"


BEGIN = "-----BEGIN NODEKEEP SHAMIR SHARE-----"


END = "-----END NODEKEEP SHAMIR SHARE-----"


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
    #: this custodian's share of the check value's key (an ssss line), from the share file
    check_key_share: str = field(default="", repr=False)

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
    # The sheet's Check-Key-Share line may be typed with the share (the "Check-Key-Share:" label or not).
    keys = [line for line in lines if CHECK_KEY_LINE_RE.match(line.split(":", 1)[-1].strip())]
    lines = [line for line in lines if line not in keys]
    key_share = keys[0].split(":", 1)[-1].strip() if len(keys) == 1 else ""
    if len(lines) == 1:
        parsed = parse_ssss_line(lines[0])
        if parsed is not None:
            token, index, _value, _degree = parsed
            return Share("ssss", index, lines[0], source=source, token=token, check_key_share=key_share)
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
            check_key_share=key_share,
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
        ("check-hmac-sha256", "hmac_sha256"),
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
        check_key_share=headers.get("check-key-share", ""),
    )


def _wrap_words(words: list[str], per_line: int = 4) -> list[str]:
    lines = []
    for start in range(0, len(words), per_line):
        cells = ["%2d %-10s" % (start + k + 1, word) for k, word in enumerate(words[start : start + per_line])]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_share_file(share_text: str, meta: dict[str, Any], index: int, custodian: str, key_share: str) -> str:
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
        "To recover with nodekeep.backup: give this file to the playbook nodekeep.backup.keys_recover (see docs/keys.md).",
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
        "Then verify: the Check-Key-Share lines of the same %d sheets give the check key: ssss-combine -t %d -x;" % (
            threshold,
            threshold,
        ),
        "with it as KEY,  { printf '%s'; %s; } | openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY  must print"
        % (
            CHECK_PREFIX.decode("ascii"),
            # ssss-combine ends the text it prints with a newline that is not part of the secret
            "tr -d '\\n' < SECRET" if scheme == "ssss" and meta.get("encoding") == "ascii" else "cat SECRET",
        ),
        "  %s" % check["hmac_sha256"],
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
        "Check-HMAC-SHA256: %s" % check["hmac_sha256"],
        "Check-Key-Share: %s" % key_share,
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


def share_file_name(index: int, custodian: str) -> str:
    return "share-%d-%s.txt" % (index, custodian)


SCHEMES = ("slip39", "ssss")


CHECK_PREFIX = b"nodekeep-shamir-check-v1:"


#: a share line of the check value's key: token ``nk`` + split id + ``c`` (see shamir.CHECK_KEY_TOKEN)
CHECK_KEY_LINE_RE = re.compile(r"^nk[0-9a-f]{8}c-\d{1,3}-[0-9a-fA-F]+\Z")


class ShamirError(NodekeepError):
    kind = "shamir"


def require_library() -> None:
    if not HAS_SHAMIR_MNEMONIC:
        raise ShamirError(
            "the Python library shamir-mnemonic (SLIP-39) is missing on this host",
            "run the nodekeep.backup.agent role (it installs it into the node virtualenv) and use that "
            "interpreter, or use scheme ssss, which needs no library",
        )
