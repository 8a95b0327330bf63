#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: zfs_snapshot
short_description: ZFS snapshots for backups - create, hold, send sealed, receive, prune, roll back, cut over
version_added: 0.2.0
description:
  - Manages the snapshots of one ZFS dataset O(dataset) the way the C(zfs) asset type of
    M(nodekeep.backup.epoch_backup) does, for use on its own (before an upgrade, in a runbook step).
  - Snapshot names carry their UTC time, C(PREFIX-YYYYMMDDTHHMMSSZ) (C(tank/app@nodekeep-20261122T101500Z)),
    so that O(state=pruned) can apply the same keep-hourly / daily / weekly / monthly policy as
    M(nodekeep.backup.epoch_prune). Snapshots with other names are never pruned.
  - A held snapshot is never destroyed; C(zfs destroy -R) (dependent clones) only with O(allow_dependents=true).
  - O(state=sent) seals a C(zfs send) stream (full, or incremental from O(base)) with zstd and age into the file
    O(dest) while the snapshots are held (released after, also on failure; the temporary holds a failed
    C(send -R) leaks on zfs-fuse are released too). Restore it by hand with
    C(age -d -i KEY FILE | zstd -d | zfs receive POOL/NAME), or with O(state=received).
  - O(state=cutover) puts a staged dataset (one M(nodekeep.backup.epoch_restore) received) in the place of
    O(dataset), keeping the old one aside; O(state=rolled_back) rolls O(dataset) back to a snapshot.
    Both only happen when asked for. Stop the service using the dataset first.
  - Works with OpenZFS 2.x and with zfs-fuse 0.7 (which lacks C(zfs holds), bookmarks, raw sends and filesystem
    renames); what the installed ZFS supports is detected and returned in RV(features).
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
    details: Lists the snapshots and reports what would be created, destroyed, held, released, sent or received.
  diff_mode:
    support: full
    details: The dataset's snapshot list before and after (which snapshots would be created or destroyed).
  idempotent:
    support: partial
    details:
      - O(state=present) with O(name), O(state=absent), O(state=held), O(state=released) and O(state=pruned) are
        idempotent. O(state=present) without O(name) makes a new snapshot named by the current time on every run.
      - O(state=sent) does nothing when O(dest) exists (unless O(force=true)). O(state=received),
        O(state=rolled_back) and O(state=cutover) are actions and report C(changed) each time.
options:
  dataset:
    description: The dataset, for example C(tank/app).
    type: str
    required: true
  state:
    description:
      - V(present) makes the snapshot O(name) (default C(PREFIX-<now>)); V(absent) destroys it.
      - V(held) / V(released) put or remove the user hold O(tag).
      - V(pruned) destroys the C(PREFIX-<time>) snapshots the policy (O(keep_last) ...) does not keep.
      - V(sent) writes the sealed send stream of O(name) to O(dest); V(received) receives the sealed stream O(src)
        into the dataset O(target).
      - V(rolled_back) rolls O(dataset) back to O(name); V(cutover) puts O(staging) in the place of O(dataset).
    type: str
    choices: [present, absent, held, released, pruned, sent, received, rolled_back, cutover]
    default: present
  recursive:
    description: Snapshot, hold, destroy and send the descendant datasets too (C(-r), C(send -R)).
    type: bool
    default: false
  tag:
    description: The hold tag for O(state=held) and O(state=released).
    type: str
    default: nodekeep
  allow_dependents:
    description: Let O(state=absent) and O(state=pruned) destroy dependent clones (C(zfs destroy -R)).
    type: bool
    default: false
  protect:
    description: Snapshot names O(state=pruned) keeps whatever the policy says (the base of the next send).
    type: list
    elements: str
    default: []
  base:
    description: O(state=sent) sends incrementally from this earlier snapshot (C(zfs send -i)).
    type: str
  target:
    description: O(state=received) receives into this dataset (a staging dataset; it must not exist for a full stream).
    type: str
  force:
    description: O(state=sent) overwrites O(dest); O(state=received) receives with C(-F).
    type: bool
    default: false
  discard_newer:
    description: O(state=rolled_back) destroys the snapshots newer than O(name) (C(zfs rollback -r)).
    type: bool
    default: false
  staging:
    description: O(state=cutover) puts this dataset in the place of O(dataset).
    type: str
  cutover_mode:
    description:
      - V(rename) renames O(dataset) to C(DATASET-pre-restore-<time>) and O(staging) to O(dataset) (OpenZFS).
      - V(mountpoint) mounts O(dataset) at C(MOUNTPOINT.pre-restore-<time>) and O(staging) at the mountpoint
        (zfs-fuse cannot rename filesystems). V(auto) picks by the detected ZFS.
    type: str
    choices: [auto, rename, mountpoint]
    default: auto
requirements:
  - ZFS (OpenZFS 2.x or zfs-fuse 0.7) and its C(zfs) command
  - pyrage and zstandard for O(state=sent) and O(state=received)
seealso:
  - module: nodekeep.backup.btrfs_snapshot
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.epoch_prune
"""

EXAMPLES = r"""
- name: Snapshot the node's data before an upgrade
  nodekeep.backup.zfs_snapshot:
    dataset: tank/animica
    name: before-upgrade
  register: snap

- name: Ship it sealed to the fleet's recipients
  nodekeep.backup.zfs_snapshot:
    dataset: tank/animica
    name: "{{ snap.snapshot.name }}"
    state: sent
    dest: /var/backups/animica-before-upgrade.zfs.zst.age
    recipients: "{{ nodekeep_age_recipients }}"

- name: Keep 24 hourly, 7 daily and 4 weekly nodekeep snapshots (show the diff first)
  nodekeep.backup.zfs_snapshot:
    dataset: tank/animica
    state: pruned
    keep_hourly: 24
    keep_daily: 7
    keep_weekly: 4
  check_mode: true
  diff: true
  register: plan

- name: Show what would go
  ansible.builtin.debug:
    msg: "{{ plan.destroyed | map(attribute='snapshot') | list }}"

- name: Put the staged restore in place (the service is stopped)
  nodekeep.backup.zfs_snapshot:
    dataset: tank/animica
    state: cutover
    staging: tank/nodekeep-restore/animica-1a2b3c4d
"""

RETURN = r"""
volume:
  description: The dataset.
  returned: always
  type: str
  sample: tank/animica
snapshot:
  description: The snapshot worked on (backend, volume, name, guid, createtxg, created).
  returned: when a snapshot was named or made
  type: dict
  sample: {backend: zfs, volume: tank/animica, name: nodekeep-20261122T101500Z, guid: "1734499417146026764",
           createtxg: 1234, created: "2026-11-22T10:15:00Z"}
snapshots:
  description: Names of the dataset's snapshots after the run (as they would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [nodekeep-20261121T101500Z, nodekeep-20261122T101500Z]
features:
  description: What the installed ZFS supports.
  returned: always
  type: dict
  sample: {implementation: zfs-fuse, version: "", list_parsable: false, send_raw: false, bookmarks: false,
           resume_tokens: false, holds_list: false, temp_holds_cleaned_by_kernel: false}
kept:
  description: O(state=pruned) - snapshots kept, with the rules that keep them.
  returned: when state is pruned
  type: list
  elements: dict
  sample: [{snapshot: tank/animica@nodekeep-20261122T101500Z, name: nodekeep-20261122T101500Z, reasons: ["last 1"]}]
destroyed:
  description: O(state=pruned) - snapshots destroyed (would be, in check mode), and why.
  returned: when state is pruned
  type: list
  elements: dict
  sample: [{snapshot: tank/animica@nodekeep-20261101T101500Z, name: nodekeep-20261101T101500Z, reasons: ["no rule keeps it"]}]
held:
  description: O(state=pruned) - snapshots the policy drops but that are held, so were kept.
  returned: when state is pruned
  type: list
  elements: dict
  sample: []
userrefs:
  description: O(state=held) / O(state=released) - the number of holds on the snapshot after the run.
  returned: when state is held or released
  type: int
  sample: 1
dest:
  description: O(state=sent) - the sealed stream file.
  returned: when state is sent
  type: str
  sample: /var/backups/animica-before-upgrade.zfs.zst.age
sha256:
  description: O(state=sent) / O(state=received) - SHA-256 of the sealed file.
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
previous:
  description: O(state=cutover) - the dataset that was live before (kept, not destroyed).
  returned: when state is cutover
  type: str
  sample: tank/animica
mode:
  description: O(state=cutover) - V(rename) or V(mountpoint).
  returned: when state is cutover
  type: str
  sample: mountpoint
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import run_snapshot_state, snapshot_module_args
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import SnapshotError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.state import run_state
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs


def open_dataset(params):
    """The ZFS backend and the dataset."""
    fs = Zfs()
    dataset = params["dataset"]
    if params["state"] != "received" and not fs.exists(dataset):
        raise SnapshotError("the dataset %s does not exist" % dataset, "check its name (zfs list)")
    return fs, dataset


def main():
    module = AnsibleModule(
        **snapshot_module_args(
            required_if=[
                ("state", "held", ["name"]),
                ("state", "released", ["name"]),
                ("state", "rolled_back", ["name"]),
                ("state", "cutover", ["staging"]),
            ],
            dataset={"type": "str", "required": True},
            state={
                "type": "str",
                "default": "present",
                "choices": [
                    "present",
                    "absent",
                    "held",
                    "released",
                    "pruned",
                    "sent",
                    "received",
                    "rolled_back",
                    "cutover",
                ],
            },
            recursive={"type": "bool", "default": False},
            tag={"type": "str", "default": "nodekeep"},
            allow_dependents={"type": "bool", "default": False},
            target={"type": "str"},
            discard_newer={"type": "bool", "default": False},
            staging={"type": "str"},
            cutover_mode={"type": "str", "choices": ["auto", "rename", "mountpoint"], "default": "auto"},
        )
    )
    run_snapshot_state(module, run_state, open_dataset)


if __name__ == "__main__":
    main()
