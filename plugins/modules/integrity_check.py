#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: integrity_check
short_description: Verify an epoch's signed manifest, checksums and, on request, the data itself
version_added: 0.1.0
description:
  - Checks the Ed25519 signature of the epoch's C(manifest.json) against the node's public key supplied by
    the controller (a key found next to the data is never trusted). Nothing else is read from an epoch whose
    signature does not verify.
  - Checks the size and SHA-256 of every artifact (or the ones named in O(artifacts)) against the manifest.
  - With O(deep=true), decrypts and decompresses each artifact into private scratch space in the same pass,
    compares the content checksum, and runs the asset's own check (C(PRAGMA integrity_check) for SQLite),
    then removes the scratch copy.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._repository.AGE_IDENTITIES
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: Verification only reads; it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything (C(changed) is always false).
options:
  epoch:
    description: The epoch to verify, V(latest) (the newest complete epoch) or an epoch name.
    type: str
    default: latest
  public_key:
    description:
      - The node's Ed25519 public key (C(ssh-ed25519 AAAA...)), from the controller's C(keys/NODE.pub).
    type: str
    required: true
  deep:
    description: Also decrypt each artifact and run its asset check. Needs O(identities) or O(identity_files).
    type: bool
    default: false
  artifacts:
    description: Verify only these artifacts (by asset name). Default all.
    type: list
    elements: str
    default: []
  check:
    description: The SQLite check of a deep verify, V(integrity) (C(PRAGMA integrity_check)) or V(quick).
    type: str
    choices: [integrity, quick]
    default: integrity
  scratch_dir:
    description: Private directory for deep-check copies. Defaults to C(.scratch) in the repository.
    type: path
  fail_on_error:
    description:
      - Fail the task when anything does not verify. With V(false) the report is returned with RV(ok=false).
      - Errors that prevent any check at all (no repository, no complete epoch, a malformed public key) fail in any case.
    type: bool
    default: true
requirements:
  - pyrage
  - zstandard
  - cryptography
  - apsw
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.epoch_restore
"""

EXAMPLES = r"""
- name: Verify the latest epoch, decrypting it
  nodekeep.backup.integrity_check:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    deep: true
    identity_files:
      - /root/.config/nodekeep/age-identity.txt
  register: verified

- name: Report
  ansible.builtin.debug:
    msg: "{{ verified.epoch }}: signature {{ verified.signature }}, {{ verified.artifacts | length }} artifacts ok"
"""

RETURN = r"""
ok:
  description: Whether the signature and every checked artifact verified.
  returned: always
  type: bool
  sample: true
epoch:
  description: The epoch that was verified.
  returned: always
  type: str
  sample: 20261122T023000Z
signature:
  description: V(valid) or V(invalid).
  returned: always
  type: str
  sample: valid
artifacts:
  description: Per artifact, what was checked and the result.
  returned: always
  type: list
  elements: dict
  sample:
    - name: node-db
      asset_type: sqlite
      ok: true
      checksum: ok
      deep: ok
      checks: {integrity: ok, page_count: 130240}
problems:
  description: Each problem found, in words.
  returned: always
  type: list
  elements: str
  sample: ["node-db: SHA-256 does not match the manifest (the artifact was modified or damaged)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    AGE_IDENTITY_OPTIONS,
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.epoch import verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.seal import load_identities


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            AGE_IDENTITY_OPTIONS,
            epoch={"type": "str", "default": "latest"},
            public_key={"type": "str", "required": True, "no_log": False},
            deep={"type": "bool", "default": False},
            artifacts={"type": "list", "elements": "str", "default": []},
            check={"type": "str", "choices": ["integrity", "quick"], "default": "integrity"},
            scratch_dir={"type": "path"},
            fail_on_error={"type": "bool", "default": True},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "cryptography")
    params = module.params
    if params["deep"]:
        require_libraries(module, "pyrage", "zstandard", "apsw")

    def action():
        identities = None
        if params["deep"]:
            identities = load_identities(params["identities"], params["identity_files"])
        repository = open_repository(params["repository"], create=False)
        report = verify_epoch(
            repository,
            params["node"],
            params["epoch"],
            params["public_key"],
            deep=params["deep"],
            identities=identities,
            scratch_dir=params["scratch_dir"],
            artifacts=params["artifacts"] or None,
            check=params["check"],
        )
        report["changed"] = False
        if not report["ok"] and params["fail_on_error"]:
            module.fail_json(
                msg="epoch %s of %s does not verify: %s"
                % (report["epoch"], params["node"], "; ".join(report["problems"])),
                **report,
            )
        return report

    run(module, action)


if __name__ == "__main__":
    main()
