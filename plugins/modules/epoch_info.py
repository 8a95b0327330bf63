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
  - With O(public_key), also returns RV(listing) and RV(lines), a table like C(restic snapshots) (epoch, time,
    assets, plain and stored size, last verified, locked until, copies); with O(targets), the S3 buckets that
    may hold copies, it names for each epoch the targets holding a complete copy and the latest Object Lock
    retention date of its objects there (C(playbooks/epochs.yml) prints it per node).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._s3
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
  objects_of:
    description:
      - An epoch of the node whose pieces (the content-addressed objects its incremental and C(files) artifacts keep
        beside the epochs in C(NODE/objects/)) are listed in RV(objects), e.g. to ship the epoch to another host
        (the restore and drill roles do). C(latest) is the newest verified epoch.
      - The epoch's manifest signature is checked with O(public_key) first (required), and the names are read
        from the epoch's piece lists, checked against the manifest; only regular files are listed.
    type: str
  point_in_time:
    description:
      - A time (ISO 8601, UTC when no zone is given; an epoch name; UNIX seconds) or V(latest). Returns in
        RV(point_in_time_epoch) the epoch a point-in-time restore of O(asset) to that time uses (the base epoch of the
        replication chain covering it, or an epoch alone), e.g. to ship it with its segments to another host (the
        restore role does). Signatures are checked with O(public_key) (required). See docs/replication.md.
      - V(random) draws a commit point of O(asset) at random among every restorable commit time of its retained
        replication chains at or before O(until), reproducibly from O(seed) (the drill role does); RV(point_in_time_epoch)
        is its chain's base epoch and RV(point_in_time_drawn) the point and the window it was drawn from.
    type: str
  asset:
    description: The SQLite asset of O(point_in_time).
    type: str
  seed:
    description:
      - With O(point_in_time=random), the seed of the draw (any text). The same seed over the same chains up to the
        same O(until) draws the same commit point.
    type: str
  until:
    description:
      - With O(point_in_time=random), the end of the window drawn from (a time as for O(point_in_time)); omitted, now.
    type: str
  verified:
    description:
      - When each epoch was last verified, as the controller recorded it (the verify role's results), epoch to
        text. Shown in RV(listing) and RV(lines); an epoch not named is V(never) verified.
    type: dict
    default: {}
requirements:
  - cryptography
  - boto3 (with O(targets))
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

- name: List the epochs as a table, with their copies in S3 (playbooks/epochs.yml does this per node)
  nodekeep.backup.epoch_info:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    targets:
      - name: offsite
        bucket: nodekeep-offsite
        endpoint_url: https://s3.example.net
  register: info

- name: Print the table
  ansible.builtin.debug:
    msg: "{{ info.lines }}"
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
objects:
  description:
    - The pieces the epoch O(objects_of) needs, relative to C(REPOSITORY/NODE), sorted; empty when none of its
      artifacts keeps pieces. A piece a list names that is missing, or is not a regular file, fails the module
      (naming it).
  returned: when O(objects_of) is given
  type: list
  elements: str
  sample: [objects/7f/7f50063b104eac27c0bedfe88c8290cb728ed6c0468037f6ad1a8e0027f1d2cb]
objects_size:
  description: The stored size of RV(objects) in bytes.
  returned: when O(objects_of) is given
  type: int
  sample: 4194304
point_in_time_epoch:
  description: With O(point_in_time), the epoch a point-in-time restore to that time starts from.
  returned: when O(point_in_time) is given
  type: str
  sample: 20261122T020000Z
point_in_time_source:
  description: With O(point_in_time), V(chain) (a base epoch and its segments) or V(epoch) (an epoch alone).
  returned: when O(point_in_time) is given
  type: str
  sample: chain
point_in_time_drawn:
  description:
    - With O(point_in_time=random), the commit point drawn (C(time), an observed commit time, so a restore to it
      reaches exactly it; C(epoch), its chain's base), the O(seed), the window (C(start), C(end), C(until), the number
      of commit C(points) and of C(chains) in it) and C(last_shipped), the newest commit shipped at or before O(until).
  returned: when O(point_in_time=random)
  type: dict
  sample: {time: "2026-12-07T10:15:30.123456Z", epoch: 20261207T100000Z, seed: "1234", start: "2026-12-07T10:00:01.5Z",
           end: "2026-12-07T10:20:00.9Z", until: "2026-12-07T10:20:01.000000Z", points: 5400, chains: 1,
           last_shipped: "2026-12-07T10:20:00.9Z"}
listing:
  description:
    - One entry per verified epoch, oldest first, like C(restic snapshots). C(time) is when its manifest was
      finished, C(plain_bytes) the assets' own size, C(stored_bytes) what the epoch added to the repository
      (reused pieces cost nothing), C(last_verified) from O(verified) (null when never), C(locked_until) the
      latest Object Lock retention date of its objects in a target (null when none), and C(copies) where a
      complete copy exists, V(local) (the O(repository); its URL when it is in S3) and each target's name.
  returned: when O(public_key) is given
  type: list
  elements: dict
  sample:
    - {epoch: 20261122T021000Z, time: "2026-11-22T02:10:02.3Z", assets: [app-db], plain_bytes: 61599744,
       stored_bytes: 61380865, last_verified: "2026-11-22T03:00:00Z deep", locked_until: "2026-12-22T02:10:02Z",
       copies: [local, offsite]}
lines:
  description: RV(listing) as a table in IEC units (KiB, MiB, GiB), its last line the totals.
  returned: when O(public_key) is given
  type: list
  elements: str
  sample:
    - "epoch             time (UTC)           assets  plain     stored    last verified  locked until         copies"
    - "--------------------------------------------------------------------------------------------------------"
    - "20261122T021000Z  2026-11-22 02:10:02  app-db  58.7 MiB  58.5 MiB  never          2026-12-22 02:10:02  local, offsite"
    - "1 epoch(s), 58.7 MiB plain, 58.5 MiB stored"
summaries:
  description: Manifest summary per verified epoch.
  returned: when O(public_key) is given
  type: list
  elements: dict
  sample:
    - {node: node1, epoch: 20261122T021000Z, started: "2026-11-22T02:10:00.1Z", finished: "2026-11-22T02:10:02.3Z", artifacts: 1, size: 52428800}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.pieces import epoch_pieces
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
    find_chain,
    parse_time,
    random_point,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.stats import epoch_listing


def _target_name(spec):
    return spec.get("name") or "s3://%s/%s" % (spec.get("bucket"), spec.get("prefix") or "")


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            public_key={"type": "str", "no_log": False},
            objects_of={"type": "str"},
            point_in_time={"type": "str"},
            asset={"type": "str"},
            seed={"type": "str"},
            until={"type": "str"},
            targets={"type": "list", "elements": "dict", "default": [], "options": S3_TARGET_OPTIONS},
            verified={"type": "dict", "default": {}},
        ),
        required_by={"objects_of": "public_key", "point_in_time": ["public_key", "asset"]},
        required_if=[("point_in_time", "random", ["seed"])],
        supports_check_mode=True,
    )
    params = module.params
    if params["targets"]:
        require_libraries(module, "boto3")

    def action():
        repository = open_repository(params["repository"], create=False)
        node = params["node"]
        complete = repository.complete_epochs(node)
        result = {"changed": False, "incomplete": repository.incomplete_epochs(node)}
        if params["public_key"]:
            valid, invalid, summaries, manifests = [], {}, [], {}
            for epoch in complete:
                try:
                    manifest = load_manifest(repository, node, epoch, params["public_key"])
                except NodekeepError as exc:
                    invalid[epoch] = exc.message
                    continue
                valid.append(epoch)
                manifests[epoch] = manifest
                summaries.append(manifest.summary())
            complete = valid
            result.update(invalid=invalid, summaries=summaries)
            local = params["repository"] if str(params["repository"]).startswith("s3://") else "local"
            copies = [(local, repository)]
            copies += [(_target_name(spec), open_repository(dict(spec, type="s3"))) for spec in params["targets"]]
            verified = {str(k): v for k, v in (params["verified"] or {}).items()}
            result.update(epoch_listing([manifests[e] for e in valid], copies, node, verified))
        result["epochs"] = complete
        result["latest"] = complete[-1] if complete else None
        wanted = params["objects_of"]
        if wanted:
            epoch = result["latest"] if wanted == "latest" else wanted
            if epoch not in (result.get("invalid") or {}) and epoch in complete:
                result["objects"], result["objects_size"] = epoch_pieces(repository, node, epoch, manifests[epoch])
            else:
                result["objects"], result["objects_size"] = [], 0  # the caller refuses the epoch itself
        if params["point_in_time"]:
            point = params["point_in_time"]
            if point == "random":
                until = parse_time(params["until"]) if params["until"] else None
                drawn = random_point(repository, node, params["asset"], params["public_key"], params["seed"], until)
                result.update(
                    point_in_time_epoch=drawn["epoch"], point_in_time_source="chain", point_in_time_drawn=drawn
                )
                return result
            when = None if point == "latest" else parse_time(point)
            chain = find_chain(repository, node, params["asset"], params["public_key"], when)
            result["point_in_time_epoch"] = chain.epoch
            result["point_in_time_source"] = "chain" if chain.records else "epoch"
        return result

    run(module, action)


if __name__ == "__main__":
    main()
