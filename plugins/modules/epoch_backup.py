#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: epoch_backup
short_description: Back up a node's assets into a new signed epoch
version_added: 0.1.0
description:
  - Captures every asset of a node consistently (the SQLite online backup API from one pinned snapshot, ...),
    seals each as one stream (zstd, age to the given recipients, SHA-256, in one pass with bounded memory)
    into a new epoch C(REPOSITORY/NODE/EPOCH/), then writes C(manifest.json) and its Ed25519 signature last.
  - The epoch is named by its UTC start time C(YYYYMMDDTHHMMSSZ).
  - A run that fails or is killed leaves no signed manifest, so the partial epoch never counts as a backup;
    earlier epochs are never touched.
  - Any holder of an age identity can restore an artifact with standard tools,
    C(age -d -i KEY ARTIFACT | zstd -d > FILE).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._progress
  - nodekeep.backup._repository.AGE_RECIPIENTS
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: In check mode the assets, recipients and signing key are validated and nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run takes a new backup; a backup is an action, not a state.
options:
  assets:
    description:
      - The node's assets, as in the inventory variable C(nodekeep_assets).
      - Each needs C(name) (unique per node), C(type) and an absolute C(path).
      - "Type V(sqlite) accepts C(busy_timeout) (ms, default 5000, 0 to 3600000), C(pages_per_step) (default 1024,
        1 to 1000000 or -1) and C(check) (V(integrity), V(quick) or V(none); default V(integrity))."
      - "Type V(sqlite) with C(incremental=true) stores its epochs on the node's piece store: only the pages that
        changed since the previous epoch are stored; C(incremental_check) (default V(quick)) is the check of an
        incremental epoch (a full one runs C(check)), C(full_every) (epochs, 0 to 10000, default 0: only the first, on demand
        and when the previous epoch is unreadable) schedules full epochs, C(full=true) asks for one, C(state_dir)
        (default C(/var/lib/nodekeep/files)) holds the node's piece key and the last epoch's page map; see
        docs/incremental.md."
      - "Type V(rocksdb) accepts C(method) (V(checkpoint_command), V(stop), V(snapshot) or V(offline)),
        C(checkpoint_command), C(checkpoint_dir), C(service), C(stop_command), C(start_command), C(stop_timeout)
        and C(command_timeout) (seconds, 1 to 86400), C(copy_dir), C(count_keys) and C(verify); see docs/rocksdb.md. With C(incremental=true)
        (and C(state_dir)) its SST and blob files are stored once each on the node's piece store."
      - "Type V(files) (a directory tree stored as content-addressed objects, incremental) accepts C(include),
        C(exclude), C(state_dir) and C(sample) (files, 0 to 100000); type V(config) accepts C(include) and C(exclude) for a directory,
        and C(state_dir) (default C(/var/lib/nodekeep/files)), where the node's key for the keyed MAC verify compares the
        live config with lives; see docs/files.md."
      - "Type V(secret) seals a key file or a directory of them; nothing about it but public key facts is recorded."
      - "Type V(postgres) accepts C(database) (required), C(host), C(port) (1 to 65535), C(user), C(passfile), C(service),
        C(service_file), C(become_user), C(exec_prefix), C(bin_dir), C(dump_options), C(connect_timeout)
        (seconds, 1 to 3600), C(timeout) (seconds, 1 to 604800), C(restore_database), C(restore_options), C(globals)
        (default true, the cluster's roles and memberships sealed beside the dump) and C(role_passwords) (default false,
        password hashes in those globals); see docs/postgres.md."
      - "Types V(zfs) (C(path) is the dataset's mountpoint, or give C(dataset)) and V(btrfs) (a subvolume) accept
        C(prefix), C(full_every) (0 to 10000), C(count_files), C(local_retention) and, for zfs, C(recursive); see docs/snapshots.md."
      - "Any V(sqlite), V(rocksdb), V(files) or V(config) asset accepts C(snapshot): the mountpoint of a btrfs
        subvolume or ZFS dataset holding it; all assets naming the same one are captured from one atomic snapshot."
    type: list
    elements: dict
    required: true
  signing_key:
    description:
      - The node's Ed25519 private key (OpenSSH format, mode 0600) that signs the manifest.
      - Created by M(nodekeep.backup.signing_key).
      - Beside it the node keeps C(SIGNING_KEY.sequence.json) (0600), the last epoch it signed per repository;
        each manifest's signed C(sequence) links to it, so deleting the newest epochs shows in the repository
        once a later epoch exists (docs/manifest.md). Its directory must be writable by the backup.
    type: path
    default: /etc/nodekeep/signing_key
  compression_level:
    description: zstd compression level, 1 (fastest) to 22 (smallest); others are refused.
    type: int
    default: 3
  scratch_dir:
    description:
      - Private directory (mode 0700) for the transient plaintext copies some asset types need.
      - Defaults to C(.scratch) inside a local repository, and to C($TMPDIR/nodekeep-scratch-UID) (private to the
        user) with an C(s3://) repository. Copies are removed after sealing.
    type: path
  labels:
    description: Free-form labels recorded in the manifest (for example the inventory groups).
    type: dict
    default: {}
  full:
    description:
      - "Store a full epoch of every incremental asset (C(incremental=true)): every page or file is stored again
        without relying on an earlier epoch's records (identical pieces are still found by name)."
      - The manifest records C(full=true) and C(full_reason) for each such asset.
    type: bool
    default: false
notes:
  - Runs on the node, with the Python of the agent role's virtualenv (apsw, pyrage, zstandard, cryptography).
requirements:
  - apsw
  - pyrage
  - zstandard
  - cryptography
seealso:
  - module: nodekeep.backup.integrity_check
  - module: nodekeep.backup.epoch_restore
  - module: nodekeep.backup.sqlite_backup
"""

EXAMPLES = r"""
- name: Back up the node's SQLite database
  nodekeep.backup.epoch_backup:
    node: "{{ inventory_hostname }}"
    repository: /var/backups/nodekeep
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    assets:
      - name: node-db
        type: sqlite
        path: /var/lib/animica/node/animica.db
  register: backup

- name: Show what was written
  ansible.builtin.debug:
    msg: "Epoch {{ backup.epoch }}: {{ backup.artifacts | length }} artifacts, {{ backup.size }} bytes"
"""

RETURN = r"""
epoch:
  description: Name of the new epoch (its UTC start time).
  returned: success and not check mode
  type: str
  sample: 20261122T023000Z
location:
  description: Location of the epoch in the repository.
  returned: success and not check mode
  type: str
  sample: /var/backups/nodekeep/node1/20261122T023000Z
size:
  description: Total bytes of the sealed artifacts.
  returned: success and not check mode
  type: int
  sample: 272629760
stored_bytes:
  description:
    - "Bytes this epoch added to the repository, its sealed artifacts included (for incremental assets, only the
      pieces it uploaded: the changed pages' packs, new files)."
  returned: success and not check mode
  type: int
  sample: 412000
duration:
  description: Seconds the backup took.
  returned: success
  type: float
  sample: 1.42
artifacts:
  description:
    - One entry per asset, as recorded in the manifest.
    - C(content_sha256) is null for backed-up data (no unkeyed hash of a plaintext is recorded or reported; the signed
      C(sha256) of the sealed bytes, which age authenticates, proves it); only a map of pieces (a files index, an
      incremental page map) has one.
  returned: success and not check mode
  type: list
  elements: dict
  sample:
    - name: node-db
      asset_type: sqlite
      file: node-db.sqlite.zst.age
      size: 272629760
      sha256: 4adb79f5de7125ccd77509afc24559eede4c2351b884dfe1c2c9ba2298bbd228
      content_size: 533463040
      content_sha256: null
      source: {integrity: ok, page_count: 130240, journal_mode: wal}
manifest:
  description: Summary of the signed manifest.
  returned: success and not check mode
  type: dict
  sample: {node: node1, epoch: 20261122T023000Z, artifacts: 1, size: 272629760}
sequence:
  description:
    - The manifest's signed sequence - C(number) and C(previous) (C(epoch), C(number), C(manifest_sha256) of the
      epoch this node signed before, and C(present) - false when it was missing from the repository, a rollback).
  returned: success and not check mode
  type: dict
  sample: {number: 42, previous: {epoch: 20261122T013000Z, number: 41, manifest_sha256: 9c1e..., present: true}}
stats:
  description:
    - What the run did per asset and in total, like C(restic backup) or C(borgmatic --stats), sizes in bytes.
    - C(plain_bytes) is the data as it lies on the node (a tree's file bytes, a page-mapped SQLite database's
      pages, else the artifact's plaintext); C(stored_bytes) what this epoch added to the repository (reused
      pieces or objects cost nothing); C(ratio) is plain/stored; C(seconds) and C(rate_bytes_per_second) the
      duration and throughput; C(check) the asset's own check (V(ok) for a sound SQLite database).
    - C(lines) is the same as a table in IEC units (KiB, MiB, GiB), which the backup role prints.
  returned: success, not in check mode
  type: dict
  sample:
    assets:
      - {name: app-db, asset_type: sqlite, plain_bytes: 61599744, stored_bytes: 61380865, sealed_bytes: 61380865,
         ratio: 1.0, seconds: 2.197, rate_bytes_per_second: 28037206.2, check: ok}
    total: {assets: 1, plain_bytes: 61599744, stored_bytes: 61380865, ratio: 1.0, seconds: 2.3,
            rate_bytes_per_second: 26782497.4, check: ok}
    lines:
      - "asset   type         plain     stored (new)  ratio  duration  throughput   check"
      - "------------------------------------------------------------------------------"
      - "app-db  sqlite       58.7 MiB  58.5 MiB      1.00x  2.2 s     26.7 MiB/s   ok"
      - "total   1 asset(s)   58.7 MiB  58.5 MiB      1.00x  2.3 s     25.5 MiB/s   ok"
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

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import normalize_assets
from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    AGE_RECIPIENT_OPTIONS,
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import check_range
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import parse_recipient, recipient_lines
from ansible_collections.nodekeep.backup.plugins.module_utils.core.signing import load_private_key
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import PROGRESS_OPTIONS, tracked
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import sequence_state_path
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.pieces import stored_bytes
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.stats import backup_stats


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            PROGRESS_OPTIONS,
            AGE_RECIPIENT_OPTIONS,
            assets={"type": "list", "elements": "dict", "required": True},
            signing_key={"type": "path", "default": "/etc/nodekeep/signing_key", "no_log": False},
            compression_level={"type": "int", "default": 3},
            scratch_dir={"type": "path"},
            labels={"type": "dict", "default": {}},
            full={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "pyrage", "zstandard", "cryptography", "apsw")
    params = module.params

    def action():
        started = time.monotonic()
        check_range(params["compression_level"], "compression_level", 1, 22, why="zstd levels; 3 is the default")
        lines = recipient_lines(params["recipients"], params["recipients_files"])
        recipients = [parse_recipient(line, where) for line, where in lines]
        key = load_private_key(params["signing_key"])
        assets = normalize_assets(params["assets"])
        if module.check_mode:
            return {
                "changed": True,
                "assets": [a["name"] for a in assets],
                "duration": round(time.monotonic() - started, 3),
            }
        repository = open_repository(params["repository"])
        manifest = backup_epoch(
            repository,
            params["node"],
            assets,
            recipients,
            [line for line, _where in lines],
            key,
            scratch_dir=params["scratch_dir"],
            level=params["compression_level"],
            labels=params["labels"],
            full=params["full"],
            sequence_state=sequence_state_path(params["signing_key"]),
        )
        previous = (manifest.sequence or {}).get("previous") or {}
        if previous and not previous["present"]:
            module.warn(
                "ROLLBACK: the last epoch this node signed in this repository, %s (sequence %d), is missing: the newest "
                "epochs were deleted; epoch %s records it (signed), so verify, restore and drill report it"
                % (previous["epoch"], previous["number"], manifest.epoch)
            )
        return {
            "changed": True,
            "epoch": manifest.epoch,
            "location": repository.describe(manifest.node, manifest.epoch),
            "size": manifest.total_size,
            "stored_bytes": sum(stored_bytes(a) for a in manifest.artifacts),
            "stats": backup_stats(manifest.artifacts, time.monotonic() - started),
            "duration": round(time.monotonic() - started, 3),
            "artifacts": [a.to_dict() for a in manifest.artifacts],
            "manifest": manifest.summary(),
            "sequence": manifest.sequence,
        }

    run(module, tracked(params, "backup", action))


if __name__ == "__main__":
    main()
