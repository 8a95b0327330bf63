#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: run_record
short_description: Record a run's result as a JSON file on the node, atomically
version_added: 0.1.0
description:
  - Writes O(record) as JSON to O(path) through a private temporary name beside it (written, fsynced, then
    renamed over the old record), so the file is always the old record or the new one, never a torn one.
  - When the record cannot be written (a full disk, a read-only file system), the module fails with a message
    naming the path and the reason and, with O(remove_stale=true), removes the old record first, so that a
    record of an earlier run cannot contradict the repository (say V(failed) beside a complete, signed epoch).
  - The backup role records each run with it in C(nodekeep_backup_status_file) (C(last-backup.json)). Readers
    of the repository (verify, drill, metrics) go by the signed epochs, never by this file.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the record would change; writes and removes nothing.
  diff_mode:
    support: full
    details: With C(--diff), the record's text before (empty when there was none) and after, in check mode too.
  idempotent:
    support: full
    details: The same record written again changes nothing.
options:
  path:
    description: The record's absolute path on the node; its directory must exist.
    type: path
    required: true
  record:
    description: The record, written as indented JSON with a final newline.
    type: dict
    required: true
  mode:
    description: The file's permissions.
    type: str
    default: "0600"
  remove_stale:
    description: When the new record cannot be written, remove the old one (so that it cannot tell an outdated story).
    type: bool
    default: true
seealso:
  - module: nodekeep.backup.epoch_backup
"""

EXAMPLES = r"""
- name: Record the run on the node
  nodekeep.backup.run_record:
    path: /var/backups/nodekeep/node1/last-backup.json
    record: {format: nodekeep.last-backup/v1, node: node1, status: ok, epoch: 20261122T023000Z}
"""

RETURN = r"""
path:
  description: The record's path.
  returned: always
  type: str
  sample: /var/backups/nodekeep/node1/last-backup.json
removed_stale:
  description: Whether the old record was removed because the new one could not be written.
  returned: failure
  type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import diff_entry, run
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write


def _mode(text: str) -> int:
    try:
        value = int(str(text), 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise NodekeepError("mode %r is not a file mode" % (text,), "give an octal mode such as 0600")
    return value


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict", "required": True},
            "mode": {"type": "str", "default": "0600"},
            "remove_stale": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params

    def action():
        path = params["path"]
        if not os.path.isabs(path):
            raise NodekeepError("path %r is not absolute" % path, "give the record's absolute path")
        mode = _mode(params["mode"])
        text = json.dumps(params["record"], indent=4, sort_keys=True) + "\n"
        old = ""
        try:
            with open(path, encoding="utf-8") as handle:
                old = handle.read(1 << 20)
            same = old == text and os.stat(path).st_mode & 0o777 == mode
        except (OSError, UnicodeDecodeError):
            same = False
        diff = diff_entry(path, old, text)
        if same or module.check_mode:
            return dict({"changed": not same, "path": path}, **({"diff": diff} if module._diff and not same else {}))
        try:
            atomic_write(path, text, mode, "run record")
        except NodekeepError as exc:
            removed = False
            if params["remove_stale"]:
                try:
                    os.unlink(path)
                    removed = True
                except OSError:
                    pass
            result = exc.to_result()
            if removed:
                result["msg"] += "; the old record was removed so that it cannot contradict the repository"
            elif os.path.lexists(path):
                result["msg"] += "; the old record is still there"
            result["removed_stale"] = removed
            result["path"] = path
            module.fail_json(**result)
        return dict({"changed": True, "path": path}, **({"diff": diff} if module._diff else {}))

    run(module, action)


if __name__ == "__main__":
    main()
