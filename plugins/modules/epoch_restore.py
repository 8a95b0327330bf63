#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: epoch_restore
short_description: Restore an epoch into a staging path, verified and checked
version_added: 0.1.0
description:
  - Picks an epoch (the latest complete one by default), checks its manifest signature against the node's
    public key from the controller, then streams each artifact through age and zstd into a temporary file
    beside its staging target, compares size and both SHA-256 checksums with the manifest, runs the asset's
    own check (C(PRAGMA integrity_check) for SQLite), and only then links it into place.
  - Each asset lands at O(dest) followed by its original absolute path, for example
    C(/srv/staging/node1/var/lib/animica/node/animica.db).
  - Nothing live is touched. Putting restored data into production is the separate cutover step
    (M(nodekeep.backup.restore_cutover), driven by the restore role).
  - An existing target is never overwritten silently; the module refuses before writing anything.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._repository.EPOCH
  - nodekeep.backup._repository.AGE_IDENTITIES
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: Verifies the manifest signature and lists what would be restored where; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: A second run with the same O(dest) refuses because the targets exist, unless O(force=true).
options:
  dest:
    description: Absolute staging directory. Each asset is restored under it at its original absolute path.
    type: path
    required: true
  force:
    description:
      - Replace targets that already exist. The existing data is kept beside it as C(NAME.nodekeep-replaced-TIME).
    type: bool
    default: false
requirements:
  - pyrage
  - zstandard
  - cryptography
  - apsw
seealso:
  - module: nodekeep.backup.integrity_check
  - module: nodekeep.backup.restore_cutover
"""

EXAMPLES = r"""
- name: Restore the latest epoch into staging
  nodekeep.backup.epoch_restore:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    identity_files:
      - /root/.config/nodekeep/age-identity.txt
    dest: /srv/staging/{{ inventory_hostname }}
  register: restored

- name: Show where each asset went
  ansible.builtin.debug:
    msg: "{{ item.name }} -> {{ item.path }} ({{ item.checks }})"
  loop: "{{ restored.artifacts }}"
"""

RETURN = r"""
epoch:
  description: The epoch restored.
  returned: always
  type: str
  sample: 20261122T023000Z
artifacts:
  description: Per asset, where it was restored and what was checked.
  returned: always
  type: list
  elements: dict
  sample:
    - name: node-db
      asset_type: sqlite
      path: /srv/staging/node1/var/lib/animica/node/animica.db
      source_path: /var/lib/animica/node/animica.db
      size: 533463040
      sha256: f1b5fbc7280421feb48359083e6d92bfea8e6ec6d1fa365088f6104c4a27d848
      checks: {integrity: ok, page_count: 130240}
manifest:
  description: Summary of the verified manifest.
  returned: always
  type: dict
  sample: {node: node1, epoch: 20261122T023000Z, artifacts: 1, size: 272629760}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    AGE_IDENTITY_OPTIONS,
    EPOCH_OPTIONS,
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest, resolve_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository


def _plan(repository, params):
    """Check mode: verify the signature and list targets without writing."""
    epoch = resolve_epoch(repository, params["node"], params["epoch"])
    manifest = load_manifest(repository, params["node"], epoch, params["public_key"])
    wanted = params["artifacts"] or [a.name for a in manifest.artifacts]
    planned = []
    for name in wanted:
        artifact = manifest.artifact(name)
        target = asset_type(artifact.asset_type).staging_path(artifact, params["dest"])
        if os.path.lexists(target) and not params["force"]:
            raise RestoreError(
                "the restore target %s already exists" % target,
                "restore into an empty staging path or set force: true",
            )
        planned.append(
            {
                "name": name,
                "asset_type": artifact.asset_type,
                "path": target,
                "source_path": artifact.source.get("path"),
                "size": artifact.content_size,
                "sha256": artifact.content_sha256,
                "checks": {},
            }
        )
    return {"changed": True, "epoch": epoch, "artifacts": planned, "manifest": manifest.summary()}


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            AGE_IDENTITY_OPTIONS,
            EPOCH_OPTIONS,
            dest={"type": "path", "required": True},
            force={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "pyrage", "zstandard", "cryptography", "apsw")
    params = module.params

    def action():
        repository = open_repository(params["repository"], create=False)
        if module.check_mode:
            return _plan(repository, params)
        identities = load_identities(params["identities"], params["identity_files"])
        report = restore_epoch(
            repository,
            params["node"],
            params["epoch"],
            params["public_key"],
            identities,
            params["dest"],
            artifacts=params["artifacts"] or None,
            force=params["force"],
            check=params["check"],
        )
        report["changed"] = True
        return report

    run(module, action)


if __name__ == "__main__":
    main()
