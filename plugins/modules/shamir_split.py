#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: shamir_split
short_description: Split a secret M-of-N into Shamir shares for custodians, or combine shares and verify the secret
version_added: 0.1.0
description:
  - With O(state=split), splits a secret (read from O(src), or generated with O(generate=true)) into one share per
    name in O(custodians), any O(threshold) of which recover it and fewer reveal nothing. Each share is written to
    its own file (mode V(0600)) in the directory O(dest); the file is also a printable sheet with the recovery
    steps. A public record (JSON, no secret material) lists the scheme, threshold, split id, the shares' ids and
    fingerprints, and the check values.
  - With O(state=combine), reads shares (share files, or shares typed from paper), combines them, verifies the
    result against the split's check value and only then writes the secret to the file O(dest) (mode V(0600)).
    Too few shares, a wrong or damaged share, or a share of another split is an error naming the problem;
    a wrong secret is never written or returned.
  - O(scheme=slip39) (the default) makes SLIP-39 word shares (the C(shamir-mnemonic) library; C(shamir recover)
    combines them by hand). O(scheme=ssss) makes shares in the format of the C(ssss) tools
    (C(ssss-split)/C(ssss-combine), Debian package C(ssss)), computed in Python here, so nodes need no extra binary;
    shares made here combine with C(ssss-combine) and shares made by C(ssss-split) combine here.
  - The check value is the SHA-256 of C(nodekeep-shamir-check-v1:) followed by the secret; when the secret is an
    age identity also its age public key, when it is an OpenSSH private key its public key fingerprint. C(ssss)
    itself has no check; given fewer shares than the threshold it prints a wrong secret and succeeds.
  - Secrets and shares never appear in the module's result or messages.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - O(state=split) checks the secret's size, the scheme's limits, the names and that O(dest) can be written,
        and writes nothing. A generated secret is not generated.
      - O(state=combine) reads and combines the shares in memory and verifies the check value (a dry run of the
        recovery), and writes nothing.
  diff_mode:
    support: full
    details:
      - With C(--diff), what changes on the node's files - O(dest) (the share directory with its files by name,
        size, mode and owner, or with O(state=combine) the recovered file) and the record - never a share, the
        secret or a hash of either; in check mode, what they would become.
  idempotent:
    support: full
    details:
      - O(state=split) does nothing when the record (O(record)) already exists, since a new split would make
        new shares and invalidate the ones handed out. O(force=true) makes a new split and reports C(changed).
      - O(state=combine) does nothing when O(dest) already holds the verified secret. An O(dest) with other
        content is an error unless O(force=true).
options:
  state:
    description:
      - V(split) splits a secret into share files; V(combine) recovers it from shares.
    type: str
    choices: [split, combine]
    default: split
  scheme:
    description:
      - V(slip39) SLIP-39 mnemonic word shares (at most 16 shares; the secret must have an even number of bytes).
      - V(ssss) share lines C(TOKEN-INDEX-HEX) as printed by C(ssss-split -w TOKEN) (at most 255 shares).
      - O(state=combine) takes the scheme from the shares.
    type: str
    choices: [slip39, ssss]
    default: slip39
  threshold:
    description:
      - O(state=split) how many shares recover the secret (the M of M-of-N), at least 2. Required.
      - O(state=combine) only needed for bare C(ssss) share lines given without their record or share files,
        which do not carry it; otherwise the split's own threshold is used and a different value is an error.
    type: int
  custodians:
    description:
      - O(state=split) one name per share (the N of M-of-N), in order; share I goes to the I-th name and is written
        to C(DEST/share-I-NAME.txt). Letters, digits, dot, dash and underscore.
    type: list
    elements: str
    default: []
  src:
    description:
      - O(state=split) the file holding the secret (16 to 128 bytes, for example an age identity file or a key),
        split byte for byte. Mutually exclusive with O(generate).
    type: path
  generate:
    description:
      - O(state=split) generate a new random secret instead of reading O(src). It exists only in the shares
        (and in what you seal to it); use RV(age_public_key) with O(generate_type=age_identity).
    type: bool
    default: false
  generate_type:
    description:
      - V(bytes) O(size) random bytes.
      - V(age_identity) a new age X25519 identity (its C(AGE-SECRET-KEY-1...) line is the secret); its public key
        is returned (RV(age_public_key)) and is a check value, so anything can be sealed to it at once.
    type: str
    choices: [bytes, age_identity]
    default: bytes
  size:
    description: Size in bytes of a generated secret with O(generate_type=bytes) (16 to 128).
    type: int
    default: 32
  dest:
    description:
      - O(state=split) the directory to write the share files into (made with mode V(0700) if missing; its parent
        must exist). Keep it on an offline host and hand each file to its custodian.
      - O(state=combine) the file to write the recovered secret to (mode V(0600)); its directory must exist.
    type: path
    required: true
  record:
    description:
      - O(state=split) where to write the public record; default C(DEST/record.json). It holds no secret.
      - O(state=combine) the record of the split, to check the shares against (split id, fingerprints) and to
        verify the secret. Optional when share files are given (they carry the check value).
    type: path
  label:
    description: What the secret is, printed on every share sheet and kept in the record (public).
    type: str
    default: ""
  share_files:
    description: O(state=combine) share files written by this module (or files holding one share each).
    type: list
    elements: path
    default: []
  shares:
    description:
      - O(state=combine) shares as text, for shares typed from paper or metal - a SLIP-39 mnemonic, an C(ssss) line
        C(TOKEN-INDEX-HEX) or C(INDEX-HEX), or the content of a share file. Secret; never logged.
    type: list
    elements: str
    default: []
  check_sha256:
    description:
      - O(state=combine) the plain SHA-256 of the secret (as C(sha256sum) prints it), for shares without a record,
        for example shares made by C(ssss-split) with a checksum recorded beside them.
    type: str
  age_public_key:
    description: O(state=combine) the age public key the recovered age identity must have.
    type: str
  force:
    description:
      - O(state=split) make a new split even if the record exists (the old share files are replaced).
      - O(state=combine) replace an O(dest) that holds something else.
    type: bool
    default: false
notes:
  - Runs on the host given to it, normally an offline (air-gapped) host for key ceremonies. The playbooks
    C(keys_split.yml) and C(keys_recover.yml) of this collection drive it.
  - Only O(scheme=slip39) needs the Python library C(shamir-mnemonic); O(generate_type=age_identity) and the age
    public key check need C(pyrage).
  - The record's check value is a hash of the secret; split random keys (as O(generate) makes), not passwords a
    person chose, which a hash does not protect against guessing.
requirements:
  - shamir-mnemonic (for O(scheme=slip39))
  - pyrage (for age identities)
seealso:
  - module: nodekeep.backup.age_seal
  - name: SLIP-0039
    description: Shamir's Secret-Sharing for Mnemonic Codes.
    link: https://github.com/satoshilabs/slips/blob/master/slip-0039.md
  - name: ssss
    description: Shamir's Secret Sharing Scheme tools (ssss-split, ssss-combine).
    link: http://point-at-infinity.org/ssss/
"""

EXAMPLES = r"""
- name: Make a master age key in memory and split it 3-of-5 (SLIP-39 word shares)
  nodekeep.backup.shamir_split:
    generate: true
    generate_type: age_identity
    threshold: 3
    custodians: [alice, bob, carol, dave, erin]
    label: fleet master key 2026
    dest: /root/ceremony/shares
  register: split

- name: Seal the payload to the master key
  nodekeep.backup.age_seal:
    src: /root/ceremony/wallet-mnemonic.txt
    dest: /root/ceremony/wallet-mnemonic.txt.age
    recipients: ["{{ split.age_public_key }}"]

- name: Split an existing key in the ssss format of the runbooks
  nodekeep.backup.shamir_split:
    scheme: ssss
    src: /root/ceremony/master.key
    threshold: 3
    custodians: [ops1, ops2, ops3, ops4, ops5]
    dest: /root/ceremony/ssss-shares

- name: Recover it from three custodians' share files, verified against the record
  nodekeep.backup.shamir_split:
    state: combine
    share_files:
      - /media/usb1/share-1-alice.txt
      - /media/usb2/share-4-dave.txt
      - /media/usb3/share-5-erin.txt
    record: /root/ceremony/shares/record.json
    dest: /root/recovered/master.key
  register: recovered

- name: Show the identity to compare with the record
  ansible.builtin.debug:
    msg: "recovered {{ recovered.age_public_key }} from shares {{ recovered.used_shares }}"

- name: Dry-run a recovery from shares typed from paper (check mode writes nothing)
  nodekeep.backup.shamir_split:
    state: combine
    shares: "{{ typed_shares }}"
    record: /root/ceremony/shares/record.json
    dest: /root/recovered/master.key
  check_mode: true
"""

RETURN = r"""
dest:
  description: The share directory (split) or the recovered secret's file (combine).
  returned: always
  type: str
  sample: /root/ceremony/shares
skipped:
  description: V(true) when nothing was done because the split exists (O(state=split)).
  returned: success
  type: bool
  sample: false
msg:
  description: Why nothing was done.
  returned: when RV(skipped)
  type: str
  sample: "/root/ceremony/shares/record.json exists: this secret was already split"
split_id:
  description: Random id of the split, on every share file and in the record.
  returned: success
  type: str
  sample: 5f3a9c21
scheme:
  description: V(slip39) or V(ssss).
  returned: success
  type: str
  sample: slip39
threshold:
  description: Shares needed to recover the secret.
  returned: success
  type: int
  sample: 3
count:
  description: Number of shares made.
  returned: O(state=split)
  type: int
  sample: 5
record_path:
  description: Where the public record is.
  returned: O(state=split)
  type: str
  sample: /root/ceremony/shares/record.json
record:
  description:
    - The public record (no secret material) - format, split_id, scheme, threshold, count, label, created,
      secret_size, check (hmac_sha256 with its prefix, keyed by a random key split like the secret - each share file's
      Check-Key-Share line - never an unkeyed hash of the secret; age_public_key or public key fingerprint), shares (index,
      custodian, file, id, fingerprint) and scheme details (ssss token and encoding, SLIP-39 identifier).
  returned: O(state=split), not check mode
  type: dict
  sample: {format: nodekeep.shamir-record/v1, split_id: 5f3a9c21, scheme: slip39, threshold: 3, count: 5}
share_files:
  description: The share files (one per custodian), in share order.
  returned: O(state=split)
  type: list
  elements: str
  sample: [/root/ceremony/shares/share-1-alice.txt, /root/ceremony/shares/share-2-bob.txt]
check:
  description:
    - The check values stored with the shares.
    - In check mode without C(hmac_sha256) (its key is made by the split).
  returned: O(state=split), not check mode with O(generate=true)
  type: dict
  sample: {algorithm: hmac-sha256, prefix: "nodekeep-shamir-check-v1:", hmac_sha256: 3c5d0f..., age_public_key: age1ql3z...}
age_public_key:
  description: The age public key of the secret, when it is an age identity.
  returned: when the secret is an age identity (not in check mode with O(generate=true))
  type: str
  sample: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
public_key:
  description: The public key the recovered secret derives (age recipient, or OpenSSH public key line).
  returned: O(state=combine), when the secret is a key
  type: str
  sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB...
fingerprint:
  description: SHA256 fingerprint of a recovered private key's public key, as C(ssh-keygen -l) prints it.
  returned: O(state=combine), when the secret is a private key
  type: str
  sample: SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8
secret_kind:
  description: What the recovered secret is - V(age-identity), V(private-key) or V(data).
  returned: O(state=combine)
  type: str
  sample: age-identity
secret_size:
  description: Size of the secret in bytes.
  returned: success
  type: int
  sample: 74
used_shares:
  description: Indexes of the shares combined.
  returned: O(state=combine)
  type: list
  elements: int
  sample: [1, 4, 5]
ignored_shares:
  description: Indexes of further shares that were consistent but not needed, or given twice.
  returned: O(state=combine)
  type: list
  elements: int
  sample: []
bad_shares:
  description:
    - Shares that do not match the record's fingerprint or do not combine to the verified secret (damaged,
      mistyped, or of another split), each with index, custodian, source and problem. A warning is issued too.
  returned: O(state=combine)
  type: list
  elements: dict
  sample: [{index: 2, custodian: bob, source: /media/usb2/share-2-bob.txt, problem: does not match the record's fingerprint}]
verified:
  description:
    - The check values the recovered secret matched (V(hmac_sha256), V(sha256) of records made by older versions,
      V(plain_sha256), V(age_public_key), ...).
  returned: O(state=combine)
  type: list
  elements: str
  sample: [hmac_sha256, age_public_key]
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.nodekeep.backup.plugins.module_utils.common import PathDiff, plan_line, run
from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shamir
from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shares as share_format
from ansible_collections.nodekeep.backup.plugins.module_utils.keys.shares import ShamirError


def _public(record):
    keys = ("split_id", "scheme", "threshold", "count", "secret_size", "check")
    return {key: record.get(key) for key in keys}


def split(module, params):
    dest = params["dest"]
    record_path = params["record"] or os.path.join(dest, shamir.RECORD_NAME)
    custodians = [str(name) for name in params["custodians"]]
    if not custodians:
        raise ShamirError("custodians is empty", "list one name per share (the N of M-of-N)")
    if params["threshold"] is None:
        raise ShamirError("threshold is required to split", "set it to the number of shares that recover the secret")
    if bool(params["src"]) == bool(params["generate"]):
        raise ShamirError("give either src (the secret's file) or generate: true", "one of the two, not both")
    scheme, threshold = params["scheme"], params["threshold"]
    shamir.check_names(custodians)
    if scheme == "slip39":
        share_format.require_library()
    result = {
        "dest": dest,
        "record_path": record_path,
        "scheme": scheme,
        "threshold": threshold,
        "count": len(custodians),
        "skipped": False,
    }
    if os.path.exists(record_path) and not params["force"]:
        existing = shamir.load_record(record_path)
        files = [os.path.join(dest, str(entry.get("file"))) for entry in existing.get("shares", [])]
        result.update(
            _public(existing),
            changed=False,
            skipped=True,
            share_files=files,
            msg="%s exists: this secret was already split (force: true makes a new split)" % record_path,
        )
        if existing.get("check", {}).get("age_public_key"):
            result["age_public_key"] = existing["check"]["age_public_key"]
        return result
    if params["generate"]:
        size = 74 if params["generate_type"] == "age_identity" else params["size"]
        shamir.validate_split(size, scheme, threshold, len(custodians))
        secret = None if module.check_mode else shamir.generate_secret(params["generate_type"], params["size"])
    else:
        secret = shamir.read_secret(params["src"])
        shamir.validate_split(len(secret), scheme, threshold, len(custodians))
    names = [share_format.share_file_name(index, name) for index, name in enumerate(custodians, 1)]
    result["share_files"] = [os.path.join(dest, name) for name in names]
    paths = PathDiff(module, dest, record_path)
    if module.check_mode:
        shamir.prepare_dir(dest, check_only=True)
        if secret is not None:
            result["check"] = shamir.check_values(secret, None)
            result["secret_size"] = len(secret)
            if result["check"].get("age_public_key"):
                result["age_public_key"] = result["check"]["age_public_key"]
        result["changed"] = True
        planned = {dest: plan_line("a directory (mode 0700 when made) holding %d share files (mode 0600 each): %s"
                                   % (len(names), ", ".join(names)))}  # fmt: skip
        planned[record_path] = plan_line("the split's public record (mode 0644)")
        if os.path.dirname(record_path) == dest:
            planned[dest] = planned[dest].rstrip("\n") + ", and the record %s\n" % os.path.basename(record_path)
        return paths.add(result, planned=planned)
    record, files = shamir.split_secret(secret, scheme, threshold, custodians, params["label"])
    secret = None
    shamir.write_split(dest, record_path, record, files, params["force"])
    result.update(_public(record), changed=True, record=record)
    if record["check"].get("age_public_key"):
        result["age_public_key"] = record["check"]["age_public_key"]
    return paths.add(result)


def combine(module, params):
    dest = params["dest"]
    record = shamir.load_record(params["record"]) if params["record"] else None
    shares = shamir.read_share_files(params["share_files"])
    for number, text in enumerate(params["shares"], 1):
        shares.append(share_format.parse_share(text, "shares[%d]" % number))
    check = {"plain_sha256": params["check_sha256"], "age_public_key": params["age_public_key"]}
    combined = shamir.combine_shares(shares, record=record, threshold=params["threshold"], check=check)
    result = dict(combined.report(), dest=dest)
    for bad in combined.bad:
        module.warn(
            "share %s (%s, %s) %s; tell its custodian"
            % (bad["index"], bad.get("custodian") or "custodian unknown", bad.get("source") or "typed", bad["problem"])
        )
    paths = PathDiff(module, dest)
    existing = None
    if os.path.lexists(dest):
        if os.path.isdir(dest) or os.path.islink(dest):
            raise ShamirError("%s is a directory or a symlink" % dest, "give the path of the file to write")
        existing = shamir.read_secret(dest) if os.path.getsize(dest) <= shamir.MAX_SECRET else b""
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise ShamirError("the directory %s does not exist" % directory, "create it first (mode 0700)")
    if existing is not None and existing == combined.secret:
        result["changed"] = False
        if (os.stat(dest).st_mode & 0o777) != 0o600:
            result["changed"] = True
            if not module.check_mode:
                os.chmod(dest, 0o600)
        return paths.add(result, planned={dest: plan_line("the same file with mode 0600")})
    if existing is not None and not params["force"]:
        raise ShamirError(
            "%s exists and holds something else than the recovered secret" % dest,
            "move it away or set force: true to replace it; nothing was written",
        )
    result["changed"] = True
    if not module.check_mode:
        shamir.write_file(dest, combined.secret, 0o600, replace=existing is not None)
    return paths.add(result, planned={dest: plan_line("the recovered secret, a file of %d bytes, mode 0600"
                                                      % len(combined.secret))})  # fmt: skip


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["split", "combine"], "default": "split"},
            "scheme": {"type": "str", "choices": ["slip39", "ssss"], "default": "slip39"},
            "threshold": {"type": "int"},
            "custodians": {"type": "list", "elements": "str", "default": []},
            "src": {"type": "path"},
            "generate": {"type": "bool", "default": False},
            "generate_type": {"type": "str", "choices": ["bytes", "age_identity"], "default": "bytes"},
            "size": {"type": "int", "default": 32},
            "dest": {"type": "path", "required": True},
            "record": {"type": "path"},
            "label": {"type": "str", "default": ""},
            "share_files": {"type": "list", "elements": "path", "default": []},
            "shares": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "check_sha256": {"type": "str"},
            "age_public_key": {"type": "str"},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["scheme"] == "slip39" and params["state"] == "split" and not share_format.HAS_SHAMIR_MNEMONIC:
        module.fail_json(
            msg=missing_required_lib("shamir-mnemonic")
            + " Run the nodekeep.backup.agent role and use its virtualenv as ansible_python_interpreter,"
            " or use scheme: ssss.",
            exception=str(share_format.SHAMIR_MNEMONIC_IMPORT_ERROR),
        )
    run(module, lambda: split(module, params) if params["state"] == "split" else combine(module, params))


if __name__ == "__main__":
    main()
