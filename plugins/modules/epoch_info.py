#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: epoch_info
short_description: List the epochs of a node in a repository
version_added: 0.1.0
description:
  - Lists complete epochs (those whose signed manifest was written), oldest first, and the incomplete ones
    a failed or killed backup left behind.
  - With O(public_key), reads each complete epoch's manifest and checks its signature, and returns
    per-epoch summaries (finish time, artifacts, size); epochs whose signature does not verify are listed
    in RV(invalid) and never counted as V(latest).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  public_key:
    description: The node's Ed25519 public key. When given, signatures are checked and summaries returned.
    type: str
requirements:
  - cryptography
seealso:
  - module: nodekeep.backup.integrity_check
"""

EXAMPLES = r"""
- name: List this node's epochs
  nodekeep.backup.epoch_info:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
  register: info

- name: Show the newest
  ansible.builtin.debug:
    msg: "{{ info.latest }} of {{ info.epochs | length }} epochs"
"""

RETURN = r"""
epochs:
  description: Complete epochs, oldest first (with O(public_key), only those whose signature verifies).
  returned: always
  type: list
  elements: str
  sample: [20261122T020000Z, 20261122T021000Z]
latest:
  description: The newest complete epoch, or null when there is none.
  returned: always
  type: str
  sample: 20261122T021000Z
incomplete:
  description: Epochs without a signed manifest (failed or interrupted backups).
  returned: always
  type: list
  elements: str
  sample: [20261122T020500Z]
invalid:
  description: Epochs whose manifest signature does not verify against O(public_key), with the reason.
  returned: when O(public_key) is given
  type: dict
  sample: {20261122T020700Z: the manifest signature does not match its content}
summaries:
  description: Manifest summary per verified epoch.
  returned: when O(public_key) is given
  type: list
  elements: dict
  sample:
    - {node: node1, epoch: 20261122T021000Z, started: "2026-11-22T02:10:00.1Z", finished: "2026-11-22T02:10:02.3Z", artifacts: 1, size: 52428800}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import REPOSITORY_OPTIONS, argspec, run
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository


def main():
    module = AnsibleModule(
        argument_spec=argspec(REPOSITORY_OPTIONS, public_key={"type": "str", "no_log": False}),
        supports_check_mode=True,
    )
    params = module.params

    def action():
        repository = open_repository(params["repository"], create=False)
        node = params["node"]
        complete = repository.complete_epochs(node)
        result = {"changed": False, "incomplete": repository.incomplete_epochs(node)}
        if params["public_key"]:
            valid, invalid, summaries = [], {}, []
            for epoch in complete:
                try:
                    manifest = load_manifest(repository, node, epoch, params["public_key"])
                except NodekeepError as exc:
                    invalid[epoch] = exc.message
                    continue
                valid.append(epoch)
                summaries.append(manifest.summary())
            complete = valid
            result.update(invalid=invalid, summaries=summaries)
        result["epochs"] = complete
        result["latest"] = complete[-1] if complete else None
        return result

    run(module, action)


if __name__ == "__main__":
    main()
