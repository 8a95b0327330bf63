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
exits 0. So every split stores a *check value* (HMAC-SHA-256 of a domain prefix
and the secret, under a random check key that is itself split M-of-N beside the
secret: each share file carries its ``Check-Key-Share`` line, so only M custodians
together can compute it and nobody can test guesses of the secret against the
record; the age public key when the secret is an age identity; the public key of
an OpenSSH private key) in every share file and in a public record, and
``combine_shares`` verifies it before returning anything. Records of older
versions hold an unkeyed ``sha256`` instead; it is still checked. Too few shares, a
wrong share or a share of another split is an error naming the problem, never
a wrong secret.

Nothing here ever puts secret bytes (the secret, a share) into an exception
message or a returned dict.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
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

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import fsync_dir
from ansible_collections.nodekeep.backup.plugins.module_utils.keys._ssss import (
    parse_ssss_line,
    ssss_combine,
    ssss_consistent,
    ssss_encoding,
    ssss_split,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.keys.facts import key_facts
from ansible_collections.nodekeep.backup.plugins.module_utils.keys.shares import (
    CHECK_PREFIX,
    SCHEMES,
    ShamirError,
    Share,
    parse_share,
    render_share_file,
    require_library,
    shamir_mnemonic,
    share_file_name,
    share_fingerprint,
)

MIN_SECRET = 16


MAX_SECRET = 128


MAX_SHARES = {"slip39": 16, "ssss": 255}


RECORD_FORMAT = "nodekeep.shamir-record/v1"


RECORD_NAME = "record.json"


#: the ssss token of the check key's share lines (``nkSPLITc-I-HEX``)
CHECK_KEY_TOKEN = "nk%sc"


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


SPLIT_ID_RE = re.compile(r"^[0-9a-f]{8}\Z")


#: at most this many subsets are tried to find which of more than M shares is wrong
MAX_SUBSETS = 256


# --------------------------------------------------------------------------
# check values and key facts
# --------------------------------------------------------------------------


def check_sha256(secret: bytes) -> str:
    """The check value of records made before the keyed one (read, never written): SHA-256 of prefix and secret."""
    return hashlib.sha256(CHECK_PREFIX + secret).hexdigest()


def check_hmac(key: bytes, secret: bytes) -> str:
    """The stored check value: HMAC-SHA-256 of ``nodekeep-shamir-check-v1:`` and the secret under the check key.

    By hand: ``{ printf 'nodekeep-shamir-check-v1:'; cat SECRET; } | openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY``
    with KEY from ``ssss-combine -t M -x`` of M shares' ``Check-Key-Share`` lines.
    """
    return hmac.new(key, CHECK_PREFIX + secret, hashlib.sha256).hexdigest()


#: bytes of the random key of the check value (split like the secret)
CHECK_KEY_SIZE = 32


def check_values(secret: bytes, key: bytes | None) -> dict[str, Any]:
    """Everything public that identifies ``secret``: stored with the shares, verified after every combine.

    No unkeyed hash of the secret: the HMAC's key is only known to M custodians together. ``key`` None (check
    mode: the split makes the key) leaves the HMAC out and gives only the key facts.
    """
    check: dict[str, Any] = {"algorithm": "hmac-sha256", "prefix": CHECK_PREFIX.decode("ascii")}
    if key is not None:
        check["hmac_sha256"] = check_hmac(key, secret)
        check["key"] = "split like the secret (M of N): the Check-Key-Share line of each share file (ssss, hex)"
    facts = key_facts(secret)
    if facts.get("kind") == "age-identity" and facts.get("public_key"):
        check["age_public_key"] = facts["public_key"]
    elif facts.get("kind") == "private-key" and facts.get("fingerprint"):
        check["public_key_fingerprint"] = facts["fingerprint"]
        if facts.get("public_key"):
            check["public_key"] = facts["public_key"]
    return check


def verify_check(secret: bytes, check: dict[str, Any], key: bytes | None = None) -> list[str]:
    """Compare ``secret`` with every check value given; returns the names of the checks that passed.

    ``key``: the check key combined from the same shares' ``Check-Key-Share`` lines (None: shares typed
    without them; the keyed check value cannot be computed then). Raises ShamirError naming the first
    check that failed, or when no check value could be checked.
    """
    passed = []
    if check.get("hmac_sha256") and key is not None:
        if not hmac.compare_digest(check_hmac(key, secret), str(check["hmac_sha256"]).lower()):
            raise _mismatch("the record's check value (HMAC-SHA-256)")
        passed.append("hmac_sha256")
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
            "no check value could be checked for these shares, so a combined secret cannot be verified",
            "give the custodians' share files (they carry the check value and the Check-Key-Share lines its key "
            "is combined from), or check_sha256 / age_public_key",
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
            "split a key, not a file: seal the file to a generated master key (the playbook nodekeep.backup.keys_split does) "
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
    check_key = secrets.token_bytes(CHECK_KEY_SIZE)
    key_lines = ssss_split(check_key, threshold, count, token=CHECK_KEY_TOKEN % split_id)
    meta: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "split_id": split_id,
        "label": label,
        "created": utc_now(),
        "scheme": scheme,
        "threshold": threshold,
        "count": count,
        "secret_size": len(secret),
        "check": check_values(secret, check_key),
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
        files[name] = render_share_file(text, meta, index, custodian, key_lines[index - 1])
        entry = {"index": index, "custodian": custodian, "file": name, "fingerprint": share_fingerprint(text)}
        if scheme == "ssss":
            entry["id"] = "%s-%0*d" % (meta["ssss"]["token"], len(str(count)), index)
        else:
            entry["id"] = " ".join(text.split()[:4])  # identifier and member index: metadata only
        shares.append(entry)
    meta["shares"] = shares
    return meta, files


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
            passed = verify_check(secret, ref["check"], _check_key(list(subset), ref))
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


def _check_key(subset: list[Share], ref: dict[str, Any]) -> bytes | None:
    """The check key combined from the subset's ``Check-Key-Share`` lines (the same custodians); None without them."""
    parsed = [parse_ssss_line(share.check_key_share) if share.check_key_share else None for share in subset]
    if any(entry is None for entry in parsed):
        return None
    if any(entry[1] != share.index for entry, share in zip(parsed, subset)):  # type: ignore[index]
        raise ShamirError(
            "a share file's Check-Key-Share line is not of its own share", "use the custodian's original file"
        )
    degrees = {entry[3] for entry in parsed}  # type: ignore[index]
    if degrees != {8 * CHECK_KEY_SIZE}:
        raise _mismatch("the check key's shares (damaged or of different splits)")
    return ssss_combine([(entry[1], entry[2]) for entry in parsed], ref["threshold"], 8 * CHECK_KEY_SIZE)  # type: ignore[index]


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
            "split a key, not a file: seal the file to a generated master key (the playbook nodekeep.backup.keys_split does) "
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
