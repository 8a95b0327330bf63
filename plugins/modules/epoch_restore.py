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
  - A SQLite epoch whose manifest records a passed C(PRAGMA integrity_check) of its captured copy (C(check) V(integrity))
    is not checked again, because the restored file's SHA-256 equals that copy's and proves the same bytes; its
    C(checks.integrity_proven) says where the check ran. An epoch captured with C(quick_check) gets the full check here,
    unless a deep verify recorded a signed proof of that check on the same sealed bytes
    (M(nodekeep.backup.integrity_check) O(nodekeep.backup.integrity_check#module:signing_key)), which is trusted the same way;
    a proof that does not match is reported in C(checks.proof_rejected) and the check runs.
  - Each asset lands at O(dest) followed by its original absolute path, for example
    C(/srv/staging/node1/var/lib/animica/node/animica.db).
  - With O(output), one asset (named in O(artifacts), or the epoch's only one) lands at that path instead, as
    C(litestream restore -o) does - a file for V(sqlite) and V(secret) assets, a directory for V(rocksdb),
    V(files) and V(config) ones. The path is walked from C(/) without following any link, its missing directories
    are made (0700), and an existing file or directory there is refused unless O(force=true).
  - Nothing live is touched. Putting restored data into production is the separate cutover step
    (M(nodekeep.backup.restore_cutover), driven by the restore role).
  - An existing target is never overwritten silently; the module refuses before writing anything.
  - With O(point_in_time), one SQLite asset is rebuilt as of a chosen time from a base epoch and the signed WAL
    segments of its replication chain, checked with C(PRAGMA integrity_check), and the result names the commit it
    reached.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._progress
  - nodekeep.backup._repository.EPOCH
  - nodekeep.backup._repository.AGE_IDENTITIES
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details:
      - Verifies the manifest signature and lists what would be restored where (O(output) included), walking
        every target as the real run does (a link or a taken target is refused in check mode too); writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: A second run with the same O(dest) refuses because the targets exist, unless O(force=true).
options:
  dest:
    description:
      - Absolute staging directory. Each asset is restored under it at its original absolute path.
      - Required unless O(output) is given; not used with O(output).
    type: path
  point_in_time:
    description:
      - Restore one SQLite asset (named in O(artifacts)) as of the last commit at or before this time, from its
        replication chain (a base epoch plus the WAL segments the C(nodekeep-stream@) service shipped; see
        docs/replication.md), or from an epoch when that is the later point. V(latest) restores the newest shipped
        commit. An ISO 8601 time (C(2026-12-07T10:15:30Z); without a zone it is UTC), an epoch name or UNIX seconds.
      - O(epoch) is ignored; the result names the epoch used and the exact commit time it reached
        (RV(restored_commit_time)).
    type: str
  output:
    description:
      - Restore one asset to this absolute path instead of under O(dest) (the C(-o) of other tools), for
        V(sqlite), V(secret) (a file), V(rocksdb), V(files) and V(config) (a directory) assets, and with
        O(point_in_time) the rebuilt SQLite database.
      - Exactly one asset is restored - the one named in O(artifacts), or the epoch's only asset.
      - Its directory is made if missing; no link is followed at any level; an existing file or directory is
        refused unless O(force=true). The asset's own check runs on it as in a staged restore.
    type: path
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

- name: Restore the app database as it was at 10:15:30 UTC, to a file
  nodekeep.backup.epoch_restore:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    identity_files:
      - /root/.config/nodekeep/age-identity.txt
    artifacts: [app-db]
    point_in_time: "2026-12-07T10:15:30Z"
    output: /srv/restore/app-1015.db
  register: pitr

- name: Restore only the app database of the latest epoch, to a file of your choice
  nodekeep.backup.epoch_restore:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    identity_files:
      - /root/.config/nodekeep/age-identity.txt
    artifacts: [app-db]
    output: /srv/restore/app.db
  register: one

- name: Show the commit reached
  ansible.builtin.debug:
    msg: "{{ pitr.path }} holds every commit up to {{ pitr.restored_commit_time }} ({{ pitr.source }} {{ pitr.epoch }})"

- name: Show where each asset went
  ansible.builtin.debug:
    msg: "{{ item.name }} -> {{ item.path }} ({{ item.checks }})"
  loop: "{{ restored.artifacts }}"
"""

RETURN = r"""
asset_warnings:
  description:
    - What an asset's check says the operator must know, also printed as Ansible warnings - a PostgreSQL dump
      loaded without its owners, GRANTs and default privileges (the restoring role is not a superuser, or the
      epoch has no globals), or with its objects in the default tablespace (a tablespace the cluster lacks).
  returned: when an asset's check has one
  type: list
  elements: str
  sample: ["shop-pg of shop was loaded into shop_check WITHOUT its owners, GRANTs and default privileges ..."]
rollback:
  description:
    - Warnings of the rollback check with O(on_rollback=warn) (the newest epoch the controller recorded,
      O(known_latest), is missing from a checked repository). Empty when none.
  returned: always
  type: list
  elements: str
  sample: []
epoch:
  description: The epoch restored.
  returned: always
  type: str
  sample: 20261122T023000Z
artifacts:
  description:
    - Per asset, where it was restored and what was checked; C(seconds) the asset's restore took, C(check_seconds)
      the part of it its deep check took.
    - C(size) is the restored artifact's content (for a C(files) tree, its index); a tree also gets C(plain_size),
      the bytes of its restored files.
    - An incremental (pieces) SQLite epoch also gets C(rebuilt), what its rebuild did, C(pages), C(packs_read)
      and C(read_back_bytes) (pages written out of file order, read back to finish the file's SHA-256).
  returned: when point_in_time is not set
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
      seconds: 4.812
      check_seconds: 1.903
restored_commit_time:
  description: With O(point_in_time), when the service observed the last commit restored (UTC), or the epoch's
    finish time when the point is an epoch (RV(source)).
  returned: when point_in_time is set
  type: str
  sample: "2026-12-07T10:15:29.981344Z"
source:
  description: With O(point_in_time), V(chain) (base epoch plus segments) or V(epoch) (an epoch alone).
  returned: when point_in_time is set
  type: str
  sample: chain
path:
  description: With O(point_in_time), the restored database file.
  returned: when point_in_time is set
  type: str
  sample: /srv/restore/app-1015.db
size:
  description: With O(point_in_time), the size of the restored database file in bytes.
  returned: when point_in_time is set
  type: int
  sample: 16777216
seconds:
  description: With O(point_in_time), how long the restore took (base, segments, check), in seconds.
  returned: when point_in_time is set
  type: float
  sample: 1.734
commits_applied:
  description:
    - With O(point_in_time), the commits the service observed in the segments applied (0 when the point is an epoch
      alone). C(segment) is the last segment applied, C(integrity) the result of the check.
  returned: when point_in_time is set
  type: int
  sample: 5210
output:
  description: With O(output) (without O(point_in_time)), the path the one asset was restored to.
  returned: when output is set and point_in_time is not
  type: str
  sample: /srv/restore/app.db
manifest:
  description: Summary of the verified manifest.
  returned: when point_in_time is not set
  type: dict
  sample: {node: node1, epoch: 20261122T023000Z, artifacts: 1, size: 272629760}
stats:
  description:
    - What the run restored per asset and in total, like the backup's
      RV(nodekeep.backup.epoch_backup#module:stats), sizes in bytes - C(bytes) restored (a tree's file bytes, a
      rebuilt database's size), C(seconds), C(rate_bytes_per_second), C(result) and C(proven) - what was proven
      before the data was placed (the signature, the sealed SHA-256 and plain size against the signed manifest
      (a plain SHA-256 only in epochs of older versions) - a
      secret's plain size only - and the asset's own check; for O(point_in_time) the signed base and segments and
      the commits applied).
    - C(lines) is the same as a table in IEC units, which the restore role prints.
  returned: success, not in check mode
  type: dict
  sample:
    assets:
      - {name: app-db, asset_type: sqlite, bytes: 4161536, seconds: 0.21, rate_bytes_per_second: 19816838.1,
         result: ok, proven: "signature, sealed SHA-256, plain size (age-authenticated), integrity ok (at capture, same bytes)"}
    total: {assets: 1, bytes: 4161536, seconds: 0.25, rate_bytes_per_second: 16646144.0, result: ok, proven: ""}
    lines:
      - "asset   type        restored  duration  throughput  result  proven"
      - "------------------------------------------------------------------"
      - "app-db  sqlite      3.97 MiB  0.2 s     18.9 MiB/s  ok      signature, sealed SHA-256, plain size (age-authenticated), integrity ok"
      - "total   1 asset(s)  3.97 MiB  0.2 s     15.9 MiB/s  ok"
progress:
  description:
    - Each asset's phases as they ended, the last live status of each (see O(progress_file) and
      C(docs/progress.md)); the action plugin prints them as one line each.
    - Only when O(progress_file) was set (the collection's action plugin sets it, unless check mode, the task's own
      C(async) or C(nodekeep_progress_interval=0)).
  returned: when O(progress_file) was set
  type: list
  elements: dict
  sample:
    - {asset: app-db, phase: seal, state: done, done_bytes: 61599744, total_bytes: 61599744, percent: 100.0,
       rate_bytes_per_second: 35651584.0, eta_seconds: 0.0, elapsed_seconds: 1.73, operation: backup, node: node1,
       asset_index: 1, assets: 1, format: nodekeep.progress/v1, run_seconds: 2.1, updated: "2026-12-07T13:59:22Z"}
"""


import os
import time

from ansible.module_utils.basic import AnsibleModule

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
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import plan_restore, restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import plan_point_in_time, restore_point_in_time
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import PROGRESS_OPTIONS, tracked
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import (
    check_rollback,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.stats import restore_stats


def _plan(repository, params):
    """Check mode: verify the signature and walk every target as the real run does (no link followed), writing nothing."""
    return plan_restore(
        repository,
        params["node"],
        params["epoch"],
        params["public_key"],
        params["dest"],
        artifacts=params["artifacts"] or None,
        force=params["force"],
        output=params["output"],
    )


def _point_in_time(module, repository, params):
    names = params["artifacts"] or []
    if len(names) != 1:
        raise RestoreError(
            "a point-in-time restore rebuilds one SQLite asset, %d were named" % len(names),
            "set artifacts (nodekeep_restore_assets) to the one SQLite asset to restore",
        )
    if module.check_mode:
        return plan_point_in_time(
            repository,
            params["node"],
            names[0],
            params["public_key"],
            point_in_time=params["point_in_time"],
            dest=params["output"] or "",
            target_root=params["dest"] or "",
            force=params["force"],
        )
    report = restore_point_in_time(
        repository,
        params["node"],
        names[0],
        params["public_key"],
        load_identities(params["identities"], params["identity_files"]),
        point_in_time=params["point_in_time"],
        dest=params["output"] or "",
        target_root=params["dest"] or "",
        force=params["force"],
        check=params["check"],
    )
    entry = {
        "name": names[0],
        "asset_type": "sqlite",
        "size": os.path.getsize(report["path"]),
        "seconds": report["seconds"],
        "checks": {"integrity": report["integrity"]},
        "proof": "signed base epoch and %d signed segment(s), %d commit(s) applied"
        % (report["chain"]["segments"], report["commits_applied"]),
    }
    report["stats"] = restore_stats([entry], report["seconds"])
    report["changed"] = True
    return report


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            PROGRESS_OPTIONS,
            AGE_IDENTITY_OPTIONS,
            EPOCH_OPTIONS,
            dest={"type": "path"},
            force={"type": "bool", "default": False},
            point_in_time={"type": "str"},
            output={"type": "path"},
        ),
        required_one_of=[("dest", "output")],
        supports_check_mode=True,
    )
    require_libraries(module, "pyrage", "zstandard", "cryptography", "apsw")
    params = module.params

    def action():
        started = time.monotonic()
        repository = open_repository(params["repository"], create=False)
        warnings = check_rollback(
            repository, params["node"], params["known_latest"], params["public_key"], params["on_rollback"]
        )
        for text in warnings:
            module.warn(text)
        if params["point_in_time"]:
            return _point_in_time(module, repository, params)
        if module.check_mode:
            return dict(_plan(repository, params), rollback=warnings)
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
            output=params["output"],
        )
        report["changed"] = True
        report["rollback"] = warnings
        report["stats"] = restore_stats(report["artifacts"], time.monotonic() - started)
        for text in report.get("asset_warnings") or []:
            module.warn(text)
        return report

    run(module, tracked(params, "restore", action))


if __name__ == "__main__":
    main()
