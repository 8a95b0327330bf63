#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: age_seal
short_description: Encrypt a file or a directory with age, or decrypt it again
version_added: 0.1.0
description:
  - With O(state=sealed), encrypts O(src) with age to the given recipients into the file O(dest).
    A file is sealed as it is (by default not compressed), so C(age -d -i KEY DEST) gives it back byte for byte.
    A directory is sealed as a POSIX (PAX) tar stream keeping modes, numeric ownership, mtimes, symlinks and
    hard links, zstd-compressed by default, so C(age -d -i KEY DEST | zstd -d | tar -xp) gives it back.
  - With O(state=opened), decrypts the age file O(src) into O(dest). A zstd payload is detected and
    decompressed; a sealed directory is extracted into O(dest) as a directory (symlinks as they are, absolute ones
    too, never followed), refusing absolute paths, C(..), any write through a symlink and device files. Files sealed with the C(age) CLI open too.
  - Everything goes through the same streaming pipeline as M(nodekeep.backup.epoch_backup) (bounded memory,
    SHA-256 of both the sealed and the plain bytes in the same pass).
  - O(dest) is built under a temporary name in its own directory (a file is fsynced; a directory is extracted
    into a temporary directory) and renamed into place only when complete. On any error nothing is left at O(dest).
  - For secrets (keys, mnemonics, C(.env)) - several custodians' recipients (X25519 and SSH keys) at once,
    O(armor=true) for ASCII-armored output (C(age -a)), O(passphrase) for age's passphrase mode, identities from
    strings or files. Armored and passphrase files from the C(age) CLI open too, and the module's open with it.
  - With O(state=epoch), seals every secret in O(assets) (files or directories) to the recipients into one new
    epoch of O(node) in O(repository), signed with the node's key like every epoch
    (M(nodekeep.backup.epoch_backup)'s flow), so M(nodekeep.backup.integrity_check) verifies it and
    C(age -d -i KEY ARTIFACT | zstd -d) restores it. C(playbooks/keys_seal.yml) uses it with the node name
    C(NODE.keys), kept apart from the node's data epochs and their retention.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository.AGE_RECIPIENTS
  - nodekeep.backup._repository.AGE_IDENTITIES
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - Checks the recipients (O(state=sealed)) or that the identities parse and O(src) is an age file
        (O(state=opened)), that O(src) is readable and that the directory of O(dest) is writable; reports what
        would happen without writing. Check mode does not decrypt, so it cannot tell whether an identity matches.
      - O(state=epoch) checks the recipients, the signing key and that every secret exists; writes nothing.
  diff_mode:
    support: full
    details:
      - With C(--diff), O(dest) before and after - absent, or its kind, size in bytes, mode and owner (a directory
        with its entries by name) - never a byte of its content nor a hash of it; in check mode, what O(dest)
        would become. O(state=epoch) shows the new epoch and the secrets it seals, by name.
      - A skipped run (O(dest) exists and O(force=false)) shows no diff.
  idempotent:
    support: partial
    details:
      - Like C(creates) of M(ansible.builtin.command), an existing O(dest) makes the task C(ok) and unchanged
        (RV(skipped)), without comparing anything.
      - age output is randomized (a new file key each time), so a sealed file cannot be compared with its
        source without the identity; an existing O(dest) is therefore trusted, not verified. It is not
        re-sealed when O(src) changes. Set O(force=true) to seal again.
      - With O(force=true) every run writes O(dest) again and reports C(changed).
      - O(state=epoch) writes a new epoch on every run (C(changed)), like M(nodekeep.backup.epoch_backup).
options:
  state:
    description:
      - V(sealed) encrypts O(src) into O(dest); needs O(recipients) or O(recipients_files), or O(passphrase).
      - V(opened) decrypts O(src) into O(dest); needs O(identities) or O(identity_files), or O(passphrase).
      - V(epoch) seals every secret of O(assets) into a new signed epoch of O(node) in O(repository); needs
        recipients.
    type: str
    choices: [sealed, opened, epoch]
    default: sealed
  src:
    description:
      - V(sealed) a file or a directory to encrypt; a symlink is followed.
      - V(opened) the age file to decrypt, binary or ASCII-armored.
      - Required with O(state=sealed) and O(state=opened).
    type: path
  dest:
    description:
      - V(sealed) the age file to write.
      - V(opened) the file or directory to write.
      - Its directory must exist. An existing O(dest) is left alone unless O(force=true).
      - Required with O(state=sealed) and O(state=opened).
    type: path
  armor:
    description:
      - O(state=sealed) writes the age file ASCII-armored (C(-----BEGIN AGE ENCRYPTED FILE-----), base64 in
        64 columns), as C(age -a) does, for e-mail, tickets or paper. Streams like the binary form.
      - O(state=opened) recognizes armored files by themselves.
    type: bool
    default: false
  passphrase:
    description:
      - Encrypt (O(state=sealed)) or decrypt (O(state=opened)) with age's passphrase mode (scrypt) instead of
        recipients or identities, as C(age -p) does. Secret; never logged.
      - For small secrets only - the pyrage library does passphrase mode in memory, so the content (a file, or the
        tar stream of a directory) is limited to 1 MiB and a larger one is refused. Seal larger data to recipients.
      - scrypt makes each use take about a second or two, on purpose.
    type: str
  assets:
    description:
      - O(state=epoch) the secrets to seal, each a dict with C(name) (unique, used for the artifact's file name)
        and an absolute C(path) (a file or a directory); other keys (such as C(type)) are ignored.
    type: list
    elements: dict
  repository:
    description:
      - O(state=epoch) the repository the epoch is written to, an absolute local directory or C(s3://BUCKET/PREFIX).
      - An C(s3://) bucket is reached with the endpoint, region and credentials of the node's usual AWS sources
        (C(AWS_ENDPOINT_URL), C(AWS_ACCESS_KEY_ID), C(AWS_PROFILE) and C(~/.aws/), an instance role), as for the
        O(nodekeep.backup.epoch_backup#module:repository) option of M(nodekeep.backup.epoch_backup).
    type: path
    default: /var/backups/nodekeep
  node:
    description:
      - O(state=epoch) the node name the epoch is written under; C(keys_seal.yml) uses C(INVENTORY_HOSTNAME.keys).
    type: str
  signing_key:
    description: O(state=epoch) the node's Ed25519 key that signs the epoch's manifest.
    type: path
    default: /etc/nodekeep/signing_key
  labels:
    description: O(state=epoch) labels recorded in the manifest.
    type: dict
    default: {}
  compress:
    description:
      - Compress with zstd inside the age encryption (O(state=sealed) only).
      - Default V(false) for a file, so that the sealed file is exactly what C(age -d) gives back, and V(true)
        for a directory (C(tar.zst) inside age).
      - O(state=opened) detects a zstd payload by itself.
    type: bool
  compression_level:
    description: zstd compression level, when compressing, 1 (fastest) to 22 (smallest); others are refused.
    type: int
    default: 3
  content:
    description:
      - O(state=opened) only. What the decrypted payload is.
      - V(auto) extracts a tar archive whose first entry is its root directory C(.) (what this module and
        C(tar -C DIR -c .) produce) as a directory, and writes anything else as a file.
      - V(file) always writes a file (for example to get back a C(.tar) that was sealed as a file),
        V(directory) always extracts a tar archive.
    type: str
    choices: [auto, file, directory]
    default: auto
  force:
    description:
      - Write O(dest) even if it exists. Never on by default, so nothing is overwritten silently.
      - An existing file is replaced atomically by a rename and is not kept.
      - An existing directory cannot be replaced atomically; it is renamed to C(DEST.nodekeep-replaced-TIME)
        and kept (RV(replaced_path)), never deleted.
    type: bool
    default: false
  mode:
    description:
      - Mode of the file written (the sealed file, or an opened file), as a quoted octal string.
      - An opened directory keeps the modes recorded in the archive.
    type: raw
    default: '0600'
  expected_content_sha256:
    description:
      - O(state=opened) only. The SHA-256 the decrypted content must have (a record of an older version, or the
        operator's own value). Compared inside the module before anything is placed; a mismatch fails and writes
        nothing. The result says RV(content_verified), never the content's hash; the value given is never echoed
        (no_log, also in C(invocation.module_args)).
    type: str
notes:
  - Runs on the node, with the Python of the agent role's virtualenv (pyrage, zstandard).
  - Ownership in an opened directory is restored only when running as root; sockets and device files are
    not archived; extended attributes and POSIX ACLs (default ACLs too) are kept as GNU tar's PAX
    C(SCHILY.xattr.*) records (C(tar --xattrs --xattrs-include='*') restores them) and sparse files stay sparse.
  - Symlinks that point outside a sealed directory (absolute, or leaving it with C(..)) are data, such as C(/etc/localtime) -
    sealed and opened as the links they are, listed under V(outside_links) in RV(entries), never followed.
  - With O(state=opened), an opened file that is a key (an age identity file, an OpenSSH or PEM private key) is
    reported by its public key and fingerprint (RV(key)), never by its content, so an operator can compare it.
requirements:
  - pyrage
  - zstandard
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.sqlite_backup
  - module: nodekeep.backup.shamir_split
  - name: age
    description: The file format and the reference CLI.
    link: https://age-encryption.org/v1
"""

EXAMPLES = r"""
- name: Seal the validator keys to the custodians
  nodekeep.backup.age_seal:
    src: /etc/animica/keys
    dest: /var/backups/keys/animica-keys.tar.zst.age
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    recipients_files:
      - /etc/nodekeep/custodians.txt
  register: sealed

- name: Show what was written
  ansible.builtin.debug:
    msg: "{{ sealed.dest }}: {{ sealed.size }} bytes, sha256 {{ sealed.sha256 }}, {{ sealed.recipients }} recipients"
  when: sealed is changed

- name: Open it again on the recovery host
  nodekeep.backup.age_seal:
    state: opened
    src: /media/usb/animica-keys.tar.zst.age
    dest: /root/recovered/keys
    identity_files:
      - /root/.config/age/custodian.txt
  register: opened
  no_log: true

- name: Seal a single file so that plain `age -d` restores it
  nodekeep.backup.age_seal:
    src: /srv/app/.env
    dest: /var/backups/app/env.age
    recipients: "{{ nodekeep_age_recipients }}"

- name: Seal a wallet mnemonic to three custodians, ASCII-armored for the paper safe
  nodekeep.backup.age_seal:
    src: /root/ceremony/mnemonic.txt
    dest: /root/ceremony/mnemonic.txt.age.asc
    armor: true
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN bob@example
    recipients_files:
      - /etc/nodekeep/custodians.txt

- name: Seal a small secret with a passphrase (age -p mode, at most 1 MiB)
  nodekeep.backup.age_seal:
    src: /etc/guts/node.key
    dest: /root/ceremony/node.key.age
    passphrase: "{{ vault_node_key_passphrase }}"

- name: Open a recovered key and show which public key it derives
  nodekeep.backup.age_seal:
    state: opened
    src: /media/usb/node.key.age
    dest: /root/recovered/node.key
    identity_files: [/root/recovered/master.key]
  register: key

- name: Compare the derived identity with the expected one
  ansible.builtin.debug:
    msg: "{{ key.key.public_key | default('not a key') }} {{ key.key.fingerprint | default('') }}"

- name: Seal the node's secret assets into a signed epoch of their own
  nodekeep.backup.age_seal:
    state: epoch
    repository: /var/backups/nodekeep
    node: "{{ inventory_hostname }}.keys"
    assets: "{{ nodekeep_assets | selectattr('type', 'eq', 'secret') }}"
    recipients: "{{ nodekeep_keys_recipients }}"
  register: keys_epoch
"""

RETURN = r"""
dest:
  description: The file or directory written (or left alone).
  returned: O(state=sealed) and O(state=opened)
  type: str
  sample: /var/backups/keys/animica-keys.tar.zst.age
armored:
  description: Whether the sealed file was written ASCII-armored.
  returned: O(state=sealed)
  type: bool
  sample: false
passphrase:
  description: Whether passphrase mode was used (never the passphrase).
  returned: O(state=sealed)
  type: bool
  sample: false
key:
  description:
    - Public facts of an opened file that is a key - C(kind) (V(age-identity) or V(private-key)), C(public_key)
      (the age recipient or the OpenSSH public key line), C(public_keys) (all recipients of an age identity file),
      C(fingerprint) and C(key_type) of a private key. Never the key itself.
  returned: O(state=opened), when the opened file is a key of at most 64 KiB
  type: dict
  sample: {kind: private-key, key_type: ssh-ed25519, public_key: "ssh-ed25519 AAAAC3Nz...", fingerprint: "SHA256:nThbg6k..."}
node:
  description: The node the epoch was written under.
  returned: O(state=epoch)
  type: str
  sample: node1.keys
epoch:
  description: The new epoch.
  returned: O(state=epoch), not check mode
  type: str
  sample: 20261122T023005Z
location:
  description: Where the epoch is.
  returned: O(state=epoch), not check mode
  type: str
  sample: /var/backups/nodekeep/node1.keys/20261122T023005Z
artifacts:
  description:
    - One entry per secret, as in the manifest - name, file, format, size and sha256 (sealed), content_size,
      content_sha256 (null - no hash of a secret's plaintext), source (path, mode, and for keys their public key and
      fingerprint).
  returned: O(state=epoch), not check mode
  type: list
  elements: dict
  sample: [{name: node-key, file: node-key.zst.age, sha256: 9f2c..., content_sha256: null}]
manifest:
  description: Summary of the signed manifest.
  returned: O(state=epoch), not check mode
  type: dict
  sample: {node: node1.keys, epoch: 20261122T023005Z, artifacts: 2}
skipped:
  description: V(true) when O(dest) existed and O(force=false), so nothing was done.
  returned: success
  type: bool
  sample: false
msg:
  description: Why nothing was done.
  returned: when RV(skipped)
  type: str
  sample: /var/backups/keys/animica-keys.tar.zst.age exists and force is false
content:
  description: V(file) or V(directory).
  returned: success, except for O(state=opened) when skipped
  type: str
  sample: directory
sha256:
  description: SHA-256 of the sealed (age) file, O(dest) with O(state=sealed), O(src) with O(state=opened).
  returned: changed and not check mode
  type: str
  sample: 4adb79f5de7125ccd77509afc24559eede4c2351b884dfe1c2c9ba2298bbd228
sealed_size:
  description: Size in bytes of the sealed (age) file, O(dest) with O(state=sealed), O(src) with O(state=opened).
  returned: changed and not check mode
  type: int
  sample: 20480
size:
  description:
    - Size of O(dest) in bytes as found on disk (Ansible's file facts), so with O(state=sealed) the size of the
      sealed file and with O(state=opened) the size of the opened file.
  returned: success, when O(dest) exists
  type: int
  sample: 20480
content_size:
  description: Size in bytes of the plain content (the file, or the tar stream of a directory).
  returned: changed and not check mode
  type: int
  sample: 51200
content_sha256:
  description:
    - Always null. No unkeyed hash of the plain content is reported (a short secret's SHA-256 is reversed by
      trying every candidate); RV(sha256) of the sealed file identifies it, and age authenticates what it
      decrypts from those bytes. Compare a known plain checksum with O(expected_content_sha256).
  returned: changed and not check mode
  type: str
  sample: null
content_verified:
  description: O(state=opened) with O(expected_content_sha256) - the decrypted content had that SHA-256.
  returned: changed, not check mode, with O(expected_content_sha256)
  type: bool
  sample: true
compressed:
  description: Whether the payload inside age is zstd-compressed.
  returned: changed
  type: bool
  sample: true
recipients:
  description: Number of recipients the file was (or would be) sealed to (0 in passphrase mode).
  returned: O(state=sealed) and O(state=epoch)
  type: int
  sample: 3
mode:
  description: Mode of O(dest) as found on disk.
  returned: success, when O(dest) exists
  type: str
  sample: '0600'
owner:
  description: Owner of O(dest), as Ansible reports it for file results.
  returned: success, when O(dest) exists
  type: str
  sample: root
group:
  description: Group of O(dest).
  returned: success, when O(dest) exists
  type: str
  sample: root
uid:
  description: Numeric owner of O(dest).
  returned: success, when O(dest) exists
  type: int
  sample: 0
gid:
  description: Numeric group of O(dest).
  returned: success, when O(dest) exists
  type: int
  sample: 0
state:
  description: What O(dest) is, V(file), V(directory), V(link) or V(hard) (a file with several links).
  returned: success, when O(dest) exists
  type: str
  sample: file
entries:
  description: What a directory held (counts of files, directories, symlinks, hard links, other, and bytes; when
    sealing also V(outside_links), the symlinks pointing outside it, kept as links).
  returned: changed, not check mode, and a directory was sealed or opened
  type: dict
  sample: {files: 12, directories: 3, symlinks: 1, hardlinks: 0, other: 0, bytes: 40960}
replaced:
  description: Whether an existing O(dest) was (or in check mode would be) replaced (O(force=true)).
  returned: success
  type: bool
  sample: false
replaced_path:
  description: Where a replaced directory was kept.
  returned: when a directory was replaced
  type: str
  sample: /root/recovered/keys.nodekeep-replaced-20261122T023000Z
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    AGE_IDENTITY_OPTIONS,
    AGE_RECIPIENT_OPTIONS,
    PathDiff,
    argspec,
    diff_entry,
    plan_line,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import check_range
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import parse_mode
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.seal_path import open_path, seal_path, seal_to_epoch


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            AGE_RECIPIENT_OPTIONS,
            AGE_IDENTITY_OPTIONS,
            state={"type": "str", "choices": ["sealed", "opened", "epoch"], "default": "sealed"},
            src={"type": "path"},
            dest={"type": "path"},
            armor={"type": "bool", "default": False},
            passphrase={"type": "str", "no_log": True},
            assets={"type": "list", "elements": "dict"},
            repository={"type": "path", "default": "/var/backups/nodekeep"},
            node={"type": "str"},
            signing_key={"type": "path", "default": "/etc/nodekeep/signing_key", "no_log": False},
            labels={"type": "dict", "default": {}},
            compress={"type": "bool"},
            compression_level={"type": "int", "default": 3},
            content={"type": "str", "choices": ["auto", "file", "directory"], "default": "auto"},
            force={"type": "bool", "default": False},
            mode={"type": "raw", "default": "0600"},
            # an unkeyed hash of a secret: never echoed in invocation.module_args (-vvv, AWX job events)
            expected_content_sha256={"type": "str", "no_log": True},
        ),
        required_if=[
            ("state", "sealed", ("src", "dest")),
            ("state", "opened", ("src", "dest")),
            ("state", "epoch", ("assets", "node")),
        ],
        supports_check_mode=True,
    )
    require_libraries(module, "pyrage", "zstandard")
    params = module.params
    passphrase = params["passphrase"]
    if passphrase is not None and (
        params["recipients"] or params["recipients_files"] or params["identities"] or params["identity_files"]
    ):
        module.fail_json(
            msg="passphrase excludes recipients, recipients_files, identities and identity_files: "
            "a file is sealed either with a passphrase or to recipients (as with age -p / age -r)"
        )
    if passphrase is not None and params["state"] == "epoch":
        module.fail_json(msg="state=epoch seals to recipients only: epochs are never passphrase-encrypted")

    def action():
        check_range(params["compression_level"], "compression_level", 1, 22, why="zstd levels; 3 is the default")
        mode = parse_mode(params["mode"])
        if params["state"] == "epoch":
            require_libraries(module, "cryptography")
            result = seal_to_epoch(
                params["repository"],
                params["node"],
                params["assets"],
                params["recipients"],
                params["recipients_files"],
                signing_key=params["signing_key"],
                labels=params["labels"],
                level=params["compression_level"],
                check_only=module.check_mode,
            )
            if module._diff:
                result["diff"] = _epoch_diff(params, result)
            return result
        paths = PathDiff(module, params["dest"])
        # What sealing and opening a file or directory share.
        common = {
            "force": params["force"],
            "mode": 0o600 if mode is None else mode,
            "passphrase": passphrase,
            "check_only": module.check_mode,
        }
        if params["state"] == "sealed":
            result = seal_path(
                params["src"],
                params["dest"],
                params["recipients"],
                params["recipients_files"],
                compress=params["compress"],
                level=params["compression_level"],
                armor=params["armor"],
                **common,
            )
            for warning in result.pop("warnings", []):
                module.warn(warning)
            return paths.add(result, planned={params["dest"]: _planned_seal(params["src"], result, common["mode"])})
        result = open_path(
            params["src"],
            params["dest"],
            params["identities"],
            params["identity_files"],
            content=params["content"],
            expected_content_sha256=params["expected_content_sha256"],
            **common,
        )
        what = "%s decrypted: a file of mode %04o, or a directory with the modes its archive records" % (
            params["src"],
            common["mode"],
        )
        return paths.add(result, planned={params["dest"]: plan_line(what)})

    run(module, action)


def _planned_seal(src, plan, mode):
    """What O(dest) would become in check mode: the sealed file's size is known only once written."""
    how = "a passphrase" if plan.get("passphrase") else "%d recipients" % plan.get("recipients", 0)
    details = [how]
    if plan.get("compressed"):
        details.append("zstd inside")
    if plan.get("armored"):
        details.append("ASCII-armored")
    return plan_line("an age file of the %s %s (%s), mode %04o" % (plan.get("content"), src, ", ".join(details), mode))


def _epoch_diff(params, result):
    """The new epoch of state=epoch: its name (once written) and the secrets it seals, by name only."""
    names = result.get("assets") or [artifact["name"] for artifact in result.get("artifacts", [])]
    epoch = result.get("epoch") or "(check mode) a new epoch"
    after = "%s: %d secrets sealed to %d recipients: %s\n" % (
        epoch,
        len(names),
        result.get("recipients", 0),
        ", ".join(names),
    )
    return diff_entry("%s: epochs of %s" % (params["repository"], params["node"]), "", after)


if __name__ == "__main__":
    main()
