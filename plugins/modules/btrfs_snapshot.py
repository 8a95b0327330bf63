#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: btrfs_snapshot
short_description: btrfs read-only snapshots for backups - create, send sealed, receive, prune
version_added: 0.2.0
description:
  - Manages the read-only snapshots of one btrfs subvolume O(subvolume) the way the C(btrfs) asset type of
    M(nodekeep.backup.epoch_backup) does, for use on its own.
  - Snapshots live in O(snapshot_dir) (default C(.nodekeep-snapshots) beside the subvolume; it must be on the
    same filesystem) and are named C(SUBVOLUME@PREFIX-YYYYMMDDTHHMMSSZ), so that O(state=pruned) applies the
    same keep-hourly / daily / weekly / monthly policy as M(nodekeep.backup.epoch_prune). Other names are never
    pruned.
  - O(state=sent) seals a C(btrfs send) stream (full, or incremental with C(-p) from O(base)) with zstd and age
    into O(dest). Restore it by hand with C(age -d -i KEY FILE | zstd -d | btrfs receive DIR), or with
    O(state=received).
  - btrfs has no snapshot holds; the kernel refuses to delete a snapshot while it is being sent.
  - See C(docs/snapshots.md).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._snapshot
  - nodekeep.backup._retention
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details: Lists the snapshots and reports what would be created, destroyed, sent or received.
  diff_mode:
    support: full
    details: The subvolume's snapshot list before and after (which snapshots would be created or destroyed).
  idempotent:
    support: partial
    details:
      - O(state=present) with O(name), O(state=absent) and O(state=pruned) are idempotent. O(state=present) without
        O(name) makes a new snapshot named by the current time on every run.
      - O(state=sent) does nothing when O(dest) exists (unless O(force=true)); O(state=received) is an action.
options:
  subvolume:
    description: The subvolume's path.
    type: path
    required: true
  state:
    description:
      - V(present) makes the read-only snapshot O(name) (default C(PREFIX-<now>)); V(absent) deletes it.
      - V(pruned) deletes the C(PREFIX-<time>) snapshots the policy (O(keep_last) ...) does not keep.
      - V(sent) writes the sealed send stream of O(name) to O(dest); V(received) receives the sealed stream O(src)
        into the directory O(target) (on btrfs).
    type: str
    choices: [present, absent, pruned, sent, received]
    default: present
  snapshot_dir:
    description: Where the snapshots are (default C(.nodekeep-snapshots) beside the subvolume).
    type: path
  protect:
    description: Snapshot names O(state=pruned) keeps whatever the policy says (the parent of the next send).
    type: list
    elements: str
    default: []
  base:
    description: O(state=sent) sends incrementally from this earlier snapshot (C(btrfs send -p)).
    type: str
  target:
    description: O(state=received) receives into this directory (on btrfs; made if absent).
    type: path
  force:
    description: O(state=sent) overwrites O(dest).
    type: bool
    default: false
requirements:
  - btrfs-progs
  - pyrage and zstandard for O(state=sent) and O(state=received)
seealso:
  - module: nodekeep.backup.zfs_snapshot
  - module: nodekeep.backup.epoch_backup
"""

EXAMPLES = r"""
- name: Read-only snapshot of the PDS data
  nodekeep.backup.btrfs_snapshot:
    subvolume: /srv/pds
  register: snap

- name: Ship it sealed
  nodekeep.backup.btrfs_snapshot:
    subvolume: /srv/pds
    name: "{{ snap.snapshot.name }}"
    state: sent
    dest: "/var/backups/pds-{{ snap.snapshot.name }}.btrfs.zst.age"
    recipients: "{{ nodekeep_age_recipients }}"

- name: Keep the last 3 and 7 daily snapshots
  nodekeep.backup.btrfs_snapshot:
    subvolume: /srv/pds
    state: pruned
    keep_last: 3
    keep_daily: 7
  register: pruned
"""

RETURN = r"""
volume:
  description: The subvolume.
  returned: always
  type: str
  sample: /srv/pds
snapshot:
  description: The snapshot worked on (backend, volume, name, uuid, createtxg (generation), created, path).
  returned: when a snapshot was named or made
  type: dict
  sample: {backend: btrfs, volume: /srv/pds, name: nodekeep-20261122T101500Z, uuid: 05a0830a-80b8-6647-bff5-62a5eaccc943,
           createtxg: 8, created: "2026-11-22T10:15:00Z", path: /srv/.nodekeep-snapshots/pds@nodekeep-20261122T101500Z}
snapshots:
  description: Names of the subvolume's snapshots after the run (as they would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [nodekeep-20261122T101500Z]
features:
  description: What the installed btrfs-progs supports.
  returned: always
  type: dict
  sample: {implementation: btrfs-progs, version: "6.2", send_proto2: true, send_compressed: true}
kept:
  description: O(state=pruned) - snapshots kept, with the rules that keep them.
  returned: when state is pruned
  type: list
  elements: dict
  sample: [{snapshot: /srv/.nodekeep-snapshots/pds@nodekeep-20261122T101500Z, name: nodekeep-20261122T101500Z, reasons: ["last 1"]}]
destroyed:
  description: O(state=pruned) - snapshots deleted (would be, in check mode), and why.
  returned: when state is pruned
  type: list
  elements: dict
  sample: []
dest:
  description: O(state=sent) - the sealed stream file.
  returned: when state is sent
  type: str
  sample: /var/backups/pds-nodekeep-20261122T101500Z.btrfs.zst.age
sha256:
  description: SHA-256 of the sealed file.
  returned: when a stream was sent or received
  type: str
  sample: 3f0a...
content_sha256:
  description:
    - Always null - no unkeyed hash of the plain send stream (it carries the files' data) is reported; RV(sha256)
      of the sealed file, which age authenticates on decryption, proves the stream.
  returned: when a stream was sent or received
  type: str
  sample: null
content_size:
  description: Size of the plain send stream in bytes.
  returned: when a stream was sent or received
  type: int
  sample: 314572800
size:
  description: Size of the sealed file in bytes.
  returned: when a stream was sent or received
  type: int
  sample: 104857600
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import run_snapshot_state, snapshot_module_args
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import SnapshotError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.state import run_state


def open_subvolume(params):
    """The btrfs backend and the subvolume; the snapshot directory defaults to the one beside it."""
    fs = Btrfs()
    subvolume = params["subvolume"]
    if params["state"] != "received" and not fs.volume_for(subvolume):
        raise SnapshotError(
            "%s is not a btrfs subvolume" % subvolume, "give the path of a subvolume (btrfs subvolume list)"
        )
    if not params.get("snapshot_dir"):
        params["snapshot_dir"] = Btrfs.snapshot_dir(subvolume)
    return fs, subvolume


def main():
    module = AnsibleModule(
        **snapshot_module_args(
            subvolume={"type": "path", "required": True},
            state={"type": "str", "default": "present", "choices": ["present", "absent", "pruned", "sent", "received"]},
            snapshot_dir={"type": "path"},
            target={"type": "path"},
        )
    )
    run_snapshot_state(module, run_state, open_subvolume)


if __name__ == "__main__":
    main()
